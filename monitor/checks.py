"""System checks for the monitor's configuration."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, Warning, register

from brokerauth import topics
from monitor import account


@register()
def check_monitor(**kwargs: Any) -> list[Error | Warning]:
    problems: list[Error | Warning] = []
    for topic_filter in settings.TELEMETRY_TOPICS:
        try:
            topics.validate_filter(topic_filter)
        except topics.TopicError as exc:
            problems.append(
                Error(
                    f"TELEMETRY_TOPICS has {topic_filter!r}: {exc}.",
                    hint="Give comma-separated MQTT filters such as devices/+/telemetry.",
                    id="monitor.E001",
                )
            )
    if settings.MONITOR_BATCH_SIZE < 1 or settings.MONITOR_FLUSH_SECONDS <= 0:
        problems.append(
            Error(
                "MONITOR_BATCH_SIZE must be 1 or more and MONITOR_FLUSH_SECONDS above 0.",
                hint="The defaults (5000 and 0.5) keep up with 10,000 readings a second.",
                id="monitor.E002",
            )
        )
    if "/" in settings.TELEMETRY_SHARE_GROUP or "+" in settings.TELEMETRY_SHARE_GROUP:
        problems.append(
            Error(
                "TELEMETRY_SHARE_GROUP must be a single topic level.",
                hint="A name such as 'monitors'; leave empty for one monitor.",
                id="monitor.E003",
            )
        )
    return problems


@register(deploy=True)
def check_monitor_account(**kwargs: Any) -> list[Warning]:
    problems: list[Warning] = []
    if not account.password():
        problems.append(
            Warning(
                "The monitor has no MQTT password: manage.py monitor cannot log in.",
                hint="Run manage.py monitor_account (writes VAR_DIR/monitor_password), or "
                "set MONITOR_PASSWORD / MONITOR_PASSWORD_FILE.",
                id="monitor.W001",
            )
        )
    return problems
