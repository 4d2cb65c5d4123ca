"""Human-in-the-loop approvals: requests, decisions, escalation, notifications."""
