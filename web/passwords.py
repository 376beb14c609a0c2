"""Passwords the operator UI and API generate for MQTT accounts (shown once, never stored)."""

from __future__ import annotations

import secrets

from brokerauth.models import Account


def generate_password() -> str:
    return secrets.token_urlsafe(18)


def reset_password(account: Account) -> str:
    password = generate_password()
    account.set_password(password)
    # A new password also lifts a lockout earned by the old one.
    account.failed_logins, account.locked_until = 0, None
    account.save(update_fields=["password_hash", "failed_logins", "locked_until", "changed_at"])
    return password
