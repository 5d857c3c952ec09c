"""Who is calling, and in which account."""

from __future__ import annotations

from dataclasses import dataclass

from modelport.limits.base import KeyLimits


@dataclass(frozen=True, slots=True)
class Principal:
    identity_id: str
    identity_type: str  # "user" | "service_account"
    account_id: str  # the selected account
    role: str  # the identity's role in that account: "admin" | "member"
    is_operator: bool = False  # runs the server: may create accounts and manage any key
    key_id: str | None = None  # the API key the request came with: its limits and spend
    key_limits: KeyLimits | None = None  # None: the key has no limits

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"
