"""Compiled ACL subjects and client-id owners kept in memory, so that a steady-state ACL check
costs no query.

The broker's side of the policy: `policy.explain_acl()` decides an ACL check from the subject
that `policy.lookup()` keeps in memory and the owner of the client id that `policy.owner()`
keeps; people ask the database side, `Account.objects.explain_acl()`, which gives the same
answer read fresh.

Each process keeps the subjects and owners it has needed. At most every
POLICY_REFRESH_SECONDS, the next check runs one cheap query (`policy_fingerprint`) and drops
everything when accounts, groups, memberships or rules changed in the database. That works
across any number of Gunicorn workers and hosts, since the database is the only shared state:
a change made in the admin or the API reaches every process within POLICY_REFRESH_SECONDS of
its commit.

Owners are kept only once known (an id's owner changes only when an operator releases it,
which is a policy change), so the claims of a reconnect storm, new rows in a table the
fingerprint does not watch, flush nothing. An id nobody owns yet is claimed for the account
asking, when it may use it: a login through go-auth's cache reaches Django only here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from django.conf import settings

from brokerauth import acl, clientids, topics
from brokerauth.models import Account, ClientId, policy_fingerprint

_LIMIT = 100_000


class PolicyCache:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._subjects: dict[str, acl.Subject | None] = {}
        self._owners: dict[str, str] = {}
        self._prefixes: clientids.PrefixIndex | None = None
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
        subject = self.lookup(username)
        owner = None
        if subject is not None and subject.active and _may_use(subject, clientid):
            owner = self.owner(clientid, claimant=subject)
        return acl.decide(subject, clientid, topic, access, dialect, owner=owner)

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

    def owner(self, clientid: str, claimant: acl.Subject | None = None) -> acl.Owner | None:
        """Whom `clientid` belongs to, from memory (a query only when not known yet); a free
        one becomes `claimant`'s."""
        self._refresh_if_due()
        prefixes = self._prefix_index()
        return clientids.owner(clientid, prefixes.owner, lambda c: self._claimed_by(c, claimant))

    def _claimed_by(self, clientid: str, claimant: acl.Subject | None) -> str | None:
        username = self._owners.get(clientid)
        if username is not None:
            return username
        username = ClientId.objects.claimed_by(clientid)
        if username is None and claimant is not None and claimant.account_id is not None:
            owner = ClientId.objects.claim(
                clientid, account_id=claimant.account_id, username=claimant.username
            )
            username = owner.username
        if username is not None:
            if len(self._owners) >= _LIMIT:
                self._owners = {}
            self._owners[clientid] = username
        return username

    def clear(self) -> None:
        self._subjects = {}
        self._owners = {}
        self._prefixes = None
        self._checked_at = float("-inf")

    def _prefix_index(self) -> clientids.PrefixIndex:
        index = self._prefixes
        if index is None:
            index = self._prefixes = Account.objects.prefix_index()
        return index

    def _refresh_if_due(self) -> None:
        now = self._clock()
        if now - self._checked_at < settings.POLICY_REFRESH_SECONDS:
            return
        with self._lock:
            if now - self._checked_at < settings.POLICY_REFRESH_SECONDS:
                return
            fingerprint = policy_fingerprint()
            if fingerprint != self._fingerprint:
                self._subjects, self._owners, self._prefixes = {}, {}, None
                self._fingerprint = fingerprint
            self._checked_at = now


def _may_use(subject: acl.Subject, clientid: str) -> bool:
    """Do the subject's own limits (binding, prefix) let it use `clientid`? Only then is the
    owner worth looking up (or claiming)."""
    bound, prefix = subject.client_id, subject.client_id_prefix
    return acl.client_id_refusal(subject.username, clientid, bound=bound, prefix=prefix) is None


policy = PolicyCache()
