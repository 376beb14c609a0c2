from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from brokerauth.models import AuthEvent, Change, Lockout


class Command(BaseCommand):
    help = (
        "Delete audit rows older than --days (AUDIT_RETENTION_DAYS by default), and the "
        "failed-login counts that no longer lock anything (Lockout.objects.prune), and old "
        "notes of the change feed (Change.objects.prune)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=int, default=settings.AUDIT_RETENTION_DAYS)

    def handle(self, *args: Any, **options: Any) -> None:
        deleted = AuthEvent.objects.prune(options["days"])
        self.stdout.write(f"Deleted {deleted} audit rows older than {options['days']} days.")
        forgotten = Lockout.objects.prune(timezone.now())
        self.stdout.write(f"Forgot the failed logins of {forgotten} quiet sources.")
        notes = Change.objects.prune(timezone.now())
        self.stdout.write(f"Deleted {notes} change feed notes older than the retention.")
