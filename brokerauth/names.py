"""What a new username or client id may hold (issue 9): the rule of every place that creates one.

MQTT lets both be almost any UTF-8 string. Here they also stand for whole topic levels in
rules (`%u`, `%c`), appear in URLs, the UI and the audit, and go to the database. So the
names the service creates (an account's username, its bound client id, its client id prefix)
are held to less: no MQTT wildcard or topic separator (`+`, `#`, `/`), no leading `$` (a
`%u/#` rule would become a `$SYS/#` one), no `..`, no whitespace, no control, format or
private-use character, no lone surrogate or Unicode noncharacter, at most MAX_LENGTH
characters. The model fields carry these validators, so the admin, the UI, the API and the
commands refuse such a name with the same message; rows made before keep working
(Account.clean_fields only checks a value that changes), and so do the names of an imported
Mosquitto password_file (Account.import_hash: its devices already log in with them). Devices
choose their client ids themselves: those are not refused for their characters (a `%c` level
never matches one with a wildcard or a separator, brokerauth/topics.py), only for what cannot
be owned (brokerauth/clientids.py).
"""

from __future__ import annotations

import unicodedata

from django.core.exceptions import ValidationError

MAX_LENGTH = 255  # the database columns
INVALID = "invalid_name"  # the code of these validators' errors
_TOPIC_CHARACTERS = "+#/"
# For the API's schema: names of these characters only, dots single and inside, all of which
# problem() accepts (a subset: it accepts more, other letters of other scripts among them).
_SAFE = r"A-Za-z0-9_:@\-\u00c0-\u024f"
SCHEMA_PATTERN = f"^[{_SAFE}]+(\\.[{_SAFE}]+)*$"
# Control, format (bidirectional overrides, zero-width), surrogate, private use; line and
# paragraph separators. Spaces are refused separately (str.isspace).
_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})


def problem(value: str) -> str | None:
    """What is wrong with `value` as a username or client id, or None."""
    if len(value) > MAX_LENGTH:
        return f"is longer than {MAX_LENGTH} characters"
    for ch in value:
        if ch in _TOPIC_CHARACTERS:
            return f"contains {ch!r}, an MQTT wildcard or the topic separator"
        if ch.isspace():
            return "contains whitespace"
        if unicodedata.category(ch) in _CATEGORIES or _noncharacter(ch):
            return f"contains the character U+{ord(ch):04X}, which names may not hold"
    if value.startswith("$"):
        return "starts with '$', which MQTT keeps for the broker's own topics"
    if ".." in value:
        return "contains '..'"
    return None


def validate_username(value: str) -> None:
    if (wrong := problem(value)) is not None:
        raise ValidationError(f"This username {wrong}.", code=INVALID)


def validate_client_id(value: str) -> None:
    if (wrong := problem(value)) is not None:
        raise ValidationError(f"This client id {wrong}.", code=INVALID)


def _noncharacter(ch: str) -> bool:
    point = ord(ch)
    return 0xFDD0 <= point <= 0xFDEF or point & 0xFFFE == 0xFFFE
