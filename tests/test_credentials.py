"""Credentials: generated secrets in Mosquitto's $7$ format, chosen passwords in bcrypt,
imported mosquitto_passwd hashes kept as they are, passwords as bytes."""

from __future__ import annotations

import subprocess
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.test import Client
from rest_framework.test import APIClient

from brokerauth import passwords
from brokerauth.models import Account, Credential
from monitor import demo
from tests.conftest import DEVICE_PASSWORD

pytestmark = pytest.mark.django_db


def mosquitto_passwd(tmp_path: Path, password: str, *algorithm: str) -> str:
    """The hash the real mosquitto_passwd writes for `password`."""
    path = tmp_path / "passwd"
    subprocess.run(
        ["mosquitto_passwd", *algorithm, "-c", "-b", str(path), "dev", password], check=True
    )
    return path.read_text().strip().split(":", 1)[1]


def test_a_generated_secret_is_stored_in_mosquittos_pbkdf2_format() -> None:
    account = Account(username="pump-1")
    secret = account.save_new()
    assert account.credential == Credential.GENERATED
    assert account.password_hash.startswith(f"$7${passwords.PBKDF2_ITERATIONS}$")
    assert passwords.looks_generated(secret)
    assert Account.objects.authenticate("pump-1", secret, "c").allowed
    assert "PBKDF2-SHA512" in account.credential_text


def test_a_chosen_password_keeps_bcrypt(device: Account) -> None:
    assert device.credential == Credential.PASSWORD
    assert device.password_hash.startswith("$2b$")
    device.reset_password()
    assert device.credential == Credential.GENERATED
    device.change_password("chosen by a person")
    device.refresh_from_db()
    assert (device.credential, device.password_hash[:4]) == (Credential.PASSWORD, "$2b$")


def test_a_generated_secret_must_look_generated() -> None:
    with pytest.raises(ValueError):
        Account(username="pump-2").save_new("short", generated=True)


@pytest.mark.parametrize("algorithm", [(), ("-H", "sha512-pbkdf2"), ("-H", "sha512")])
def test_hashes_from_mosquitto_passwd_verify_as_they_are(
    tmp_path: Path, algorithm: tuple[str, ...]
) -> None:
    stored = mosquitto_passwd(tmp_path, "pässwörd 1", *algorithm)
    account = Account(username="imported")
    account.import_hash(stored)
    assert account.credential == Credential.IMPORTED
    assert Account.objects.authenticate("imported", "pässwörd 1", "c").allowed
    assert not Account.objects.authenticate("imported", "pässwörd 2", "c").allowed
    assert passwords.mosquitto_can_read(stored)


def test_an_unreadable_hash_is_not_imported() -> None:
    with pytest.raises(ValidationError):
        Account(username="x").import_hash("$2b$12$not-for-mosquitto")


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "$7$0$AAAA$" + "A" * 88,  # no iterations
        "$7$999999999$AAAA$" + "A" * 88,  # a login that would cost seconds
        "$7$101$!!!!$" + "A" * 88,  # not base64
        "$6$c2FsdA==$short",
        "$2b$04$corrupt",
        "plain text",
    ],
)
def test_a_corrupt_or_costly_stored_hash_never_verifies_nor_raises(stored: str) -> None:
    assert not passwords.verify("anything", stored)


def test_passwords_are_bytes_a_nul_is_not_the_end(tmp_path: Path, device: Account) -> None:
    """bcrypt stops at NUL and the plugin used to cut there: `pass\\0x` is not `pass`."""
    assert not Account.objects.authenticate("alice", DEVICE_PASSWORD + "\0anything", "c").allowed
    secret = Account(username="pump-3").save_new()
    assert not Account.objects.authenticate("pump-3", secret + "\0x", "c").allowed


def test_bytes_that_were_not_utf8_survive_the_json_round_trip() -> None:
    """Non-UTF-8 password bytes arrive as surrogateescape text (brokerauth/wire.py)."""
    raw = b"\xff\xfe secret"
    text = raw.decode("utf-8", "surrogateescape")
    assert passwords.as_bytes(text) == raw
    stored = passwords.hash_secret("x" * 24)
    assert not passwords.verify(text, stored)
    assert passwords.as_bytes("\ud800") == "\ud800".encode("utf-8", "surrogatepass")


@pytest.mark.parametrize("bad", ["short", "a\0bcdefghij", "\ud800" * 8])
def test_chosen_passwords_are_validated(bad: str) -> None:
    with pytest.raises(ValidationError):
        passwords.validate(bad)


def test_every_path_that_makes_a_secret_stores_it_as_7(
    operator_client: Client, tmp_path: Path, settings: Any
) -> None:
    """Issue 14: a generated secret must never cost the broker a bcrypt. The admin's
    "generate" (new account and change form), the UI's create and reset, the API's create
    without a password and reset, the monitor's account and the demo devices."""
    admin_add = {
        "username": "by-admin",
        "generate": "on",
        "memberships-TOTAL_FORMS": "0",
        "memberships-INITIAL_FORMS": "0",
        "rules-TOTAL_FORMS": "0",
        "rules-INITIAL_FORMS": "0",
    }
    operator_client.post("/admin/brokerauth/account/add/", admin_add)
    operator_client.post("/accounts/new/", {"username": "by-ui"})
    api = APIClient()
    api.force_authenticate(User.objects.get(username="operator"))
    api.post("/api/v1/accounts/", {"username": "by-api"}, format="json")
    call_command("monitor_account", "--password-file", str(tmp_path / "pw"), stdout=StringIO())
    demo.ensure_device("demo-99", passwords.generate())
    made = {"by-admin", "by-ui", "by-api", settings.MONITOR_USERNAME, "demo-99"}
    for chosen in ("reset-ui", "reset-api", "reset-admin"):
        Account.objects.create_account(chosen, "a chosen password")
    operator_client.post(f"/accounts/{Account.objects.get(username='reset-ui').pk}/reset-password/")
    api.post(f"/api/v1/accounts/{Account.objects.get(username='reset-api').pk}/reset-password/")
    account = Account.objects.get(username="reset-admin")
    change = {
        **admin_add,
        "username": "reset-admin",
        "is_active": "on",
        "claimed_client_ids-TOTAL_FORMS": "0",
        "claimed_client_ids-INITIAL_FORMS": "0",
        "lockouts-TOTAL_FORMS": "0",
        "lockouts-INITIAL_FORMS": "0",
    }
    operator_client.post(f"/admin/brokerauth/account/{account.pk}/change/", change)
    made |= {"reset-ui", "reset-api", "reset-admin"}
    stored = dict(Account.objects.values_list("username", "password_hash"))
    assert made <= set(stored)
    assert {name for name in made if not stored[name].startswith("$7$101$")} == set()
    kinds = set(Account.objects.filter(username__in=made).values_list("credential", flat=True))
    assert kinds == {Credential.GENERATED}


def test_the_ui_the_api_and_the_admin_say_which_kind_of_credential(
    operator_client: Client, device: Account
) -> None:
    pump = Account(username="pump-4")
    pump.save_new()
    api = APIClient()
    api.force_authenticate(User.objects.get(username="operator"))
    for account, text, kind in (
        (pump, "generated secret, PBKDF2-SHA512 ($7$)", "generated"),
        (device, "chosen password, bcrypt", "password"),
    ):
        assert text in operator_client.get(f"/accounts/{account.pk}/").content.decode()
        body = api.get(f"/api/v1/accounts/{account.pk}/").json()
        assert (body["credential"], body["credential_kind"]) == (text, kind)
        admin = operator_client.get(f"/admin/brokerauth/account/{account.pk}/change/")
        assert text in admin.content.decode()
    listing = operator_client.get("/accounts/").content.decode()
    assert "<td>generated secret</td>" in listing and "<td>chosen password</td>" in listing
