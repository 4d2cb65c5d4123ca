"""Worker processes: which task queues serve which workflows and activities."""
