"""The monitor's MQTT side: one paho client, a queue, and a loop that batches into the database.

paho's network thread (loop_start) only decodes and queues; `Subscriber.run()` drains the
queue in the caller's thread, hands messages to `Ingest`, writes a batch when it is big or old
enough, and only then acknowledges the QoS 1 messages it holds (manual_ack). Messages received
but not yet written when the connection drops are dropped here too: the broker never saw their
PUBACK, so it delivers them again into the persistent session. A redelivery of a message that
was committed but not yet acknowledged (the monitor killed between the two, a PUBACK lost with
the connection) carries the DUP flag and a packet id at or behind the delivery cursor that
each batch commits (`Ingest.stored_before`): it is acknowledged, not stored again.
"""

from __future__ import annotations

import logging
import queue
import ssl
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import paho.mqtt.client as mqtt
from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection
from django.utils import timezone
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from monitor import account
from monitor.ingest import Ingest
from monitor.models import MonitorState

log = logging.getLogger("monitor")

HEARTBEAT_SECONDS = 5.0
DB_RETRY_SECONDS = 2.0
RECEIVE_MAXIMUM = 16384


@dataclass
class Options:
    host: str = field(default_factory=lambda: settings.MQTT_HOST)
    port: int = field(default_factory=lambda: settings.MQTT_PORT)
    ca_file: str = field(default_factory=lambda: settings.MQTT_CA_FILE)
    username: str = field(default_factory=lambda: settings.MONITOR_USERNAME)
    password: str = field(default_factory=account.password)
    client_id: str = field(default_factory=lambda: settings.MONITOR_CLIENT_ID)
    telemetry_topics: list[str] = field(default_factory=lambda: settings.TELEMETRY_TOPICS)
    share_group: str = field(default_factory=lambda: settings.TELEMETRY_SHARE_GROUP)
    presence: bool = field(default_factory=lambda: settings.MONITOR_PRESENCE)
    session_expiry: int = field(default_factory=lambda: settings.MONITOR_SESSION_EXPIRY)
    batch_size: int = field(default_factory=lambda: settings.MONITOR_BATCH_SIZE)
    flush_seconds: float = field(default_factory=lambda: settings.MONITOR_FLUSH_SECONDS)
    reconnect_max: int = field(default_factory=lambda: settings.MONITOR_RECONNECT_MAX_SECONDS)
    keepalive: int = 30

    def subscriptions(self) -> list[tuple[str, SubscribeOptions]]:
        prefix = f"$share/{self.share_group}/" if self.share_group else ""
        subs = [(prefix + t, SubscribeOptions(qos=1)) for t in self.telemetry_topics]
        if self.presence:
            subs.append(("$SYS/#", SubscribeOptions(qos=0)))
        return subs


@dataclass
class Item:
    generation: int
    topic: str
    payload: bytes
    received_at: datetime
    mid: int
    qos: int
    dup: bool = False


@dataclass(frozen=True)
class Connected:
    """The monitor's own connection came up (queued by paho's thread, in stream order)."""

    generation: int
    session_present: bool


@dataclass(frozen=True)
class Disconnected:
    generation: int
    reason: str


Queued = Item | Connected | Disconnected


class Subscriber:
    """The monitor's loop: `run()` until `stop()`, as `manage.py monitor` runs it."""

    def __init__(self, options: Options | None = None) -> None:
        self.options = options or Options()
        self.queue: queue.Queue[Queued] = queue.Queue()
        self.stopping = threading.Event()
        self.generation = 0
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.ingest = Ingest(self_client_id=self.options.client_id)
        self.unacked: list[Item] = []
        self.client = self.make_client()

    # -- paho side: decode and hand off -----------------------------------------------------
    def make_client(self) -> mqtt.Client:
        o = self.options
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=o.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        client.username_pw_set(o.username, o.password)
        client.tls_set(ca_certs=o.ca_file, cert_reqs=ssl.CERT_REQUIRED)
        client.reconnect_delay_set(min_delay=1, max_delay=o.reconnect_max)
        client.max_queued_messages_set(0)
        client.on_connect = self.on_connect
        client.on_disconnect = self.on_disconnect
        client.on_message = self.on_message
        client.on_subscribe = self.on_subscribe
        client.on_connect_fail = lambda _c, _u: log.warning(
            "cannot reach the broker at %s:%d; retrying with backoff", o.host, o.port
        )
        return client

    def connect_properties(self) -> Properties:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.options.session_expiry
        # Unacknowledged QoS 1 messages the broker may send ahead: room for whole batches, and
        # well inside half the packet id space, which the delivery cursor relies on.
        props.ReceiveMaximum = min(RECEIVE_MAXIMUM, max(100, self.options.batch_size * 4))
        return props

    def on_connect(self, client: mqtt.Client, _u: Any, flags: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.warning("broker refused the connection: %s", reason)
            return
        self.generation += 1
        client.subscribe(self.options.subscriptions())
        self.queue.put(Connected(self.generation, flags.session_present))

    def on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.generation += 1
        self.queue.put(Disconnected(self.generation, str(reason)))

    def on_subscribe(
        self, _c: mqtt.Client, _u: Any, _mid: int, reasons: list[Any], _p: Any
    ) -> None:
        failed = False
        for (topic, _opts), reason in zip(self.options.subscriptions(), reasons, strict=False):
            failed = failed or reason.is_failure
            if reason.is_failure:
                log.error(
                    "subscription to %r refused: %s (check the account's rules)", topic, reason
                )
        if not failed:
            self.subscribed.set()

    def on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        self.queue.put(
            Item(
                self.generation,
                message.topic,
                message.payload,
                timezone.now(),
                message.mid,
                message.qos,
                bool(message.dup),
            )
        )

    # -- the loop ---------------------------------------------------------------------------
    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        o = self.options
        log.info(
            "monitor starting: %s:%d as %r (user %r), telemetry %s%s",
            o.host,
            o.port,
            o.client_id,
            o.username,
            ", ".join(o.telemetry_topics),
            f" shared in group {o.share_group!r}" if o.share_group else "",
        )
        self.db(lambda: MonitorState.objects.started(timezone.now()))
        self.client.connect_async(
            o.host,
            o.port,
            keepalive=o.keepalive,
            clean_start=False,
            properties=self.connect_properties(),
        )
        self.client.loop_start()
        try:
            self.loop()
        finally:
            self.shutdown()

    def loop(self) -> None:
        deadline = time.monotonic() + self.options.flush_seconds
        next_beat = 0.0
        while not self.stopping.is_set():
            timeout = max(0.0, deadline - time.monotonic())
            try:
                item = self.queue.get(timeout=min(timeout, 0.2))
            except queue.Empty:
                item = None
            if item is not None:
                self.take(item)
                self.drain()
            if self.ingest.pending() >= self.options.batch_size or time.monotonic() >= deadline:
                self.flush()
                deadline = time.monotonic() + self.options.flush_seconds
            if time.monotonic() >= next_beat:
                self.db(self.heartbeat)
                next_beat = time.monotonic() + HEARTBEAT_SECONDS

    def drain(self) -> None:
        """Take what is already queued, up to a batch, without waiting."""
        while self.ingest.pending() < self.options.batch_size:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                return
            self.take(item)

    def take(self, item: Queued) -> None:
        try:
            if not isinstance(item, Item):
                self.state_change(item)
                return
            # Not through db(): most messages only join the batch, and close_old_connections()
            # per message cost a third of their handling; flush() calls it every flush_seconds.
            mid = item.mid if item.qos else 0
            self.ingest.handle_message(item.topic, item.payload, item.received_at, mid, item.dup)
        except DatabaseError as exc:
            log.warning("database unavailable, skipped an update: %s", exc)
        except Exception:
            # A presence write that failed (database away): the client turns uncertain later.
            log.exception("could not handle a message on %r", getattr(item, "topic", item))
        if isinstance(item, Item) and item.qos > 0:
            self.unacked.append(item)

    def state_change(self, event: Connected | Disconnected) -> None:
        now = timezone.now()
        if isinstance(event, Connected):
            self.connected.set()
            log.info("connected to the broker (session present: %s)", event.session_present)
            self.db(lambda: self.on_connected(now, event.session_present))
        else:
            self.connected.clear()
            log.warning("disconnected from the broker (%s); reconnecting", event.reason)
            # Not acknowledged, so the broker still holds them and delivers them again.
            dropped = self.ingest.drop_pending_telemetry()
            self.unacked.clear()
            if dropped:
                log.info("%d unacknowledged readings left to the broker's redelivery", dropped)
            self.db(lambda: MonitorState.objects.disconnected(now))
            self.ingest.presence.monitor_disconnected(now)

    def on_connected(self, now: datetime, session_present: bool) -> None:
        self.ingest.session_started(session_present)
        MonitorState.objects.connected(now)
        if self.options.presence:
            self.ingest.presence.monitor_connected(self.options.username, now)

    def flush(self) -> None:
        if not self.ingest.commit():
            self.stopping.wait(DB_RETRY_SECONDS)
            return
        current = [i for i in self.unacked if i.generation == self.generation]
        for item in current:
            self.client.ack(item.mid, item.qos)
        self.unacked.clear()

    def heartbeat(self) -> None:
        MonitorState.objects.heartbeat(timezone.now())

    def db(self, work: Any) -> Any:
        """Database work outside a batch: while the database is away it is logged and skipped
        (presence turns uncertain, heartbeats pause); telemetry waits in `flush`."""
        try:
            close_old_connections()
            return work()
        except DatabaseError as exc:
            log.warning("database unavailable, skipped an update: %s", exc)
            return None

    def shutdown(self) -> None:
        # Finish the current batch, then leave cleanly: the session and its queue stay.
        for _ in range(self.queue.qsize()):
            try:
                self.take(self.queue.get_nowait())
            except queue.Empty:
                break
        self.flush()
        self.client.disconnect()
        self.client.loop_stop()
        now = timezone.now()
        self.db(lambda: MonitorState.objects.stopped(now))
        if self.options.presence:
            self.db(lambda: self.ingest.presence.monitor_stopped(now))
        log.info("monitor stopped: %d readings stored", self.ingest.stored)
        connection.close()
