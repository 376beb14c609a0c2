"""The local stack's logins (bin/run): an operator for the UI and the demo MQTT device.

Passwords are generated and shown once. The operator's is never stored in clear; the demo
device's is kept in VAR_DIR/demo-password (0600, monitor/demo.py) for the README's example.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from brokerauth import passwords
from monitor import demo


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
        password = passwords.generate()
        users.create_superuser("admin", "admin@localhost", password)
        self.stdout.write(self.style.WARNING(f"Operator login: admin / {password} (shown once)"))

    def _demo_device(self) -> None:
        password = demo.shared_password(create=True)
        assert password is not None
        if demo.ensure_device("demo", password):
            self.stdout.write(f"Demo device: demo / {password} (kept in {demo.password_path()})")
