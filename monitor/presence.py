"""Client presence from evidence, applied in the order the broker sent it.

Evidence, strongest first: the broker's connect and disconnect log lines; any message from a
client (a client that publishes is connected); `$SYS/broker/clients/connected`, which says how
many but never which. Everything reaches the monitor over one connection, so the order in which
`Tracker` is called is the broker's order, and a count is compared with exactly the events
before it, never with later ones.

A count never closes a session by itself. When the monitor (or the broker) was away, every
client believed online becomes *uncertain*: still counted online, but it may have left unseen.
An uncertain client is resolved by evidence: a connect line or a message confirms it (or opens
a new session), a disconnect line closes it, and a count equal to the clients confirmed since
proves every uncertain one gone (the pigeonhole: the broker has no room for them). A count that
disagrees for longer than the bound turns the clients it concerns uncertain and raises the
dashboard's banner. No session ends before it starts: every close takes the later of the
evidence's time and the session's start (and a database constraint says so too).

Failed handshakes (`Client <unknown> ...`) are refused connections, and the Test service's
probe clients are Test service runs: neither becomes a Client row.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Value
from django.db.models.functions import Greatest

from brokerauth.clientids import PROBE_INFIX
from monitor import brokerlog
from monitor.models import Client, ClientQuerySet, LoginRefusal, MonitorState, Session

log = logging.getLogger("monitor.presence")

# A message this soon after a client's disconnect line may have been sent before it: QoS 1
# deliveries can queue behind the monitor's receive window while QoS 0 log lines pass them.
MESSAGE_GRACE = timedelta(seconds=2)
# A broker start that moved by less than this is the jitter of whole-second uptimes.
RESTART_SLACK = timedelta(seconds=3)
# A drop of the monitor's connection this long before a restart is seen was that restart.
RESTART_WINDOW = timedelta(minutes=5)
UNSEEN_END = "ended unseen; the broker's count left no room for it"


def is_probe(client_id: str) -> bool:
    """A Test service probe client (brokerauth/clientids.py probe_id)."""
    return client_id.startswith(settings.MONITOR_USERNAME + PROBE_INFIX)


def close_open_sessions(
    sessions: ClientQuerySet | Client, at: datetime, reason: str, detail: str = ""
) -> int:
    """Close the open sessions of one client (or of a queryset of clients) at `at`, or at
    their start when that is later: evidence can arrive with a time before a session's start
    (a count taken before the connect line it is compared with)."""
    if isinstance(sessions, Client):
        open_ = sessions.sessions.filter(disconnected_at=None)
    else:
        open_ = Session.objects.filter(client__in=sessions, disconnected_at=None)
    return open_.update(
        disconnected_at=Greatest(Value(at), F("connected_at")), reason=reason, detail=detail[:255]
    )


@dataclass
class Tracker:
    """The monitor's presence state machine; one per monitor process (Ingest holds it).

    `live` turns true at the second `$SYS/broker/uptime` of a connection: the first may be
    the retained copy (stale) and messages before it may be the persistent session's backlog,
    sent while the monitor was away. Before that, messages and counts are not evidence.

    The broker's count now is `counted + adjust`: Mosquitto publishes uptime first in each
    `$SYS` tick and clients/connected right after it, only when it changed; so the last count
    received holds at each uptime, and the connect and disconnect lines since move it.
    """

    self_client_id: str
    bound: timedelta = field(
        default_factory=lambda: timedelta(seconds=settings.MONITOR_PRESENCE_BOUND_SECONDS)
    )
    live: bool = False
    uptimes: int = 0
    last_uptime: float | None = None  # kept across the monitor's reconnects
    lost_at: datetime | None = None  # when the monitor's connection last dropped
    counted: int | None = None
    adjust: int = 0
    unsure: bool = False  # some clients may be uncertain: look for room after evidence
    probes: set[str] = field(default_factory=set)
    confirmed: set[str] = field(default_factory=set)  # online with evidence since (re)connect
    disagree_since: datetime | None = None
    marked_since: datetime | None = None

    # -- the monitor's own connection ------------------------------------------------------
    def monitor_connected(self, username: str, at: datetime) -> None:
        """A new connection: what we believed may have changed unseen while we were away."""
        self.live, self.uptimes, self.counted, self.adjust = False, 0, None, 0
        self.disagree_since = self.marked_since = None
        self.probes.clear()
        self.confirmed = {self.self_client_id}
        count = others(Client.objects.online(), self.self_client_id).update(uncertain=True)
        self.unsure = True
        if count:
            log.info("%d clients uncertain: the monitor was away since their last evidence", count)
        self_online(self.self_client_id, username, at)

    def monitor_disconnected(self, at: datetime) -> None:
        self.lost_at = at

    def monitor_stopped(self, at: datetime) -> None:
        Client.objects.filter(client_id=self.self_client_id).update(
            online=False, last_disconnected_at=at, last_disconnect_reason=Session.Reason.CLEAN
        )

    # -- evidence ----------------------------------------------------------------------------
    def line(self, event: brokerlog.Event, at: datetime) -> None:
        """One presence line of the broker log (each in its own short transaction)."""
        self.adjust += moves(event)
        if is_probe(event.client_id):
            self.probe(event, at)
            return
        with transaction.atomic():
            if isinstance(event, brokerlog.Connected):
                connected(event, at)
                self.confirmed.add(event.client_id)
            elif isinstance(event, brokerlog.Disconnected):
                disconnected(event, at)
                self.confirmed.discard(event.client_id)
            elif isinstance(event, brokerlog.TakenOver):
                close(event.client_id, at, brokerlog.TAKEN_OVER, "already connected, closing old")
                self.confirmed.discard(event.client_id)
            elif isinstance(event, brokerlog.LoginRefused):
                refused(event.client_id, at)
        if self.unsure:
            self.pigeonhole(at)

    def probe(self, event: brokerlog.Event, at: datetime) -> None:
        if isinstance(event, brokerlog.Connected):
            self.probes.add(event.client_id)
            MonitorState.objects.test_service_run()
        else:
            self.probes.discard(event.client_id)

    def message(self, client_id: str, at: datetime) -> None:
        """A message from `client_id` (its topic names it): it is connected now."""
        if not self.live or client_id in self.confirmed or is_probe(client_id):
            return
        with transaction.atomic():
            if seen(client_id, at):
                self.confirmed.add(client_id)
        if self.unsure:
            self.pigeonhole(at)

    # -- counts ------------------------------------------------------------------------------
    def uptime(self, seconds: float, at: datetime) -> None:
        self.uptimes += 1
        self.adjust = 0  # this tick's count, when it changed, comes next
        previous, self.last_uptime = self.last_uptime, seconds
        if self.uptimes < 2:
            return  # maybe the retained copy: stale by up to a sys_interval
        self.live = True
        started = at - timedelta(seconds=seconds)
        known = MonitorState.get().broker_started_at
        # Uptime going back is a restart; across monitor restarts, the stored start moving on.
        went_back = previous is not None and seconds + 1 < previous
        if known is not None and (went_back or started > known + RESTART_SLACK):
            # Whole-second uptimes put the start a second or two off; the moment the old
            # broker dropped the monitor's connection, when this process saw it, is exact.
            lost = self.lost_at
            if lost is not None and started - RESTART_WINDOW < lost < started + RESTART_SLACK:
                started = lost
            closed = broker_restarted(started, self.self_client_id)
            sure = Client.objects.online().filter(uncertain=False)
            self.confirmed = set(sure.values_list("client_id", flat=True))
            self.unsure = True
            log.warning("broker restarted at %s: %d sessions closed", started, closed)
        if known is None or abs(started - known) > RESTART_SLACK:
            MonitorState.objects.broker_started(started)
        self.reconcile(at)

    def count(self, connected: int, at: datetime) -> None:
        """The broker's clients/connected, received at `at` after every event before it."""
        self.counted, self.adjust = connected, 0
        self.reconcile(at)

    def expected(self) -> int | None:
        """The broker's count now, as far as the lines since the last count tell."""
        return None if self.counted is None else self.counted + self.adjust

    def reconcile(self, at: datetime) -> None:
        """Compare the broker's count with the clients believed online, record both, and act
        on a disagreement that lasts past the bound."""
        expected = self.expected()
        if expected is None:
            return
        if self.live:
            self.pigeonhole(at)
        believed = Client.objects.online().count() + len(self.probes)
        if believed == expected or not self.live:
            self.disagree_since = None
        elif self.disagree_since is None:
            self.disagree_since = at
        since = self.lasting(at)
        if since is not None and since != self.marked_since:
            self.mark(since, believed, expected)
        MonitorState.objects.counted(
            believed=believed, broker=expected, at=at, mismatch_since=since
        )

    def mark(self, since: datetime, believed: int, expected: int) -> None:
        """Once per disagreement: when the broker counts fewer, any client believed online
        may be the one that left unseen; evidence confirms them again."""
        self.marked_since = since
        log.warning(
            "presence mismatch since %s: %d believed online, the broker counts %d",
            since,
            believed,
            expected,
        )
        if expected < believed:
            others(Client.objects.online(), self.self_client_id).update(uncertain=True)
            self.confirmed = {self.self_client_id}
            self.unsure = True

    def pigeonhole(self, at: datetime) -> None:
        """When the broker counts no more clients than we have evidence for, every uncertain
        one is gone: close them at this time (or their start, if later)."""
        expected = self.expected()
        if not self.live or expected is None:
            return
        if expected != len(self.confirmed) + len(self.probes):
            return  # no room yet, by the ids confirmed in memory: spare the queries
        uncertain = Client.objects.online().filter(uncertain=True)
        if not uncertain.exists():
            self.unsure = False
            return
        sure = Client.objects.online().filter(uncertain=False).count() + len(self.probes)
        if expected != sure:
            return
        with transaction.atomic():
            close_open_sessions(uncertain, at, Session.Reason.UNKNOWN, UNSEEN_END)
            gone = uncertain.update(
                online=False,
                uncertain=False,
                last_disconnected_at=at,
                last_disconnect_reason=Session.Reason.UNKNOWN,
                disconnect_count=F("disconnect_count") + 1,
            )
        self.unsure = False
        log.info("%d uncertain clients gone: the broker counts only the %d confirmed", gone, sure)

    def lasting(self, at: datetime) -> datetime | None:
        """When the disagreement began, once it has lasted past the bound."""
        since = self.disagree_since
        return since if since is not None and at - since >= self.bound else None


def moves(event: brokerlog.Event) -> int:
    """How a log line moves the broker's count (a takeover closes the old connection)."""
    if isinstance(event, brokerlog.Connected):
        return 1
    if isinstance(event, brokerlog.Disconnected | brokerlog.TakenOver):
        return -1
    return 0


def others(clients: ClientQuerySet, self_client_id: str) -> ClientQuerySet:
    return clients.exclude(client_id=self_client_id)


def connected(event: brokerlog.Connected, at: datetime) -> None:
    client, _ = Client.objects.select_for_update().get_or_create(
        client_id=event.client_id, defaults={"first_seen": at}
    )
    # A connect while we believe it online: its previous connection ended unseen, by now.
    close_open_sessions(client, at, Session.Reason.UNKNOWN, "ended unseen, before a new connect")
    fields = {
        "username": event.username,
        "protocol": event.protocol,
        "clean_start": event.clean_start,
        "keepalive": event.keepalive,
    }
    Session.objects.create(
        client=client, connected_at=at, address=event.address, port=event.port, **fields
    )
    Client.objects.filter(pk=client.pk).update(
        online=True,
        uncertain=False,
        connected_since=at,
        last_seen=at,
        connect_count=F("connect_count") + 1,
        last_address=event.address,
        last_port=event.port,
        **fields,
    )


def disconnected(event: brokerlog.Disconnected, at: datetime) -> None:
    if event.client_id == brokerlog.UNKNOWN_CLIENT:
        refused(event.client_id, at)  # a failed handshake: no client id was ever known
        return
    client = Client.objects.select_for_update().filter(client_id=event.client_id).first()
    if event.reason == brokerlog.NOT_AUTHORISED and (client is None or not client.online):
        refused(event.client_id, at)
        return
    if client is None:
        # Connected before the monitor started: we learn of it as it leaves.
        client = Client.objects.create(client_id=event.client_id, first_seen=at)
    if event.port is not None and client.online and event.port != client.last_port:
        # 2.1.1+ names the connection: this one is an older one the broker is closing.
        client.sessions.filter(disconnected_at=None, port=event.port).update(
            disconnected_at=Greatest(Value(at), F("connected_at")),
            reason=event.reason,
            detail=event.detail[:255],
        )
        return
    close(event.client_id, at, event.reason, event.detail, client)


def close(
    client_id: str, at: datetime, reason: str, detail: str, client: Client | None = None
) -> None:
    client = client or Client.objects.filter(client_id=client_id).first()
    if client is None:
        return
    close_open_sessions(client, at, reason, detail)
    Client.objects.filter(pk=client.pk).update(
        online=False,
        uncertain=False,
        last_seen=at,
        last_disconnected_at=at,
        last_disconnect_reason=reason,
        disconnect_count=F("disconnect_count") + 1,
    )


def seen(client_id: str, at: datetime) -> bool:
    """A live message from `client_id`: confirm it online (True), or not yet (False: it
    disconnected an instant ago, and this message may predate that)."""
    client, _ = Client.objects.select_for_update().get_or_create(
        client_id=client_id, defaults={"first_seen": at}
    )
    gone_at = client.last_disconnected_at
    if not client.online and gone_at is not None and at - gone_at < MESSAGE_GRACE:
        return False
    update: dict[str, object] = {"online": True, "uncertain": False, "last_seen": at}
    if not client.sessions.filter(disconnected_at=None).exists():
        # Its connect was not seen (before the monitor, or while it or the broker was away):
        # the session starts at this first evidence and says so.
        Session.objects.create(client=client, connected_at=at, start_known=False)
        update |= {"connected_since": at, "connect_count": F("connect_count") + 1}
    Client.objects.filter(pk=client.pk).update(**update)
    return True


def refused(client_id: str, at: datetime) -> None:
    LoginRefusal.objects.create(at=at, client_id=client_id[:255])
    MonitorState.objects.refused()


def self_online(client_id: str, username: str, at: datetime) -> None:
    """The monitor is a client too: the broker counts it in clients/connected."""
    Client.objects.update_or_create(
        client_id=client_id,
        defaults={
            "username": username,
            "online": True,
            "uncertain": False,
            "protocol": Client.Protocol.MQTT5,
            "clean_start": False,
            "connected_since": at,
            "last_seen": at,
        },
    )
    Client.objects.filter(client_id=client_id).update(connect_count=F("connect_count") + 1)


def broker_restarted(since: datetime, except_client_id: str) -> int:
    """The broker restarted at `since`: every connection opened before then ended then. The
    clients stay online but uncertain (devices reconnect by themselves, maybe before the
    monitor did, unseen): a message or connect line confirms them, a count closes them."""
    stale = others(Client.objects.online(), except_client_id).filter(connected_since__lt=since)
    with transaction.atomic():
        # Sessions already closed as unseen by a reconnect after the restart ended at it.
        Session.objects.filter(
            reason=Session.Reason.UNKNOWN, connected_at__lt=since, disconnected_at__gt=since
        ).update(disconnected_at=since, reason=Session.Reason.BROKER_RESTART, detail="")
        closed = close_open_sessions(stale, since, Session.Reason.BROKER_RESTART)
        stale.update(
            uncertain=True,
            last_disconnected_at=since,
            last_disconnect_reason=Session.Reason.BROKER_RESTART,
            disconnect_count=F("disconnect_count") + 1,
        )
    return closed
