"""Login verification: remembered successes, equal cost for unknown users, lockouts per
source that an attacker cannot turn against a device."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import bcrypt
import pytest
import time_machine
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from brokerauth import passwords
from brokerauth.models import Account, Lockout
from tests.conftest import DEVICE_PASSWORD, BrokerClient

pytestmark = pytest.mark.django_db


@pytest.fixture
def bcrypt_calls(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Counts real bcrypt verifications (a spy: the real function still runs)."""
    calls: list[bytes] = []
    real = bcrypt.checkpw

    def spy(password: bytes, hashed: bytes) -> bool:
        calls.append(hashed)
        return real(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", spy)
    return calls


@pytest.fixture
def pbkdf2_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts PBKDF2 computations, by their iterations (a spy, as bcrypt_calls). The dummy
    hash that unknown names are checked against is made first: once per process."""
    passwords.burn("")
    calls: list[int] = []
    real = hashlib.pbkdf2_hmac

    def spy(name: str, password: bytes, salt: bytes, iterations: int) -> bytes:
        calls.append(iterations)
        return real(name, password, salt, iterations)

    monkeypatch.setattr(hashlib, "pbkdf2_hmac", spy)
    return calls


def test_a_good_login_is_remembered(device: Account, bcrypt_calls: list[bytes]) -> None:
    assert Account.objects.authenticate("alice", DEVICE_PASSWORD, "c").allowed
    assert Account.objects.authenticate("alice", DEVICE_PASSWORD, "c").allowed
    assert len(bcrypt_calls) == 1


def test_a_changed_password_is_not_served_from_memory(device: Account) -> None:
    assert Account.objects.authenticate("alice", DEVICE_PASSWORD, "c").allowed
    device.change_password("new secret")
    assert not Account.objects.authenticate("alice", DEVICE_PASSWORD, "c").allowed
    assert Account.objects.authenticate("alice", "new secret", "c").allowed


@override_settings(LOGIN_REMEMBER_SECONDS=0)
def test_remembering_can_be_turned_off(device: Account, bcrypt_calls: list[bytes]) -> None:
    Account.objects.authenticate("alice", DEVICE_PASSWORD, "c")
    Account.objects.authenticate("alice", DEVICE_PASSWORD, "c")
    assert len(bcrypt_calls) == 2


def test_unknown_usernames_cost_what_a_generated_secret_costs(
    db: None, bcrypt_calls: list[bytes], pbkdf2_calls: list[int]
) -> None:
    """No bcrypt for a name nobody has (issue 14: random usernames stalled the broker), but
    one PBKDF2 verification, as for a device account with a generated secret."""
    secret = Account(username="pump").save_new()
    pbkdf2_calls.clear()
    assert not Account.objects.authenticate("ghost", "whatever", "c").allowed
    assert Account.objects.authenticate("pump", secret, "c").allowed
    assert bcrypt_calls == []
    assert pbkdf2_calls == [passwords.PBKDF2_ITERATIONS] * 2


def test_passwords_over_72_bytes_are_refused_not_truncated(device: Account) -> None:
    assert not Account.objects.authenticate("alice", DEVICE_PASSWORD + "x" * 80, "c").allowed
    with pytest.raises(passwords.PasswordTooLong):
        passwords.hash_password("é" * 40)


def lockout(account: Account, source: str = "") -> Lockout | None:
    return account.lockouts.filter(source=source).first()


@override_settings(LOGIN_LOCKOUT_THRESHOLD=3, LOGIN_LOCKOUT_BASE_SECONDS=30)
def test_repeated_failures_lock_the_source_with_backoff(device: Account) -> None:
    """go-auth sends no address: the source is every address, the lockout per username."""
    with time_machine.travel(timezone.now(), tick=False) as clock:
        for _ in range(3):
            Account.objects.authenticate("alice", "wrong", "c")
        locked = lockout(device)
        assert locked is not None
        assert locked.locked_until == timezone.now() + timedelta(seconds=30)
        refused = Account.objects.authenticate("alice", DEVICE_PASSWORD, "c")
        until = locked.locked_until
        assert until is not None
        assert refused.reason == (
            f"locked after 3 failed logins from any address until {until:%Y-%m-%d %H:%M:%S} UTC"
        )
        clock.shift(31)
        Account.objects.authenticate("alice", "wrong again", "c")
        locked = lockout(device)
        assert locked is not None
        assert locked.locked_until == timezone.now() + timedelta(seconds=60)
        clock.shift(61)
        assert Account.objects.authenticate("alice", DEVICE_PASSWORD, "c").allowed
        assert not device.lockouts.exists()
        device.refresh_from_db()
        assert device.last_login_at == timezone.now()


def test_a_new_password_lifts_the_lockout(device: Account) -> None:
    with override_settings(LOGIN_LOCKOUT_THRESHOLD=1):
        Account.objects.authenticate("alice", "wrong", "c", "10.0.0.9")
    locked = lockout(device, "10.0.0.9")
    assert locked is not None and locked.locks(timezone.now())
    password = device.reset_password()
    assert not device.lockouts.exists()
    assert Account.objects.authenticate("alice", password, "c", "10.0.0.9").allowed


@override_settings(LOGIN_LOCKOUT_THRESHOLD=3)
def test_an_attackers_failures_lock_only_the_attackers_address(device: Account) -> None:
    """Issue 14: anyone who knew a username could lock its device out for good. With the
    address the project's plugin sends, the lock is the attacker's own."""
    for _ in range(20):
        Account.objects.authenticate("alice", "guess", "c", "203.0.113.7")
    assert not Account.objects.authenticate("alice", DEVICE_PASSWORD, "c", "203.0.113.7").allowed
    assert Account.objects.authenticate("alice", DEVICE_PASSWORD, "dev-1", "10.0.0.5").allowed
    locked = lockout(device, "203.0.113.7")
    assert locked is not None and locked.failures == 3  # a locked source is not even verified


@override_settings(LOGIN_LOCKOUT_THRESHOLD=3)
def test_ipv6_sources_are_grouped_by_64_and_mapped_ipv4_is_ipv4(device: Account) -> None:
    for host in range(3):
        Account.objects.authenticate("alice", "guess", "c", f"2001:db8:1:2::{host + 1}")
    assert not Account.objects.authenticate(
        "alice", DEVICE_PASSWORD, "c", "2001:db8:1:2::ff"
    ).allowed
    assert Account.objects.authenticate("alice", DEVICE_PASSWORD, "c", "2001:db8:1:3::1").allowed
    assert Lockout.source_of("::ffff:10.0.0.5") == "10.0.0.5"
    assert Lockout.source_of("not an address") == ""


def test_one_wrong_password_an_hour_never_keeps_the_device_out(device: Account) -> None:
    """The attack of issue 14, without an address (go-auth): one wrong password an hour kept
    the lock at its 3600 s cap. Failures further apart than the window start the count again."""
    with time_machine.travel(timezone.now(), tick=False) as clock:
        for _hour in range(24):
            assert not Account.objects.authenticate("alice", "wrong", "c").allowed
            clock.shift(1)
            assert Account.objects.authenticate("alice", DEVICE_PASSWORD, "c").allowed
            clock.shift(3599)
        for _hour in range(24):  # and without the device's logins in between
            Account.objects.authenticate("alice", "wrong", "c")
            clock.shift(3600)
        locked = lockout(device)
        assert locked is not None and not locked.locks(timezone.now())
        assert locked.failures == 1
        assert Account.objects.authenticate("alice", DEVICE_PASSWORD, "c").allowed


@override_settings(LOGIN_LOCKOUT_THRESHOLD=3)
def test_a_generated_secret_is_never_locked_out(db: None) -> None:
    secret = Account(username="pump").save_new()
    for _ in range(50):
        refused = Account.objects.authenticate("pump", "guess", "c")
        assert not refused.limit_username
    assert Account.objects.authenticate("pump", secret, "pump-1").allowed
    assert not Lockout.objects.exists()


def test_limit_username_only_for_secrets_that_can_be_guessed(device: Account) -> None:
    """The plugin's limiter hint (CONTRACTS.md 1): it may block a username as a whole only
    when that username's secret can be guessed online."""
    Account(username="pump").save_new()
    assert Account.objects.authenticate("alice", "wrong", "c").limit_username
    assert not Account.objects.authenticate("pump", "wrong", "c").limit_username
    assert not Account.objects.authenticate("ghost", "wrong", "c").limit_username


def test_lockouts_that_no_longer_count_are_pruned(device: Account) -> None:
    now = timezone.now()
    device.lockouts.create(source="10.0.0.1", failures=2, last_failure_at=now - timedelta(days=1))
    device.lockouts.create(source="10.0.0.2", failures=2, last_failure_at=now)
    assert Lockout.objects.prune(now) == 1
    assert list(device.lockouts.values_list("source", flat=True)) == ["10.0.0.2"]


def test_an_unknown_name_and_a_device_with_a_wrong_secret_look_alike(
    broker: BrokerClient, pbkdf2_calls: list[int]
) -> None:
    """Issue 14: the same answer, the same database work, the same one PBKDF2 verification,
    whether the name exists or not."""
    Account(username="pump").save_new()
    seen = []
    for username in ("pump", "ghost"):
        pbkdf2_calls.clear()
        with CaptureQueriesContext(connection) as queries:
            response = broker.ask("user", username=username, password="guess", clientid="c")
        statements = [q["sql"].split()[0] for q in queries.captured_queries]
        seen.append((response.status_code, response.json(), statements, list(pbkdf2_calls)))
    assert seen[0] == seen[1]
    assert seen[0][1] == {"ok": False, "error": "not authorised", "limit_username": False}
