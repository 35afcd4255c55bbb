"""HTTP bodies of the operator endpoints (the console and scripts)."""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta, Struct


class BanRequest(Struct, frozen=True, forbid_unknown_fields=True):
    reason: Annotated[str, Meta(min_length=1, max_length=500)]


class NoBody(Struct, frozen=True, forbid_unknown_fields=True):
    """Actions that need nothing more than their URL accept an empty object."""


class PriorityRequest(Struct, frozen=True, forbid_unknown_fields=True):
    priority: Annotated[int, Meta(ge=-1000, le=1000)]


class WorkerAction(Struct):
    id: str
    action: str
    released: int = 0  # leases taken back (ban)
    discarded: int = 0  # unvalidated results that no longer count (ban)


class TokenInfo(Struct):
    id: int
    name: str
    role: str
    created_at: float
    revoked_at: float | None = None


class TokenList(Struct):
    tokens: list[TokenInfo]


class AuditLine(Struct):
    id: int
    at: float
    actor: str
    action: str
    target: str
    detail: str = ""


class AuditLog(Struct):
    entries: list[AuditLine]
