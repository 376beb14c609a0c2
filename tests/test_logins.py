"""Login verification: remembered successes, equal cost for unknown users, lockout."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import bcrypt
import pytest
import time_machine
from django.test import override_settings
from django.utils import timezone

from brokerauth import passwords
from brokerauth.models import Account
from tests.conftest import DEVICE_PASSWORD

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
    db: None, bcrypt_calls: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No bcrypt for a name nobody has (issue 14: random usernames stalled the broker), but
    one PBKDF2 verification, as for a device account with a generated secret."""
    secret = Account(username="pump").save_new()
    pbkdf2: list[int] = []
    real = hashlib.pbkdf2_hmac

    def spy(name: str, password: bytes, salt: bytes, iterations: int) -> bytes:
        pbkdf2.append(iterations)
        return real(name, password, salt, iterations)

    monkeypatch.setattr(hashlib, "pbkdf2_hmac", spy)
    assert not Account.objects.authenticate("ghost", "whatever", "c").allowed
    assert Account.objects.authenticate("pump", secret, "c").allowed
    assert bcrypt_calls == []
    assert pbkdf2 == [passwords.PBKDF2_ITERATIONS] * 2


def test_passwords_over_72_bytes_are_refused_not_truncated(device: Account) -> None:
    assert not Account.objects.authenticate("alice", DEVICE_PASSWORD + "x" * 80, "c").allowed
    with pytest.raises(passwords.PasswordTooLong):
        passwords.hash_password("é" * 40)


@override_settings(LOGIN_LOCKOUT_THRESHOLD=3, LOGIN_LOCKOUT_BASE_SECONDS=30)
def test_repeated_failures_lock_the_account_with_backoff(device: Account) -> None:
    with time_machine.travel(timezone.now(), tick=False) as clock:
        for _ in range(3):
            Account.objects.authenticate("alice", "wrong", "c")
        device.refresh_from_db()
        assert device.locked_until == timezone.now() + timedelta(seconds=30)
        refused = Account.objects.authenticate("alice", DEVICE_PASSWORD, "c")
        until = device.locked_until
        assert until is not None
        assert refused.reason == f"locked after failed logins until {until:%Y-%m-%d %H:%M:%S} UTC"
        clock.shift(31)
        Account.objects.authenticate("alice", "wrong again", "c")
        device.refresh_from_db()
        assert device.locked_until == timezone.now() + timedelta(seconds=60)
        clock.shift(61)
        assert Account.objects.authenticate("alice", DEVICE_PASSWORD, "c").allowed
        device.refresh_from_db()
        assert (device.failed_logins, device.locked_until) == (0, None)
        assert device.last_login_at == timezone.now()


def test_a_new_password_lifts_the_lockout(device: Account) -> None:
    with override_settings(LOGIN_LOCKOUT_THRESHOLD=1):
        Account.objects.authenticate("alice", "wrong", "c")
    device.refresh_from_db()
    assert device.is_locked(timezone.now())
    password = device.reset_password()
    device.refresh_from_db()
    assert (device.failed_logins, device.locked_until) == (0, None)
    assert Account.objects.authenticate("alice", password, "c").allowed
