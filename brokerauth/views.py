"""The three endpoints Mosquitto's auth plugin calls (go-auth HTTP backend contract).

Each asks the rule's owner and leaves its trace with AuthEvent.objects.record: a login asks
Account.objects.authenticate (database, password, lockout, client-id owner), an ACL check the
in-memory policy (policy.explain_acl, no query in steady state). The superuser question asks
the same policy and is never audited: go-auth asks it before every ACL check, so a "no" is
routine. Every refused login gets the same answer (wire.refuse_login); the audit keeps why.
"""

from __future__ import annotations

from django.db import transaction
from django.http import HttpRequest, HttpResponse

from brokerauth import acl, wire
from brokerauth.guards import broker_endpoint
from brokerauth.models import Account, AuthEvent
from brokerauth.policy import policy


def _answer(verdict: acl.Decision) -> HttpResponse:
    return wire.allow() if verdict.allowed else wire.deny(verdict.reason)


@broker_endpoint
def user(request: HttpRequest) -> HttpResponse:
    data = wire.fields(request, "username", "password", "clientid", optional=("address",))
    username, clientid, address = data["username"], data["clientid"], data["address"]
    # One commit for what a login writes (a first login: its client id's claim, its login
    # time, its audit row): on PostgreSQL each commit waits for the disk, and the broker
    # waits for this answer (docs/benchmarks.md, "Cold-login storm").
    with transaction.atomic():
        login = Account.objects.authenticate(username, data["password"], clientid, address)
        AuthEvent.objects.record(AuthEvent.Kind.LOGIN, login, username, clientid, address=address)
    if login.allowed:
        return wire.allow()
    return wire.refuse_login(limit_username=login.limit_username)


@broker_endpoint
def superuser(request: HttpRequest) -> HttpResponse:
    data = wire.fields(request, "username")
    return _answer(acl.decide_superuser(policy.lookup(data["username"])))


@broker_endpoint
def acl_check(request: HttpRequest) -> HttpResponse:
    data = wire.fields(request, "username", "clientid", "topic", "acc")
    try:
        access = acl.parse_access(int(data["acc"]))
    except ValueError as exc:
        raise wire.WireError(str(exc)) from exc
    username, clientid, topic = data["username"], data["clientid"], data["topic"]
    decision = policy.explain_acl(username, clientid, topic, access)
    AuthEvent.objects.record(AuthEvent.Kind.ACL, decision, username, clientid, topic, access)
    return _answer(decision)
