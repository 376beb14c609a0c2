"""manage.py export_mosquitto: the policy as a plain Mosquitto's two files (0600), expanded
where the acl_file can say it, listed where it cannot."""

from __future__ import annotations

import stat
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError

from brokerauth.acl import Access
from brokerauth.models import Account, Group, Rule
from brokerauth.mosquitto_export import export
from brokerauth.mosquitto_files import read_acl_file, read_password_file
from tests.conftest import DEVICE_PASSWORD
from tests.test_mosquitto_files import run_command

pytestmark = pytest.mark.django_db


def generated(username: str, **fields: object) -> Account:
    """An account with a generated secret, which is stored as Mosquitto's $7$."""
    account = Account(username=username, **fields)
    account.save_new()
    return account


def user_block(acl: str, username: str) -> list[str]:
    lines = acl.split(f"\nuser {username}\n", 1)[1].split("\n\n", 1)[0]
    return sorted(lines.strip().splitlines())


def test_files_are_0600_and_mosquitto_reads_them_back(tmp_path: Path) -> None:
    alice = generated("alice")
    Rule.objects.create(account=alice, pattern="devices/%u/#", access=Access.ALL)
    out = run_command("export_mosquitto", tmp_path / "passwd", tmp_path / "acl")
    for name in ("passwd", "acl"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    entries, problems = read_password_file((tmp_path / "passwd").read_text())
    assert problems == [] and [(e.username, e.hash) for e in entries] == [
        ("alice", alice.password_hash)
    ]
    rules, problems = read_acl_file((tmp_path / "acl").read_text())
    assert problems == []
    assert [(r.kind, r.user, r.access, r.topic) for r in rules] == [
        ("topic", "alice", "readwrite", "devices/alice/#")
    ]
    assert "Wrote 1 accounts" in out and "Wrote 1 acl_file lines" in out


def test_a_bcrypt_account_is_listed_and_the_command_exits_non_zero(
    tmp_path: Path, device: Account
) -> None:
    err = StringIO()
    with pytest.raises(CommandError, match="1 things could not be carried over"):
        run_command("export_mosquitto", tmp_path / "passwd", tmp_path / "acl", err=err)
    assert "account alice: bcrypt, which Mosquitto cannot read" in err.getvalue()
    # Its rules are still written: a password added with mosquitto_passwd brings it back.
    assert (tmp_path / "passwd").read_text() == ""
    assert "topic readwrite devices/alice/#" in (tmp_path / "acl").read_text()


def test_a_group_everyone_is_in_becomes_pattern_lines_other_groups_are_written_out() -> None:
    alice, bob = generated("alice"), generated("bob")
    everyone, ops = Group.objects.create(name="everyone"), Group.objects.create(name="ops")
    for account in (alice, bob):
        everyone.memberships.create(account=account)
    ops.memberships.create(account=bob)
    Rule.objects.create(group=everyone, pattern="clients/%c/#", access=Access.RECEIVE)
    Rule.objects.create(group=everyone, pattern="any/#", access=Access.SUBSCRIBE)
    Rule.objects.create(group=ops, pattern="ops/%u/#", access=Access.PUBLISH)
    result = export()
    assert result.left_out == []
    assert "\npattern read clients/%c/#\n" in result.acl_file
    assert "any/#" not in result.acl_file
    assert user_block(result.acl_file, "bob") == ["topic write ops/bob/#"]
    assert "user alice" not in result.acl_file
    assert "SUBSCRIBE rules: Mosquitto's acl_file grants every SUBSCRIBE" in result.said


@pytest.mark.parametrize(
    ("allow_priority", "deny_priority", "deny_access", "listed"),
    [
        (0, 5, Access.ALL, False),  # the deny wins in both
        (0, 0, Access.ALL, False),  # equal priority: deny wins in both
        (5, 0, Access.ALL, True),  # the allow wins here, Mosquitto's deny line there
        (0, 5, Access.PUBLISH, True),  # Mosquitto's deny also refuses the read
    ],
)
def test_priorities_mosquittos_order_would_decide_otherwise_are_listed(
    allow_priority: int, deny_priority: int, deny_access: Access, listed: bool
) -> None:
    alice = generated("alice")
    Rule.objects.create(account=alice, pattern="a/#", access=Access.ALL, priority=allow_priority)
    Rule.objects.create(
        account=alice, pattern="a/b", access=deny_access, allow=False, priority=deny_priority
    )
    Rule.objects.create(account=alice, pattern="other/#", access=Access.ALL, priority=9)
    result = export()
    assert bool(result.left_out) is listed, result.left_out
    if listed:
        assert "a/b" in result.left_out[0] and "other/#" not in result.left_out[0]
    assert user_block(result.acl_file, "alice") == [
        "topic deny a/b",
        "topic readwrite a/#",
        "topic readwrite other/#",
    ]


def test_an_account_rule_with_client_id_is_listed_unless_the_account_is_bound() -> None:
    alice, bob = generated("alice"), generated("bob", client_id="bob-1")
    for account in (alice, bob):
        Rule.objects.create(account=account, pattern="cmd/%c", access=Access.RECEIVE)
    result = export()
    assert len(result.left_out) == 1 and "account alice" in result.left_out[0]
    assert "%c is replaced in pattern lines only" in result.left_out[0]
    assert user_block(result.acl_file, "bob") == ["topic read cmd/bob-1"]
    assert "account bob: Mosquitto cannot bind it to client id 'bob-1'" in result.said


def test_superusers_disabled_accounts_and_unwritable_names() -> None:
    generated("root", is_superuser=True)
    generated("gone", is_active=False)
    generated("a:b")
    result = export()
    assert user_block(result.acl_file, "root") == ["topic readwrite #", "topic readwrite $SYS/#"]
    assert "gone" not in result.password_file and "account gone: disabled, left out" in result.said
    assert result.left_out == ["account 'a:b': left out, it holds ':'"]
    assert [line.split(":")[0] for line in result.password_file.splitlines()] == ["root"]


def test_a_username_with_a_slash_needs_its_rules_written_out(db: None) -> None:
    # A name made before brokerauth/names.py refused "/" (or imported from a Mosquitto file).
    site = Account.objects.create_account("site-7", DEVICE_PASSWORD)
    Account.objects.filter(pk=site.pk).update(username="site/7")
    site.refresh_from_db()
    site.reset_password()
    everyone = Group.objects.create(name="everyone")
    everyone.memberships.create(account=site)
    Rule.objects.create(group=everyone, pattern="public/%u/#", access=Access.RECEIVE)
    result = export()
    # Mosquitto would match public/site/7/# for it; the service's %u never holds a "/".
    assert len(result.left_out) == 1 and "'public/site/7/#'" in result.left_out[0]
    Rule.objects.create(account=site, pattern="public/site/7/#", access=Access.RECEIVE)
    result = export()
    assert result.left_out == []
    assert "user site/7" not in result.acl_file  # the pattern line does it
