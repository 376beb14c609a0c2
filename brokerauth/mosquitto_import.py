"""A plain Mosquitto's password_file and acl_file brought into the policy, with the answers
Mosquitto 2.0.11 gives (src/security_default.c and security.c read for this).

How Mosquitto decides an ACL check, and the rules (acl.py: the matching rule of highest
priority decides, deny beats allow at equal priority, no match denies) that give the same
answer:

- Before any acl_file or plugin, the broker refuses a PUBLISH to `$SYS/...` (but bridge
  states) and anything but SUBSCRIBE on `$share/...`. It does the same in front of the
  project's plugin, so no rule is needed for it.
- The acl_file check answers "allowed" to every SUBSCRIBE (a FIXME in 2.0's source): any
  filter is granted, each message is checked with `read` as it is delivered. Here: the
  everyone group may SUBSCRIBE to `#`, `$SYS/#` and every other `$` level the file names
  (`#` does not reach `$` topics), at SUBSCRIBE_PRIORITY, above every other rule.
- `read`, `write`, `readwrite` are RECEIVE, PUBLISH, ALL (ALL's subscribe changes nothing).
- The user's own `topic` lines first: a matching `deny` refuses (Mosquitto moves deny lines
  to the front), else a matching line with the access allows. Here: the account's rules,
  deny at USER_DENY, allow at USER_ALLOW.
- Then, if the file has any `pattern` line, a username or client id holding `+` or `#` is
  refused outright (`/` is not). Here: such accounts stay out of the everyone group, and get
  their SUBSCRIBE rules of their own.
- Then the `pattern` lines, `%u` and `%c` replaced as text: a matching deny refuses, else a
  match with the access allows. Here: rules of the everyone group, deny at PATTERN_DENY,
  allow at PATTERN_ALLOW. The service replaces only a whole level and never with a value
  holding `/`; where Mosquitto would do more (`dev-%u`, a username `site/7`), the pattern is
  written out for each account as its own rule at the same priority. A `%c` inside a level
  cannot be written out (client ids are not known): reported.
- Nothing matched: refused, here too.
- `topic` lines before any `user` line are for clients without a username, which the service
  never lets in (the plugin refuses them before asking): reported, not imported. `%u` / `%c`
  in a `topic` line are plain text to Mosquitto and would be replaced here: reported.

What stays different, because a rule cannot say it: a client id holding `+` or `#` loses
every pattern in Mosquitto, here only the `%c` ones; a client id holding `/` is replaced as
text there and matches nothing here; a SUBSCRIBE to a `$` level the file never names
(`$foo/#`) is granted there (and can never receive anything) and refused here; accounts
created later are not in the everyone group until an operator adds them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.core.exceptions import ValidationError
from django.db import transaction

from brokerauth import names
from brokerauth.acl import Access
from brokerauth.models import Account, Change, Group, Membership, Rule
from brokerauth.mosquitto_files import ACL_FILE, PASSWORD_FILE, AclLine, PasswordEntry, Problem

SUBSCRIBE_PRIORITY = 40
USER_DENY = 30
USER_ALLOW = 20
PATTERN_DENY = 10
PATTERN_ALLOW = 0
EVERYONE_GROUP = "everyone"
IMPORTED = "Imported from a Mosquitto password_file."
ACCESS = {"read": Access.RECEIVE, "write": Access.PUBLISH, "readwrite": Access.ALL}
# Mosquitto refuses every pattern to a client whose username holds one of these.
DANGEROUS = frozenset("+#")


@dataclass(frozen=True)
class PlannedRule:
    """A rule the import makes: of an account (`account`) or of the group (`group`)."""

    pattern: str
    access: Access
    allow: bool
    priority: int
    account: str = ""
    group: str = ""
    line: int = 0

    @property
    def owner(self) -> str:
        return f"account {self.account}" if self.account else f"group {self.group}"

    @property
    def description(self) -> str:
        if self.line:
            return f"acl_file line {self.line}"
        return "Mosquitto's acl_file grants every SUBSCRIBE"

    def __str__(self) -> str:
        verb = "allow" if self.allow else "deny"
        names = "/".join(a.label for a in Access if a in self.access and a != Access.ALL)
        return f"{verb} {names} {self.pattern} priority {self.priority} ({self.owner})"


@dataclass
class Plan:
    """What the two files become: the password entries by username, the everyone group's
    members, the rules, and the lines that cannot be carried over."""

    passwords: dict[str, PasswordEntry] = field(default_factory=dict)
    members: list[str] = field(default_factory=list)
    rules: list[PlannedRule] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    group: str = EVERYONE_GROUP


def plan(
    *,
    passwords: list[PasswordEntry],
    acl: list[AclLine],
    existing: set[str],
    group: str = EVERYONE_GROUP,
) -> Plan:
    """Translate parsed files; `existing` are the usernames the service has already (a
    `user` block may name one that the password_file lacks)."""
    result = Plan(passwords={entry.username: entry for entry in passwords}, group=group)
    named = {line.user for line in acl if line.user is not None}
    accounts = sorted(set(result.passwords) | (named & existing))
    result.members = [name for name in accounts if not DANGEROUS & set(name)]
    result.rules = _subscribe_rules(acl, accounts, group)
    for line in acl:
        if line.kind == "topic":
            translated = _user_rules(line, accounts)
        else:
            translated = _pattern_rules(line, result.members, group)
        if isinstance(translated, str):
            problem = Problem(ACL_FILE, line.line, line.text, translated)
            result.problems.append(problem)
        else:
            result.rules.extend(translated)
    return result


def _subscribe_rules(acl: list[AclLine], accounts: list[str], group: str) -> list[PlannedRule]:
    dollar = {line.topic.split("/", 1)[0] for line in acl if line.topic.startswith("$")}
    filters = ["#", *(f"{level}/#" for level in sorted({"$SYS"} | dollar - {"$share"}))]
    owners = [("", group)] + [(name, "") for name in accounts if DANGEROUS & set(name)]
    return [
        PlannedRule(pattern, Access.SUBSCRIBE, True, SUBSCRIBE_PRIORITY, account, group_name)
        for account, group_name in owners
        for pattern in filters
    ]


def _user_rules(line: AclLine, accounts: list[str]) -> list[PlannedRule] | str:
    if line.user is None:
        return "for clients without a username (before any user line): the service has none"
    if "%u" in line.topic or "%c" in line.topic:
        return "%u and %c are plain text in a topic line (only pattern lines replace them)"
    if line.user not in accounts:
        return f"no account {line.user!r} (not in the password_file)"
    deny = line.access == "deny"
    return [_rule(line, line.topic, deny, USER_DENY if deny else USER_ALLOW, account=line.user)]


def _pattern_rules(line: AclLine, members: list[str], group: str) -> list[PlannedRule] | str:
    levels = line.topic.split("/")
    if any("%c" in level and level != "%c" for level in levels):
        return "%c inside a level: the service replaces whole levels only"
    deny = line.access == "deny"
    priority = PATTERN_DENY if deny else PATTERN_ALLOW
    if any("%u" in level and level != "%u" for level in levels):
        return [_expanded(line, name, deny, priority) for name in members]
    rules = [_rule(line, line.topic, deny, priority, group=group)]
    if "%u" in levels:
        # Mosquitto puts "site/7" in for %u as text; the service never matches such a value.
        rules += [_expanded(line, name, deny, priority) for name in members if "/" in name]
    return rules


def _expanded(line: AclLine, username: str, deny: bool, priority: int) -> PlannedRule:
    return _rule(line, line.topic.replace("%u", username), deny, priority, account=username)


def _rule(line: AclLine, pattern: str, deny: bool, priority: int, **owner: str) -> PlannedRule:
    access = Access.ALL if deny else ACCESS[line.access]
    return PlannedRule(pattern, access, not deny, priority, line=line.line, **owner)


# -- applying ----------------------------------------------------------------------------------
@transaction.atomic
def apply(result: Plan, *, dry_run: bool = False) -> list[str]:
    """Make the policy hold the plan and say what changed; nothing that is already there is
    touched, so a second run changes nothing. A dry run changes the same things inside the
    transaction and rolls it back. Rules the database refuses join `result.problems`."""
    changes = _accounts(result) + _group(result) + _rules(result)
    if changes:
        Change.objects.note_policy("imported from Mosquitto files")
    if dry_run:
        transaction.set_rollback(True)
    return changes


def _accounts(result: Plan) -> list[str]:
    changes: list[str] = []
    usernames = sorted(result.passwords)
    current = dict(
        Account.objects.filter(username__in=usernames).values_list("username", "password_hash")
    )
    for username in usernames:
        entry = result.passwords[username]
        if current.get(username) == entry.hash:
            continue
        account = Account.objects.filter(username=username).first()
        verb = "hash replaced by the password_file's" if account else "created, hash kept"
        account = account or Account(username=username, description=IMPORTED)
        try:
            with transaction.atomic():
                account.import_hash(entry.hash)
        except ValidationError as exc:
            reason = "; ".join(exc.messages)
            result.problems.append(Problem(PASSWORD_FILE, entry.line, username, reason))
            continue
        if (wrong := names.problem(username)) is not None:
            # Kept, as the devices log in with it (Account.import_hash); say so.
            verb += f"; its name {wrong}, which a new account's may not"
        changes.append(f"account {username}: {verb}")
    return changes


def _group(result: Plan) -> list[str]:
    group, created = Group.objects.get_or_create(
        name=result.group,
        defaults={"description": "Everyone of the Mosquitto acl_file: its pattern lines."},
    )
    changes = [f"group {group.name}: created"] if created else []
    for account in Account.objects.filter(username__in=result.members):
        _membership, added = Membership.objects.get_or_create(account=account, group=group)
        if added:
            changes.append(f"group {group.name}: {account.username} added")
    return changes


def _rules(result: Plan) -> list[str]:
    changes = []
    accounts = {a.username: a for a in Account.objects.filter(username__in=_owners(result))}
    group = Group.objects.get(name=result.group)
    for planned in result.rules:
        if planned.account and planned.account not in accounts:
            continue  # its account could not be created: already a problem
        owner = {"account": accounts[planned.account]} if planned.account else {"group": group}
        fields = {"pattern": planned.pattern, "access": int(planned.access)}
        fields |= {"allow": planned.allow, "priority": planned.priority}
        if Rule.objects.filter(**owner, **fields).exists():
            continue
        rule = Rule(**owner, **fields, description=planned.description)
        try:
            rule.full_clean()
        except ValidationError as exc:
            problem = Problem(ACL_FILE, planned.line, planned.pattern, "; ".join(exc.messages))
            result.problems.append(problem)
            continue
        rule.save()
        changes.append(f"rule added: {planned}")
    return changes


def _owners(result: Plan) -> set[str]:
    return {planned.account for planned in result.rules if planned.account}
