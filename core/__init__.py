"""NexusAI domain library. Imports nothing else of ours."""
