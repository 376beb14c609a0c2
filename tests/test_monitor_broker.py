"""The monitor against a real Mosquitto and a real database: presence, telemetry, restarts."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from brokerauth.models import Account
from monitor.account import ensure_rules
from monitor.models import Client, LatestValue, MonitorState, Reading
from monitor.subscriber import Options, Subscriber
from tests.brokers import Broker, live_port, wait_for
from tests.conftest import DEVICE_PASSWORD

pytestmark = [pytest.mark.broker, pytest.mark.django_db(transaction=True)]

MONITOR_PASSWORD = "monitor secret for tests"


class RunningMonitor:
    """A Subscriber in a thread, as `manage.py monitor` runs it in its main thread."""

    def __init__(self, broker: Broker, **options: Any) -> None:
        self.monitor = Subscriber(
            Options(
                host="127.0.0.1",
                port=broker.port,
                ca_file=str(broker.ca_file),
                username="mqtt-monitor",
                password=MONITOR_PASSWORD,
                client_id="monitor-under-test",
                telemetry_topics=["devices/+/telemetry", "devices/+/telemetry/+"],
                share_group="",
                presence=True,
                session_expiry=3600,
                batch_size=options.pop("batch_size", 1000),
                flush_seconds=options.pop("flush_seconds", 0.1),
                reconnect_max=2,
                **options,
            )
        )
        self.thread = threading.Thread(target=self.monitor.run, daemon=True)
        self.thread.start()
        wait_for(self.monitor.subscribed.is_set, 10, "the monitor's subscriptions")

    def stop(self) -> None:
        self.monitor.stop()
        self.thread.join(15)
        assert not self.thread.is_alive()


@pytest.fixture
def mosquitto(live_server: Any, tls_certs: Path, tmp_path: Path) -> Iterator[Broker]:
    """The conftest broker, but with the plugin's decision cache on, as in production: every
    message here goes to the same few topics, and an uncached ACL check per message (tens
    of milliseconds to the test's live server) would make these tests minutes long."""
    broker = Broker(
        workdir=tmp_path / "broker",
        certs=tls_certs,
        auth_port=live_port(live_server),
        secret=settings.MQTT_AUTH_SECRET,
        cache_ttl=300,
    )
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def monitor_account(db: None) -> Account:
    account = Account.objects.create_account("mqtt-monitor", MONITOR_PASSWORD)
    ensure_rules(account)
    return account


@pytest.fixture
def start_monitor(
    mosquitto: Broker, monitor_account: Account
) -> Iterator[Callable[..., RunningMonitor]]:
    running: list[RunningMonitor] = []

    def start(**options: Any) -> RunningMonitor:
        running.append(RunningMonitor(mosquitto, **options))
        return running[-1]

    yield start
    for monitor in running:
        if monitor.thread.is_alive():
            monitor.stop()


def alice_readings(metric: str = "seq") -> set[float]:
    return set(
        Reading.objects.filter(client__client_id="alice", metric=metric).values_list(
            "value", flat=True
        )
    )


def test_a_device_appears_online_then_offline_within_two_seconds(
    mosquitto: Broker, device: Account, start_monitor: Callable[..., RunningMonitor]
) -> None:
    start_monitor()
    session = mosquitto.session("alice", DEVICE_PASSWORD, "alice")
    assert not session.connect().is_failure

    client = wait_for(
        lambda: Client.objects.online().filter(client_id="alice").first(), 2, "alice online"
    )
    assert client.username == "alice"
    assert client.last_address == "127.0.0.1"
    assert client.last_port
    assert client.protocol == Client.Protocol.MQTT5
    assert client.keepalive == 30
    assert client.clean_start is True
    assert client.sessions.get().disconnected_at is None

    session.close()
    wait_for(lambda: Client.objects.offline().filter(client_id="alice").exists(), 2, "offline")
    closed = Client.objects.get(client_id="alice").sessions.get()
    assert closed.reason == "clean"
    assert closed.disconnected_at is not None


def test_a_refused_login_is_counted(
    mosquitto: Broker, device: Account, start_monitor: Callable[..., RunningMonitor]
) -> None:
    start_monitor()
    session = mosquitto.session("alice", "wrong password", "alice")
    session.connect()
    wait_for(lambda: MonitorState.get().refused_logins == 1, 5, "the refusal counted")
    assert not Client.objects.filter(client_id="alice", online=True).exists()


def test_broker_statistics_are_kept_with_their_series(
    mosquitto: Broker, start_monitor: Callable[..., RunningMonitor]
) -> None:
    start_monitor()
    from monitor.models import BrokerStat, BrokerStatSample

    wait_for(
        lambda: BrokerStat.objects.filter(topic="$SYS/broker/clients/connected").exists(),
        10,
        "clients/connected",
    )
    assert BrokerStat.objects.latest_values()["$SYS/broker/version"].startswith("mosquitto")
    assert BrokerStatSample.objects.filter(topic="$SYS/broker/uptime").exists()
    # The retained value seen first may predate the monitor's own connection: wait for news.
    wait_for(lambda: MonitorState.get().broker_connected == 1, 10, "the broker counting us")
    state = MonitorState.get()
    assert state.believed_online == 1  # the monitor itself
    assert not state.mismatch


def test_telemetry_sent_while_the_monitor_is_stopped_is_stored_when_it_returns(
    mosquitto: Broker, device: Account, start_monitor: Callable[..., RunningMonitor]
) -> None:
    start_monitor().stop()  # the broker now holds a persistent session for the monitor
    session = mosquitto.session("alice", DEVICE_PASSWORD, "alice")
    session.connect()
    n = 500
    for seq in range(n):
        assert not session.publish("devices/alice/telemetry", json.dumps({"seq": seq})).is_failure
    session.close()

    start_monitor()
    wait_for(lambda: len(alice_readings()) == n, 15, f"{n} readings")
    assert Reading.objects.filter(client__client_id="alice").count() == n  # none twice
    assert Client.objects.get(client_id="alice").message_count == n
    latest = LatestValue.objects.get(client__client_id="alice", metric="seq")
    assert latest.count == n


def test_a_broker_restart_under_the_monitor_loses_nothing(
    mosquitto: Broker, device: Account, start_monitor: Callable[..., RunningMonitor]
) -> None:
    # Slow batches, so that many messages are received but not yet acknowledged at the restart.
    running = start_monitor(flush_seconds=1.0, batch_size=100_000)
    session = mosquitto.session("alice", DEVICE_PASSWORD, "alice")
    session.connect()
    n = 2000
    for seq in range(n):
        session.client.publish("devices/alice/telemetry/seq", str(seq), qos=1)
    wait_for(lambda: len(session._acks) >= n, 20, "the broker's PUBACKs")
    session.close()

    mosquitto.restart()

    wait_for(lambda: len(alice_readings()) == n, 30, f"{n} readings after the restart")
    assert set(range(n)) == alice_readings()
    assert running.thread.is_alive()
    wait_for(running.monitor.connected.is_set, 10, "the monitor reconnected by itself")


def test_malformed_payloads_and_a_flood_leave_the_monitor_alive_and_good_readings_stored(
    mosquitto: Broker, device: Account, start_monitor: Callable[..., RunningMonitor]
) -> None:
    running = start_monitor()
    session = mosquitto.session("alice", DEVICE_PASSWORD, "alice")
    session.connect()
    bad = [
        b"\xff\xfe not utf-8",
        b"{not json",
        b'{"t": NaN}',
        b'{"t": Infinity}',
        b'{"t": "warm"}',
        b'{"t": {"nested": 1}}',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"t": ' + b"9" * 5000 + b"}",
        b"x" * 300_000,
        b"",
    ]
    good = 0
    for round_ in range(200):
        for payload in bad:
            session.client.publish("devices/alice/telemetry", payload, qos=1)
        session.client.publish("devices/alice/telemetry", json.dumps({"seq": round_}), qos=1)
        session.client.publish("devices/alice/telemetry/seq", "oops", qos=1)
        good += 1
    wait_for(lambda: len(alice_readings()) == good, 30, "the good readings")
    expected_bad = 200 * (len(bad) + 1)
    wait_for(
        lambda: Client.objects.get(client_id="alice").bad_message_count == expected_bad,
        10,
        "bad payloads counted",
    )
    assert running.thread.is_alive() and running.monitor.connected.is_set()
    assert Client.objects.get(client_id="alice").last_bad_message_error


def test_the_simulator_creates_demo_devices_that_the_monitor_sees(
    mosquitto: Broker, start_monitor: Callable[..., RunningMonitor], tmp_path: Path
) -> None:
    from io import StringIO

    from django.core.management import call_command

    start_monitor()
    out = StringIO()
    call_command(
        "simulate_devices",
        "--count=3",
        "--rate=20",
        "--duration=3",
        "--create-accounts",
        f"--port={mosquitto.port}",
        f"--ca-file={mosquitto.ca_file}",
        "--prefix=sim-",
        stdout=out,
    )
    assert "messages sent by 3 devices" in out.getvalue()
    wait_for(
        lambda: (
            Client.objects.filter(client_id__startswith="sim-", message_count__gt=0).count() == 3
        ),
        5,
        "telemetry from the three devices",
    )
    assert LatestValue.objects.filter(client__client_id="sim-01", metric="temperature").exists()
    wait_for(
        lambda: Client.objects.offline().filter(client_id__startswith="sim-").count() == 3,
        5,
        "the devices gone",
    )


def test_a_database_outage_under_the_monitor_loses_nothing(
    mosquitto: Broker,
    device: Account,
    start_monitor: Callable[..., RunningMonitor],
    database_outage: Callable[[], Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    running = start_monitor()
    session = mosquitto.session("alice", DEVICE_PASSWORD, "alice")
    session.connect()
    # The first publish fills the plugin's cache for alice's writes and the monitor's reads,
    # so the broker keeps routing while Django cannot answer.
    assert not session.publish("devices/alice/telemetry/seq", "0").is_failure
    wait_for(lambda: alice_readings() == {0}, 10, "the first reading")
    n = 200
    with database_outage():
        for seq in range(1, n):
            assert not session.publish("devices/alice/telemetry/seq", str(seq)).is_failure
        wait_for(lambda: "could not write a batch" in caplog.text, 10, "a failed batch")
        assert running.thread.is_alive()
    session.close()
    wait_for(lambda: len(alice_readings()) == n, 20, f"{n} readings after the outage")
    assert Reading.objects.filter(client__client_id="alice").count() == n  # none twice
    assert running.thread.is_alive()
