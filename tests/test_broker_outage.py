"""When Django or its database is in trouble, the broker drops clients instead of saying "no",
and neither it nor the plugin falls over; hostile sizes don't crash it either."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from brokerauth.models import Account
from tests.brokers import NOT_AUTHORIZED, Broker, MqttSession, free_port, live_port, wait_for
from tests.conftest import DEVICE_PASSWORD, basic_auth

pytestmark = [pytest.mark.broker, pytest.mark.django_db(transaction=True)]

PROTOCOLS = pytest.mark.parametrize(
    "protocol", [mqtt.MQTTv5, mqtt.MQTTv311], ids=["mqtt5", "mqtt311"]
)


def login(broker: Broker, username: str, client_id: str, **kw: Any) -> MqttSession:
    session = broker.session(username, DEVICE_PASSWORD, client_id, **kw)
    session.connect(timeout=8)
    session.close()
    return session


def dropped(session: MqttSession) -> bool:
    """Dropped without any CONNACK: an error, which devices retry, not a "not authorised"."""
    return session.connack is None and session.disconnected.is_set()


# ------------------------------------------------------------------ database outage


def ask(live_server: Any, endpoint: str, **fields: Any) -> int:
    """The status Django answers the broker's `endpoint` check with."""
    request = urllib.request.Request(
        f"{live_server.url}/mqtt/auth/{endpoint}",
        data=json.dumps(fields).encode(),
        headers={"Content-Type": "application/json", "Authorization": basic_auth()},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


@PROTOCOLS
def test_during_a_database_outage_devices_are_dropped_then_get_in_once_it_is_back(
    database_outage: Callable[[], Any],
    mosquitto: Broker,
    live_server: Any,
    device: Account,
    protocol: int,
) -> None:
    assert login(mosquitto, "alice", "alice-1", protocol=protocol).connected()
    with database_outage():
        assert (
            ask(live_server, "user", username="alice", password=DEVICE_PASSWORD, clientid="probe")
            == 503
        )
        session = login(mosquitto, "alice", "alice-2", protocol=protocol)
        assert dropped(session), session.connack
        assert mosquitto.alive()
    wait_for(
        lambda: login(mosquitto, "alice", "alice-3", protocol=protocol).connected(),
        5,
        "a login once the database is back",
    )
    assert mosquitto.alive()


@PROTOCOLS
def test_a_503_login_answer_drops_the_client_and_is_not_cached(
    database_outage: Callable[[], Any],
    live_server: Any,
    start_mosquitto: Callable[..., Broker],
    device: Account,
    protocol: int,
) -> None:
    broker = start_mosquitto(auth_port=live_port(live_server), cache_ttl=60)
    with database_outage():
        assert dropped(login(broker, "alice", "alice-1", protocol=protocol))
    # The same key as the failed login: a cached error would drop it for a minute. The
    # breaker opened by the 503 lets the plugin ask again after its first interval (1 s).
    wait_for(
        lambda: login(broker, "alice", "alice-1", protocol=protocol).connected(),
        5,
        "the login asked again",
    )
    assert broker.alive()


def test_a_503_acl_answer_disconnects_the_publisher_without_a_denial(
    database_outage: Callable[[], Any],
    live_server: Any,
    start_mosquitto: Callable[..., Broker],
    device: Account,
) -> None:
    broker = start_mosquitto(auth_port=live_port(live_server))
    session = broker.session("alice", DEVICE_PASSWORD, "alice-1")
    session.connect(timeout=5)
    assert session.connected()
    publish = {"username": "alice", "clientid": "alice-1", "topic": "devices/alice/t", "acc": 2}
    with database_outage():
        # Rules already loaded serve until the next POLICY_REFRESH_SECONDS check fails.
        wait_for(lambda: ask(live_server, "acl", **publish) == 503, 5, "ACL checks failing")
        session.client.publish("devices/alice/t", "21", qos=1)
        wait_for(session.disconnected.is_set, 5, "the publisher dropped")
    session.client.loop_stop()
    assert broker.alive()


# ------------------------------------------------------------ Django not answering at all


def test_when_django_is_down_clients_are_dropped(start_mosquitto: Callable[..., Broker]) -> None:
    broker = start_mosquitto(auth_port=free_port())  # nothing listens there
    assert dropped(login(broker, "alice", "alice-1"))
    assert broker.alive()


def test_when_django_stops_answering_clients_are_dropped_after_the_timeout(
    start_mosquitto: Callable[..., Broker],
) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # accepts connections (the kernel does) and never answers
        broker = start_mosquitto(auth_port=silent.getsockname()[1], http_timeout=1)
        assert dropped(login(broker, "alice", "alice-1"))
        assert broker.alive()


# -------------------------------------------------------------------- hostile sizes


@pytest.mark.parametrize(
    "username",
    ["u" * 60_000, '"' * 60_000],  # the second one doubles when JSON-escaped: a too-big body
    ids=["long-username", "long-escaped-username"],
)
def test_huge_usernames_are_refused_without_a_crash(
    mosquitto: Broker, device: Account, username: str
) -> None:
    session = login(mosquitto, username, "c-1")
    assert session.connack is not None and session.connack.value == NOT_AUTHORIZED
    assert mosquitto.alive()
    assert login(mosquitto, "alice", "alice-1").connected()


def test_a_huge_client_id_is_refused_cleanly(mosquitto: Broker, device: Account) -> None:
    """Client ids belong to accounts (brokerauth/clientids.py): one longer than the database
    keeps cannot be owned, so it is refused rather than left open to a takeover."""
    huge = login(mosquitto, "alice", "c" * 60_000)
    assert huge.connack is not None and huge.connack.value == NOT_AUTHORIZED
    assert mosquitto.alive()
    assert login(mosquitto, "alice", "c" * 255).connected()


def test_huge_topics_do_not_crash_the_broker(mosquitto: Broker, device: Account) -> None:
    alice = mosquitto.session("alice", DEVICE_PASSWORD, "alice-1")
    alice.connect(timeout=5)
    long_topic = "devices/alice/" + "t" * 60_000
    alice.subscribe("devices/alice/#")
    assert not alice.publish(long_topic, "deep").is_failure
    assert alice.expect("deep", timeout=5).topic == long_topic
    assert alice.publish("elsewhere/" + "t" * 60_000, "x").value == NOT_AUTHORIZED
    assert alice.subscribe("elsewhere/" + "f" * 60_000 + "/#").value == NOT_AUTHORIZED
    assert alice.subscribe(long_topic + "/#").value == 1
    alice.close()
    assert mosquitto.alive()


def test_a_filter_too_deep_for_mosquitto_is_dropped_before_the_plugin(
    mosquitto: Broker, device: Account
) -> None:
    alice = mosquitto.session("alice", DEVICE_PASSWORD, "alice-1")
    alice.connect(timeout=5)
    alice.client.subscribe("devices/alice/" + "+/" * 20_000 + "#")  # mosquitto allows 200 levels
    wait_for(alice.disconnected.is_set, 5, "the client dropped for a malformed packet")
    alice.client.loop_stop()
    assert mosquitto.alive()
    assert login(mosquitto, "alice", "alice-2").connected()
