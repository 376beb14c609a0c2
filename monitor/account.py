"""The monitor's own MQTT account (MONITOR_USERNAME): its rules and where its password is.

Never a superuser: subscribe and receive on exactly what the monitor reads, `$SYS/#` and each
TELEMETRY_TOPICS filter. The Test service logs in with this account too; its probe rule is
monitor/testservice.py's. `manage.py monitor_account` creates the account or rotates its
password, and grants both.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from brokerauth.acl import Access
from brokerauth.models import Account, Rule

DESCRIPTION = "The monitor's service account (manage.py monitor_account)."


def password() -> str:
    """MONITOR_PASSWORD (or MONITOR_PASSWORD_FILE), else what monitor_account wrote to
    MONITOR_PASSWORD_PATH; "" when there is neither (system check monitor.W001)."""
    if settings.MONITOR_PASSWORD:
        return settings.MONITOR_PASSWORD
    try:
        return Path(settings.MONITOR_PASSWORD_PATH).read_text().strip()
    except FileNotFoundError:
        return ""


def required_patterns() -> list[str]:
    """What the monitor subscribes to: $SYS statistics and log lines, and the telemetry."""
    return ["$SYS/#", *settings.TELEMETRY_TOPICS]


def ensure_rules(account: Account) -> int:
    """Subscribe and receive on each required pattern; the number of rules added."""
    added = 0
    for pattern in required_patterns():
        for access in (Access.SUBSCRIBE, Access.RECEIVE):
            _rule, created = Rule.objects.get_or_create(
                account=account,
                pattern=pattern,
                access=access,
                defaults={"allow": True, "description": "monitor"},
            )
            added += created
    return added
