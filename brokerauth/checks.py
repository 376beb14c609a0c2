"""System checks for the broker-facing configuration."""

from __future__ import annotations

import ipaddress
from typing import Any

from django.conf import settings
from django.core.checks import Error, Warning, register
from django.core.exceptions import ImproperlyConfigured

from brokerauth import names

NO_SECRET = "MQTT_AUTH_SECRET is not set: /mqtt/auth/ refuses every caller."
NO_SECRET_HINT = (
    "Set MQTT_AUTH_SECRET (or MQTT_AUTH_SECRET_FILE) and put the same secret in the broker's "
    "http_host as broker:SECRET@host (DEV_MODE=1 makes one under VAR_DIR)."
)


def require_broker_secret() -> None:
    """Refuse to serve without a broker secret (web/wsgi.py): Gunicorn, and any other WSGI
    server, runs no system checks, and the endpoints would refuse the broker anyway."""
    if not settings.MQTT_AUTH_SECRET:
        raise ImproperlyConfigured(f"{NO_SECRET} {NO_SECRET_HINT}")


@register()
def check_broker_auth(**kwargs: Any) -> list[Error | Warning]:
    problems: list[Error | Warning] = []
    if not settings.MQTT_AUTH_SECRET:
        problems.append(Error(NO_SECRET, hint=NO_SECRET_HINT, id="brokerauth.E001"))
    if settings.MQTT_AUTH_RESPONSE_MODE not in ("status", "json", "text"):
        problems.append(
            Error(
                f"MQTT_AUTH_RESPONSE_MODE={settings.MQTT_AUTH_RESPONSE_MODE!r} is not a mode.",
                hint="Use status, json or text, the same as the plugin's http_response_mode.",
                id="brokerauth.E002",
            )
        )
    for net in settings.MQTT_AUTH_ALLOWED_NETS:
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            problems.append(
                Error(
                    f"MQTT_AUTH_ALLOWED_NETS has {net!r}, which is not a network.",
                    hint="Give comma-separated CIDRs such as 127.0.0.0/8,10.0.0.0/24.",
                    id="brokerauth.E003",
                )
            )
    for name, what in (("MONITOR_USERNAME", "username"), ("MONITOR_CLIENT_ID", "client id")):
        wrong = names.problem(getattr(settings, name))
        if wrong is not None:
            problems.append(
                Error(
                    f"{name}={getattr(settings, name)!r} {wrong}.",
                    hint=f"The service's {what} is held to the rules of every new one "
                    "(brokerauth/names.py).",
                    id="brokerauth.E005",
                )
            )
    if not 4 <= settings.BCRYPT_ROUNDS <= 31:
        problems.append(
            Error(
                f"BCRYPT_ROUNDS={settings.BCRYPT_ROUNDS} is outside 4..31.",
                hint="12 is a good cost for production; tests use 4.",
                id="brokerauth.E004",
            )
        )
    elif settings.BCRYPT_ROUNDS < 10 and not settings.DEBUG:
        problems.append(
            Warning(
                f"BCRYPT_ROUNDS={settings.BCRYPT_ROUNDS} makes stolen hashes cheap to crack.",
                hint="Use 10 or more in production.",
                id="brokerauth.W001",
            )
        )
    return problems
