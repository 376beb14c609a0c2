"""From MQTT messages to rows: the plain functions behind the monitor's paho callbacks.

`Ingest.handle_message(topic, payload, received_at, mid, dup)` sorts one message:
`$SYS/broker/log/...` lines become presence events (written at once, in order), other `$SYS`
values and telemetry messages are collected in arrival order, and `flush()` commits what was
collected in one short transaction through the models' bulk writers (`Reading.objects.
insert_rows`, `ReadingRollup.objects.add`, `LatestValue.objects.add`, `BrokerStat.objects.
keep`), with the delivery cursor that makes storage exactly once (`stored_before`). A batch
the database refuses for its data is bisected to quarantine the messages at fault.
The caller acknowledges QoS 1 messages only after `flush()` returned, so a crash before the
commit leaves them with the broker, which delivers them again.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.db import (
    DatabaseError,
    DataError,
    IntegrityError,
    close_old_connections,
    connection,
    transaction,
)
from django.db.models import F

from monitor import brokerlog, presence, telemetry
from monitor.models import (
    BrokerStat,
    BrokerStatSample,
    Client,
    DeliveryCursor,
    DeliveryLedger,
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
MAX_LOG_LINE = 4096
MAX_STAT_VALUE = 1024
MID_SPACE = 65535  # MQTT packet ids 1..65535
Readings = list[tuple[str, str, float, datetime]]


def stat_number(value: str) -> float | None:
    """'12' -> 12.0, '3600 seconds' -> 3600.0, 'mosquitto version 2.0.11' -> None."""
    head = value.split(" ", 1)[0]
    try:
        number = float(head)
    except ValueError:
        return None
    return number if number == number and abs(number) != float("inf") else None


@dataclass
class Message:
    """One telemetry message in a batch: its readings, or why it is a bad payload."""

    client_id: str
    at: datetime
    values: list[tuple[str, float]]
    error: str = ""
    topic: str = ""  # kept for bad payloads only, for the log line
    mid: int = 0  # the QoS 1 packet id; 0 for QoS 0
    key: str = ""  # a RabbitMQ delivery's digest (DeliveryLedger); "" over MQTT


@dataclass
class Batch:
    """What arrived since the last flush, in arrival order (which is packet id order)."""

    messages: list[Message] = field(default_factory=list)
    stats: dict[str, tuple[str, datetime]] = field(default_factory=dict)
    samples: list[tuple[str, float, datetime]] = field(default_factory=list)
    size: int = 0  # readings + bad payloads + samples, kept: pending() is asked per message
    bad_count: int = 0

    def __len__(self) -> int:
        return self.size


class Ingest:
    def __init__(
        self, self_client_id: str = "", max_payload: int | None = None, consumer: str = ""
    ) -> None:
        self.self_client_id = self_client_id or settings.MONITOR_CLIENT_ID
        self.max_payload = max_payload or settings.TELEMETRY_MAX_BYTES
        self.batch = Batch()
        self.client_pks: dict[str, int] = {}
        self.presence = presence.Tracker(self.self_client_id)
        self.stored = 0
        self.duplicates = 0
        self.quarantined = 0
        self.state_ready = False
        # The packet id of the last QoS 1 message committed; None when unknown (not loaded).
        self.cursor: int | None = None
        self.cursor_known = False
        # RabbitMQ: this consumer's ledger name, and the keys of every consumer's last batch.
        self.consumer = consumer
        self.ledger: set[str] | None = None
        self.flush_keys: list[str] = []  # committed since the batch's acknowledgement

    # -- sorting messages ------------------------------------------------------------------
    def handle_message(
        self,
        topic: str,
        payload: bytes,
        received_at: datetime,
        mid: int = 0,
        dup: bool = False,
        key: str = "",
    ) -> None:
        """`mid` and `dup`: the packet id and DUP flag of a QoS 1 delivery (exactly once);
        from RabbitMQ, `key` and its redelivered flag instead."""
        if topic.startswith(LOG_PREFIX):
            line = telemetry.storable_text(payload.decode("utf-8", "replace"), MAX_LOG_LINE)
            self.handle_log_line(line, received_at)
        elif topic.startswith(SYS_PREFIX):
            value = telemetry.storable_text(payload.decode("utf-8", "replace"), MAX_STAT_VALUE)
            self.handle_stat(telemetry.storable_text(topic, 255), value, received_at)
        elif dup and (self.in_ledger(key) if key else self.stored_before(mid)):
            self.duplicates += 1
        else:
            self.handle_telemetry(topic, payload, received_at, mid, key)

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
        self.batch.size += 1
        # Presence takes counts in stream order, with exactly the lines before them.
        if topic == UPTIME_TOPIC:
            self.presence.uptime(number, received_at)
        elif topic == CONNECTED_TOPIC:
            self.presence.count(int(number), received_at)

    def handle_telemetry(
        self, topic: str, payload: bytes, received_at: datetime, mid: int = 0, key: str = ""
    ) -> None:
        try:
            message = telemetry.parse(topic, payload, self.max_payload)
        except telemetry.BadPayload as exc:
            self.bad_payload(topic, str(exc), received_at, mid, key)
            return
        self.batch.messages.append(
            Message(message.client_id, received_at, message.values, topic=topic, mid=mid, key=key)
        )
        self.batch.size += len(message.values)
        self.presence.message(message.client_id, received_at)

    def bad_payload(
        self, topic: str, error: str, received_at: datetime, mid: int = 0, key: str = ""
    ) -> None:
        client_id = telemetry.client_id_of(topic)
        message = Message(client_id, received_at, [], error, topic[:200], mid, key)
        self.batch.messages.append(message)
        self.batch.size += 1
        self.batch.bad_count += 1
        # A flood of bad payloads must not become a flood of log lines.
        if self.batch.bad_count <= BAD_LOG_LINES_PER_FLUSH:
            log.warning("bad payload on %r: %s", topic[:200], error)
        self.presence.message(client_id, received_at)

    # -- exactly once --------------------------------------------------------------------------
    def session_started(self, session_present: bool) -> None:
        """On each CONNACK. A new session numbers its packets afresh: the stored cursor then
        says nothing, and is deleted so that a crash before the next commit cannot mislead."""
        self.cursor, self.cursor_known = None, not session_present
        if session_present:
            self.load_cursor()
        else:
            DeliveryCursor.objects.forget(self.self_client_id)

    def load_cursor(self) -> None:
        self.cursor = DeliveryCursor.objects.position(self.self_client_id)
        self.cursor_known = True

    def stored_before(self, mid: int) -> bool:
        """Whether a redelivered (DUP) QoS 1 message was already committed. The broker numbers
        a session's QoS 1 messages in the order it sends them and resends unacknowledged ones
        with their own ids, and batches commit in arrival order: a redelivery whose id is at or
        behind the cursor (the last id committed) was stored. No lookup: the cursor is in
        memory, loaded once per connection. See docs/deploy.md, "Exactly once"."""
        if not mid:
            return False
        if not self.cursor_known:
            try:
                self.load_cursor()
            except DatabaseError as exc:
                # Unknown: storing twice is better than losing it.
                log.warning("cannot read the delivery cursor, storing a redelivery: %s", exc)
                return False
        return self.cursor is not None and mid_behind(mid, self.cursor)

    def in_ledger(self, key: str) -> bool:
        """Whether a message RabbitMQ redelivered was in a batch some consumer committed
        (DeliveryLedger). Only redeliveries ask; the ledgers are read once per batch."""
        if self.ledger is None:
            try:
                self.ledger = DeliveryLedger.objects.committed()
            except DatabaseError as exc:
                log.warning("cannot read the delivery ledgers, storing a redelivery: %s", exc)
                return False
        return key in self.ledger

    # -- writing -----------------------------------------------------------------------------
    def pending(self) -> int:
        return len(self.batch)

    def drop_pending_telemetry(self) -> int:
        """Forget collected telemetry (its messages will be delivered again); keep $SYS."""
        dropped = sum(len(m.values) for m in self.batch.messages)
        self.batch.size -= dropped + self.batch.bad_count
        self.batch.messages, self.batch.bad_count = [], 0
        return dropped

    def flush(self) -> int:
        """Write what was collected; returns the number of readings stored."""
        batch, self.batch = self.batch, Batch()
        if batch.bad_count > BAD_LOG_LINES_PER_FLUSH:
            log.warning("... and %d more bad payloads", batch.bad_count - BAD_LOG_LINES_PER_FLUSH)
        if self.duplicates:
            log.info("%d redelivered messages were stored before; acknowledged", self.duplicates)
            self.duplicates = 0
        try:
            stored = self.write_batch(batch)
        except BaseException:
            # Its messages are not acknowledged yet: keep what is not committed for the retry.
            self.batch = merge(batch, self.batch)
            raise
        self.flush_keys = []  # the caller acknowledges the whole batch now
        self.ledger = None  # other consumers commit too: read again for the next redelivery
        self.stored += stored
        return stored

    def commit(self) -> bool:
        """flush() for the monitor's loops: False when the batch could not be written (logged,
        kept for the retry, nothing to acknowledge), True when the caller may acknowledge."""
        try:
            close_old_connections()
            self.flush()
        except Exception:
            log.exception("could not write a batch; keeping it and retrying")
            close_old_connections()
            return False
        return True

    def write_batch(self, batch: Batch) -> int:
        """One transaction for the whole batch; when it fails for its data rather than for the
        database being away, find the messages that cannot be stored (bisect) and store the
        rest. Committed parts leave `batch`, so a retry never writes them twice."""
        if not self.state_ready:
            MonitorState.get()
            self.state_ready = True
        try:
            try:
                return self.write(batch.messages, batch)
            except IntegrityError:
                # A client row deleted under us (the admin): write() forgot the cached ids.
                return self.write(batch.messages, batch)
        except Exception as exc:
            if not about_data(exc):
                raise
            log.warning(
                "a batch of %d messages cannot be stored (%s: %s); looking for the bad ones",
                len(batch.messages),
                type(exc).__name__,
                str(exc)[:200],
            )
        self.write_stats_alone(batch)
        return self.bisect(batch.messages)

    def bisect(self, messages: list[Message]) -> int:
        """Write `messages` in ever smaller parts, each its own transaction, front first: a
        part that fails is halved, a single message that fails is quarantined. Each committed
        part is removed from `messages` (and advances the cursor), so the database going away
        half-way leaves exactly the rest for the retry."""
        stored = 0
        # A stack of part sizes, the front part on top; the whole has failed already.
        sizes = halves(len(messages))
        while messages:
            size = sizes.pop()
            try:
                stored += self.write(messages[:size], None)
            except Exception as exc:
                if not about_data(exc):
                    raise
                if size > 1:
                    sizes += halves(size)
                    continue
                self.quarantine(messages[0], exc)
            del messages[:size]
        return stored

    def quarantine(self, message: Message, exc: Exception) -> None:
        """A message the database refused: counted as a bad payload on its client, logged,
        and acknowledged with the rest, never retried."""
        reason = f"cannot be stored: {type(exc).__name__}"
        log.warning("bad payload on %r: %s (%s)", message.topic, reason, str(exc)[:200])
        self.quarantined += 1
        bad = Message(
            telemetry.storable_text(message.client_id), message.at, [], reason, "", message.mid
        )
        try:
            self.write([bad], None)
        except Exception as exc:
            if not about_data(exc):
                raise
            log.exception("could not count a bad payload on %r; dropped", message.topic)

    def write_stats_alone(self, batch: Batch) -> None:
        """$SYS values in their own transaction: they are QoS 0 and never delivered again."""
        try:
            with transaction.atomic():
                self.write_stats(batch)
        except Exception as exc:
            if not about_data(exc):
                raise
            log.exception("could not store $SYS values; dropped")
        batch.stats, batch.samples = {}, []

    def write(self, messages: list[Message], stats: Batch | None) -> int:
        """One transaction: the messages' readings, rollups, latest values and counters,
        their bad payloads, the delivery cursor, and the $SYS values of `stats`."""
        readings = [(m.client_id, k, v, m.at) for m in messages for k, v in m.values]
        bad = [m for m in messages if m.error]
        last_mid = next((m.mid for m in reversed(messages) if m.mid), 0)
        try:
            self.write_transaction(messages, readings, bad, last_mid, stats)
        except BaseException:
            # Client rows created in the rolled back transaction are gone: forget their ids.
            self.client_pks.clear()
            raise
        if last_mid:
            self.cursor, self.cursor_known = last_mid, True
        self.flush_keys += [m.key for m in messages if m.key]
        return len(readings)

    def write_transaction(
        self,
        messages: list[Message],
        readings: Readings,
        bad: list[Message],
        last_mid: int,
        stats: Batch | None,
    ) -> None:
        with transaction.atomic():
            pks = self.resolve({m.client_id for m in messages})
            if readings:
                rows = [(pks[client_id], k, v, at) for client_id, k, v, at in readings]
                Reading.objects.insert_rows(rows)
                # In the readings' transaction, from the same rows: the three never disagree.
                ReadingRollup.objects.add(rows)
                LatestValue.objects.add(rows)
                self.write_counters(messages, pks)
            if bad:
                self.write_bad(bad, pks)
            if stats is not None:
                self.write_stats(stats)
            if last_mid:
                DeliveryCursor.objects.advance(self.self_client_id, last_mid)
            keys = [m.key for m in messages if m.key]
            if keys and self.consumer:
                # A part of a bisected batch keeps the keys of the parts before it: the whole
                # batch is acknowledged at once, after the last part.
                DeliveryLedger.objects.record(self.consumer, self.flush_keys + keys)
            if readings or bad:
                MonitorState.objects.stored(len(readings), len(bad))

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

    def write_counters(self, messages: list[Message], pks: dict[str, int]) -> None:
        adapt = connection.ops.adapt_datetimefield_value
        table = connection.ops.quote_name(Client._meta.db_table)
        sql = (
            f"UPDATE {table} SET message_count = message_count + %s, "
            "last_message_at = %s, last_seen = %s WHERE id = %s"
        )
        counts: Counter[str] = Counter()
        last: dict[str, datetime] = {}
        for m in messages:
            if not m.error:
                counts[m.client_id] += 1
                last[m.client_id] = m.at
        params = []
        for client_id, count in counts.items():
            at = adapt(last[client_id])
            params.append((count, at, at, pks[client_id]))
        # One executemany (pipelined by psycopg): a round trip per client was most of the
        # flush with many devices. Sorted for the same lock order as the rollups.
        params.sort(key=lambda row: row[3])
        with connection.cursor() as cursor:
            cursor.executemany(sql, params)

    def write_bad(self, bad: list[Message], pks: dict[str, int]) -> None:
        per_client: dict[str, tuple[int, Message]] = {}
        for m in bad:
            per_client[m.client_id] = (per_client.get(m.client_id, (0, m))[0] + 1, m)
        for client_id, (count, last) in per_client.items():
            Client.objects.filter(pk=pks[client_id]).update(
                bad_message_count=F("bad_message_count") + count,
                last_bad_message_at=last.at,
                last_bad_message_error=last.error[:255],
            )

    def write_stats(self, batch: Batch) -> None:
        if not batch.stats:
            return
        BrokerStat.objects.keep([(t, v, stat_number(v), at) for t, (v, at) in batch.stats.items()])
        BrokerStatSample.objects.add(batch.samples)
        MonitorState.objects.sys_seen(max(at for _v, at in batch.stats.values()))


def merge(old: Batch, new: Batch) -> Batch:
    """Put what is left of a batch that failed to write in front of what arrived since."""
    old.messages.extend(new.messages)
    old.stats.update(new.stats)
    old.samples.extend(new.samples)
    old.bad_count = sum(1 for m in old.messages if m.error)
    old.size = sum(len(m.values) or 1 for m in old.messages) + len(old.samples)
    return old


def about_data(exc: BaseException) -> bool:
    """Whether a failed write is about the data written (looked for message by message)
    rather than the database being away or a bug (the batch is kept and retried: nothing is
    quarantined for an error a retry or a fix can cure). The drivers' own classes too: a
    COPY on psycopg's cursor raises them unwrapped."""
    driver = connection.Database  # type: ignore[attr-defined]  # the DB-API module
    data_errors = (DataError, IntegrityError, driver.DataError, driver.IntegrityError)
    return isinstance(exc, (*data_errors, UnicodeError))


def halves(size: int) -> list[int]:
    """[back, front]: the sizes of two halves, to push on the bisection's stack."""
    return [size - size // 2, size // 2] if size > 1 else [size]


def mid_behind(mid: int, cursor: int) -> bool:
    """Whether packet id `mid` is at or before `cursor` in the broker's numbering, which
    counts 1..65535 and wraps (never 0). Within half the circle: the receive maximum the
    monitor asks for keeps every unacknowledged message much closer than that."""
    return (cursor - mid) % MID_SPACE < MID_SPACE // 2


def chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
