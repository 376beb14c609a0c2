from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from monitor.models import BrokerStatSample, LoginRefusal, Reading, ReadingRollup, Session

# Hourly rollups are 24 rows per metric per day: a year and more costs little and lets the
# telemetry API (ranges up to 400 days) chart what the readings no longer hold.
HOURLY_ROLLUP_DAYS = 400


class Command(BaseCommand):
    help = (
        "Delete telemetry readings and their per-minute rollups older than --days "
        "(TELEMETRY_RETENTION_DAYS), hourly rollups older than --hourly-days (400, never less "
        "than --days), and broker statistics samples older than --stats-days "
        "(BROKER_STATS_RETENTION_DAYS). Latest values, clients and open sessions are kept."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=int, default=settings.TELEMETRY_RETENTION_DAYS)
        parser.add_argument("--hourly-days", type=int, default=HOURLY_ROLLUP_DAYS)
        parser.add_argument("--stats-days", type=int, default=settings.BROKER_STATS_RETENTION_DAYS)

    def handle(self, *args: Any, **options: Any) -> None:
        now = timezone.now()
        days, hourly_days = options["days"], max(options["hourly_days"], options["days"])
        cutoff = now - timedelta(days=days)
        readings = Reading.objects.prune(cutoff)
        minutes = ReadingRollup.objects.prune(ReadingRollup.Resolution.MINUTE, cutoff)
        hours = ReadingRollup.objects.prune(
            ReadingRollup.Resolution.HOUR, now - timedelta(days=hourly_days)
        )
        sessions, _ = Session.objects.filter(disconnected_at__lt=cutoff).delete()
        refusals, _ = LoginRefusal.objects.filter(at__lt=cutoff).delete()
        samples = BrokerStatSample.objects.prune(now - timedelta(days=options["stats_days"]))
        self.stdout.write(
            f"Deleted {readings} readings, {minutes} minute rollups, {sessions} closed sessions "
            f"and {refusals} login refusals older than {days} days, {hours} hourly rollups "
            f"older than {hourly_days} days, {samples} broker samples older than "
            f"{options['stats_days']} days."
        )
