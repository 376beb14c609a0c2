from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from monitor import account, amqp
from monitor.subscriber import Options, Subscriber


def use_monitor_application_name() -> None:
    """Name this process's PostgreSQL sessions (pg_stat_activity) unlike the web's."""
    for conn in connections.all():
        if conn.vendor == "postgresql":
            conn.close()
            options = conn.settings_dict.setdefault("OPTIONS", {})
            options["application_name"] = settings.MONITOR_DB_APPLICATION_NAME


class Command(BaseCommand):
    help = (
        "Record broker statistics ($SYS), client presence (broker log lines) and telemetry "
        "into the database. Runs until SIGTERM or SIGINT, then finishes its batch and exits."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch-size", type=int, default=settings.MONITOR_BATCH_SIZE)
        parser.add_argument("--flush-seconds", type=float, default=settings.MONITOR_FLUSH_SECONDS)
        parser.add_argument(
            "--broker",
            choices=["mosquitto", "rabbitmq"],
            default=settings.MONITOR_BROKER,
            help="mosquitto: MQTT over TLS; rabbitmq: AMQP to a cluster (MONITOR_AMQP_URLS)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not account.password():
            raise CommandError("No MONITOR_PASSWORD: run manage.py monitor_account first.")
        use_monitor_application_name()
        monitor: Subscriber | amqp.ClusterSubscriber
        if options["broker"] == "rabbitmq":
            monitor = amqp.ClusterSubscriber(
                amqp.Options(
                    batch_size=options["batch_size"], flush_seconds=options["flush_seconds"]
                )
            )
        else:
            monitor = self.mosquitto(options)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: monitor.stop())
        monitor.run()

    def mosquitto(self, options: dict[str, Any]) -> Subscriber:
        if not Path(settings.MQTT_CA_FILE).is_file():
            raise CommandError(
                f"MQTT_CA_FILE {settings.MQTT_CA_FILE} is missing: run certs/make-certs.sh."
            )
        return Subscriber(
            Options(batch_size=options["batch_size"], flush_seconds=options["flush_seconds"])
        )
