"""The monitor's RabbitMQ side (`manage.py monitor --broker rabbitmq`): telemetry from a
quorum queue, presence from the event exchange, reconciled from the management API.

Devices publish over MQTT to any node; RabbitMQ's MQTT plugin routes each message to
`amq.topic` with the topic as its routing key (`/` became `.`). The durable quorum queue
TELEMETRY_QUEUE is bound there with TELEMETRY_TOPICS translated the same way, so several
monitors read it as competing consumers. A message is acknowledged only after the batch that
holds it committed: a monitor killed mid-batch leaves its messages to the queue, which gives
them to another consumer or back to it, and Ingest's exactly-once storage drops a replay.

Presence: `connection.created` and `connection.closed` from `amq.rabbitmq.event`, across the
cluster. They name connections, not devices (a closed event carries only the connection's
name), and a killed node sends no `closed` for its clients, so the monitor keeps its own map
of connection names and reconciles every RECONCILE_SECONDS against the management API's
connection list, which only live nodes answer for.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import socket
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pika
import pika.exceptions
from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection, transaction
from django.utils import timezone

from brokerauth.rabbitmq import EVENT_EXCHANGE, EXCHANGE, MONITOR_QUEUE_PREFIX, mqtt_topic
from monitor import account, brokerlog, presence
from monitor.ingest import Ingest
from monitor.models import Client, DeliveryLedger, MonitorState, Session

log = logging.getLogger("monitor.amqp")

TELEMETRY_QUEUE = MONITOR_QUEUE_PREFIX + "telemetry"
RECONCILE_SECONDS = 15.0
# The management API's connection list lags the events by up to its statistics interval
# (5 s by default): a connection younger than this is not closed for being missing.
RECONCILE_GRACE = timedelta(seconds=10)
HEARTBEAT_SECONDS = 5.0
# A ledger row outlives its consumer by this much: longer than any redelivery takes.
LEDGER_KEPT = timedelta(days=1)
RETRY_SECONDS = 2.0
CLIENT_ID = re.compile(r'<<"client_id">>\s*=>\s*<<"((?:[^"\\]|\\.)*)"(?:/utf8)?>>')
PROTOCOL_VERSION = re.compile(r'"([0-9.]+)"')  # {'MQTT',"3.1.1"}
PROTOCOLS = {"3.1": Client.Protocol.MQTT31, "3.1.1": Client.Protocol.MQTT311}


def delivery_key(routing_key: str, body: bytes) -> str:
    """A message's digest for the delivery ledger (exactly once: monitor.models.DeliveryLedger).
    Two messages with the same topic and payload in one batch window look alike: a redelivery
    of one of them after a crash is taken for the other (documented in docs/deploy.md)."""
    digest = hashlib.blake2b(routing_key.encode("utf-8", "replace"), digest_size=8)
    digest.update(b"\0")
    digest.update(body)
    return digest.hexdigest()


def consumer_name() -> str:
    """One ledger row per process: a restarted monitor must not overwrite what its previous
    life committed, which RabbitMQ may be delivering again to someone."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"[:255]


def binding_key(mqtt_filter: str) -> str:
    """An MQTT topic filter as RabbitMQ's MQTT plugin turns it into a binding key."""
    return mqtt_filter.replace("/", ".").replace("+", "*")


def erlang_address(text: str) -> str:
    """`{127,0,0,1}` (an Erlang inet tuple, as the event exchange writes it) -> 127.0.0.1."""
    parts = [p for p in text.strip("{}").split(",") if p]
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        return text[:64]
    if len(numbers) == 4:
        return ".".join(map(str, numbers))
    return ":".join(f"{n:x}" for n in numbers)[:64]


@dataclass(frozen=True)
class Opened:
    """One MQTT connection of the cluster: its name is unique while it lives."""

    name: str
    node: str
    event: brokerlog.Connected
    at: datetime


@dataclass(frozen=True)
class Closed:
    name: str
    node: str
    at: datetime


def _at(ms: object) -> datetime:
    try:
        return datetime.fromtimestamp(int(str(ms)) / 1000, tz=UTC)
    except (TypeError, ValueError, OverflowError):
        return timezone.now()


def connection_event(routing_key: str, headers: Mapping[str, Any]) -> Opened | Closed | None:
    """What one event-exchange message says about an MQTT connection, or None (AMQP
    connections, other events, or a created event whose client id cannot be read)."""
    name, node = str(headers.get("name", "")), str(headers.get("node", ""))
    at = _at(headers.get("timestamp_in_ms"))
    if routing_key == "connection.closed" and name:
        return Closed(name, node, at)
    if routing_key != "connection.created" or "MQTT" not in str(headers.get("protocol", "")):
        return None
    found = CLIENT_ID.search(str(headers.get("variable_map", "")))
    if not found or not name:
        return None  # a client id Erlang printed as bytes: the next reconcile names it
    version = PROTOCOL_VERSION.search(str(headers.get("protocol", "")))
    event = brokerlog.Connected(
        client_id=found.group(1)[:255],
        address=erlang_address(str(headers.get("peer_host", ""))),
        port=_int(headers.get("peer_port")),
        protocol=PROTOCOLS.get(version.group(1) if version else "", ""),
        clean_start=None,
        keepalive=None,
        username=str(headers.get("user", ""))[:255],
    )
    return Opened(name, node, event, at)


def _int(value: object) -> int | None:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def listed_connections(rows: Iterable[Mapping[str, Any]]) -> list[Opened]:
    """The management API's /api/connections, MQTT connections only."""
    listed = []
    for row in rows:
        props = row.get("client_properties") or {}
        client_id = props.get("client_id") if isinstance(props, dict) else None
        if not str(row.get("protocol", "")).startswith("MQTT") or not client_id:
            continue
        event = brokerlog.Connected(
            client_id=str(client_id)[:255],
            address=str(row.get("peer_host", ""))[:64],
            port=_int(row.get("peer_port")),
            protocol=PROTOCOLS.get(str(row.get("protocol", "")).split(" ")[-1], ""),
            clean_start=None,
            keepalive=None,
            username=str(row.get("user", ""))[:255],
        )
        listed.append(
            Opened(str(row["name"]), str(row.get("node", "")), event, _at(row.get("connected_at")))
        )
    return listed


class Connections:
    """The cluster's MQTT connections as the monitor knows them, from the events and the
    management API's list, which lags the events by up to RECONCILE_GRACE: a connection
    learned from an event just now may not be listed yet, and one closed just now may still
    be. So the list never overrules an event younger than the grace."""

    def __init__(self) -> None:
        self.names: dict[str, tuple[str, datetime]] = {}  # name -> (client id, learned at)
        self.closed_names: dict[str, datetime] = {}

    def opened(self, item: Opened) -> None:
        self.names[item.name] = (item.event.client_id, item.at)
        with transaction.atomic():
            presence.connected(item.event, item.at)
            Client.objects.filter(client_id=item.event.client_id).update(node=item.node)
            Session.objects.filter(
                client__client_id=item.event.client_id, disconnected_at=None
            ).update(node=item.node)

    def closed(self, item: Closed) -> None:
        self.closed_names[item.name] = item.at
        known = self.names.pop(item.name, None)
        if known is None:
            return  # opened while the monitor was away: the next reconcile closes it
        port = _int(item.name.split(" -> ")[0].rsplit(":", 1)[-1])
        event = brokerlog.Disconnected(known[0], "closed", "connection closed", port=port)
        with transaction.atomic():
            presence.disconnected(event, item.at)

    def reconcile(self, listed: list[Opened], now: datetime) -> tuple[int, int]:
        """Open what the cluster lists and we hold offline; close what we hold online and the
        cluster does not list (a killed node's clients). Returns (opened, closed)."""
        young = now - RECONCILE_GRACE
        self.closed_names = {n: at for n, at in self.closed_names.items() if at > young}
        live = [item for item in listed if item.name not in self.closed_names]
        listed_names = {item.name for item in live}
        self.names = {n: v for n, v in self.names.items() if n in listed_names or v[1] > young}
        clients = Client.objects.exclude(client_id=settings.MONITOR_CLIENT_ID)
        state = {
            c: (online, since, gone)
            for c, online, since, gone in clients.values_list(
                "client_id", "online", "connected_since", "last_disconnected_at"
            )
        }
        opened = closed = 0
        for item in live:
            online, _since, gone = state.get(item.event.client_id, (False, None, None))
            self.names.setdefault(item.name, (item.event.client_id, item.at))
            # A disconnect seen after this connection began is newer than the list.
            if not online and (gone is None or gone < item.at):
                self.opened(item)
                opened += 1
        listed_clients = {item.event.client_id for item in live}
        learned = {client_id for client_id, _at in self.names.values()}
        for client_id, (online, since, _gone) in state.items():
            stale = since is not None and since < young
            if online and stale and client_id not in listed_clients | learned:
                presence.close(client_id, now, Session.Reason.OTHER, "not listed by the cluster")
                closed += 1
        return opened, closed


@dataclass
class Options:
    urls: list[str] = field(default_factory=lambda: settings.MONITOR_AMQP_URLS)
    management_urls: list[str] = field(
        default_factory=lambda: settings.MONITOR_RABBITMQ_MANAGEMENT_URLS
    )
    username: str = field(default_factory=lambda: settings.MONITOR_USERNAME)
    password: str = field(default_factory=account.password)
    telemetry_topics: list[str] = field(default_factory=lambda: settings.TELEMETRY_TOPICS)
    presence: bool = field(default_factory=lambda: settings.MONITOR_PRESENCE)
    batch_size: int = field(default_factory=lambda: settings.MONITOR_BATCH_SIZE)
    flush_seconds: float = field(default_factory=lambda: settings.MONITOR_FLUSH_SECONDS)
    reconcile_seconds: float = RECONCILE_SECONDS
    reconnect_max: float = field(default_factory=lambda: settings.MONITOR_RECONNECT_MAX_SECONDS)


class ClusterSubscriber:
    """The monitor's loop against a RabbitMQ cluster: `run()` until `stop()`."""

    def __init__(self, options: Options | None = None) -> None:
        self.options = options or Options()
        self.stopping = False
        self.ready = threading.Event()  # consuming (tests wait on it)
        self.ingest = Ingest(self_client_id=settings.MONITOR_CLIENT_ID, consumer=consumer_name())
        self.connections = Connections()
        self.last_tag = 0
        self.consumed = 0

    def stop(self) -> None:
        self.stopping = True

    def sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(0.1)

    def parameters(self) -> list[pika.URLParameters]:
        credentials = pika.PlainCredentials(self.options.username, self.options.password)
        params = []
        for url in self.options.urls:
            p = pika.URLParameters(url)
            p.credentials = credentials
            p.heartbeat = 30
            params.append(p)
        return params

    def run(self) -> None:
        log.info(
            "monitor starting: RabbitMQ %s as %r, telemetry %s from queue %s",
            ", ".join(self.options.urls),
            self.options.username,
            ", ".join(self.options.telemetry_topics),
            TELEMETRY_QUEUE,
        )
        self.db(lambda: MonitorState.objects.started(timezone.now()))
        delay = RETRY_SECONDS
        while not self.stopping:
            try:
                self.session()
                delay = RETRY_SECONDS
            except (pika.exceptions.AMQPError, OSError) as exc:
                # Nothing acknowledged is lost: what was not yet written goes back to the queue.
                dropped = self.ingest.drop_pending_telemetry()
                self.last_tag = 0  # delivery tags belong to the lost channel
                self.ready.clear()
                log.warning(
                    "no RabbitMQ connection (%s); %d readings left to redelivery; retry in %.0f s",
                    repr(exc)[:300],
                    dropped,
                    delay,
                )
                self.db(lambda: MonitorState.objects.disconnected(timezone.now()))
                self.sleep(delay)
                delay = min(delay * 2, self.options.reconnect_max)
        now = timezone.now()
        self.db(lambda: MonitorState.objects.stopped(now))
        log.info("monitor stopped: %d readings stored", self.ingest.stored)
        connection.close()

    def session(self) -> None:
        conn = pika.BlockingConnection(self.parameters())
        try:
            channel = conn.channel()
            self.declare(channel)
            self.ready.set()
            log.info("connected to RabbitMQ (%s)", conn._impl.params.host)
            now = timezone.now()
            self.db(lambda: DeliveryLedger.objects.prune(now - LEDGER_KEPT))
            self.db(lambda: MonitorState.objects.connected(now))
            self.loop(conn, channel)
            self.flush(channel)
        finally:
            if conn.is_open:
                conn.close()

    def declare(self, channel: Any) -> None:
        channel.basic_qos(prefetch_count=min(65535, self.options.batch_size * 2))
        channel.queue_declare(TELEMETRY_QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
        for topic in self.options.telemetry_topics:
            channel.queue_bind(TELEMETRY_QUEUE, EXCHANGE, routing_key=binding_key(topic))
        channel.basic_consume(TELEMETRY_QUEUE, on_message_callback=self.on_telemetry)
        if self.options.presence:
            events = f"{MONITOR_QUEUE_PREFIX}events.{uuid.uuid4().hex[:12]}"
            channel.queue_declare(events, exclusive=True, auto_delete=True)
            channel.queue_bind(events, EVENT_EXCHANGE, routing_key="connection.*")
            channel.basic_consume(events, on_message_callback=self.on_event, auto_ack=True)

    def loop(self, conn: pika.BlockingConnection, channel: Any) -> None:
        deadline = time.monotonic() + self.options.flush_seconds
        next_reconcile = time.monotonic() + 1.0
        next_beat = 0.0
        while not self.stopping:
            conn.process_data_events(time_limit=0.1)
            if self.ingest.pending() >= self.options.batch_size or time.monotonic() >= deadline:
                self.flush(channel)
                deadline = time.monotonic() + self.options.flush_seconds
            if self.options.presence and time.monotonic() >= next_reconcile:
                self.reconcile()
                next_reconcile = time.monotonic() + self.options.reconcile_seconds
            if time.monotonic() >= next_beat:
                self.db(lambda: MonitorState.objects.heartbeat(timezone.now()))
                next_beat = time.monotonic() + HEARTBEAT_SECONDS

    def on_telemetry(self, _ch: Any, method: Any, _props: Any, body: bytes) -> None:
        try:
            self.ingest.handle_message(
                mqtt_topic(method.routing_key),
                body,
                timezone.now(),
                dup=bool(method.redelivered),
                key=delivery_key(method.routing_key, body),
            )
        except Exception:
            log.exception("could not handle a message on %r", method.routing_key)
        self.last_tag = method.delivery_tag
        self.consumed += 1

    def on_event(self, _ch: Any, method: Any, props: Any, _body: bytes) -> None:
        item = connection_event(method.routing_key, props.headers or {})
        if item is None:
            return
        if isinstance(item, Opened):
            self.db(lambda: self.connections.opened(item))
        else:
            self.db(lambda: self.connections.closed(item))

    def flush(self, channel: Any) -> None:
        if not self.ingest.commit():
            self.sleep(RETRY_SECONDS)
            return
        if self.last_tag:
            channel.basic_ack(delivery_tag=self.last_tag, multiple=True)
            self.last_tag = 0

    def reconcile(self) -> None:
        listed = self.management_connections()
        if listed is None:
            return
        result = self.db(lambda: self.connections.reconcile(listed, timezone.now()))
        if result and any(result):
            log.info("reconciled with the cluster: %d opened, %d closed", *result)

    def management_connections(self) -> list[Opened] | None:
        token = base64.b64encode(f"{self.options.username}:{self.options.password}".encode())
        for url in self.options.management_urls:
            request = urllib.request.Request(
                url.rstrip("/") + "/api/connections",
                headers={"Authorization": "Basic " + token.decode()},
            )
            try:
                with urllib.request.urlopen(request, timeout=5) as answer:
                    return listed_connections(json.loads(answer.read()))
            except (OSError, ValueError) as exc:
                log.warning("management API at %s unavailable: %s", url, exc)
        return None

    def db(self, work: Any) -> Any:
        try:
            close_old_connections()
            return work()
        except DatabaseError as exc:
            log.warning("database unavailable, skipped an update: %s", exc)
            return None
