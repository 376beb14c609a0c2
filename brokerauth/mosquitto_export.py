"""The policy written back as a plain Mosquitto's password_file and acl_file, so that an
operator can run Mosquitto alone in a disaster, with the answers the service gives, or a list
of where they differ.

Mosquitto 2.0's acl_file has four ranks where the service has priorities (see
mosquitto_import.py): a user's `deny` lines, then its other `topic` lines, then the `pattern`
lines (which apply to everyone), deny before allow; and a `deny` refuses read and write
alike. The rules of a group every account is in (leaving out superusers and the usernames
Mosquitto refuses patterns to) become `pattern` lines; every other rule is written out in
each of its accounts' `user` blocks, `%u` replaced. Then, account by account, each allow
and deny that could meet on a topic is checked: where Mosquitto's ranks would let the other
one win than the priorities do, the pair is listed. Also listed: hashes Mosquitto cannot
read (bcrypt), account rules with `%c` (only `pattern` lines replace it), names a file
cannot hold. Said but not listed: superusers become `readwrite` on `#` and `$SYS/#`,
client-id bindings and disabled accounts have no equivalent (disabled ones are left out),
and every SUBSCRIBE is granted (Mosquitto checks reads as messages are delivered).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from itertools import product

from django.utils import timezone

from brokerauth import passwords, topics
from brokerauth.acl import Access
from brokerauth.models import Account, Membership, Rule
from brokerauth.mosquitto_files import password_line, topic_line, unwritable_name

DANGEROUS = frozenset("+#")
UNSAFE_VALUE = frozenset("+#/")
READ_WRITE = (Access.RECEIVE, Access.PUBLISH)
USER, PATTERN = "topic", "pattern"
RULE_WORDS = (f"{USER} ", f"{PATTERN} ")
# Mosquitto's order of evaluation: the higher decides.
RANK = {(USER, False): 3, (USER, True): 2, (PATTERN, False): 1, (PATTERN, True): 0}


@dataclass(frozen=True)
class Line:
    """A rule as the acl_file says it: `kind` topic (in a user block) or pattern."""

    kind: str
    topic: str
    rule: Rule

    @property
    def rank(self) -> int:
        return RANK[self.kind, self.rule.allow]


@dataclass
class Export:
    password_file: str = ""
    acl_file: str = ""
    accounts: int = 0
    rules: int = 0
    left_out: list[str] = field(default_factory=list)
    said: list[str] = field(default_factory=list)


def export() -> Export:
    """Both files from the policy as it is now, and what could not be carried over."""
    result = Export()
    accounts = [a for a in Account.objects.order_by("username") if _writable(a, result)]
    rules = list(Rule.objects.select_related("account", "group"))
    groups_of: dict[int, set[int]] = defaultdict(set)
    for account_id, group_id in Membership.objects.values_list("account_id", "group_id"):
        groups_of[account_id].add(group_id)
    patterns = _pattern_lines(accounts, rules, groups_of, result)
    blocks = {a.username: _user_lines(a, rules, groups_of, patterns, result) for a in accounts}
    result.password_file = "".join(_password_lines(accounts, result))
    result.acl_file = _render(patterns, blocks)
    result.rules = sum(1 for line in result.acl_file.splitlines() if line.startswith(RULE_WORDS))
    if any(not access_rw(rule.access) for rule in rules):
        result.said.append("SUBSCRIBE rules: Mosquitto's acl_file grants every SUBSCRIBE")
    return result


def access_rw(access: int) -> list[Access]:
    """The parts of a rule's access an acl_file can say: read (receive) and write (publish)."""
    return [part for part in READ_WRITE if part in Access(access)]


def _writable(account: Account, result: Export) -> bool:
    name = account.username
    if not account.is_active:
        result.said.append(f"account {name}: disabled, left out")
        return False
    why = unwritable_name(name) or ("it holds ':'" if ":" in name else "")
    why = why or ("it starts with '#'" if name.startswith("#") else "")
    if why:
        result.left_out.append(f"account {name!r}: left out, {why}")
    return not why


def _password_lines(accounts: list[Account], result: Export) -> list[str]:
    lines = []
    for account in accounts:
        if not passwords.mosquitto_can_read(account.password_hash):
            algorithm = passwords.algorithm(account.password_hash)
            result.left_out.append(
                f"account {account.username}: {algorithm}, which Mosquitto cannot read: give it "
                "a password with mosquitto_passwd, or reset it here (generated secrets are $7$)"
            )
            continue
        if account.client_id:
            result.said.append(
                f"account {account.username}: Mosquitto cannot bind it to client id "
                f"{account.client_id!r}"
            )
        if account.client_id_prefix:
            result.said.append(
                f"account {account.username}: Mosquitto cannot limit it to client ids starting "
                f"with {account.client_id_prefix!r}"
            )
        lines.append(password_line(account.username, account.password_hash))
        result.accounts += 1
    return lines


def _pattern_lines(
    accounts: list[Account], rules: list[Rule], groups_of: dict[int, set[int]], result: Export
) -> list[Line]:
    """The rules of the groups every account is in, as `pattern` lines."""
    plain = [a for a in accounts if not a.is_superuser and not DANGEROUS & set(a.username)]
    if not plain:
        return []
    everyone = set.intersection(*(groups_of[a.pk] for a in plain))
    lines = []
    for rule in rules:
        if rule.group_id not in everyone or not access_rw(rule.access):
            continue
        if unwritable_name(rule.pattern):
            result.left_out.append(f"rule {rule}: {unwritable_name(rule.pattern)}")
        else:
            lines.append(Line(PATTERN, rule.pattern, rule))
    for account in accounts:
        if lines and DANGEROUS & set(account.username) and groups_of[account.pk] & everyone:
            result.left_out.append(
                f"account {account.username}: Mosquitto refuses every pattern line to a "
                "username with + or #"
            )
    return lines


def _user_lines(
    account: Account,
    rules: list[Rule],
    groups_of: dict[int, set[int]],
    patterns: list[Line],
    result: Export,
) -> list[Line]:
    """The account's own rules and those of its other groups, in its `user` block."""
    if account.is_superuser:
        result.said.append(f"account {account.username}: superuser, readwrite on # and $SYS/#")
        everything = Rule(pattern="#", access=Access.ALL, allow=True)
        return [Line(USER, topic, everything) for topic in ("#", "$SYS/#")]
    pattern_rules = {line.rule.pk for line in patterns}
    mine = [
        rule
        for rule in rules
        if (rule.account_id == account.pk or rule.group_id in groups_of[account.pk])
        and rule.pk not in pattern_rules
        and access_rw(rule.access)
    ]
    lines = [line for rule in mine if (line := _user_line(account, rule, patterns, result))]
    if not DANGEROUS & set(account.username):
        _check_order(account, lines + patterns, result)
        _check_textual(account, mine, patterns, result)
    return lines


def _user_line(account: Account, rule: Rule, patterns: list[Line], result: Export) -> Line | None:
    levels = rule.pattern.split("/")
    topic = rule.pattern
    if "%u" in levels:
        if UNSAFE_VALUE & set(account.username):
            return None  # the service never matches such a %u: nor does an absent line
        topic = "/".join(account.username if level == "%u" else level for level in levels)
    bound = account.client_id
    if "%c" in levels and bound:
        if UNSAFE_VALUE & set(bound):
            return None  # as for %u: never matched here
        # The login binds the client id: %c can only ever be this one.
        topic = "/".join(bound if level == "%c" else level for level in topic.split("/"))
    elif "%c" in levels:
        result.left_out.append(
            f"account {account.username}: rule {rule}: %c is replaced in pattern lines "
            "only, which apply to everyone"
        )
        return None
    if unwritable_name(topic):
        result.left_out.append(f"rule {rule}: {unwritable_name(topic)}")
        return None
    if _copies_a_pattern(account, rule, topic, patterns):
        return None
    return Line(USER, topic, rule)


def _copies_a_pattern(account: Account, rule: Rule, topic: str, patterns: list[Line]) -> bool:
    """A rule the import wrote out for a username Mosquitto's pattern already covers
    (`site/7` for `%u`): its pattern line does it."""
    return any(
        line.topic.replace("%u", account.username) == topic and _same_effect(line.rule, rule)
        for line in patterns
    )


def _same_effect(one: Rule, other: Rule) -> bool:
    return (one.access, one.allow, one.priority) == (other.access, other.allow, other.priority)


def _check_textual(
    account: Account, mine: list[Rule], patterns: list[Line], result: Export
) -> None:
    """Mosquitto puts a username holding "/" in for %u as text, which the service never does:
    the same only where the account has that rule written out (the import does)."""
    if "/" not in account.username:
        return
    for line in patterns:
        if "%u" not in line.topic.split("/"):
            continue
        topic = line.topic.replace("%u", account.username)
        if not any(r.pattern == topic and _same_effect(r, line.rule) for r in mine):
            result.left_out.append(
                f"account {account.username}: Mosquitto's pattern line {line.topic!r} matches "
                f"{topic!r} for it, the service's rule {line.rule} does not"
            )


def _check_order(account: Account, lines: list[Line], result: Export) -> None:
    allows = [line for line in lines if line.rule.allow]
    denies = [line for line in lines if not line.rule.allow]
    for allow, deny in product(allows, denies):
        if _decides_otherwise(allow, deny) and _meet(account, allow, deny):
            result.left_out.append(
                f"account {account.username}: rules {deny.rule} and {allow.rule} meet on "
                f"some topic, and Mosquitto's order ({_where(deny)}, {_where(allow)}) "
                "picks the other one"
            )


def _decides_otherwise(allow: Line, deny: Line) -> bool:
    """Would Mosquitto and the service pick different winners where both match?"""
    mosquitto_denies = deny.rank > allow.rank
    for access in access_rw(allow.rule.access):
        applies = access in Access(deny.rule.access)
        service_denies = applies and deny.rule.priority >= allow.rule.priority
        if service_denies != mosquitto_denies:
            return True
    return False


def _meet(account: Account, one: Line, other: Line) -> bool:
    """Could one topic match both? %u as the username, %c as any one level."""

    def text(line: Line) -> str:
        names = {"%u": account.username, "%c": "+"}
        return "/".join(names.get(level, level) for level in line.topic.split("/"))

    return topics.overlaps(list(text(one).split("/")), text(other))


def _where(line: Line) -> str:
    return f"{line.kind} line {line.topic!r}"


def _render(patterns: list[Line], blocks: dict[str, list[Line]]) -> str:
    stamp = timezone.now().strftime("%Y-%m-%d %H:%M:%S UTC")
    out = [f"# Written by manage.py export_mosquitto at {stamp}.\n"]
    out += [topic_line(kind, access, topic) for kind, access, topic in _merged(patterns)]
    for username, lines in blocks.items():
        if lines:
            out.append(f"\nuser {username}\n")
            out += [topic_line(kind, access, topic) for kind, access, topic in _merged(lines)]
    return "".join(out)


def _merged(lines: list[Line]) -> list[tuple[str, str, str]]:
    """One line per topic and verdict: read and write of one topic are `readwrite`."""
    allowed: dict[tuple[str, str], set[Access]] = defaultdict(set)
    denied: set[tuple[str, str]] = set()
    for line in lines:
        key = (line.kind, line.topic)
        if line.rule.allow:
            allowed[key].update(access_rw(line.rule.access))
        else:
            denied.add(key)
    words = {1: "read", 2: "write", 3: "readwrite"}
    merged = [(kind, "deny", topic) for kind, topic in sorted(denied)]
    for (kind, topic), parts in sorted(allowed.items()):
        merged.append((kind, words[sum(map(int, parts))], topic))
    return merged
