"""The ACL decision engine: who may publish, subscribe to or receive which topic, and why.

Plain Python, no database, so that the rules can be read and tested on their own. The models
compile accounts and rules into a `Subject`; `decide()` decides. Who asks: the broker's checks
through the in-memory cache (`brokerauth.policy`, `policy.explain_acl`), people through the
database (`Account.objects.explain_acl`: the UI, the API, `manage.py explain_acl`).

Evaluation: an inactive account is denied; so is a client id the account may not use
(`client_id_refusal`: its binding, its prefix, or an id that belongs to another account, which
the caller looks up, brokerauth/clientids.py); a superuser is allowed everything; otherwise the
matching rule of highest priority decides, a deny beating an allow at equal priority; when no
rule matches, the answer is deny. For a subscribe request the filter is compared as a filter:
an allow rule must cover every topic the filter can match, while a deny rule applies as soon
as the two overlap. `$share/<group>/` is stripped first. Topics are read in the asking
broker's dialect (`topics.Dialect`: Mosquitto's, or RabbitMQ's).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntFlag

from brokerauth import topics
from brokerauth.names import MAX_LENGTH


class Access(IntFlag):
    """go-auth's `acc` values; a rule's access is a combination of them.

    The one vocabulary of access: the rules' choices (`RULE_ACCESSES`), the names people type
    (`ACCESS_BY_NAME`: the API, the explain form, `manage.py explain_acl`) and the labels shown.
    """

    RECEIVE = 1
    PUBLISH = 2
    SUBSCRIBE = 4
    ALL = 7

    @property
    def label(self) -> str:
        return str(self.name).lower()


# What a rule may grant: the choices of Rule.access.
RULE_ACCESSES = (Access.RECEIVE, Access.PUBLISH, Access.SUBSCRIBE, Access.ALL)
# What one request asks for, in the order the explain form offers them.
REQUEST_ACCESSES = (Access.PUBLISH, Access.SUBSCRIBE, Access.RECEIVE)
# go-auth's documentation also says read and write.
ACCESS_BY_NAME = {
    **{access.label: access for access in RULE_ACCESSES},
    "read": Access.RECEIVE,
    "write": Access.PUBLISH,
}


def parse_access(value: str | int) -> Access:
    """An access from go-auth's integer (1, 2, 4) or a name; ValueError otherwise."""
    if isinstance(value, str) and value.strip().lower() in ACCESS_BY_NAME:
        return ACCESS_BY_NAME[value.strip().lower()]
    number = int(value)
    if number not in (1, 2, 4):
        raise ValueError(f"access must be 1, 2 or 4, not {number}")
    return Access(number)


@dataclass(frozen=True)
class Rule:
    pattern: str
    access: Access
    allow: bool
    priority: int = 0
    source: str = ""
    id: int | None = None

    def describe(self) -> str:
        verb = "allow" if self.allow else "deny"
        names = "/".join(a.label for a in Access if a in self.access and a != Access.ALL)
        where = f" ({self.source})" if self.source else ""
        return f"#{self.id} {verb} {names} {self.pattern} priority {self.priority}{where}"


@dataclass(frozen=True)
class Subject:
    """An account as the engine sees it: its flags, its client-id limits (a bound id, a
    prefix) and all its rules (own and groups')."""

    username: str
    active: bool = True
    superuser: bool = False
    rules: tuple[Rule, ...] = ()
    client_id: str = ""
    client_id_prefix: str = ""
    account_id: int | None = None

    def __post_init__(self) -> None:
        # Highest priority first, deny before allow: the first match decides.
        ordered = sorted(self.rules, key=lambda r: (-r.priority, r.allow))
        object.__setattr__(self, "rules", tuple(ordered))


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    rule: Rule | None = None


@dataclass(frozen=True)
class Owner:
    """The account a client id belongs to, and why (brokerauth/clientids.py finds it)."""

    class Why:
        RESERVED = "reserved for the service account"
        PREFIX = "under the client id prefix of account"
        CLAIMED = "in use by account"

    username: str
    why: str = Why.CLAIMED


def client_id_refusal(
    username: str, clientid: str, *, bound: str = "", prefix: str = "", owner: Owner | None = None
) -> str | None:
    """Why `username` may not use `clientid`, or None: at login and in every ACL check, so
    that a login cache keyed without the client id (go-auth's) cannot widen it."""
    if len(clientid) > MAX_LENGTH:
        return f"client id longer than {MAX_LENGTH} characters"
    if bound and clientid != bound:
        return f"account is bound to client id {bound!r}"
    if prefix and not clientid.startswith(prefix):
        return f"account may only use client ids starting with {prefix!r}"
    if owner is not None and owner.username != username:
        return f"client id {clientid!r} is {owner.why} {owner.username!r}"
    return None


def decide(
    subject: Subject | None,
    clientid: str,
    topic: str,
    access: Access,
    dialect: topics.Dialect = topics.MOSQUITTO,
    *,
    owner: Owner | None = None,
) -> Decision:
    """Decide one request and say why; `owner` is whom `clientid` belongs to, if anyone.
    Raises topics.TopicError on a malformed topic.

    For a broker that never asks about deliveries (`dialect.checks_deliveries` false), a
    subscribe is allowed only when receive is allowed for every topic the filter matches too.
    """
    is_filter = access == Access.SUBSCRIBE
    wanted = _wanted(topic, is_filter, dialect)
    if subject is None:
        return Decision(False, "unknown account")
    if not subject.active:
        return Decision(False, "account disabled")
    bound, prefix = subject.client_id, subject.client_id_prefix
    refusal = client_id_refusal(subject.username, clientid, bound=bound, prefix=prefix, owner=owner)
    if refusal is not None:
        return Decision(False, refusal)
    decision = _first_match(subject, clientid, wanted, access, is_filter, dialect)
    if not is_filter or dialect.checks_deliveries or not decision.allowed or not decision.rule:
        return decision
    receive = _first_match(subject, clientid, wanted, Access.RECEIVE, True, dialect)
    if not receive.allowed:
        return Decision(False, f"receive {receive.reason}, checked at subscribe", receive.rule)
    return decision


def _wanted(topic: str, is_filter: bool, dialect: topics.Dialect) -> str:
    wanted = dialect.normalize(topic)
    if not is_filter:
        topics.validate_topic(wanted)
        return wanted
    if dialect.shared_subscriptions:
        wanted = topics.strip_share(wanted)
    topics.validate_filter(wanted)
    return wanted


def _first_match(
    subject: Subject,
    clientid: str,
    wanted: str,
    access: Access,
    is_filter: bool,
    dialect: topics.Dialect,
) -> Decision:
    if subject.superuser:
        return Decision(True, "superuser")
    for rule in subject.rules:
        if access not in rule.access:
            continue
        levels = topics.expand(rule.pattern, subject.username, clientid, dialect)
        if _applies(rule, levels, wanted, is_filter):
            verb = "allowed" if rule.allow else "denied"
            return Decision(rule.allow, f"{verb} by rule {rule.describe()}", rule)
    return Decision(False, "no rule matched")


def decide_superuser(subject: Subject | None) -> Decision:
    """go-auth's superuser question: yes for an active superuser, no for everyone else."""
    if subject is not None and subject.active and subject.superuser:
        return Decision(True, "superuser")
    return Decision(False, "not a superuser")


def _applies(rule: Rule, levels: list[object], wanted: str, is_filter: bool) -> bool:
    if not is_filter:
        return topics.matches(levels, wanted)
    if rule.allow:
        return topics.covers(levels, wanted)
    return topics.overlaps(levels, wanted)
