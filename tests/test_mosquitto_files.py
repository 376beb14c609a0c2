"""Mosquitto's password_file and acl_file read as Mosquitto 2.0.11 reads them, every line form,
and the refused lines reported with their numbers."""

from __future__ import annotations

import subprocess
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command

from brokerauth import passwords
from brokerauth.mosquitto_files import (
    AclLine,
    password_line,
    read_acl_file,
    read_password_file,
    topic_line,
    unwritable_name,
)


def mosquitto_passwd(path: Path, username: str, password: str, *algorithm: str) -> None:
    create = [] if path.exists() else ["-c"]
    command = ["mosquitto_passwd", *algorithm, *create, "-b", str(path), username, password]
    subprocess.run(command, check=True, capture_output=True)


def run_command(
    name: str, password_file: Path, acl_file: Path, *extra: str, err: StringIO | None = None
) -> str:
    """import_mosquitto or export_mosquitto on these two files; what it printed."""
    out = StringIO()
    files = ["--password-file", str(password_file), "--acl-file", str(acl_file)]
    call_command(name, *files, *extra, stdout=out, stderr=err or StringIO())
    return out.getvalue()


def test_it_reads_the_hashes_mosquitto_passwd_writes(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    mosquitto_passwd(path, "alice", "alice's secret")
    mosquitto_passwd(path, "bob", "bob's secret", "-H", "sha512")
    entries, problems = read_password_file(path.read_text())
    assert problems == []
    assert [(e.line, e.username, e.hash[:3]) for e in entries] == [
        (1, "alice", "$7$"),
        (2, "bob", "$6$"),
    ]
    assert passwords.verify("bob's secret", entries[1].hash)


def test_password_lines_mosquitto_would_not_load_are_reported_with_their_numbers() -> None:
    good = passwords.hash_secret("x" * 24)
    sixteen_byte_salt = passwords.hash_secret("x" * 24, salt=b"s" * 16)
    text = "\n".join(
        [
            "# comment",
            "",
            f"  alice : {good} ",
            "no colon here",
            "nohash:",
            f"alice:{good}",
            "carol:$2b$12$abcdefghijklmnopqrstuuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ012",
            f"dave:{sixteen_byte_salt}",
            "erin:plaintext",
            f"frank:{good}:whatever follows",
        ]
    )
    entries, problems = read_password_file(text)
    assert [(e.username, e.line) for e in entries] == [("alice", 3), ("frank", 10)]
    assert [p.line for p in problems] == [4, 5, 6, 7, 8, 9]
    assert "no ':'" in problems[0].reason
    assert "twice" in problems[2].reason
    assert "$6$ or $7$" in problems[3].reason
    assert str(problems[0]) == (
        "password_file line 4: no ':' (Mosquitto skips the line): 'no colon here'"
    )


ACL = """\
# a comment, then a blank line (and lines of blanks at the end)

topic read $SYS/#
user alice
topic readwrite devices/alice/#
topic   write   fleet/alice
topic deny devices/alice/secret/#
topic devices/alice/short
topic read
topic read with spaces/in it
user  john smith
topic read john/#
pattern read public/%u/#
pattern deny public/%u/private
pattern write clients/%c/up
"""


def test_every_line_form_of_an_acl_file() -> None:
    rules, problems = read_acl_file(ACL + "   \n\t\n")
    assert problems == []
    assert [(r.line, r.kind, r.user, r.access, r.topic) for r in rules] == [
        (3, "topic", None, "read", "$SYS/#"),
        (5, "topic", "alice", "readwrite", "devices/alice/#"),
        (6, "topic", "alice", "write", "fleet/alice"),
        (7, "topic", "alice", "deny", "devices/alice/secret/#"),
        # No access word: readwrite, and the one word is the topic, even "read".
        (8, "topic", "alice", "readwrite", "devices/alice/short"),
        (9, "topic", "alice", "readwrite", "read"),
        (10, "topic", "alice", "read", "with spaces/in it"),
        (12, "topic", "john smith", "read", "john/#"),
        (13, "pattern", "john smith", "read", "public/%u/#"),
        (14, "pattern", "john smith", "deny", "public/%u/private"),
        (15, "pattern", "john smith", "write", "clients/%c/up"),
    ]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("user", "no username"),
        ("topic", "no topic"),
        ("topic sometimes a/b", "access 'sometimes'"),
        ("topic read a/#/b", "'#' must be a whole level"),
        ("pattern write a+/b", "'+' must be a whole level"),
        ("  # not a comment: only a # in the first column is", "not an acl_file line"),
        ("topic\tread\ta/b", "not an acl_file line"),
        ("allow read a/b", "not an acl_file line"),
    ],
)
def test_lines_mosquitto_refuses_are_reported_with_their_numbers(line: str, reason: str) -> None:
    rules, problems = read_acl_file(f"user alice\ntopic read ok/#\n{line}\ntopic read after\n")
    assert [r.topic for r in rules] == ["ok/#", "after"]
    assert len(problems) == 1
    assert problems[0].line == 3
    assert reason in problems[0].reason
    assert "Mosquitto refuses the file" in problems[0].reason


def test_lines_end_at_newlines_only() -> None:
    rules, _problems = read_acl_file("user a\x0cb\ntopic read x\r\n")
    assert rules == [AclLine(2, "topic", "a\x0cb", "read", "x", "topic read x")]


def test_what_is_written_reads_back() -> None:
    stored = passwords.hash_secret("y" * 24)
    entries, _ = read_password_file(password_line("alice", stored))
    assert [(e.username, e.hash) for e in entries] == [("alice", stored)]
    text = "user alice\n" + topic_line("topic", "read", "read")
    text += topic_line("pattern", "deny", "a b")
    rules, problems = read_acl_file(text)
    assert problems == []
    assert [(r.access, r.topic) for r in rules] == [("read", "read"), ("deny", "a b")]


def test_names_a_file_cannot_hold_are_refused() -> None:
    assert unwritable_name(" padded") and unwritable_name("two\nlines") and unwritable_name("")
    assert unwritable_name("site/7") == ""
    with pytest.raises(ValueError):
        password_line("a:b", "$7$...")
    with pytest.raises(ValueError):
        topic_line("topic", "publish", "x")
