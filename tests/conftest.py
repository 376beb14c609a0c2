"""Actors and helpers shared by the tests."""

from __future__ import annotations

import base64
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from django.conf import settings
from django.core.cache import cache
from django.core.servers.basehttp import ThreadedWSGIServer
from django.db import connection, connections
from django.test import Client
from django.test.testcases import LiveServerThread

from brokerauth import passwords
from brokerauth.acl import Access
from brokerauth.models import Account, Group, Rule
from brokerauth.policy import policy
from monitor.models import Client as MqttClient
from monitor.models import MonitorState
from rabbitmq.cluster import Boot, Cluster
from tests import browsers
from tests.brokers import Broker, MqttSession, free_port, live_port, make_certs
from tests.seeds import seed_broker_state, seed_client

DEVICE_PASSWORD = "correct horse battery staple"


class NoDelayWSGIServer(ThreadedWSGIServer):
    """Django's live server writes headers and body separately; without TCP_NODELAY, Nagle
    and the client's delayed ACK add 40 ms to every answer (Gunicorn has no such stall)."""

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, address = super().get_request()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn, address


LiveServerThread.server_class = NoDelayWSGIServer
_rabbitmq: dict[str, Boot] = {}


def pytest_configure(config: pytest.Config) -> None:
    # The live server's port is chosen now, so that the RabbitMQ cluster, which must know it,
    # can boot in the background from collection on (about 12 s) while other tests run.
    address = config.getoption("liveserver")
    if address and ":" not in address:
        config.option.liveserver = f"{address}:{free_port()}"


def pytest_collection_finish(session: pytest.Session) -> None:
    if not any(item.get_closest_marker("rabbitmq") for item in session.items):
        return
    host, port = session.config.getoption("liveserver").rsplit(":", 1)
    workdir = Path(settings.VAR_DIR) / "rabbitmq" / os.environ.get("PYTEST_XDIST_WORKER", "main")
    cluster = Cluster(
        workdir=workdir / "cluster",
        certs=make_certs(workdir / "certs"),
        auth_port=int(port),
        secret=settings.MQTT_AUTH_SECRET,
        auth_username=settings.MQTT_AUTH_USERNAME,
    )
    _rabbitmq["boot"] = cluster.start_in_background()
    session.config.add_cleanup(_rabbitmq["boot"].stop)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if "boot" in _rabbitmq and _rabbitmq["boot"].cluster.started_in:
        cluster = _rabbitmq["boot"].cluster
        terminalreporter.write_line(
            f"RabbitMQ: {len(cluster.nodes)}-node cluster ready in {cluster.started_in:.1f} s "
            f"(booted in the background from collection on; logs in {cluster.workdir})"
        )


@pytest.fixture(autouse=True)
def _fresh_caches() -> Iterator[None]:
    policy.clear()
    passwords.forget_all()
    cache.clear()  # the API's throttle counts
    yield
    policy.clear()
    passwords.forget_all()


def basic_auth(secret: str | None = None, user: str | None = None) -> str:
    user = settings.MQTT_AUTH_USERNAME if user is None else user
    secret = settings.MQTT_AUTH_SECRET if secret is None else secret
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


class BrokerClient(Client):
    """Speaks to /mqtt/auth/ the way go-auth does (JSON POST, Basic auth, mosquitto agent)."""

    def __init__(self, **defaults: Any) -> None:
        defaults.setdefault("HTTP_AUTHORIZATION", basic_auth())
        defaults.setdefault("HTTP_USER_AGENT", "mosquitto-2.0.18")
        super().__init__(**defaults)

    def ask(self, endpoint: str, **fields: Any) -> Any:
        return self.post(f"/mqtt/auth/{endpoint}", fields, content_type="application/json")


@pytest.fixture
def broker() -> BrokerClient:
    return BrokerClient()


@pytest.fixture
def device(db: None) -> Account:
    """alice: a device with valid credentials and the usual rights on devices/<username>/#."""
    account = Account.objects.create_account("alice", DEVICE_PASSWORD)
    Rule.objects.create(account=account, pattern="devices/%u/#", access=Access.ALL)
    return account


@pytest.fixture
def device_without_rights(db: None) -> Account:
    return Account.objects.create_account("mallory", DEVICE_PASSWORD)


@pytest.fixture
def sensors(db: None, device: Account) -> Group:
    """A group alice belongs to, allowed to read commands addressed to its client id."""
    group = Group.objects.create(name="sensors")
    group.memberships.create(account=device)
    Rule.objects.create(group=group, pattern="commands/%c", access=Access.SUBSCRIBE)
    Rule.objects.create(group=group, pattern="commands/%c", access=Access.RECEIVE)
    return group


@pytest.fixture
def superuser_account(db: None) -> Account:
    return Account.objects.create_account("root", DEVICE_PASSWORD, is_superuser=True)


@pytest.fixture
def operator(db: None, django_user_model: Any) -> Any:
    return django_user_model.objects.create_superuser("operator", "op@example.com", "op-pass-1")


@pytest.fixture
def operator_client(operator: Any) -> Client:
    """A browser session signed in as the operator (staff: may change things)."""
    http = Client()
    http.force_login(operator)
    return http


@pytest.fixture
def viewer_client(django_user_model: Any) -> Client:
    """A signed-in user who is not staff: reads, never changes."""
    user = django_user_model.objects.create_user("viewer", password="viewer-pass-1")
    http = Client()
    http.force_login(user)
    return http


@pytest.fixture(scope="session")
def tls_certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A development CA and broker certificate made by certs/make-certs.sh."""
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="session")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second, unrelated CA (and broker certificate) from the same script."""
    return make_certs(tmp_path_factory.mktemp("other-certs"))


@pytest.fixture
def start_mosquitto(tls_certs: Path, tmp_path: Path) -> Iterator[Callable[..., Broker]]:
    """Start brokers with chosen options (`Broker` fields); all are stopped after the test.

    `auth_port` is the HTTP port the plugin asks: the live server's, or a stand-in's.
    """
    started: list[Broker] = []

    def start(**options: Any) -> Broker:
        options.setdefault("workdir", tmp_path / f"broker-{len(started)}")
        options.setdefault("certs", tls_certs)
        options.setdefault("secret", settings.MQTT_AUTH_SECRET)
        broker = Broker(**options)
        started.append(broker)
        return broker.start()

    yield start
    for broker in started:
        broker.stop()


@pytest.fixture
def mosquitto(live_server: Any, tls_certs: Path, tmp_path: Path) -> Iterator[Broker]:
    """A real Mosquitto on free ports, its plugin asking this test's live Django over HTTP."""
    auth_port = live_port(live_server)
    broker = Broker(
        workdir=tmp_path / "broker",
        certs=tls_certs,
        auth_port=auth_port,
        secret=settings.MQTT_AUTH_SECRET,
    )
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def rabbitmq_cluster(django_db_setup: None, live_server: Any) -> Iterator[Cluster]:
    """A real 2-node RabbitMQ cluster on loopback asking this session's live Django
    (tests marked `rabbitmq`; it has been booting since collection). It needs the test
    database first, so that it is stopped before the database is dropped."""
    assert "boot" in _rabbitmq, "tests that use rabbitmq_cluster must be marked rabbitmq"
    cluster = _rabbitmq["boot"].wait()
    assert cluster.auth_port == live_port(live_server)
    yield cluster
    # The nodes' keep-alive HTTP connections hold live-server threads, each with a database
    # session that would keep the test database from being dropped.
    _rabbitmq["boot"].stop()


@dataclass
class Endpoint:
    """What MqttSession needs of a broker: one RabbitMQ node's TLS port and the cluster's CA."""

    port: int
    ca_file: Path


Connect = Callable[..., MqttSession]


@pytest.fixture
def connect(rabbitmq_cluster: Cluster) -> Iterator[Connect]:
    """Open MQTT 3.1.1 sessions to a node of the test cluster; closed after the test."""
    opened: list[MqttSession] = []

    def connect(
        username: str | None,
        client_id: str,
        node: int = 0,
        password: str | None = DEVICE_PASSWORD,
        protocol: int = mqtt.MQTTv311,
    ) -> MqttSession:
        target = rabbitmq_cluster.nodes[node]
        endpoint = Endpoint(target.mqtt_port, rabbitmq_cluster.ca_file)
        session = MqttSession(endpoint, username, password, client_id, protocol=protocol)
        opened.append(session)
        session.connect(timeout=10)
        return session

    yield connect
    for session in opened:
        session.close()


@pytest.fixture
def database_outage(db: None) -> Iterator[Callable[[], Any]]:
    """Make the database unreachable, for real, for every thread of this process, and back.

    Every thread builds its connection from the one settings dict in `connections.settings`:
    pointing it at a missing SQLite file / a closed PostgreSQL port makes every new connection
    fail. CONN_MAX_AGE=0, set before a broker opens its keep-alive HTTP connection, makes each
    live-server request close its connection, so no thread keeps one open across the outage;
    this thread's own connection is closed on the way in and out.
    """
    shared = connections.settings["default"]
    assert connection.settings_dict is shared, "threads would not see the outage"
    real = dict(shared)
    shared["CONN_MAX_AGE"] = 0

    @contextmanager
    def outage() -> Iterator[None]:
        if connection.vendor == "sqlite":
            shared["NAME"] = "/nonexistent/dir/db.sqlite3"
        else:
            shared["PORT"] = "1"
        connection.close()
        try:
            yield
        finally:
            connection.close()
            shared.update(real)
            shared["CONN_MAX_AGE"] = 0

    yield outage
    shared.update(real)


@pytest.fixture
def sensor(device: Account) -> MqttClient:
    """alice's client sensor-1: online, two sessions, an hour of two metrics."""
    return seed_client("sensor-1")


@pytest.fixture
def broker_state(db: None) -> MonitorState:
    """The broker's $SYS values and an hour of its counters, seen by a fresh monitor."""
    return seed_broker_state()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with browsers.chromium() as browser:
        yield browser


@pytest.fixture
def page(browser: Any, live_server: Any, operator: Any) -> Iterator[Any]:
    """The operator, signed in, in headless Chromium; no page may log a console error."""
    context, page, errors = browsers.signed_in(browser, live_server.url, BROWSER_VIEWPORT)
    yield page
    context.close()
    assert errors == [], errors


BROWSER_VIEWPORT = {"width": 1280, "height": 860}
