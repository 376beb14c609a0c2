"""The auth decisions the broker asks for: may this client log in, is it a superuser, may it
publish / subscribe to / receive this topic. Each returns an `acl.Decision` and leaves a trace:
a log line on the `brokerauth.decision` logger and an audit row for every login and every
denial (allowed ACL checks are logged at DEBUG only, never written: they are the hot path).
"""

from __future__ import annotations

import logging

from django.utils import timezone

from brokerauth import acl, passwords
from brokerauth.models import Account, AuthEvent
from brokerauth.policy import policy

log = logging.getLogger("brokerauth.decision")


def check_login(username: str, password: str, clientid: str) -> acl.Decision:
    decision = _login(username, password, clientid)
    _audit(AuthEvent.Kind.LOGIN, decision, username, clientid)
    return decision


def _login(username: str, password: str, clientid: str) -> acl.Decision:
    now = timezone.now()
    account = Account.objects.filter(username=username).first()
    if account is None:
        passwords.burn(password)
        return acl.Decision(False, "unknown account")
    if account.is_locked(now):
        return acl.Decision(False, f"locked after failed logins until {account.locked_until}")
    if not account.is_active:
        passwords.burn(password)
        return acl.Decision(False, "account disabled")
    good = passwords.remembered(username, password, account.password_hash)
    if not good and account.check_password(password):
        passwords.remember(username, password, account.password_hash)
        good = True
    if not good:
        account.record_failure(now)
        return acl.Decision(False, "wrong password")
    if account.client_id and account.client_id != clientid:
        return acl.Decision(False, f"account is bound to client id {account.client_id!r}")
    account.record_success(now)
    return acl.Decision(True, "password verified")


def check_superuser(username: str) -> acl.Decision:
    subject = policy.subject(username)
    if subject is not None and subject.active and subject.superuser:
        return acl.Decision(True, "superuser")
    # go-auth asks this before every ACL check: a "no" here is routine, not worth a row.
    return acl.Decision(False, "not a superuser")


def check_acl(username: str, clientid: str, topic: str, access: acl.Access) -> acl.Decision:
    """Raises topics.TopicError on a malformed topic (the caller answers 400)."""
    decision = acl.explain(policy.subject(username), clientid, topic, access)
    if decision.allowed:
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "acl allow user=%.100r client=%.100r acc=%d topic=%.200r: %s",
                username,
                clientid,
                access,
                topic,
                decision.reason,
            )
        return decision
    _audit(AuthEvent.Kind.ACL, decision, username, clientid, topic, access)
    return decision


def explain(username: str, clientid: str, topic: str, access: acl.Access) -> acl.Decision:
    """The same decision as check_acl, read fresh from the database, without side effects."""
    return acl.explain(Account.objects.subject(username), clientid, topic, access)


def _audit(
    kind: str,
    decision: acl.Decision,
    username: str,
    clientid: str,
    topic: str = "",
    access: int | None = None,
) -> None:
    verdict = "allow" if decision.allowed else "deny"
    log.info(
        "%s %s user=%.100r client=%.100r acc=%s topic=%.200r: %s",
        kind,
        verdict,
        username,
        clientid,
        access,
        topic,
        decision.reason,
    )
    AuthEvent.objects.create(
        kind=kind,
        username=username[:255],
        client_id=clientid[:255],
        topic=topic[:1024],
        access=access,
        allowed=decision.allowed,
        reason=decision.reason[:500],
    )
