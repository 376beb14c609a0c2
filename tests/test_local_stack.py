"""The local stack's accounts: local_bootstrap's operator and demo device, and the demo devices
simulate_devices adds, all with one password file and one rule (monitor/demo.py)."""

from __future__ import annotations

import stat
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from brokerauth.acl import Access
from brokerauth.models import Account
from monitor import demo

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


@pytest.fixture
def var_dir(settings: Any, tmp_path: Path) -> Path:
    settings.VAR_DIR = tmp_path
    return tmp_path


def test_local_bootstrap_creates_the_operator_and_demo_device_once(var_dir: Path) -> None:
    first = run("local_bootstrap")
    assert "Operator login: admin / " in first
    path = var_dir / "demo-password"
    password = path.read_text()
    assert Account.objects.get(username="demo").check_password(password)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    second = run("local_bootstrap")
    assert "exists" in second and "Demo device" not in second


def test_every_demo_device_gets_the_shared_password_and_the_device_rule(var_dir: Path) -> None:
    run("local_bootstrap")
    password = demo.shared_password(create=False)
    assert password == (var_dir / "demo-password").read_text()
    assert demo.ensure_device("demo-01", password)
    assert not demo.ensure_device("demo-01", password)  # already so
    for name in ("demo", "demo-01"):
        account = Account.objects.get(username=name)
        assert account.check_password(password)
        assert list(account.rules.values_list("pattern", "access")) == [
            ("devices/%u/#", Access.ALL)
        ]


def test_simulate_devices_asks_for_accounts_before_there_are_any(var_dir: Path) -> None:
    with pytest.raises(CommandError, match="run with --create-accounts once"):
        run("simulate_devices", "--duration=0.1")
