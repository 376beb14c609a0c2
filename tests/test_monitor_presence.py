"""Presence from evidence, in stream order: the plain handlers, straight into the database.

Each test feeds `Ingest.handle_message` what the broker would send, in the broker's order,
with explicit receive times. The real broker and monitor process are in
tests/test_presence_transitions.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db.models import F
from django.test import Client as HttpClient

from monitor.ingest import Ingest
from monitor.models import Client, LoginRefusal, MonitorState, Session

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
MONITOR = "monitor"
BOUND = timedelta(seconds=5)


@pytest.fixture
def ingest(db: None) -> Ingest:
    """A monitor that has just connected, with a 5 s bound."""
    ingest = Ingest(self_client_id=MONITOR)
    ingest.presence.bound = BOUND
    MonitorState.objects.connected(T0)
    ingest.presence.monitor_connected("mqtt-monitor", T0)
    return ingest


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def line(ingest: Ingest, text: str, seconds: float) -> None:
    ingest.handle_message("$SYS/broker/log/N", f"1795747775: {text}".encode(), at(seconds))


def connect(ingest: Ingest, client_id: str, seconds: float, port: int = 1) -> None:
    line(
        ingest, f"New client connected from 10.0.0.5:{port} as {client_id} (p5, c1, k60).", seconds
    )


def count(ingest: Ingest, n: int, seconds: float) -> None:
    ingest.handle_message("$SYS/broker/clients/connected", str(n).encode(), at(seconds))


def uptime(ingest: Ingest, value: float, seconds: float) -> None:
    ingest.handle_message("$SYS/broker/uptime", f"{value:.0f} seconds".encode(), at(seconds))


def go_live(ingest: Ingest, seconds: float, broker_uptime: float = 1000) -> None:
    """Two uptimes: the first may be the retained copy, the second is live."""
    uptime(ingest, broker_uptime + seconds, seconds)
    uptime(ingest, broker_uptime + seconds + 1, seconds + 1)


def publish(ingest: Ingest, client_id: str, seconds: float) -> None:
    ingest.handle_message(f"devices/{client_id}/telemetry/t", b"21.5", at(seconds))


def online() -> set[str]:
    return set(Client.objects.online().values_list("client_id", flat=True))


def uncertain() -> set[str]:
    return set(Client.objects.uncertain().values_list("client_id", flat=True))


def no_session_ends_before_it_starts() -> bool:
    return not Session.objects.filter(disconnected_at__lt=F("connected_at")).exists()


def test_presence_follows_connect_takeover_and_disconnect_lines(ingest: Ingest) -> None:
    line(ingest, "New client connected from 10.0.0.5:43476 as dev-1 (p2, c0, k60, u'alice').", 0)
    client = Client.objects.get(client_id="dev-1")
    assert client.online and client.username == "alice" and client.clean_start is False
    assert online() == {MONITOR, "dev-1"}

    line(ingest, "Client dev-1 already connected, closing old connection.", 1)
    line(ingest, "New client connected from 10.0.0.6:5000 as dev-1 (p5, c1, k30, u'alice').", 1)
    line(ingest, "Client dev-1 has exceeded timeout, disconnecting.", 45)
    client.refresh_from_db()
    assert not client.online and client.last_address == "10.0.0.6"
    assert client.connect_count == 2
    reasons = client.sessions.order_by("connected_at", "id").values_list("reason", flat=True)
    assert list(reasons) == [Session.Reason.TAKEN_OVER, Session.Reason.TIMEOUT]
    assert list(Client.objects.offline()) == [client]


@pytest.mark.parametrize(
    "text",
    [
        "Client <unknown> disconnected, not authorised.",
        "Client <unknown> closed its connection.",
        "Client <unknown> disconnected: Connection reset by peer.",
        "Client <unknown> disconnected due to protocol error.",
        "Socket error on client <unknown>, disconnecting.",
        "Client auto-1234 disconnected, not authorised.",
    ],
)
def test_failed_handshakes_and_refusals_are_refused_connections_not_clients(
    ingest: Ingest, text: str
) -> None:
    line(ingest, text, 0)
    assert MonitorState.get().refused_logins == 1
    assert LoginRefusal.objects.count() == 1
    assert set(Client.objects.values_list("client_id", flat=True)) == {MONITOR}


def test_test_service_probes_are_runs_not_devices_and_still_count(ingest: Ingest) -> None:
    go_live(ingest, 0)
    connect(ingest, "mqtt-monitor-test-1a2b3c4d", 2)
    count(ingest, 2, 2.5)  # the broker counts the probe
    line(ingest, "Client mqtt-monitor-test-1a2b3c4d disconnected.", 3)
    count(ingest, 1, 3.5)
    state = MonitorState.get()
    assert state.test_service_runs == 1
    assert not state.mismatch and state.broker_connected == 1
    assert set(Client.objects.values_list("client_id", flat=True)) == {MONITOR}


def test_a_count_never_closes_a_confirmed_session_and_warns_past_the_bound(
    ingest: Ingest,
) -> None:
    go_live(ingest, 0)
    connect(ingest, "dev-1", 2)
    count(ingest, 1, 3)  # a disconnect line lost somewhere: the broker counts only us
    assert online() == {MONITOR, "dev-1"}
    assert not MonitorState.get().presence().mismatch  # not for long yet

    uptime(ingest, 1009, 9)  # past the bound: dev-1 is what the count concerns
    presence = MonitorState.get().presence()
    assert presence.mismatch and presence.mismatch_since == at(3)
    assert (presence.online, presence.uncertain, presence.broker_connected) == (2, 1, 1)
    assert uncertain() == {"dev-1"}

    count(ingest, 1, 10)  # now nothing confirms dev-1 and the broker has no room for it
    assert online() == {MONITOR}
    session = Client.objects.get(client_id="dev-1").sessions.get()
    assert session.reason == Session.Reason.UNKNOWN and session.disconnected_at == at(10)
    assert not MonitorState.get().presence().mismatch


def test_a_count_older_than_connect_lines_does_not_take_them_back(ingest: Ingest) -> None:
    """The issue's start: the count retained at subscription, then the devices' lines."""
    count(ingest, 1, 0.05)
    for i in range(3):
        connect(ingest, f"demo-0{i}", 0.1)
    go_live(ingest, 0.5)
    count(ingest, 1, 0.6)  # still the stale count, before the live ones
    count(ingest, 4, 2)
    assert online() == {MONITOR, "demo-00", "demo-01", "demo-02"}
    assert not Session.objects.exclude(disconnected_at=None).exists()
    assert not MonitorState.get().mismatch


def test_devices_connected_before_the_monitor_are_found_by_their_messages(
    ingest: Ingest,
) -> None:
    publish(ingest, "early", 0.2)  # maybe the persistent session's backlog: not evidence
    assert "early" not in online()
    go_live(ingest, 0.5)
    publish(ingest, "early", 2)
    publish(ingest, "early", 3)
    assert online() == {MONITOR, "early"}
    session = Client.objects.get(client_id="early").sessions.get()
    assert session.connected_at == at(2) and not session.start_known
    assert session.disconnected_at is None


def test_after_a_monitor_outage_evidence_resolves_every_uncertain_client(
    ingest: Ingest,
) -> None:
    go_live(ingest, 0)
    for client_id in ("stays", "leaves", "silent"):
        connect(ingest, client_id, 2)
    # The monitor is away; "leaves" disconnects unseen; then the monitor is back.
    ingest.presence.monitor_connected("mqtt-monitor", at(60))
    assert uncertain() == {"stays", "leaves", "silent"}
    assert online() == {MONITOR, "stays", "leaves", "silent"}
    go_live(ingest, 61, broker_uptime=1000 - 0)
    publish(ingest, "stays", 63)
    count(ingest, 3, 63.5)  # us, stays, silent: no room for all three uncertain... yet
    assert uncertain() == {"leaves", "silent"}
    connect(ingest, "silent", 64)  # it reconnects: the old session ended unseen, by then
    count(ingest, 3, 65)
    assert online() == {MONITOR, "stays", "silent"} and uncertain() == set()
    leaves = Client.objects.get(client_id="leaves").sessions.get()
    assert leaves.reason == Session.Reason.UNKNOWN and leaves.disconnected_at == at(65)
    silent = Client.objects.get(client_id="silent").sessions.order_by("connected_at")
    assert [s.disconnected_at for s in silent] == [at(64), None]
    assert no_session_ends_before_it_starts()


def test_a_broker_restart_ends_every_older_session_when_it_happened(ingest: Ingest) -> None:
    go_live(ingest, 0, broker_uptime=500)
    connect(ingest, "dev-1", 2)
    connect(ingest, "dev-2", 2)
    # The broker restarts at T0+100; dev-2 reconnects and is seen, dev-1 only publishes.
    ingest.presence.monitor_connected("mqtt-monitor", at(103))
    connect(ingest, "dev-2", 103.5)
    uptime(ingest, 4, 104)
    uptime(ingest, 5, 105)
    dev1 = Client.objects.get(client_id="dev-1")
    assert dev1.online and dev1.uncertain  # it may well have reconnected, unseen
    first = dev1.sessions.get()
    assert first.reason == Session.Reason.BROKER_RESTART and first.disconnected_at == at(100)
    publish(ingest, "dev-1", 106)
    assert uncertain() == set()
    second = dev1.sessions.get(disconnected_at=None)
    assert second.connected_at == at(106) and not second.start_known
    assert Client.objects.get(client_id="dev-2").sessions.filter(disconnected_at=None).count() == 1
    assert no_session_ends_before_it_starts()


def test_a_message_just_before_a_disconnect_line_does_not_reopen_it(ingest: Ingest) -> None:
    go_live(ingest, 0)
    connect(ingest, "dev-1", 2)
    line(ingest, "Client dev-1 disconnected.", 5)
    publish(ingest, "dev-1", 5.5)  # sent before it left, delivered after the log line
    assert "dev-1" not in online()
    publish(ingest, "dev-1", 9)  # long after: it is back, its connect line lost
    assert "dev-1" in online()


def test_the_constraint_refuses_a_session_that_ends_before_it_starts(ingest: Ingest) -> None:
    from django.db import IntegrityError, transaction

    client = Client.objects.create(client_id="dev-1")
    with pytest.raises(IntegrityError), transaction.atomic():
        Session.objects.create(client=client, connected_at=at(1), disconnected_at=at(0))


def test_every_screen_reads_the_same_presence_numbers(
    ingest: Ingest,
    operator_client: HttpClient,
    django_assert_num_queries: Any,
) -> None:
    go_live(ingest, 0)
    for i in range(3):
        connect(ingest, f"dev-{i}", 2)
    ingest.presence.monitor_connected("mqtt-monitor", at(30))
    publish(ingest, "dev-0", 30.1)  # not live yet: dev-0 stays uncertain too
    go_live(ingest, 30.3)
    count(ingest, 5, 31.5)
    uptime(ingest, 1040, 40)  # still 5 past the bound: a mismatch
    presence = MonitorState.get().presence()
    assert (presence.online, presence.uncertain, presence.broker_connected) == (4, 3, 5)
    assert presence.mismatch

    html = operator_client.get("/dashboard/live/", HTTP_HX_REQUEST="true").content.decode()
    assert 'id="online">4<' in html and "broker says 5" in html and "3 uncertain" in html
    assert "The monitor believes <strong>4</strong> clients are online" in html
    api = operator_client.get("/api/v1/clients/", {"status": "online"}).json()
    assert api["count"] == 4
    assert operator_client.get("/api/v1/clients/", {"status": "uncertain"}).json()["count"] == 3
    listed = operator_client.get("/clients/", {"status": "online"})
    assert listed.context["page"].paginator.count == 4
    # $SYS values, monitor state, the presence counts, decisions over two windows
    with django_assert_num_queries(5):
        metrics = operator_client.get("/metrics").content.decode()
    assert "mqtt_clients_online 4.0" in metrics and "mqtt_clients_uncertain 3.0" in metrics
    assert "mqtt_clients_broker_connected 5.0" in metrics and "mqtt_clients_mismatch 1.0" in metrics


def test_the_last_confirmation_makes_the_room_without_waiting_for_a_count(
    ingest: Ingest,
) -> None:
    """The broker publishes its count only when it changes: a count taken before the
    confirmations, moved by the lines since, is the count now."""
    go_live(ingest, 0)
    connect(ingest, "a", 2)
    connect(ingest, "b", 2)
    ingest.presence.monitor_connected("mqtt-monitor", at(60))  # b leaves while we are away
    go_live(ingest, 61)
    count(ingest, 2, 62.5)  # us and a
    connect(ingest, "c", 62.8)  # the count is 3 now, unpublished yet
    assert uncertain() == {"a", "b"}
    publish(ingest, "a", 63)
    assert online() == {MONITOR, "a", "c"} and uncertain() == set()
    assert Client.objects.get(client_id="b").sessions.get().disconnected_at == at(63)


def test_a_reconnect_seen_before_the_broker_restart_is_known_ends_at_the_restart(
    ingest: Ingest,
) -> None:
    go_live(ingest, 0, broker_uptime=500)
    connect(ingest, "dev-1", 2)
    ingest.presence.monitor_connected("mqtt-monitor", at(101))  # the broker restarted at 100
    connect(ingest, "dev-1", 101.5)  # seen before the new broker's first live uptime
    uptime(ingest, 2, 102)
    uptime(ingest, 3, 103)
    first, second = Client.objects.get(client_id="dev-1").sessions.order_by("connected_at")
    assert (first.reason, first.disconnected_at) == (Session.Reason.BROKER_RESTART, at(100))
    assert second.disconnected_at is None and online() == {MONITOR, "dev-1"}
