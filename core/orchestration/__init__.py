"""NEXUS orchestration: plans, routing, budgets and synthesis (pure logic; the workflow drives it)."""
