"""The gateway's hot-path building blocks: admission (rate limits + budgets), cache, logs, metrics.

The routes in ``api/`` call these; everything here is one Redis round trip per step or runs
off the hot path (the log writer). See ``docs/gateway-limits.md``.
"""

from core.gateway.budget_store import load_limits, postgres_limits, rebuild_month, set_budget
from core.gateway.budgets import (
    BudgetExceeded,
    BudgetScope,
    BudgetStatus,
    LimitLoader,
    Reservation,
    budget_status,
    month_key,
    release,
    reserve,
    settle,
)
from core.gateway.limits import Admission, AdmissionRequest, admit, complete
from core.gateway.logs import (
    InferenceLogWriter,
    InferenceRecord,
    LogFilters,
    LogPage,
    content_logging,
    list_logs,
    tail,
)
from core.gateway.metrics import record_metrics

__all__ = [
    "Admission",
    "AdmissionRequest",
    "BudgetExceeded",
    "BudgetScope",
    "BudgetStatus",
    "InferenceLogWriter",
    "InferenceRecord",
    "LimitLoader",
    "LogFilters",
    "LogPage",
    "Reservation",
    "admit",
    "budget_status",
    "complete",
    "content_logging",
    "list_logs",
    "load_limits",
    "month_key",
    "postgres_limits",
    "rebuild_month",
    "record_metrics",
    "release",
    "reserve",
    "set_budget",
    "settle",
    "tail",
]
