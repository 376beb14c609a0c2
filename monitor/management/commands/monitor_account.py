from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from brokerauth.models import Account, Change
from monitor import account as monitor_account
from monitor import testservice
from web import secretfile


class Command(BaseCommand):
    help = (
        "Create the monitor's MQTT account (MONITOR_USERNAME) with precise rules, or rotate "
        "its password. The password goes to a 0600 file (VAR_DIR/monitor_password by "
        "default), or is printed once with --print; it is never stored in clear elsewhere."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--rotate", action="store_true", help="Set a new password.")
        parser.add_argument("--print", action="store_true", help="Print the password once.")
        parser.add_argument("--password-file", type=Path, default=settings.MONITOR_PASSWORD_PATH)

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        username = settings.MONITOR_USERNAME
        account = Account.objects.filter(username=username).first()
        password = None
        if account is None:
            account = Account(username=username, description=monitor_account.DESCRIPTION)
            password = account.save_new()
            self.stdout.write(f"Created MQTT account {username!r}.")
        elif options["rotate"]:
            password = account.reset_password()
            self.stdout.write(f"Rotated the password of {username!r}; restart the monitor.")
        added = monitor_account.ensure_rules(account) + testservice.ensure_probe_rule(account)
        if added:
            Change.objects.note_account(username, kick=False, why="monitor rules added")
            patterns = ", ".join(monitor_account.required_patterns())
            self.stdout.write(f"Added {added} rules: subscribe and receive on {patterns}")
        if password is None:
            self.stdout.write("Password unchanged (use --rotate for a new one).")
        elif options["print"]:
            self.stdout.write(f"MONITOR_PASSWORD={password}")
        else:
            secretfile.write(options["password_file"], password + "\n")
            self.stdout.write(f"Password written to {options['password_file']} (mode 0600).")
