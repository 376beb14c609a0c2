"""The three endpoints Mosquitto's auth plugin calls (go-auth HTTP backend contract)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse

from brokerauth import acl, decisions, wire
from brokerauth.guards import broker_endpoint


def _answer(decision: acl.Decision) -> HttpResponse:
    return wire.allow() if decision.allowed else wire.deny(decision.reason)


@broker_endpoint
def user(request: HttpRequest) -> HttpResponse:
    data = wire.fields(request, "username", "password", "clientid")
    return _answer(decisions.check_login(data["username"], data["password"], data["clientid"]))


@broker_endpoint
def superuser(request: HttpRequest) -> HttpResponse:
    data = wire.fields(request, "username")
    return _answer(decisions.check_superuser(data["username"]))


@broker_endpoint
def acl_check(request: HttpRequest) -> HttpResponse:
    data = wire.fields(request, "username", "clientid", "topic", "acc")
    try:
        access = acl.parse_access(int(data["acc"]))
    except ValueError as exc:
        raise wire.WireError(str(exc)) from exc
    decision = decisions.check_acl(data["username"], data["clientid"], data["topic"], access)
    return _answer(decision)
