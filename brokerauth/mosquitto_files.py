"""Mosquitto's own `password_file` and `acl_file`: read as Mosquitto 2.0.11 reads them
(src/security_default.c), written so that it reads them back. Plain Python, no Django.

How Mosquitto reads them, which the readers below follow line by line:

- password_file: a line starting with `#` is a comment, a line without `:` is skipped; the
  username is the text before the first `:`, the hash the text up to the next `:`, both
  stripped of blanks. Only `$6$` and `$7$` hashes with a 12-byte salt load; any other entry
  is removed (logged), so that user cannot log in.
- acl_file: trailing white space is cut; a line whose first character is `#` is a comment;
  words are separated by spaces only (a tab is part of a word). `user <name>` (the rest of
  the line, trimmed) starts a user's block; `topic [read|write|readwrite|deny] <topic>` and
  `pattern [...] <topic>` add a rule, `readwrite` when the access word is left out (then the
  one word after `topic` is the topic, even `topic read`); the topic is the rest of the line,
  trimmed, spaces included. Anything else (an unknown word, a bad access word, a topic that is
  not a valid filter, `user` alone) makes Mosquitto refuse the whole file and not start.
"""

from __future__ import annotations

from dataclasses import dataclass

from brokerauth import passwords, topics

PASSWORD_FILE = "password_file"
ACL_FILE = "acl_file"
ACCESS_WORDS = ("read", "write", "readwrite", "deny")
REFUSED = "(Mosquitto refuses the file)"
# C's isspace() in the "C" locale: what Mosquitto trims.
_BLANKS = " \t\n\r\v\f"


@dataclass(frozen=True)
class Problem:
    """A line that cannot be carried over, and why."""

    file: str
    line: int
    text: str
    reason: str

    def __str__(self) -> str:
        where = f"{self.file} line {self.line}" if self.line else self.file
        return f"{where}: {self.reason}" + (f": {self.text!r}" if self.text else "")


@dataclass(frozen=True)
class PasswordEntry:
    line: int
    username: str
    hash: str


@dataclass(frozen=True)
class AclLine:
    """One `topic` or `pattern` line; `user` is the block it sits in (None: before any)."""

    line: int
    kind: str
    user: str | None
    access: str
    topic: str
    text: str = ""


def read_password_file(text: str) -> tuple[list[PasswordEntry], list[Problem]]:
    """The entries Mosquitto would load, and the lines it would not (with the reason)."""
    entries: list[PasswordEntry] = []
    problems: list[Problem] = []
    seen: set[str] = set()
    for number, raw in _lines(text):
        line = raw.rstrip("\r")
        if not line.strip(_BLANKS) or line.startswith("#"):
            continue
        # strtok(":"): empty fields vanish, the hash ends at the next colon.
        fields = [field for field in line.split(":") if field]
        username = fields[0].strip(_BLANKS) if fields else ""
        stored = fields[1].strip(_BLANKS) if len(fields) > 1 else ""
        problem = _password_problem(line, username, stored, seen)
        if problem:
            problems.append(Problem(PASSWORD_FILE, number, line, problem))
            continue
        seen.add(username)
        entries.append(PasswordEntry(number, username, stored))
    return entries, problems


def _password_problem(line: str, username: str, stored: str, seen: set[str]) -> str:
    if ":" not in line:
        return "no ':' (Mosquitto skips the line)"
    if not username or not stored:
        return "no username or no hash (Mosquitto skips the line)"
    if username in seen:
        return f"{username!r} appears twice; the first entry is imported"
    if not passwords.mosquitto_can_read(stored):
        return "not a $6$ or $7$ hash Mosquitto loads (it removes the entry)"
    return ""


def read_acl_file(text: str) -> tuple[list[AclLine], list[Problem]]:
    """The rules of an acl_file with their user blocks, and the lines Mosquitto refuses."""
    rules: list[AclLine] = []
    problems: list[Problem] = []
    user: str | None = None
    for number, raw in _lines(text):
        line = raw.rstrip(_BLANKS)
        if line.startswith("#"):
            continue
        word, rest = _word(line)
        if word is None:
            continue
        if word == "user":
            name = rest.strip(_BLANKS)
            if not name:
                problems.append(Problem(ACL_FILE, number, line, f"no username {REFUSED}"))
            else:
                user = name
        elif word in ("topic", "pattern"):
            parsed = _rule(number, word, user, rest, line)
            if isinstance(parsed, AclLine):
                rules.append(parsed)
            else:
                problems.append(Problem(ACL_FILE, number, line, parsed))
        else:
            problems.append(Problem(ACL_FILE, number, line, f"not an acl_file line {REFUSED}"))
    return rules, problems


def _rule(number: int, kind: str, user: str | None, rest: str, text: str) -> AclLine | str:
    access, topic = _word(rest)
    if access is None:
        return f"no topic {REFUSED}"
    if topic:
        topic = topic.strip(_BLANKS)
    else:
        access, topic = "readwrite", access
    if access not in ACCESS_WORDS:
        return f"access {access!r} is none of {', '.join(ACCESS_WORDS)} {REFUSED}"
    try:
        topics.validate_filter(topic)
    except topics.TopicError as exc:
        return f"{exc} {REFUSED}"
    return AclLine(number, kind, user, access, topic, text)


def _lines(text: str) -> list[tuple[int, str]]:
    # fgets() splits on "\n" only; str.splitlines() would also split on \v, \f, \x1c...
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return list(enumerate(lines, 1))


def _word(text: str) -> tuple[str | None, str]:
    """strtok_r(" ") then strtok_r(""): the next word, and the rest after its space."""
    text = text.lstrip(" ")
    if not text:
        return None, ""
    word, _space, rest = text.partition(" ")
    return word, rest


# -- writing -----------------------------------------------------------------------------------
def unwritable_name(name: str) -> str:
    """Why Mosquitto would read this username (or topic) differently from a file, or ""."""
    if not name:
        return "it is empty"
    if name != name.strip(_BLANKS):
        return "Mosquitto trims leading and trailing blanks"
    if "\n" in name or "\r" in name:
        return "it holds a line break"
    return ""


def password_line(username: str, stored: str) -> str:
    """`username:hash`; the caller checked both (unwritable_name, mosquitto_can_read)."""
    if ":" in username or username.startswith("#"):
        raise ValueError(f"{username!r} cannot be written to a password_file")
    return f"{username}:{stored}\n"


def topic_line(kind: str, access: str, topic: str) -> str:
    """A `topic` or `pattern` line, the access word always written: `topic read` alone would
    be a readwrite rule on the topic "read"."""
    if kind not in ("topic", "pattern") or access not in ACCESS_WORDS:
        raise ValueError(f"not an acl_file rule: {kind} {access}")
    return f"{kind} {access} {topic}\n"
