"""What the broker tells us: $SYS statistics, client presence and telemetry readings.

The monitor process (`manage.py monitor`) writes these tables; the operator UI and the REST API
read them. Querysets carry the questions the UI asks (`Client.objects.online()`,
`BrokerStat.objects.latest_values()`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import models
from django.db.models import Count, F, Q
from django.utils import timezone


@dataclass(frozen=True)
class Presence:
    """The presence numbers every screen shows (dashboard card and banner, list filters, API,
    /metrics): read once, from the rows the monitor keeps in stream order."""

    online: int
    uncertain: int
    broker_connected: int | None
    counted_at: datetime | None
    mismatch_since: datetime | None

    @property
    def mismatch(self) -> bool:
        """The broker's count has disagreed with the clients believed online past the bound."""
        return self.mismatch_since is not None


class MonitorStateManager(models.Manager["MonitorState"]):
    """The one writer of the MonitorState row (pk=1): the monitor calls these, nothing else
    updates the row."""

    def row(self) -> models.QuerySet[MonitorState]:
        return self.filter(pk=1)

    def current(self) -> MonitorState:
        state, _ = self.get_or_create(pk=1)
        return state

    def started(self, at: datetime) -> None:
        self.update_or_create(pk=1, defaults={"started_at": at, "stopped_at": None})

    def stopped(self, at: datetime) -> None:
        self.row().update(connected=False, stopped_at=at, disconnected_at=at)

    def connected(self, at: datetime) -> None:
        self.current()
        self.row().update(connected=True, connected_at=at)

    def disconnected(self, at: datetime) -> None:
        self.row().update(connected=False, disconnected_at=at)

    def heartbeat(self, at: datetime) -> None:
        self.row().update(heartbeat_at=at)

    def sys_seen(self, at: datetime) -> None:
        self.row().update(last_sys_at=at)

    def stored(self, readings: int, bad: int) -> None:
        self.row().update(
            readings_stored=F("readings_stored") + readings, bad_payloads=F("bad_payloads") + bad
        )

    def refused(self) -> None:
        self.row().update(refused_logins=F("refused_logins") + 1)

    def test_service_run(self) -> None:
        self.row().update(test_service_runs=F("test_service_runs") + 1)

    def broker_started(self, at: datetime) -> None:
        self.row().update(broker_started_at=at)

    def counted(
        self, *, believed: int, broker: int, at: datetime, mismatch_since: datetime | None
    ) -> None:
        """The broker's latest count, as applied in stream order, and how long it has
        disagreed with the clients believed online (None: agrees, or not for long)."""
        self.row().update(
            believed_online=believed,
            broker_connected=broker,
            reconciled_at=at,
            mismatch=mismatch_since is not None,
            mismatch_since=mismatch_since,
        )


class MonitorState(models.Model):
    """One row (pk=1): how the monitor itself is doing and whether its view can be trusted."""

    started_at = models.DateTimeField(null=True, blank=True)
    stopped_at = models.DateTimeField(null=True, blank=True)
    connected = models.BooleanField(default=False, help_text="Connected to the broker now.")
    connected_at = models.DateTimeField(null=True, blank=True)
    disconnected_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(
        null=True, blank=True, help_text="Last time the running monitor reported in."
    )
    last_sys_at = models.DateTimeField(
        null=True, blank=True, help_text="Last $SYS message received (stale when old)."
    )
    broker_started_at = models.DateTimeField(
        null=True, blank=True, help_text="When the broker started, from its live uptime."
    )
    # Reconciliation of our presence view against $SYS/broker/clients/connected.
    believed_online = models.PositiveIntegerField(default=0)
    broker_connected = models.IntegerField(null=True, blank=True)
    reconciled_at = models.DateTimeField(null=True, blank=True)
    mismatch = models.BooleanField(
        default=False, help_text="Clients believed online differ from the broker's count."
    )
    mismatch_since = models.DateTimeField(null=True, blank=True)
    refused_logins = models.PositiveBigIntegerField(
        default=0,
        help_text="Refused or failed connections ('Client <unknown> ...' lines) seen.",
    )
    test_service_runs = models.PositiveBigIntegerField(
        default=0, help_text="Test service probe clients seen connecting."
    )
    bad_payloads = models.PositiveBigIntegerField(default=0)
    readings_stored = models.PositiveBigIntegerField(default=0)

    objects = MonitorStateManager()

    class Meta:
        verbose_name = "monitor state"
        verbose_name_plural = "monitor state"

    def __str__(self) -> str:
        return "monitor " + ("connected" if self.connected else "disconnected")

    @classmethod
    def get(cls) -> MonitorState:
        return cls.objects.current()

    def is_alive(self, now: datetime | None = None, within: float = 30.0) -> bool:
        now = now or timezone.now()
        return self.heartbeat_at is not None and now - self.heartbeat_at < timedelta(seconds=within)

    def presence(self) -> Presence:
        """The presence numbers: this row's count and one query over the clients."""
        counts = Client.objects.counts()
        return Presence(
            online=counts["online"],
            uncertain=counts["uncertain"],
            broker_connected=self.broker_connected,
            counted_at=self.reconciled_at,
            mismatch_since=self.mismatch_since if self.mismatch else None,
        )


class BrokerStatQuerySet(models.QuerySet["BrokerStat"]):
    def latest_values(self) -> dict[str, str]:
        """{"$SYS/broker/version": "mosquitto version 2.0.11", ...}."""
        return dict(self.values_list("topic", "value"))


class BrokerStat(models.Model):
    """Latest value of one $SYS topic."""

    topic = models.CharField(max_length=255, unique=True)
    value = models.TextField()
    number = models.FloatField(null=True, blank=True, help_text="The value when numeric.")
    updated_at = models.DateTimeField()

    objects = BrokerStatQuerySet.as_manager()

    class Meta:
        ordering = ["topic"]

    def __str__(self) -> str:
        return f"{self.topic} = {self.value}"

    @property
    def name(self) -> str:
        """The topic without the `$SYS/broker/` prefix, e.g. `clients/connected`."""
        return self.topic.removeprefix("$SYS/broker/")


class BrokerStatSampleQuerySet(models.QuerySet["BrokerStatSample"]):
    def prune(self, before: datetime) -> int:
        return self.filter(at__lt=before).delete()[0]


class BrokerStatSample(models.Model):
    """One numeric $SYS value at one time: the series behind the broker charts."""

    topic = models.CharField(max_length=255)
    value = models.FloatField()
    at = models.DateTimeField()

    objects = BrokerStatSampleQuerySet.as_manager()

    class Meta:
        ordering = ["topic", "at"]
        indexes = [models.Index(fields=["topic", "at"])]

    def __str__(self) -> str:
        return f"{self.topic} = {self.value} at {self.at:%Y-%m-%d %H:%M:%S}"


class ClientQuerySet(models.QuerySet["Client"]):
    def online(self) -> ClientQuerySet:
        return self.filter(online=True)

    def offline(self) -> ClientQuerySet:
        """Seen connected before, not connected now."""
        return self.filter(online=False, connect_count__gt=0)

    def never_seen(self) -> ClientQuerySet:
        """Known only from telemetry or from the accounts, never seen connecting."""
        return self.filter(online=False, connect_count=0)

    def uncertain(self) -> ClientQuerySet:
        """Believed online without fresh evidence (the monitor or the broker was away, or the
        broker's count disagreed past the bound): it may have left unseen."""
        return self.filter(uncertain=True)

    def counts(self) -> dict[str, int]:
        """{"online": n, "uncertain": n} in one query: what Presence is made of."""
        return self.aggregate(
            online=Count("pk", filter=Q(online=True)),
            uncertain=Count("pk", filter=Q(uncertain=True)),
        )

    def with_status(self, status: str) -> ClientQuerySet:
        """The clients of one Client.Status (the UI's and the API's filter); all for ""."""
        if status in Client.Status.values:
            return getattr(self, status)()
        return self


class Client(models.Model):
    """An MQTT client id as seen by the broker, with its current presence."""

    class Status(models.TextChoices):
        """What the UI and the API filter by; each is a ClientQuerySet method too."""

        ONLINE = "online", "online"
        OFFLINE = "offline", "offline"
        NEVER_SEEN = "never_seen", "never seen"
        UNCERTAIN = "uncertain", "uncertain"

    class Protocol(models.TextChoices):
        MQTT31 = "mqtt3.1", "MQTT 3.1"
        MQTT311 = "mqtt3.1.1", "MQTT 3.1.1"
        MQTT5 = "mqtt5", "MQTT 5"

    client_id = models.CharField(max_length=255, unique=True)
    username = models.CharField(max_length=255, blank=True, db_index=True)
    online = models.BooleanField(default=False, db_index=True)
    uncertain = models.BooleanField(
        default=False,
        help_text="Believed online, but the evidence predates an outage or a disagreeing count.",
    )
    last_address = models.CharField(max_length=64, blank=True, help_text="IP address.")
    last_port = models.PositiveIntegerField(null=True, blank=True)
    protocol = models.CharField(max_length=16, blank=True, choices=Protocol.choices)
    clean_start = models.BooleanField(null=True, blank=True)
    keepalive = models.PositiveIntegerField(null=True, blank=True, help_text="Seconds.")
    connected_since = models.DateTimeField(null=True, blank=True)
    last_disconnected_at = models.DateTimeField(null=True, blank=True)
    last_disconnect_reason = models.CharField(max_length=32, blank=True)
    first_seen = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(null=True, blank=True, help_text="Last event or message.")
    connect_count = models.PositiveIntegerField(default=0)
    disconnect_count = models.PositiveIntegerField(default=0)
    message_count = models.PositiveBigIntegerField(default=0, help_text="Telemetry messages.")
    last_message_at = models.DateTimeField(null=True, blank=True)
    bad_message_count = models.PositiveBigIntegerField(default=0)
    last_bad_message_at = models.DateTimeField(null=True, blank=True)
    last_bad_message_error = models.CharField(max_length=255, blank=True)

    objects = ClientQuerySet.as_manager()

    class Meta:
        ordering = ["client_id"]
        indexes = [models.Index(fields=["online", "client_id"])]

    def __str__(self) -> str:
        return self.client_id

    @property
    def presence(self) -> str:
        """online, offline or never_seen: the one place that decides it (the querysets of the
        same names ask the same in SQL). Also the CSS class of the status badge."""
        if self.online:
            return Client.Status.ONLINE
        return Client.Status.OFFLINE if self.connect_count else Client.Status.NEVER_SEEN

    @property
    def status(self) -> str:
        """online / offline / never seen, with " (uncertain)" appended when uncertain."""
        label = Client.Status(self.presence).label
        return label + (" (uncertain)" if self.uncertain else "")


class Session(models.Model):
    """One connection of a client: from its connect line to its disconnect line."""

    class Reason(models.TextChoices):
        CLEAN = "clean", "clean disconnect"
        CLOSED = "closed", "connection closed"
        TIMEOUT = "timeout", "keepalive timeout"
        NOT_AUTHORISED = "not_authorised", "not authorised"
        TAKEN_OVER = "taken_over", "taken over by a new connection"
        PROTOCOL_ERROR = "protocol_error", "protocol error"
        ADMINISTRATIVE = "administrative", "administrative action"
        BROKER_RESTART = "broker_restart", "broker restarted"
        UNKNOWN = "unknown", "unknown: ended unseen (monitor or broker away)"
        OTHER = "other", "other"

    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="sessions")
    connected_at = models.DateTimeField()
    start_known = models.BooleanField(
        default=True,
        help_text="False when the connect was not seen: connected_at is the first evidence "
        "(a message), the connect happened at or before it.",
    )
    disconnected_at = models.DateTimeField(null=True, blank=True)
    reason = models.CharField(max_length=32, blank=True, choices=Reason.choices)
    detail = models.CharField(max_length=255, blank=True, help_text="The broker's words.")
    username = models.CharField(max_length=255, blank=True)
    address = models.CharField(max_length=64, blank=True)
    port = models.PositiveIntegerField(null=True, blank=True)
    protocol = models.CharField(max_length=16, blank=True, choices=Client.Protocol.choices)
    clean_start = models.BooleanField(null=True, blank=True)
    keepalive = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-connected_at"]
        indexes = [models.Index(fields=["client", "-connected_at"])]
        constraints = [
            models.CheckConstraint(
                condition=Q(disconnected_at__isnull=True)
                | Q(disconnected_at__gte=F("connected_at")),
                name="session_ends_after_it_starts",
            )
        ]

    def __str__(self) -> str:
        return f"{self.client} from {self.connected_at:%Y-%m-%d %H:%M:%S}"


class LoginRefusal(models.Model):
    """A CONNECT the broker refused ('Client <unknown> disconnected, not authorised.')."""

    at = models.DateTimeField(db_index=True)
    client_id = models.CharField(max_length=255, blank=True, help_text="Often '<unknown>'.")
    address = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["-at"]

    def __str__(self) -> str:
        return f"refused {self.client_id or '<unknown>'} at {self.at:%Y-%m-%d %H:%M:%S}"


class LatestValue(models.Model):
    """The latest reading of one metric of one client (kept up to date by the monitor)."""

    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="latest")
    metric = models.CharField(max_length=100)
    value = models.FloatField()
    at = models.DateTimeField()
    count = models.PositiveBigIntegerField(default=0, help_text="Readings of this metric.")

    class Meta:
        ordering = ["client", "metric"]
        constraints = [
            models.UniqueConstraint(fields=["client", "metric"], name="one_latest_per_metric")
        ]

    def __str__(self) -> str:
        return f"{self.client} {self.metric} = {self.value}"


class ReadingQuerySet(models.QuerySet["Reading"]):
    def prune(self, before: datetime) -> int:
        return self.filter(at__lt=before)._raw_delete(self.db)


class Reading(models.Model):
    """One telemetry value: (time, client, metric, value)."""

    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="readings")
    metric = models.CharField(max_length=100)
    value = models.FloatField()
    at = models.DateTimeField()

    objects = ReadingQuerySet.as_manager()

    class Meta:
        ordering = ["at"]
        indexes = [
            # Covering: a chart of one client's metric reads the index only, never the table.
            models.Index(fields=["client", "metric", "at", "value"], name="reading_series"),
            models.Index(fields=["at"]),
        ]

    def __str__(self) -> str:
        return f"{self.client_id} {self.metric} = {self.value} at {self.at}"


class ReadingRollupQuerySet(models.QuerySet["ReadingRollup"]):
    def prune(self, resolution: int, before: datetime) -> int:
        return self.filter(resolution=resolution, start__lt=before)._raw_delete(self.db)

    def rebuild(self) -> int:
        """Recompute every rollup from the readings (set-based): for data loaded without the
        monitor, e.g. by `bulk_create`. Returns the number of rollup rows written."""
        from django.db import connection

        self.all()._raw_delete(self.db)
        rollup = connection.ops.quote_name(ReadingRollup._meta.db_table)
        reading = connection.ops.quote_name(Reading._meta.db_table)
        written = 0
        with connection.cursor() as cursor:
            for resolution in ReadingRollup.Resolution.values:
                start = rollup_start_sql(connection.vendor, resolution)
                cursor.execute(
                    f"INSERT INTO {rollup} "
                    "(client_id, metric, resolution, start, count, total, low, high) "
                    f"SELECT client_id, metric, {int(resolution)}, {start}, COUNT(*), "
                    f"SUM(value), MIN(value), MAX(value) FROM {reading} "
                    f"GROUP BY client_id, metric, {start}"
                )
                written += cursor.rowcount
        return written


def rollup_start_sql(vendor: str, resolution: int) -> str:
    """SQL for the start of the minute or hour of `at`, written as the monitor writes it."""
    unit = {60: "minute", 3600: "hour"}[resolution]
    if vendor == "postgresql":
        return f"date_trunc('{unit}', at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
    # Django's SQLite datetime text; a whole minute is written without fractional seconds.
    return (
        "strftime('%Y-%m-%d %H:%M:00', at)"
        if unit == "minute"
        else "strftime('%Y-%m-%d %H:00:00', at)"
    )


class ReadingRollup(models.Model):
    """Count, sum, min and max of one metric of one client over one whole minute or hour.

    The monitor adds to these in the same transaction as the readings, so they always agree;
    charts of long periods read them instead of every reading.
    """

    class Resolution(models.IntegerChoices):
        MINUTE = 60, "minute"
        HOUR = 3600, "hour"

    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="rollups")
    metric = models.CharField(max_length=100)
    resolution = models.PositiveIntegerField(choices=Resolution.choices, help_text="Seconds.")
    start = models.DateTimeField()
    count = models.PositiveBigIntegerField()
    total = models.FloatField(help_text="Sum of the values.")
    low = models.FloatField()
    high = models.FloatField()

    objects = ReadingRollupQuerySet.as_manager()

    class Meta:
        ordering = ["client", "resolution", "start", "metric"]
        constraints = [
            # Also the index of a chart: one client, one resolution, a range of starts.
            models.UniqueConstraint(
                fields=["client", "resolution", "start", "metric"], name="one_rollup_per_bucket"
            )
        ]

    def __str__(self) -> str:
        return f"{self.client_id} {self.metric} {self.start} /{self.resolution}s"

    @property
    def avg(self) -> float:
        return self.total / self.count
