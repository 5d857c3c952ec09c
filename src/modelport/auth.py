"""Who is calling, and in which account."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Principal:
    identity_id: str
    identity_type: str  # "user" | "service_account"
    account_id: str  # the selected account
    role: str  # the identity's role in that account: "admin" | "member"
    is_operator: bool = False  # runs the server: may create accounts and manage any key

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"
