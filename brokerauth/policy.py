"""Compiled ACL subjects kept in memory, so that a steady-state ACL check costs no query.

The broker's side of the policy: `policy.explain_acl()` decides an ACL check from the subject
that `policy.lookup()` keeps in memory; people ask the database side,
`Account.objects.explain_acl()`, which gives the same answer read fresh.

Each process keeps the subjects it has needed. At most every POLICY_REFRESH_SECONDS, the
next check runs one cheap query (`policy_fingerprint`) and drops everything when accounts,
groups, memberships or rules changed in the database. That works across any number of
Gunicorn workers and hosts, since the database is the only shared state: a change made in
the admin or the API reaches every process within POLICY_REFRESH_SECONDS of its commit.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from django.conf import settings

from brokerauth import acl, topics
from brokerauth.models import Account, policy_fingerprint

_LIMIT = 100_000


class PolicyCache:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._subjects: dict[str, acl.Subject | None] = {}
        self._fingerprint: tuple[object, ...] | None = None
        self._checked_at = float("-inf")

    def explain_acl(
        self,
        username: str,
        clientid: str,
        topic: str,
        access: acl.Access,
        dialect: topics.Dialect = topics.MOSQUITTO,
    ) -> acl.Decision:
        """The broker's ACL check, in the asking broker's dialect. Raises topics.TopicError on
        a malformed topic."""
        return acl.decide(self.lookup(username), clientid, topic, access, dialect)

    def lookup(self, username: str) -> acl.Subject | None:
        """The account's compiled subject, from memory (a query only when not cached)."""
        self._refresh_if_due()
        try:
            return self._subjects[username]
        except KeyError:
            pass
        subject = Account.objects.subject(username)
        if len(self._subjects) >= _LIMIT:
            self._subjects = {}
        self._subjects[username] = subject
        return subject

    def clear(self) -> None:
        self._subjects = {}
        self._checked_at = float("-inf")

    def _refresh_if_due(self) -> None:
        now = self._clock()
        if now - self._checked_at < settings.POLICY_REFRESH_SECONDS:
            return
        with self._lock:
            if now - self._checked_at < settings.POLICY_REFRESH_SECONDS:
                return
            fingerprint = policy_fingerprint()
            if fingerprint != self._fingerprint:
                self._subjects = {}
                self._fingerprint = fingerprint
            self._checked_at = now


policy = PolicyCache()
