"""What the broker tells us: $SYS statistics, client presence and telemetry readings.

The monitor process (`manage.py monitor`) writes these tables; the operator UI and the REST API
read them. Querysets carry the questions the UI asks (`Client.objects.online()`,
`BrokerStat.objects.latest_values()`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connection, models
from django.db.models import Count, F, Q
from django.utils import timezone

# (client pk, metric, value, at): a reading as the bulk writers take it.
ReadingRow = tuple[int, str, float, datetime]


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


class DeliveryCursorQuerySet(models.QuerySet["DeliveryCursor"]):
    def position(self, consumer: str) -> int | None:
        return self.filter(consumer=consumer).values_list("last_mid", flat=True).first()

    def advance(self, consumer: str, last_mid: int) -> None:
        """One upsert, in the transaction of the batch it follows."""
        self.bulk_create(
            [DeliveryCursor(consumer=consumer, last_mid=last_mid, updated_at=timezone.now())],
            update_conflicts=True,
            unique_fields=["consumer"],
            update_fields=["last_mid", "updated_at"],
        )

    def forget(self, consumer: str) -> None:
        self.filter(consumer=consumer).delete()


class DeliveryCursor(models.Model):
    """Where a monitor's MQTT session stands: the packet id of the last QoS 1 message whose
    batch is committed. A redelivery (DUP) at or behind it was stored already (exactly once,
    see `monitor.ingest.Ingest.stored_before`). One row per monitor client id."""

    consumer = models.CharField(max_length=255, unique=True, help_text="MQTT client id.")
    last_mid = models.PositiveIntegerField(help_text="MQTT packet id, 1..65535.")
    updated_at = models.DateTimeField()

    objects = DeliveryCursorQuerySet.as_manager()

    def __str__(self) -> str:
        return f"{self.consumer} at packet {self.last_mid}"


class DeliveryLedgerQuerySet(models.QuerySet["DeliveryLedger"]):
    def record(self, consumer: str, keys: list[str]) -> None:
        """One upsert, in the transaction of the batch whose messages the keys name."""
        self.bulk_create(
            [DeliveryLedger(consumer=consumer, keys=" ".join(keys), updated_at=timezone.now())],
            update_conflicts=True,
            unique_fields=["consumer"],
            update_fields=["keys", "updated_at"],
        )

    def committed(self) -> set[str]:
        """The keys of every consumer's last committed batch."""
        return {key for keys in self.values_list("keys", flat=True) for key in keys.split()}

    def prune(self, before: datetime) -> int:
        return self.filter(updated_at__lt=before).delete()[0]


class DeliveryLedger(models.Model):
    """What one RabbitMQ consumer's last committed batch held: a digest of each message
    (monitor.amqp.delivery_key). RabbitMQ gives messages no stable id, and a consumer killed
    between its commit and its acknowledgement has that batch delivered again, flagged
    redelivered, maybe to another consumer: a redelivered message whose digest is in any
    consumer's ledger was stored. One row per consumer process."""

    consumer = models.CharField(max_length=255, unique=True, help_text="host:pid:random.")
    keys = models.TextField(help_text="Space-separated message digests.")
    updated_at = models.DateTimeField()

    objects = DeliveryLedgerQuerySet.as_manager()

    def __str__(self) -> str:
        return f"{self.consumer} at {self.updated_at:%Y-%m-%d %H:%M:%S}"


class BrokerStatQuerySet(models.QuerySet["BrokerStat"]):
    def latest_values(self) -> dict[str, str]:
        """{"$SYS/broker/version": "mosquitto version 2.0.11", ...}."""
        return dict(self.values_list("topic", "value"))

    def keep(self, values: list[tuple[str, str, float | None, datetime]]) -> None:
        """(topic, value, number, at): the latest value of each topic, one upsert."""
        self.bulk_create(
            [BrokerStat(topic=t[:255], value=v, number=n, updated_at=at) for t, v, n, at in values],
            update_conflicts=True,
            unique_fields=["topic"],
            update_fields=["value", "number", "updated_at"],
        )


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
    def add(self, samples: list[tuple[str, float, datetime]]) -> None:
        """(topic, value, at) rows of the broker charts."""
        self.bulk_create([BrokerStatSample(topic=t[:255], value=v, at=at) for t, v, at in samples])

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
    node = models.CharField(max_length=255, blank=True, help_text="RabbitMQ node, if any.")
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
    node = models.CharField(max_length=255, blank=True, help_text="RabbitMQ node, if any.")
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


class LatestValueQuerySet(models.QuerySet["LatestValue"]):
    def add(self, rows: list[ReadingRow]) -> None:
        """Count `rows` per (client, metric) and keep the newest value, one executemany (the
        same statement on SQLite and PostgreSQL)."""
        latest: dict[tuple[int, str], list[Any]] = {}
        for pk, metric, value, at in rows:
            row = latest.setdefault((pk, metric), [0, 0.0, at])
            row[0], row[1], row[2] = row[0] + 1, value, at
        adapt = connection.ops.adapt_datetimefield_value
        table = connection.ops.quote_name(LatestValue._meta.db_table)
        sql = (
            f"INSERT INTO {table} (client_id, metric, value, at, count) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (client_id, metric) DO UPDATE SET "
            f"count = {table}.count + excluded.count, "
            f"value = CASE WHEN excluded.at >= {table}.at THEN excluded.value "
            f"ELSE {table}.value END, "
            f"at = CASE WHEN excluded.at >= {table}.at THEN excluded.at ELSE {table}.at END"
        )
        # Sorted: concurrent monitors (a share group) lock rows in the same order.
        params = [
            (pk, metric, value, adapt(at), count)
            for (pk, metric), (count, value, at) in sorted(latest.items())
        ]
        with connection.cursor() as cursor:
            cursor.executemany(sql, params)


class LatestValue(models.Model):
    """The latest reading of one metric of one client (kept up to date by the monitor)."""

    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="latest")
    metric = models.CharField(max_length=100)
    value = models.FloatField()
    at = models.DateTimeField()
    count = models.PositiveBigIntegerField(default=0, help_text="Readings of this metric.")

    objects = LatestValueQuerySet.as_manager()

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

    def insert_rows(self, rows: list[ReadingRow]) -> None:
        """(client pk, metric, value, at) rows: COPY on PostgreSQL, an executemany of one
        prepared INSERT on SQLite. bulk_create's per-field preparation costs more than the
        database does at 10,000 readings a second."""
        adapt = connection.ops.adapt_datetimefield_value
        adapted: dict[datetime, Any] = {}
        params = []
        for pk, metric, value, at in rows:
            when = adapted.get(at)
            if when is None:
                when = adapted[at] = adapt(at)
            params.append((pk, metric, value, when))
        table = connection.ops.quote_name(Reading._meta.db_table)
        columns = "(client_id, metric, value, at)"
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                # COPY: several times the rate of INSERT for batches of thousands of rows.
                with cursor.cursor.copy(f"COPY {table} {columns} FROM STDIN") as copy:
                    for row in params:
                        copy.write_row(row)
            else:
                sql = f"INSERT INTO {table} {columns} VALUES (%s, %s, %s, %s)"
                cursor.executemany(sql, params)


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

    def add(self, rows: list[ReadingRow]) -> None:
        """Add (client pk, metric, value, at) rows to their minute and hour rollups: one upsert
        per (client, metric, resolution, start), in one statement."""
        params = rollup_params(rows)
        table = connection.ops.quote_name(ReadingRollup._meta.db_table)
        columns = "(client_id, metric, resolution, start, count, total, low, high)"
        merge_sql = (
            "ON CONFLICT (client_id, resolution, start, metric) DO UPDATE SET "
            f"count = {table}.count + excluded.count, total = {table}.total + excluded.total, "
            f"low = CASE WHEN excluded.low < {table}.low THEN excluded.low ELSE {table}.low END, "
            f"high = CASE WHEN excluded.high > {table}.high THEN excluded.high "
            f"ELSE {table}.high END"
        )
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                # One statement over arrays: a round trip per row costs more than the upsert.
                types = "bigint text int timestamptz bigint float8 float8 float8".split()
                unnest = ", ".join(f"%s::{t}[]" for t in types)
                cursor.execute(
                    f"INSERT INTO {table} {columns} SELECT * FROM unnest({unnest}) {merge_sql}",
                    [list(column) for column in zip(*params, strict=True)],
                )
            else:
                values = "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                cursor.executemany(f"INSERT INTO {table} {columns} {values} {merge_sql}", params)

    def rebuild(self) -> int:
        """Recompute every rollup from the readings (set-based): for data loaded without the
        monitor, e.g. by `bulk_create`. Returns the number of rollup rows written."""
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


RollupKey = tuple[int, str, int, Any]  # client pk, metric, resolution, adapted start


def rollup_start(at: datetime, resolution: int) -> datetime:
    """The start of the UTC minute or hour holding `at`: the one bucket rule, which
    `rollup_start_sql` says in SQL."""
    utc = at.astimezone(UTC)
    if resolution == ReadingRollup.Resolution.HOUR:
        return utc.replace(minute=0, second=0, microsecond=0)
    return utc.replace(second=0, microsecond=0)


def rollup_params(rows: list[ReadingRow]) -> list[tuple[Any, ...]]:
    """Rows of the rollup upsert, (*RollupKey, count, total, low, high), sorted: concurrent
    monitors (a share group) then lock rows in the same order."""
    adapt = connection.ops.adapt_datetimefield_value
    minute, hour = ReadingRollup.Resolution.MINUTE, ReadingRollup.Resolution.HOUR
    starts: dict[datetime, Any] = {}
    hour_of: dict[Any, Any] = {}
    minutes: dict[RollupKey, list[float]] = {}
    for pk, metric, value, at in rows:
        start = starts.get(at)
        if start is None:
            start = starts[at] = adapt(rollup_start(at, minute))
            hour_of[start] = adapt(rollup_start(at, hour))
        add_to(minutes, (pk, metric, minute, start), 1, value, value, value)
    # Hours from the batch's minutes: fewer rows than readings when devices are chatty.
    hours: dict[RollupKey, list[float]] = {}
    for (pk, metric, _m, start), (count, total, low, high) in minutes.items():
        add_to(hours, (pk, metric, hour, hour_of[start]), count, total, low, high)
    sums = minutes | hours
    return [(*key, *row) for key, row in sorted(sums.items(), key=rollup_order)]


def add_to(
    sums: dict[RollupKey, list[float]],
    key: RollupKey,
    count: float,
    total: float,
    low: float,
    high: float,
) -> None:
    row = sums.get(key)
    if row is None:
        sums[key] = [count, total, low, high]
        return
    row[0] += count
    row[1] += total
    if low < row[2]:
        row[2] = low
    if high > row[3]:
        row[3] = high


def rollup_order(item: tuple[RollupKey, list[float]]) -> tuple[Any, ...]:
    pk, metric, resolution, start = item[0]
    return pk, resolution, str(start), metric


def rollup_start_sql(vendor: str, resolution: int) -> str:
    """SQL for the start of the minute or hour of `at`: `rollup_start`'s rule."""
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
