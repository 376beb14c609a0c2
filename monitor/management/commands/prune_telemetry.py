from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from monitor.models import BrokerStatSample, LoginRefusal, Reading, Session


class Command(BaseCommand):
    help = (
        "Delete telemetry readings older than --days (TELEMETRY_RETENTION_DAYS), and broker "
        "statistics samples older than --stats-days (BROKER_STATS_RETENTION_DAYS). Latest "
        "values, clients and open sessions are kept."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=int, default=settings.TELEMETRY_RETENTION_DAYS)
        parser.add_argument("--stats-days", type=int, default=settings.BROKER_STATS_RETENTION_DAYS)

    def handle(self, *args: Any, **options: Any) -> None:
        now = timezone.now()
        cutoff = now - timedelta(days=options["days"])
        readings = Reading.objects.prune(cutoff)
        sessions, _ = Session.objects.filter(disconnected_at__lt=cutoff).delete()
        refusals, _ = LoginRefusal.objects.filter(at__lt=cutoff).delete()
        samples = BrokerStatSample.objects.prune(now - timedelta(days=options["stats_days"]))
        self.stdout.write(
            f"Deleted {readings} readings, {sessions} closed sessions and {refusals} login "
            f"refusals older than {options['days']} days, {samples} broker samples older "
            f"than {options['stats_days']} days."
        )
