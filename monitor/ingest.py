"""From MQTT messages to rows: the plain functions behind the monitor's paho callbacks.

`Ingest.handle_message(topic, payload, received_at)` sorts one message: `$SYS/broker/log/...`
lines become presence events (written at once, in order), other `$SYS` values and telemetry
readings are collected, and `flush()` writes what was collected in one short transaction:
readings with one executemany (SQLite) or COPY (PostgreSQL); the per-minute and per-hour
rollups charts read, latest values and client counters with one statement each over the
whole batch (executemany, or an unnest upsert for the rollups on PostgreSQL).
The caller acknowledges QoS 1 messages only after `flush()` returned, so a crash before the
commit leaves them with the broker, which delivers them again.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F

from monitor import brokerlog, presence, telemetry
from monitor.models import (
    BrokerStat,
    BrokerStatSample,
    Client,
    LatestValue,
    MonitorState,
    Reading,
    ReadingRollup,
)

log = logging.getLogger("monitor.ingest")

SYS_PREFIX = "$SYS/"
LOG_PREFIX = "$SYS/broker/log/"
CONNECTED_TOPIC = "$SYS/broker/clients/connected"
UPTIME_TOPIC = "$SYS/broker/uptime"
BAD_LOG_LINES_PER_FLUSH = 10
MINUTE, HOUR = ReadingRollup.Resolution.MINUTE.value, ReadingRollup.Resolution.HOUR.value


def stat_number(value: str) -> float | None:
    """'12' -> 12.0, '3600 seconds' -> 3600.0, 'mosquitto version 2.0.11' -> None."""
    head = value.split(" ", 1)[0]
    try:
        number = float(head)
    except ValueError:
        return None
    return number if number == number and abs(number) != float("inf") else None


@dataclass
class Bad:
    count: int = 0
    at: datetime | None = None
    error: str = ""


@dataclass
class Batch:
    readings: list[tuple[str, str, float, datetime]] = field(default_factory=list)
    messages: Counter[str] = field(default_factory=Counter)
    last_message: dict[str, datetime] = field(default_factory=dict)
    bad: dict[str, Bad] = field(default_factory=dict)
    stats: dict[str, tuple[str, datetime]] = field(default_factory=dict)
    samples: list[tuple[str, float, datetime]] = field(default_factory=list)
    bad_count: int = 0  # the sum of bad's counts, kept: pending() is asked per message

    def __len__(self) -> int:
        return len(self.readings) + self.bad_count + len(self.samples)


class Ingest:
    def __init__(self, self_client_id: str = "", max_payload: int | None = None) -> None:
        self.self_client_id = self_client_id or settings.MONITOR_CLIENT_ID
        self.max_payload = max_payload or settings.TELEMETRY_MAX_BYTES
        self.batch = Batch()
        self.client_pks: dict[str, int] = {}
        self.presence = presence.Tracker(self.self_client_id)
        self.stored = 0
        self.state_ready = False

    # -- sorting messages ------------------------------------------------------------------
    def handle_message(self, topic: str, payload: bytes, received_at: datetime) -> None:
        if topic.startswith(LOG_PREFIX):
            self.handle_log_line(payload.decode("utf-8", "replace"), received_at)
        elif topic.startswith(SYS_PREFIX):
            self.handle_stat(topic, payload.decode("utf-8", "replace"), received_at)
        else:
            self.handle_telemetry(topic, payload, received_at)

    def handle_log_line(self, line: str, received_at: datetime) -> None:
        event = brokerlog.parse_line(line)
        if event is not None:
            self.presence.line(event, received_at)

    def handle_stat(self, topic: str, value: str, received_at: datetime) -> None:
        self.batch.stats[topic] = (value, received_at)
        number = stat_number(value)
        if number is None:
            return
        self.batch.samples.append((topic, number, received_at))
        # Presence takes counts in stream order, with exactly the lines before them.
        if topic == UPTIME_TOPIC:
            self.presence.uptime(number, received_at)
        elif topic == CONNECTED_TOPIC:
            self.presence.count(int(number), received_at)

    def handle_telemetry(self, topic: str, payload: bytes, received_at: datetime) -> None:
        try:
            message = telemetry.parse(topic, payload, self.max_payload)
        except telemetry.BadPayload as exc:
            self.bad_payload(topic, str(exc), received_at)
            return
        batch = self.batch
        batch.messages[message.client_id] += 1
        batch.last_message[message.client_id] = received_at
        batch.readings.extend((message.client_id, m, v, received_at) for m, v in message.values)
        self.presence.message(message.client_id, received_at)

    def bad_payload(self, topic: str, error: str, received_at: datetime) -> None:
        client_id = telemetry.client_id_of(topic)
        bad = self.batch.bad.setdefault(client_id, Bad())
        bad.count, bad.at, bad.error = bad.count + 1, received_at, error
        # A flood of bad payloads must not become a flood of log lines.
        self.batch.bad_count += 1
        if self.batch.bad_count <= BAD_LOG_LINES_PER_FLUSH:
            log.warning("bad payload on %r: %s", topic[:200], error)
        self.presence.message(client_id, received_at)

    # -- writing -----------------------------------------------------------------------------
    def pending(self) -> int:
        return len(self.batch)

    def drop_pending_telemetry(self) -> int:
        """Forget collected telemetry (its messages will be delivered again); keep $SYS."""
        dropped = len(self.batch.readings)
        self.batch.readings, self.batch.bad, self.batch.bad_count = [], {}, 0
        self.batch.messages, self.batch.last_message = Counter(), {}
        return dropped

    def flush(self) -> int:
        """Write what was collected; returns the number of readings stored."""
        batch, self.batch = self.batch, Batch()
        if batch.bad_count > BAD_LOG_LINES_PER_FLUSH:
            log.warning("... and %d more bad payloads", batch.bad_count - BAD_LOG_LINES_PER_FLUSH)
        try:
            try:
                self.write(batch)
            except IntegrityError:
                # A client row deleted under us (the admin): forget cached ids, try once more.
                self.client_pks.clear()
                self.write(batch)
        except BaseException:
            # Also when the second try fails: its messages are not acknowledged yet.
            self.batch = merge(batch, self.batch)
            raise
        self.stored += len(batch.readings)
        return len(batch.readings)

    def write(self, batch: Batch) -> None:
        if not self.state_ready:
            MonitorState.get()
            self.state_ready = True
        with transaction.atomic():
            pks = self.resolve({r[0] for r in batch.readings} | set(batch.bad))
            if batch.readings:
                self.write_readings(batch, pks)
                self.write_rollups(batch, pks)
                self.write_latest(batch, pks)
                self.write_counters(batch, pks)
            self.write_bad(batch, pks)
            self.write_stats(batch)
            if batch.readings or batch.bad:
                MonitorState.objects.stored(len(batch.readings), batch.bad_count)

    def resolve(self, client_ids: set[str]) -> dict[str, int]:
        missing = [c for c in client_ids if c not in self.client_pks]
        if missing:
            for chunk in chunks(missing, 500):
                Client.objects.bulk_create(
                    [Client(client_id=c) for c in chunk], ignore_conflicts=True
                )
                rows = Client.objects.filter(client_id__in=chunk).values_list("client_id", "pk")
                self.client_pks.update(rows)
        return self.client_pks

    def write_readings(self, batch: Batch, pks: dict[str, int]) -> None:
        # executemany of a prepared INSERT: bulk_create's per-field preparation costs more
        # than the database does at 10,000 readings a second.
        adapt = connection.ops.adapt_datetimefield_value
        adapted: dict[datetime, Any] = {}
        rows = []
        for client_id, metric, value, at in batch.readings:
            when = adapted.get(at)
            if when is None:
                when = adapted[at] = adapt(at)
            rows.append((pks[client_id], metric, value, when))
        table = connection.ops.quote_name(Reading._meta.db_table)
        columns = "(client_id, metric, value, at)"
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                # COPY: several times the rate of INSERT for batches of thousands of rows.
                with cursor.cursor.copy(f"COPY {table} {columns} FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            else:
                sql = f"INSERT INTO {table} {columns} VALUES (%s, %s, %s, %s)"
                cursor.executemany(sql, rows)

    def write_rollups(self, batch: Batch, pks: dict[str, int]) -> None:
        """Add the batch to its minute and hour rollups: one upsert per (client, metric,
        resolution, start), in the readings' transaction so the two never disagree."""
        adapt = connection.ops.adapt_datetimefield_value
        starts: dict[datetime, tuple[Any, Any]] = {}
        minutes: dict[tuple[int, str, int, Any], list[float]] = {}
        hour_of: dict[Any, Any] = {}
        for client_id, metric, value, at in batch.readings:
            both = starts.get(at)
            if both is None:
                utc = at.astimezone(UTC)
                minute = adapt(utc.replace(second=0, microsecond=0))
                both = starts[at] = (minute, adapt(utc.replace(minute=0, second=0, microsecond=0)))
                hour_of[minute] = both[1]
            key = (pks[client_id], metric, MINUTE, both[0])
            row = minutes.get(key)
            if row is None:
                minutes[key] = [1, value, value, value]
            else:
                add(row, 1, value, value, value)
        # Hours from the batch's minutes: fewer rows than readings when devices are chatty.
        hours: dict[tuple[int, str, int, Any], list[float]] = {}
        for (pk, metric, _m, start), (count, total, low, high) in minutes.items():
            key = (pk, metric, HOUR, hour_of[start])
            row = hours.get(key)
            if row is None:
                hours[key] = [count, total, low, high]
            else:
                add(row, count, total, low, high)
        sums = minutes | hours
        table = connection.ops.quote_name(ReadingRollup._meta.db_table)
        columns = "(client_id, metric, resolution, start, count, total, low, high)"
        # Sorted: concurrent monitors (a share group) then lock rows in the same order.
        params = [(*key, *row) for key, row in sorted(sums.items(), key=rollup_order)]
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

    def write_latest(self, batch: Batch, pks: dict[str, int]) -> None:
        latest: dict[tuple[int, str], list[Any]] = {}
        for client_id, metric, value, at in batch.readings:
            row = latest.setdefault((pks[client_id], metric), [0, 0.0, at])
            row[0], row[1], row[2] = row[0] + 1, value, at
        adapt = connection.ops.adapt_datetimefield_value
        table = connection.ops.quote_name(LatestValue._meta.db_table)
        # Same statement on SQLite and PostgreSQL; adds to the count, keeps the newest value.
        sql = (
            f"INSERT INTO {table} (client_id, metric, value, at, count) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (client_id, metric) DO UPDATE SET "
            f"count = {table}.count + excluded.count, "
            f"value = CASE WHEN excluded.at >= {table}.at THEN excluded.value "
            f"ELSE {table}.value END, "
            f"at = CASE WHEN excluded.at >= {table}.at THEN excluded.at ELSE {table}.at END"
        )
        params = [
            (pk, metric, value, adapt(at), count)
            for (pk, metric), (count, value, at) in sorted(latest.items())
        ]
        with connection.cursor() as cursor:
            cursor.executemany(sql, params)

    def write_counters(self, batch: Batch, pks: dict[str, int]) -> None:
        adapt = connection.ops.adapt_datetimefield_value
        table = connection.ops.quote_name(Client._meta.db_table)
        sql = (
            f"UPDATE {table} SET message_count = message_count + %s, "
            "last_message_at = %s, last_seen = %s WHERE id = %s"
        )
        params = []
        for client_id, count in batch.messages.items():
            at = adapt(batch.last_message[client_id])
            params.append((count, at, at, pks[client_id]))
        # One executemany (pipelined by psycopg): a round trip per client was most of the
        # flush with many devices. Sorted for the same lock order as the rollups.
        params.sort(key=lambda row: row[3])
        with connection.cursor() as cursor:
            cursor.executemany(sql, params)

    def write_bad(self, batch: Batch, pks: dict[str, int]) -> None:
        for client_id, bad in batch.bad.items():
            Client.objects.filter(pk=pks[client_id]).update(
                bad_message_count=F("bad_message_count") + bad.count,
                last_bad_message_at=bad.at,
                last_bad_message_error=bad.error[:255],
            )

    def write_stats(self, batch: Batch) -> None:
        if not batch.stats:
            return
        BrokerStat.objects.bulk_create(
            [
                BrokerStat(topic=t[:255], value=v, number=stat_number(v), updated_at=at)
                for t, (v, at) in batch.stats.items()
            ],
            update_conflicts=True,
            unique_fields=["topic"],
            update_fields=["value", "number", "updated_at"],
        )
        BrokerStatSample.objects.bulk_create(
            [BrokerStatSample(topic=t[:255], value=v, at=at) for t, v, at in batch.samples]
        )
        MonitorState.objects.sys_seen(max(at for _v, at in batch.stats.values()))


def add(row: list[float], count: float, total: float, low: float, high: float) -> None:
    row[0] += count
    row[1] += total
    if low < row[2]:
        row[2] = low
    if high > row[3]:
        row[3] = high


def rollup_order(item: tuple[tuple[int, str, int, Any], list[float]]) -> tuple[Any, ...]:
    pk, metric, resolution, start = item[0]
    return pk, resolution, str(start), metric


def merge(old: Batch, new: Batch) -> Batch:
    """Put a batch that failed to write back in front of what arrived since."""
    old.readings.extend(new.readings)
    old.messages.update(new.messages)
    old.last_message.update(new.last_message)
    for client_id, bad in new.bad.items():
        mine = old.bad.setdefault(client_id, Bad())
        mine.count, mine.at, mine.error = mine.count + bad.count, bad.at, bad.error
    old.bad_count += new.bad_count
    old.stats.update(new.stats)
    old.samples.extend(new.samples)
    return old


def chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
