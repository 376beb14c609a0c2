"""The endpoints Mosquitto's auth plugin calls: the three of the go-auth HTTP backend
contract, and the change feed only the project's plugin follows (`changes`).

Each asks the rule's owner and leaves its trace with AuthEvent.objects.record: a login asks
Account.objects.authenticate (database, password, lockout, client-id owner), an ACL check the
in-memory policy (policy.explain_acl, no query in steady state). The superuser question asks
the same policy and is never audited: go-auth asks it before every ACL check, so a "no" is
routine. Every refused login gets the same answer (wire.refuse_login); the audit keeps why.
"""

from __future__ import annotations

import time

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse

from brokerauth import acl, wire
from brokerauth.guards import broker_endpoint
from brokerauth.models import Account, AuthEvent, Change, Feed, Follower
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


@broker_endpoint
def changes(request: HttpRequest) -> HttpResponse:
    """The change feed: `?after=<seq>&wait=<seconds>[&name=<broker>]`. Answers at once when
    something changed after `after` (or the follower must reset), else holds the request up
    to `wait` seconds, looking every CHANGE_FEED_POLL_SECONDS. A held request takes one
    Gunicorn thread, not a process (web/gunicorn.conf.py)."""
    after, wait = _after(request), _wait(request)
    name = request.GET.get("name", "")[:100] or request.META.get("REMOTE_ADDR", "")
    deadline = time.monotonic() + wait
    feed = Change.objects.feed(after)
    Follower.objects.polled(name, request.META.get("REMOTE_ADDR", ""), _agent(request), feed.seq)
    while not (feed.reset or feed.changes) and time.monotonic() < deadline:
        time.sleep(min(settings.CHANGE_FEED_POLL_SECONDS, max(deadline - time.monotonic(), 0)))
        feed = Change.objects.feed(after)
    return _feed_answer(feed)


def _feed_answer(feed: Feed) -> JsonResponse:
    # `settle`: each web process may answer from its policy cache for this long after a
    # change (brokerauth/policy.py), so the plugin clears its cache once more after it.
    return JsonResponse(
        {
            "seq": feed.seq,
            "reset": feed.reset,
            "settle": settings.POLICY_REFRESH_SECONDS,
            "changes": [change.as_wire() for change in feed.changes],
        }
    )


def _agent(request: HttpRequest) -> str:
    return str(request.META.get("HTTP_USER_AGENT", ""))[:100]


def _after(request: HttpRequest) -> int | None:
    raw = request.GET.get("after", "")
    if raw == "":
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise wire.WireError("after must be a seq the feed gave")
    return int(raw)


def _wait(request: HttpRequest) -> float:
    """Seconds to hold the request, at most CHANGE_FEED_MAX_WAIT."""
    raw = request.GET.get("wait", "") or "0"
    try:
        wait = float(raw)
    except ValueError:
        raise wire.WireError("wait must be a number of seconds") from None
    if not 0 <= wait < float("inf"):
        raise wire.WireError("wait must be a number of seconds")
    return min(wait, settings.CHANGE_FEED_MAX_WAIT)
