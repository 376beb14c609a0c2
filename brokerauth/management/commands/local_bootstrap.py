"""Accounts for the local stack (bin/run): an operator login and a demo MQTT device.

Passwords are generated, shown once, and never stored in clear except the demo device's,
which is kept in VAR_DIR/demo-password (0600) so the README's mosquitto_pub example works.
"""

from __future__ import annotations

import secrets
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from brokerauth.acl import Access
from brokerauth.models import Account, Rule
from web import secretfile


class Command(BaseCommand):
    help = "Create the local operator (admin) and the demo MQTT device, once."

    def handle(self, *args: Any, **options: Any) -> None:
        self._operator()
        self._demo_device()

    def _operator(self) -> None:
        users = get_user_model().objects
        if users.filter(username="admin").exists():
            self.stdout.write("Operator login: admin (exists; `manage.py changepassword admin`)")
            return
        password = secrets.token_urlsafe(12)
        users.create_superuser("admin", "admin@localhost", password)
        self.stdout.write(self.style.WARNING(f"Operator login: admin / {password} (shown once)"))

    def _demo_device(self) -> None:
        path = settings.VAR_DIR / "demo-password"
        account = Account.objects.filter(username="demo").first()
        if account is not None and path.exists() and account.check_password(path.read_text()):
            return
        password = secrets.token_urlsafe(12)
        if account is None:
            account = Account.objects.create_account(
                "demo", password, description="Demo device of the local stack"
            )
            Rule.objects.create(account=account, pattern="devices/%u/#", access=Access.ALL)
        else:
            account.change_password(password)
        secretfile.write(path, password)
        self.stdout.write(f"Demo device: demo / {password} (kept in {path})")
