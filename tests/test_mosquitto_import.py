"""manage.py import_mosquitto: accounts keep their mosquitto_passwd hashes, acl_file lines
become rules that answer as Mosquitto 2.0.11 does, dry runs, second runs, refused lines."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError

from brokerauth.acl import Access
from brokerauth.models import Account, Credential, Group, Membership, Rule
from tests.test_mosquitto_files import mosquitto_passwd, run_command

pytestmark = pytest.mark.django_db

USERS = {"alice": "alice's secret", "bob": "bob's secret", "x+y": "xy secret", "site/7": "s7"}
ACL = """\
user alice
topic readwrite devices/alice/#
topic deny devices/alice/secret/#
topic read public/bob/private
user bob
topic write fleet/bob
topic read public/bob/private
user x+y
topic read weird/#
pattern read public/%u/#
pattern deny public/%u/private
pattern readwrite clients/%c/#
pattern write dev-%u/up
pattern read $SYS/broker/version
"""


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    password_file = tmp_path / "passwd"
    for username, password in USERS.items():
        mosquitto_passwd(
            password_file, username, password, *(("-H", "sha512") * (username == "bob"))
        )
    acl_file = tmp_path / "acl"
    acl_file.write_text(ACL)
    return password_file, acl_file


def run(files: tuple[Path, Path], *extra: str) -> str:
    return run_command("import_mosquitto", *files, *extra)


def decide(username: str, clientid: str, topic: str, access: Access) -> bool:
    return Account.objects.explain_acl(username, clientid, topic, access).allowed


def test_accounts_keep_their_hashes_and_log_in_with_their_old_passwords(
    files: tuple[Path, Path],
) -> None:
    run(files)
    for username, password in USERS.items():
        account = Account.objects.get(username=username)
        assert account.credential == Credential.IMPORTED
        assert Account.objects.authenticate(username, password, f"{username}-1").allowed
        assert not Account.objects.authenticate(username, password + "!", f"{username}-1").allowed
    assert Account.objects.get(username="bob").password_hash.startswith("$6$")


@pytest.mark.parametrize(
    ("username", "clientid", "topic", "access", "allowed"),
    [
        # A user's deny line beats its allow lines, whatever their order.
        ("alice", "a1", "devices/alice/temp", Access.PUBLISH, True),
        ("alice", "a1", "devices/alice/temp", Access.RECEIVE, True),
        ("alice", "a1", "devices/alice/secret/key", Access.PUBLISH, False),
        ("alice", "a1", "devices/alice/secret/key", Access.RECEIVE, False),
        # write is not read, and read is not write.
        ("bob", "b1", "fleet/bob", Access.PUBLISH, True),
        ("bob", "b1", "fleet/bob", Access.RECEIVE, False),
        # A user's line beats a deny pattern; a deny pattern beats an allow pattern.
        ("bob", "b1", "public/bob/private", Access.RECEIVE, True),
        ("bob", "b1", "public/bob/other", Access.RECEIVE, True),
        ("alice", "a1", "public/alice/private", Access.RECEIVE, False),
        ("alice", "a1", "public/bob/other", Access.RECEIVE, False),
        # %c and %u inside a level, and a username holding a "/".
        ("alice", "a1", "clients/a1/cmd", Access.PUBLISH, True),
        ("alice", "a1", "clients/a2/cmd", Access.PUBLISH, False),
        ("alice", "a1", "dev-alice/up", Access.PUBLISH, True),
        ("bob", "b1", "dev-alice/up", Access.PUBLISH, False),
        ("site/7", "s1", "public/site/7/x", Access.RECEIVE, True),
        ("site/7", "s1", "dev-site/7/up", Access.PUBLISH, True),
        ("site/7", "s1", "public/site/7/private", Access.RECEIVE, False),
        # A username with + or # keeps its own lines and loses every pattern.
        ("x+y", "xy", "weird/thing", Access.RECEIVE, True),
        ("x+y", "xy", "clients/xy/cmd", Access.PUBLISH, False),
        ("x+y", "xy", "$SYS/broker/version", Access.RECEIVE, False),
        ("alice", "a1", "$SYS/broker/version", Access.RECEIVE, True),
        # Mosquitto 2.0's acl_file grants every SUBSCRIBE; reads are checked per message.
        ("alice", "a1", "#", Access.SUBSCRIBE, True),
        ("bob", "b1", "devices/alice/secret/#", Access.SUBSCRIBE, True),
        ("bob", "b1", "$SYS/#", Access.SUBSCRIBE, True),
        ("x+y", "xy", "anything/+", Access.SUBSCRIBE, True),
        ("bob", "b1", "$share/g/devices/#", Access.SUBSCRIBE, True),
        # Nothing matched: refused.
        ("bob", "b1", "elsewhere", Access.PUBLISH, False),
    ],
)
def test_rules_answer_as_mosquitto_does(
    files: tuple[Path, Path],
    username: str,
    clientid: str,
    topic: str,
    access: Access,
    allowed: bool,
) -> None:
    run(files)
    assert decide(username, clientid, topic, access) is allowed


def test_everyone_with_a_safe_username_is_in_the_pattern_group(files: tuple[Path, Path]) -> None:
    run(files)
    group = Group.objects.get(name="everyone")
    assert sorted(group.accounts.values_list("username", flat=True)) == ["alice", "bob", "site/7"]


def test_a_dry_run_says_what_would_change_and_changes_nothing(files: tuple[Path, Path]) -> None:
    out = run(files, "--dry-run")
    assert "Would change: account alice: created, hash kept" in out
    assert "Would change: rule added: deny receive/publish/subscribe devices/alice/secret/#" in out
    assert not Account.objects.exists() and not Rule.objects.exists()
    assert not Group.objects.exists()


def test_a_second_run_changes_nothing(files: tuple[Path, Path]) -> None:
    first = run(files)
    counts = (Account.objects.count(), Rule.objects.count(), Membership.objects.count())
    assert first.count("Changed:") == sum(counts) + 1  # and the group
    assert run(files) == "Nothing to change: the policy already holds both files.\n"
    assert run(files, "--dry-run").startswith("Nothing to change")
    assert (Account.objects.count(), Rule.objects.count(), Membership.objects.count()) == counts


def test_a_changed_hash_is_taken_and_existing_rules_are_kept(files: tuple[Path, Path]) -> None:
    run(files)
    alice = Account.objects.get(username="alice")
    alice.change_password("chosen in the service")
    Rule.objects.create(account=alice, pattern="extra/#", access=Access.RECEIVE)
    out = run(files)
    assert out == "Changed: account alice: hash replaced by the password_file's\n"
    assert Account.objects.authenticate("alice", USERS["alice"], "c").allowed
    assert Rule.objects.filter(pattern="extra/#").exists()


def test_lines_it_cannot_translate_are_listed_and_the_rest_is_imported(
    files: tuple[Path, Path],
) -> None:
    files[1].write_text(
        "topic read $SYS/#\n"  # 1: for anonymous clients
        + ACL
        + "user alice\n"  # 16
        + "topic read devices/%u/x\n"  # 17: %u is plain text in a topic line
        + "pattern read status-%c\n"  # 18: %c inside a level
        + "user nobody\n"
        + "topic read x\n"  # 20: no such account
        + "topic bad x\n"  # 21: Mosquitto refuses the file
    )
    files[0].write_text(files[0].read_text() + "carol:$2b$12$notmosquitto\n")
    err = StringIO()
    with pytest.raises(CommandError, match="6 lines could not be imported"):
        run_command("import_mosquitto", *files, err=err)
    report = err.getvalue().splitlines()
    assert [line.split(":")[1] for line in report] == [
        " acl_file line 1",
        " acl_file line 17",
        " acl_file line 18",
        " acl_file line 20",
        " acl_file line 21",
        " password_file line 5",
    ]
    assert "clients without a username" in report[0]
    assert "'topic read $SYS/#'" in report[0]
    assert decide("alice", "a1", "devices/alice/x", Access.PUBLISH)


def test_an_unreadable_file_is_a_clean_error(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="cannot read"):
        run((tmp_path / "missing", tmp_path / "missing"))
