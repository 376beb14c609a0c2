"""The fence around the broker-facing endpoints: only the broker may ask.

Two checks: the caller's source address is in MQTT_AUTH_ALLOWED_NETS, and it sends the shared
secret as HTTP Basic auth (go-auth does so when its http_host is `user:secret@host`). Without
a secret configured nobody gets in (fail closed, issue 14); the web process also refuses to
start without one (web/wsgi.py, system check brokerauth.E001).
Then the error mapping the broker relies on: malformed input is a 400 deny, never a 500, and
database trouble is a 503, which the broker treats as a transient error, not a "no".
"""

from __future__ import annotations

import base64
import functools
import hmac
import ipaddress
import logging
from collections.abc import Callable

from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from brokerauth import topics, wire

log = logging.getLogger("brokerauth.guard")
View = Callable[[HttpRequest], HttpResponse]


@functools.lru_cache(maxsize=8)
def _networks(nets: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(net, strict=False) for net in nets)


def address_allowed(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return any(ip in net for net in _networks(tuple(settings.MQTT_AUTH_ALLOWED_NETS)))


def secret_matches(header: str) -> bool:
    expected = settings.MQTT_AUTH_SECRET
    if not expected:
        return False
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        # A header is Latin-1 text in WSGI: non-ASCII in it is no base64 (ValueError).
        decoded = base64.b64decode(token, validate=True).decode()
    except ValueError:
        return False
    user, _, secret = decoded.partition(":")
    return hmac.compare_digest(secret.encode(), expected.encode()) and hmac.compare_digest(
        user.encode(), settings.MQTT_AUTH_USERNAME.encode()
    )


def broker_endpoint(view: View) -> View:
    @csrf_exempt
    @functools.wraps(view)
    def wrapper(request: HttpRequest) -> HttpResponse:
        address = request.META.get("REMOTE_ADDR", "")
        if not address_allowed(address):
            log.warning("refused caller %s: address not allowed on %s", address, request.path)
            return wire.deny("caller not allowed")
        if not secret_matches(request.META.get("HTTP_AUTHORIZATION", "")):
            log.warning("refused caller %s: wrong or missing secret on %s", address, request.path)
            return wire.deny("caller not allowed")
        if request.method not in ("GET", "POST", "PUT"):
            return wire.deny("method not allowed", status=405)
        try:
            return view(request)
        except (wire.WireError, topics.TopicError) as exc:
            log.warning("bad request from %s on %s: %s", address, request.path, exc)
            return wire.deny(f"bad request: {exc}", status=400)
        except DatabaseError as exc:
            log.error("database unavailable on %s: %s", request.path, exc)
            return wire.deny("service unavailable", status=503)

    return wrapper
