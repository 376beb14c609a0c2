"""Passwords the operator UI and API set or generate for MQTT accounts (shown once, never
stored)."""

from __future__ import annotations

import secrets

from brokerauth.models import Account


def generate_password() -> str:
    return secrets.token_urlsafe(18)


def set_password(account: Account, password: str) -> None:
    account.set_password(password)
    # A new password also lifts a lockout earned by the old one.
    account.failed_logins, account.locked_until = 0, None
    account.save(update_fields=["password_hash", "failed_logins", "locked_until", "changed_at"])


def reset_password(account: Account) -> str:
    password = generate_password()
    set_password(account, password)
    return password
