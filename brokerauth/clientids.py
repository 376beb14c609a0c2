"""Client ids belong to accounts (issue 9): whom a client id belongs to.

Taking over a client id takes over its session: Mosquitto closes the older connection and,
with a clean start, throws away its queued QoS 1 messages. So one account's client ids are
closed to every other account, decided in this order:

1. the ids the service itself uses, MONITOR_CLIENT_ID and the Test service's probes
   (`probe_id()`: `<MONITOR_USERNAME>-test-<hex>`), belong to the MONITOR_USERNAME account;
2. an id under an account's `client_id_prefix` belongs to that account (prefixes never
   overlap, Account.clean);
3. any other id belongs to the account that used it first (a `ClientId` row, claimed at its
   first login, or at its first ACL check when go-auth's login cache let the login through
   without asking; a bound client id is claimed when it is bound), until an operator
   releases it (admin, UI, API).

Ids nobody can own are free for all: the broker's own ids for clients that sent none
(`MQTT_AUTO_ID_PREFIX`, random per connection, so nobody can aim at one). An id longer than
the database keeps (names.MAX_LENGTH) is refused (acl.client_id_refusal).

The rule itself is acl.client_id_refusal; the owner is looked up fresh for logins and the
explain page (ClientId.objects.owner) and from memory for the broker's ACL checks
(brokerauth/policy.py).
"""

from __future__ import annotations

import bisect
import secrets
from collections.abc import Callable, Iterable

from django.conf import settings

from brokerauth.acl import Owner
from brokerauth.names import MAX_LENGTH

PROBE_INFIX = "-test-"


def owner(
    client_id: str,
    prefix_owner: Callable[[str], Owner | None],
    claimed_by: Callable[[str], str | None],
) -> Owner | None:
    """Whom `client_id` belongs to, in the order above; the caller says where prefixes and
    claims are read (the database, or memory for the broker's checks)."""
    fixed = reserved(client_id) or prefix_owner(client_id)
    if fixed is not None or not claimable(client_id):
        return fixed
    username = claimed_by(client_id)
    return Owner(username) if username is not None else None


def probe_id(username: str) -> str:
    """A fresh client id for one Test service round trip of `username`."""
    return f"{username}{PROBE_INFIX}{secrets.token_hex(4)}"


def reserved(client_id: str) -> Owner | None:
    """The service account, when `client_id` is one of the ids the service itself uses."""
    service = settings.MONITOR_USERNAME
    if client_id == settings.MONITOR_CLIENT_ID or client_id.startswith(service + PROBE_INFIX):
        return Owner(service, Owner.Why.RESERVED)
    return None


def reserved_overlap(prefix: str) -> bool:
    """Would a client id prefix cover (or sit inside) the ids reserved for the service?"""
    probes = settings.MONITOR_USERNAME + PROBE_INFIX
    return settings.MONITOR_CLIENT_ID.startswith(prefix) or overlap(prefix, probes)


def claimable(client_id: str) -> bool:
    """Can this id be claimed by the account using it? Not an empty one, nor the broker's own
    (random, per connection), nor one too long to store."""
    auto = settings.MQTT_AUTO_ID_PREFIX
    return (
        bool(client_id)
        and len(client_id) <= MAX_LENGTH
        and not (auto and client_id.startswith(auto))
    )


class PrefixIndex:
    """Which account's prefix covers a client id. Prefixes never overlap (Account.clean), so
    the only candidate is the greatest prefix sorting at or before the id."""

    def __init__(self, owners: Iterable[tuple[str, str]]) -> None:
        pairs = sorted(owners)
        self._prefixes = [prefix for prefix, _username in pairs]
        self._usernames = [username for _prefix, username in pairs]

    def owner(self, client_id: str) -> Owner | None:
        at = bisect.bisect_right(self._prefixes, client_id) - 1
        if at >= 0 and client_id.startswith(self._prefixes[at]):
            return Owner(self._usernames[at], Owner.Why.PREFIX)
        return None


def overlap(a: str, b: str) -> bool:
    """Is one of two prefixes a prefix of the other (one id could be under both)?"""
    return a.startswith(b) or b.startswith(a)
