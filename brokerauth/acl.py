"""The ACL decision engine: who may publish, subscribe to or receive which topic, and why.

Plain Python, no Django, so that the rules can be read and tested on their own. The models
compile accounts and rules into a `Subject`; `decide()` decides. Who asks: the broker's checks
through the in-memory cache (`brokerauth.policy`, `policy.explain_acl`), people through the
database (`Account.objects.explain_acl`: the UI, the API, `manage.py explain_acl`).

Evaluation: an inactive account is denied; a superuser is allowed everything; otherwise the
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
    """An account as the engine sees it: its flags and all its rules (own and groups')."""

    username: str
    active: bool = True
    superuser: bool = False
    rules: tuple[Rule, ...] = ()

    def __post_init__(self) -> None:
        # Highest priority first, deny before allow: the first match decides.
        ordered = sorted(self.rules, key=lambda r: (-r.priority, r.allow))
        object.__setattr__(self, "rules", tuple(ordered))


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    rule: Rule | None = None


def decide(
    subject: Subject | None,
    clientid: str,
    topic: str,
    access: Access,
    dialect: topics.Dialect = topics.MOSQUITTO,
) -> Decision:
    """Decide one request and say why. Raises topics.TopicError on a malformed topic.

    For a broker that never asks about deliveries (`dialect.checks_deliveries` false), a
    subscribe is allowed only when receive is allowed for every topic the filter matches too.
    """
    is_filter = access == Access.SUBSCRIBE
    wanted = _wanted(topic, is_filter, dialect)
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
    subject: Subject | None,
    clientid: str,
    wanted: str,
    access: Access,
    is_filter: bool,
    dialect: topics.Dialect,
) -> Decision:
    if subject is None:
        return Decision(False, "unknown account")
    if not subject.active:
        return Decision(False, "account disabled")
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
