"""Who may decide and who may see an approval: pure functions, shared by the workflow's update
validator (deterministic, no I/O) and the API (inbox, detail, decision pre-checks).

Rules (documented in ``docs/approvals.md``):

- only keys of the approval's own tenant;
- ``viewer`` and ``auditor`` keys never decide, even when their user is named;
- ``owner`` and ``admin`` keys of the tenant may always decide (break-glass), and see everything;
- otherwise the caller's role must be among ``assignees.roles`` or the user bound to the key
  (its id or e-mail, case-insensitive) among ``assignees.users``.
"""

from __future__ import annotations

from collections.abc import Iterable

from core.approvals.contracts import OVERRIDE_ROLES, READ_ONLY_ROLES, Assignees, DecideInput


class DecisionRefused(Exception):
    """Why a decision is refused; ``kind`` is ``wrong_tenant``, ``not_allowed`` or ``not_pending``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def _norm(values: Iterable[str | None]) -> set[str]:
    return {v.strip().lower() for v in values if v}


def normalize_assignees(assignees: Assignees) -> Assignees:
    """Assignees with user names trimmed and lower-cased (e-mails match case-insensitively)."""
    users = sorted(_norm(assignees.users))
    return assignees.model_copy(update={"users": users})


def widen(assignees: Assignees, extra: Assignees) -> Assignees:
    """The union of two assignee sets (escalation adds, it never removes)."""
    roles = list(dict.fromkeys([*assignees.roles, *extra.roles]))
    users = list(dict.fromkeys([*assignees.users, *extra.users]))
    # model_construct: the union of two valid sets may exceed the per-request limit of 50 users.
    return Assignees.model_construct(users=users, roles=roles)


def is_assignee(assignees: Assignees, role: str, user_aliases: Iterable[str | None]) -> bool:
    """Whether ``role`` or one of the user's aliases (id, e-mail) is named in ``assignees``."""
    if role in READ_ONLY_ROLES:
        return False
    if role in assignees.roles:
        return True
    return bool(_norm(assignees.users) & _norm(user_aliases))


def may_decide(assignees: Assignees, role: str, user_aliases: Iterable[str | None]) -> bool:
    """Whether a same-tenant caller with ``role`` and ``user_aliases`` may decide."""
    if role in READ_ONLY_ROLES:
        return False
    return role in OVERRIDE_ROLES or is_assignee(assignees, role, user_aliases)


def check_decision(tenant_id: str, assignees: Assignees, inp: DecideInput) -> None:
    """Raise :class:`DecisionRefused` unless ``inp``'s actor may decide this approval."""
    if inp.actor_tenant_id != tenant_id:
        raise DecisionRefused("wrong_tenant", "approval not found")
    if not may_decide(assignees, inp.actor_role, (inp.actor_user, inp.actor_email)):
        raise DecisionRefused("not_allowed", "you are not an assignee of this approval")


def may_view(
    assignees: Assignees, requested_by: str, role: str, actor: str, user_aliases: Iterable[str | None]
) -> bool:
    """Owners, admins and auditors see every approval of their tenant; others see those they
    may decide or requested themselves."""
    if role in OVERRIDE_ROLES or role == "auditor":
        return True
    return actor == requested_by or is_assignee(assignees, role, user_aliases)
