"""The monitor against a real 2-node RabbitMQ cluster: telemetry from the quorum queue,
presence from the event exchange and the management API (monitor/amqp.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pika
import pika.exceptions
import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from brokerauth.acl import Access
from brokerauth.models import Account, AuthEvent, Rule
from brokerauth.rabbitmq import mqtt_topic
from monitor import amqp
from monitor.account import ensure_rules
from monitor.ingest import Ingest
from monitor.models import Client, DeliveryLedger, Reading, Session
from rabbitmq.cluster import Cluster
from tests.brokers import ROOT, free_port, wait_for
from tests.conftest import DEVICE_PASSWORD, Connect

MONITOR_PASSWORD = "monitor secret for tests"

# What RabbitMQ 3.10.8 put on amq.rabbitmq.event for an MQTT 3.1.1 client over TLS.
CREATED = {
    "ssl": True,
    "client_properties": [],
    "variable_map": '#{<<"client_id">> => <<"dev-1">>}',
    "user_who_performed_action": "alice",
    "node": "mqtt-751169-2@localhost",
    "connected_at": 1796126712474,
    "type": "direct",
    "vhost": "/",
    "user": "alice",
    "peer_port": 36807,
    "peer_host": "{127,0,0,1}",
    "name": "127.0.0.1:36807 -> 127.0.0.1:49621",
    "protocol": "{'MQTT',\"3.1.1\"}",
    "pid": "<mqtt-751169-2@localhost.1796126695.762.0>",
    "timestamp_in_ms": 1796126712494,
}
CLOSED = {
    "name": "127.0.0.1:36807 -> 127.0.0.1:49621",
    "node": "mqtt-751169-2@localhost",
    "pid": "<mqtt-751169-2@localhost.1796126695.762.0>",
    "timestamp_in_ms": 1796126714844,
}


def test_a_created_event_names_the_client_its_address_and_node() -> None:
    item = amqp.connection_event("connection.created", CREATED)
    assert isinstance(item, amqp.Opened)
    assert (item.event.client_id, item.event.username) == ("dev-1", "alice")
    assert (item.event.address, item.event.port, item.event.protocol) == (
        "127.0.0.1",
        36807,
        Client.Protocol.MQTT311,
    )
    assert item.node == "mqtt-751169-2@localhost"
    assert item.at == datetime(2026, 12, 1, 12, 5, 12, 494000, tzinfo=UTC)


def test_a_closed_event_names_only_the_connection() -> None:
    item = amqp.connection_event("connection.closed", CLOSED)
    at = datetime(2026, 12, 1, 12, 5, 14, 844000, tzinfo=UTC)
    assert item == amqp.Closed(CLOSED["name"], CLOSED["node"], at)


@pytest.mark.parametrize(
    "headers",
    [
        {**CREATED, "protocol": "{'AMQP',{0,9,1}}"},  # the monitor's own connection
        {**CREATED, "variable_map": '#{<<"client_id">> => <<100,195,169>>}'},
        {**CREATED, "name": ""},
        {},
    ],
)
def test_what_is_not_an_mqtt_connection_or_cannot_be_read_is_skipped(
    headers: dict[str, Any],
) -> None:
    assert amqp.connection_event("connection.created", headers) is None


def test_erlang_addresses_read_back() -> None:
    assert amqp.erlang_address("{10,0,0,5}") == "10.0.0.5"
    assert amqp.erlang_address("{0,0,0,0,0,65535,32512,1}") == "0:0:0:0:0:ffff:7f00:1"
    assert amqp.erlang_address("nonsense") == "nonsense"


def test_telemetry_filters_become_binding_keys() -> None:
    assert amqp.binding_key("devices/+/telemetry/+") == "devices.*.telemetry.*"
    assert amqp.binding_key("devices/#") == "devices.#"


def test_the_management_list_keeps_mqtt_connections() -> None:
    rows = [
        {
            "name": "127.0.0.1:40511 -> 127.0.0.1:54891",
            "node": "n2",
            "protocol": "MQTT 3.1.1",
            "client_properties": {"client_id": "dev-1", "product": "MQTT client"},
            "peer_host": "127.0.0.1",
            "peer_port": 40511,
            "user": "alice",
            "connected_at": 1796126848570,
        },
        {"name": "x", "protocol": "AMQP 0-9-1", "client_properties": {"product": "pika"}},
    ]
    [item] = amqp.listed_connections(rows)
    assert (item.event.client_id, item.node, item.event.port) == ("dev-1", "n2", 40511)


@pytest.mark.django_db
def test_a_device_that_moves_nodes_keeps_one_open_session() -> None:
    connections = amqp.Connections()
    first = amqp.connection_event("connection.created", CREATED)
    moved = amqp.connection_event(
        "connection.created",
        {**CREATED, "name": "127.0.0.1:40000 -> 127.0.0.1:1", "peer_port": 40000, "node": "n1"},
    )
    assert isinstance(first, amqp.Opened) and isinstance(moved, amqp.Opened)
    connections.opened(first)
    connections.opened(moved)  # "created" on the new node before "closed" on the old one
    closed = amqp.connection_event("connection.closed", CLOSED)
    assert isinstance(closed, amqp.Closed)
    connections.closed(closed)
    client = Client.objects.get(client_id="dev-1")
    assert (client.online, client.node, client.last_port) == (True, "n1", 40000)
    assert list(client.sessions.filter(disconnected_at=None).values_list("port", flat=True)) == [
        40000
    ]


@pytest.mark.django_db
def test_reconcile_closes_what_the_cluster_no_longer_lists_but_spares_the_young() -> None:
    connections = amqp.Connections()
    old = amqp.connection_event("connection.created", CREATED)
    assert isinstance(old, amqp.Opened)
    connections.opened(old)
    young = amqp.connection_event(
        "connection.created",
        {**CREATED, "variable_map": '#{<<"client_id">> => <<"dev-2">>}', "name": "y"},
    )
    assert isinstance(young, amqp.Opened)
    connections.opened(young)
    Client.objects.filter(client_id="dev-2").update(connected_since=old.at + timedelta(minutes=5))
    now = old.at + timedelta(minutes=5, seconds=1)
    assert connections.reconcile([], now) == (0, 1)
    assert not Client.objects.get(client_id="dev-1").online
    assert Client.objects.get(client_id="dev-2").online
    session = Session.objects.get(client__client_id="dev-1")
    assert session.disconnected_at == now and session.reason == Session.Reason.OTHER


@pytest.mark.django_db
def test_a_lagging_list_overrules_no_event_younger_than_the_grace() -> None:
    connections = amqp.Connections()
    opened = amqp.connection_event("connection.created", CREATED)
    closed = amqp.connection_event("connection.closed", CLOSED)
    assert isinstance(opened, amqp.Opened) and isinstance(closed, amqp.Closed)
    connections.opened(opened)
    # Not listed yet (the list lags): neither closed nor forgotten.
    assert connections.reconcile([], opened.at + timedelta(seconds=2)) == (0, 0)
    connections.closed(closed)
    assert not Client.objects.get(client_id="dev-1").online
    # Still listed after its closed event: not opened again.
    assert connections.reconcile([opened], closed.at + timedelta(seconds=2)) == (0, 0)
    assert not Client.objects.get(client_id="dev-1").online


@pytest.mark.django_db(transaction=True)
def test_a_batch_committed_but_not_acknowledged_is_not_stored_twice() -> None:
    # Consumer A commits a batch and dies before its acknowledgement reaches RabbitMQ, which
    # delivers the batch again, flagged redelivered, to consumer B.
    now = timezone.now()
    messages = [("devices.dev-1.telemetry", f'{{"seq": {n}}}'.encode()) for n in range(5)]
    first = Ingest(consumer="host:1:a")
    for key, body in messages[:3]:
        first.handle_message(mqtt_topic(key), body, now, key=amqp.delivery_key(key, body))
    assert first.flush() == 3
    second = Ingest(consumer="host:2:b")
    for key, body in messages:  # the first three again, then two never stored
        digest = amqp.delivery_key(key, body)
        second.handle_message(mqtt_topic(key), body, now, dup=True, key=digest)
    assert second.flush() == 2
    assert sorted(readings("dev-1")) == [0, 1, 2, 3, 4]
    assert DeliveryLedger.objects.count() == 2


@pytest.mark.django_db
def test_the_ui_and_the_api_say_which_node_a_client_is_on(operator_client: Any) -> None:
    item = amqp.connection_event("connection.created", CREATED)
    assert isinstance(item, amqp.Opened)
    amqp.Connections().opened(item)
    client = Client.objects.get(client_id="dev-1")
    assert "on mqtt-751169-2@localhost" in operator_client.get("/clients/").content.decode()
    page = operator_client.get(f"/clients/{client.pk}/").content.decode()
    assert "<dt>Node</dt><dd>mqtt-751169-2@localhost</dd>" in page
    api = operator_client.get(f"/api/v1/clients/{client.pk}/").json()
    assert api["node"] == "mqtt-751169-2@localhost"
    sessions = operator_client.get(f"/api/v1/sessions/?client={client.pk}").json()
    assert sessions["results"][0]["node"] == "mqtt-751169-2@localhost"


# -- through the cluster -------------------------------------------------------------------


@pytest.fixture
def monitor_account(db: None) -> Account:
    account = Account.objects.create_account(settings.MONITOR_USERNAME, MONITOR_PASSWORD)
    ensure_rules(account)
    return account


def options(cluster: Cluster, **changes: Any) -> amqp.Options:
    base = amqp.Options(
        urls=[f"amqp://127.0.0.1:{node.amqp_port}/%2F" for node in cluster.nodes],
        management_urls=[f"http://127.0.0.1:{node.management_port}" for node in cluster.nodes],
        username=settings.MONITOR_USERNAME,
        password=MONITOR_PASSWORD,
        telemetry_topics=["devices/+/telemetry", "devices/+/telemetry/+"],
        presence=True,
        batch_size=500,
        flush_seconds=0.1,
        reconcile_seconds=1.0,
    )
    for key, value in changes.items():
        setattr(base, key, value)
    return base


@pytest.fixture
def cluster_monitor(
    rabbitmq_cluster: Cluster, monitor_account: Account
) -> Iterator[amqp.ClusterSubscriber]:
    monitor = amqp.ClusterSubscriber(options(rabbitmq_cluster))
    thread = threading.Thread(target=monitor.run, daemon=True)
    thread.start()
    wait_for(monitor.ready.is_set, 30, "the monitor consuming from the cluster")
    yield monitor
    monitor.stop()
    thread.join(15)
    assert not thread.is_alive()


def readings(client_id: str) -> list[float]:
    return list(
        Reading.objects.filter(client__client_id=client_id, metric="seq").values_list(
            "value", flat=True
        )
    )


@pytest.mark.rabbitmq
@pytest.mark.django_db(transaction=True)
def test_the_monitor_logs_in_over_amqp_and_a_device_cannot(
    rabbitmq_cluster: Cluster, device: Account, cluster_monitor: amqp.ClusterSubscriber
) -> None:
    assert AuthEvent.objects.filter(username=settings.MONITOR_USERNAME, allowed=True).exists()
    assert not AuthEvent.objects.filter(allowed=False).exists()
    # A device's credentials over AMQP: no client id, not the monitor.
    device_options = options(rabbitmq_cluster, username="alice", password=DEVICE_PASSWORD)
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        pika.BlockingConnection(amqp.ClusterSubscriber(device_options).parameters()[0])


@pytest.mark.rabbitmq
@pytest.mark.django_db(transaction=True)
def test_telemetry_from_either_node_is_stored_and_presence_follows_the_node(
    rabbitmq_cluster: Cluster,
    connect: Connect,
    device: Account,
    cluster_monitor: amqp.ClusterSubscriber,
) -> None:
    first = connect("alice", "alice", node=0)
    wait_for(lambda: online_on("alice", 0, rabbitmq_cluster), 10, "alice online on node 1")
    for seq in range(10):
        first.publish("devices/alice/telemetry", f'{{"seq": {seq}}}')
    first.close()
    second = connect("alice", "alice", node=1)
    for seq in range(10, 20):
        second.publish("devices/alice/telemetry", f'{{"seq": {seq}}}')
    wait_for(lambda: len(readings("alice")) >= 20, 20, "20 readings")
    assert sorted(readings("alice")) == list(range(20))
    wait_for(lambda: online_on("alice", 1, rabbitmq_cluster), 10, "alice online on node 2")
    assert Session.objects.filter(client__client_id="alice", disconnected_at=None).count() == 1
    second.close()
    wait_for(lambda: not Client.objects.get(client_id="alice").online, 10, "alice offline")
    assert not Session.objects.filter(client__client_id="alice", disconnected_at=None).exists()


def online_on(client_id: str, node: int, cluster: Cluster) -> bool:
    name = cluster.nodes[node].name
    return Client.objects.filter(client_id=client_id, online=True, node__startswith=name).exists()


def monitor_process(cluster: Cluster) -> subprocess.Popen[bytes]:
    """`manage.py monitor --broker rabbitmq` as deployed, on this test's database."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        url = f"sqlite:///{db['NAME']}"
    else:
        url = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "MONITOR_PASSWORD": MONITOR_PASSWORD,
        "MONITOR_AMQP_URLS": ",".join(options(cluster).urls),
        "MONITOR_RABBITMQ_MANAGEMENT_URLS": ",".join(options(cluster).management_urls),
        "LOG_LEVEL": "INFO",
    }
    return subprocess.Popen(
        [sys.executable, "manage.py", "monitor", "--broker", "rabbitmq", "--flush-seconds", "0.2"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.mark.rabbitmq
@pytest.mark.django_db(transaction=True)
def test_a_monitor_killed_mid_stream_loses_nothing_and_stores_nothing_twice(
    rabbitmq_cluster: Cluster, connect: Connect, device: Account, monitor_account: Account
) -> None:
    process = monitor_process(rabbitmq_cluster)
    try:
        wait_for(lambda: consumers(rabbitmq_cluster) == 1, 30, "the monitor consuming")
        sender = connect("alice", "alice", node=1)
        total = 600
        for seq in range(total):
            sender.client.publish("devices/alice/telemetry", f'{{"seq": {seq}}}', qos=1)
            if seq == total // 3:
                wait_for(lambda: len(readings("alice")) > 0, 20, "the first readings")
                process.send_signal(signal.SIGKILL)
                process.wait()
                process = monitor_process(rabbitmq_cluster)
        wait_for(lambda: len(set(readings("alice"))) == total, 60, f"{total} readings")
        assert len(readings("alice")) == total  # none twice
        sender.close()
    finally:
        process.kill()
        process.wait()


def consumers(cluster: Cluster) -> int:
    out = cluster.ctl(cluster.nodes[0], "list_queues", "name", "consumers", "--formatter", "json")
    for row in json.loads(out):
        if row["name"] == amqp.TELEMETRY_QUEUE:
            return int(row["consumers"])
    return 0


@pytest.mark.rabbitmq
@pytest.mark.django_db(transaction=True)
def test_a_killed_node_does_not_leave_its_clients_online(
    rabbitmq_cluster: Cluster,
    connect: Connect,
    device: Account,
    cluster_monitor: amqp.ClusterSubscriber,
) -> None:
    bob = Account.objects.create_account("bob", DEVICE_PASSWORD)
    Rule.objects.create(account=bob, pattern="devices/%u/#", access=Access.ALL)
    connect("alice", "alice", node=0)
    connect("bob", "bob", node=1)
    wait_for(lambda: online_on("alice", 0, rabbitmq_cluster), 10, "alice online")
    wait_for(lambda: online_on("bob", 1, rabbitmq_cluster), 10, "bob online")
    victim = rabbitmq_cluster.nodes[1]
    rabbitmq_cluster.kill(victim)
    try:
        # No connection.closed comes from a dead node: the reconcile closes bob's session.
        bound = amqp.RECONCILE_GRACE.total_seconds() + 15
        wait_for(lambda: not Client.objects.get(client_id="bob").online, bound, "bob offline")
        assert Client.objects.get(client_id="alice").online
        session = Session.objects.get(client__client_id="bob")
        assert session.disconnected_at is not None
        assert session.disconnected_at >= session.connected_at
    finally:
        rabbitmq_cluster.relaunch(victim)


@pytest.mark.django_db(transaction=True)
def test_without_a_cluster_the_monitor_waits_and_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    closed = free_port()
    monitor = amqp.ClusterSubscriber(
        amqp.Options(
            urls=[f"amqp://127.0.0.1:{closed}/%2F"],
            management_urls=[],
            username=settings.MONITOR_USERNAME,
            password=MONITOR_PASSWORD,
            reconnect_max=0.2,
        )
    )
    thread = threading.Thread(target=monitor.run, daemon=True)
    with caplog.at_level("WARNING", logger="monitor.amqp"):
        thread.start()
        wait_for(lambda: "no RabbitMQ connection" in caplog.text, 10, "the warning")
        wait_for(lambda: caplog.text.count("no RabbitMQ connection") >= 2, 10, "a retry")
    monitor.stop()
    thread.join(5)
    assert not thread.is_alive()
    assert "Connection refused" in caplog.text or "ConnectionRefused" in caplog.text


@pytest.mark.rabbitmq
@pytest.mark.django_db(transaction=True)
def test_two_monitors_share_the_telemetry_queue(
    rabbitmq_cluster: Cluster, connect: Connect, device: Account, monitor_account: Account
) -> None:
    # Presence stays with one monitor; the second reads telemetry only.
    monitors = [
        amqp.ClusterSubscriber(options(rabbitmq_cluster, batch_size=20)),
        amqp.ClusterSubscriber(options(rabbitmq_cluster, batch_size=20, presence=False)),
    ]
    threads = [threading.Thread(target=m.run, daemon=True) for m in monitors]
    for thread in threads:
        thread.start()
    try:
        for monitor in monitors:
            wait_for(monitor.ready.is_set, 30, "both monitors consuming")
        sender = connect("alice", "alice", node=0)
        total = 400
        for seq in range(total):
            sender.client.publish("devices/alice/telemetry", f'{{"seq": {seq}}}', qos=1)
        wait_for(lambda: len(readings("alice")) >= total, 30, f"{total} readings")
        assert sorted(readings("alice")) == list(range(total))
        assert all(monitor.consumed > 0 for monitor in monitors), [m.consumed for m in monitors]
        sender.close()
    finally:
        for monitor in monitors:
            monitor.stop()
        for thread in threads:
            thread.join(15)
