"""MQTT topic names and filters: validation, matching, and filter-versus-filter coverage.

Plain Python, no Django. A pattern is a topic filter whose levels may also be `%u` or `%c`,
standing for the whole level and replaced by the username or the client id.

A `Dialect` says how a broker reads topics where brokers differ. Mosquitto is MQTT itself.
RabbitMQ routes MQTT through an AMQP topic exchange: `/` becomes `.`, so a `.` inside a level
splits it (`a.b/c` is delivered as `a/b/c`), `$share/` is an ordinary topic, and a
subscription is checked once, never each delivery.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_TOPIC_BYTES = 65535
SHARE_PREFIX = "$share/"
USERNAME_LEVEL = "%u"
CLIENTID_LEVEL = "%c"
# A level substituted from a username or client id that could act as a wildcard or a
# separator never matches anything: a device named "+" must not gain "devices/+/#".
_UNSAFE_VALUE_CHARS = frozenset("+#/\0")
NEVER = object()


class TopicError(ValueError):
    """A topic name or filter that MQTT itself would reject."""


@dataclass(frozen=True)
class Dialect:
    name: str
    separators: str = "/"
    shared_subscriptions: bool = True
    # False: the broker asks about a subscription and never about each message it then
    # delivers, so a subscription must also be allowed to receive all it can match.
    checks_deliveries: bool = True

    def levels(self, text: str) -> list[str]:
        for separator in self.separators[1:]:
            text = text.replace(separator, "/")
        return text.split("/")

    def normalize(self, text: str) -> str:
        """The topic as this broker delivers it, written with `/` only."""
        if self.separators == "/":
            return text  # the hot path: every ACL check
        return "/".join(self.levels(text))


MOSQUITTO = Dialect("mosquitto")
RABBITMQ = Dialect("rabbitmq", separators="/.", shared_subscriptions=False, checks_deliveries=False)
DIALECTS = {dialect.name: dialect for dialect in (MOSQUITTO, RABBITMQ)}


def _check_common(text: str, what: str) -> None:
    if not text:
        raise TopicError(f"empty {what}")
    if "\0" in text:
        raise TopicError(f"{what} contains a NUL character")
    if len(text.encode("utf-8", "surrogatepass")) > MAX_TOPIC_BYTES:
        raise TopicError(f"{what} longer than {MAX_TOPIC_BYTES} bytes")


def validate_topic(topic: str) -> None:
    """Raise TopicError unless `topic` is a valid topic name (no wildcards)."""
    _check_common(topic, "topic")
    if "+" in topic or "#" in topic:
        raise TopicError("topic name contains a wildcard")


def validate_filter(topic_filter: str) -> None:
    """Raise TopicError unless `topic_filter` is a valid subscription filter."""
    _check_common(topic_filter, "filter")
    levels = topic_filter.split("/")
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != len(levels) - 1):
            raise TopicError("'#' must be a whole level and the last one")
        if "+" in level and level != "+":
            raise TopicError("'+' must be a whole level")


def validate_pattern(pattern: str) -> None:
    """A rule pattern: a filter whose `%u` / `%c` may only stand for a whole level."""
    validate_filter(pattern)
    for level in pattern.split("/"):
        if ("%u" in level or "%c" in level) and level not in (USERNAME_LEVEL, CLIENTID_LEVEL):
            raise TopicError("%u and %c must stand for a whole level")


def strip_share(topic_filter: str) -> str:
    """`$share/<group>/<filter>` -> `<filter>`; anything else unchanged."""
    if not topic_filter.startswith(SHARE_PREFIX):
        return topic_filter
    parts = topic_filter.split("/", 2)
    if len(parts) < 3 or not parts[1] or not parts[2]:
        raise TopicError("malformed shared subscription")
    return parts[2]


def expand(
    pattern: str, username: str, clientid: str, dialect: Dialect = MOSQUITTO
) -> list[object]:
    """The levels of a rule pattern with %u / %c replaced; unsafe values become NEVER.

    Where `.` separates levels, a username `a.b` would be the two levels `a/b`, inside the
    topics of a device named `a`: there a value with a `.` is unsafe too.
    """
    unsafe_chars = _UNSAFE_VALUE_CHARS.union(dialect.separators)
    out: list[object] = []
    for level in dialect.levels(pattern):
        if level in (USERNAME_LEVEL, CLIENTID_LEVEL):
            value = username if level == USERNAME_LEVEL else clientid
            unsafe = not value or any(ch in unsafe_chars for ch in value)
            out.append(NEVER if unsafe else value)
        else:
            out.append(level)
    return out


def matches(rule_levels: list[object], topic: str) -> bool:
    """Does a rule (expanded levels) match a concrete topic name?"""
    topic_levels = topic.split("/")
    if topic.startswith("$") and rule_levels and rule_levels[0] in ("+", "#"):
        return False
    for index, level in enumerate(rule_levels):
        if level == "#":
            return True
        if index >= len(topic_levels) or level is NEVER:
            return False
        if level != "+" and level != topic_levels[index]:
            return False
    return len(rule_levels) == len(topic_levels)


def covers(rule_levels: list[object], topic_filter: str) -> bool:
    """Is every topic matched by `topic_filter` also matched by the rule?"""
    filter_levels = topic_filter.split("/")
    if rule_levels and rule_levels[0] in ("+", "#") and filter_levels[0].startswith("$"):
        return False
    for index, level in enumerate(rule_levels):
        if level == "#":
            return True
        if index >= len(filter_levels) or level is NEVER:
            return False
        wanted = filter_levels[index]
        if wanted == "#":
            return False
        if level != "+" and (wanted == "+" or level != wanted):
            return False
    return len(rule_levels) == len(filter_levels)


def overlaps(rule_levels: list[object], topic_filter: str) -> bool:
    """Could some topic be matched by both the rule and `topic_filter`?"""
    filter_levels = topic_filter.split("/")
    first_rule = rule_levels[0] if rule_levels else None
    if filter_levels[0].startswith("$") and first_rule in ("+", "#"):
        return False
    if _starts_with_dollar(rule_levels) and filter_levels[0] in ("+", "#"):
        return False
    for index, level in enumerate(rule_levels):
        if level == "#":
            return True
        if index >= len(filter_levels) or level is NEVER:
            return False
        wanted = filter_levels[index]
        if wanted == "#":
            return True
        if level != "+" and wanted != "+" and level != wanted:
            return False
    # "a/#" also matches "a" itself.
    if len(filter_levels) == len(rule_levels) + 1 and filter_levels[-1] == "#":
        return True
    return len(rule_levels) == len(filter_levels)


def _starts_with_dollar(rule_levels: list[object]) -> bool:
    first = rule_levels[0] if rule_levels else None
    return isinstance(first, str) and first.startswith("$")
