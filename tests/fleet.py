"""Presence transitions for real: a fleet of devices, the monitor as its own process, and the
ground truth from the broker's own log (tests/test_presence_transitions.py, bench/presence.py).

- `Fleet`: paho clients (one loop thread each) that publish telemetry every `every` seconds
  from one shared thread, started and stopped one by one.
- `MonitorProcess`: `manage.py monitor` in a child process on the test's database; SIGKILL
  or SIGTERM it like an operator (or the OOM killer) would.
- `broker_online(log_file)`: the client ids the broker has connected, replayed from the
  connect and disconnect lines of its log file (the same lines, from the same broker, that it
  republishes on `$SYS/broker/log/#`; the file has them all, the monitor only while present).
- `api_online(url, token)`: the client ids the REST API calls online, over real HTTP.
"""

from __future__ import annotations

import json
import os
import random
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from django.db import connection
from paho.mqtt.enums import CallbackAPIVersion

from monitor import brokerlog, presence
from tests.brokers import ROOT, Broker

FLEET_USERNAME = "fleet"
FLEET_PASSWORD = "fleet devices' shared secret"
MONITOR_PASSWORD = "monitor secret for transitions"
MONITOR_CLIENT_ID = "mqtt-service-monitor"


@dataclass
class Device:
    client_id: str
    client: mqtt.Client
    connected: threading.Event = field(default_factory=threading.Event)
    connected_at: float | None = None  # time.time() of the first CONNACK


class Fleet:
    """Devices of one account (`fleet`, allowed devices/%c/#), each with its own client id."""

    def __init__(self, broker: Broker, every: float = 1.0, qos: int = 1) -> None:
        self.broker, self.every, self.qos = broker, every, qos
        self.devices: dict[str, Device] = {}
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.sent = 0
        self.publisher = threading.Thread(target=self.publish_loop, daemon=True)
        self.publisher.start()

    def start(self, client_id: str) -> Device:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        client.username_pw_set(FLEET_USERNAME, FLEET_PASSWORD)
        client.tls_set(ca_certs=str(self.broker.ca_file), cert_reqs=ssl.CERT_REQUIRED)
        client.reconnect_delay_set(min_delay=1, max_delay=2)
        device = Device(client_id, client)

        def on_connect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
            if not reason.is_failure:
                device.connected_at = device.connected_at or time.time()
                device.connected.set()

        client.on_connect = on_connect
        client.on_disconnect = lambda _c, _u, _f, _rc, _p: device.connected.clear()
        client.connect_async("127.0.0.1", self.broker.port, keepalive=30)
        client.loop_start()
        with self.lock:
            self.devices[client_id] = device
        return device

    def stop(self, client_id: str) -> None:
        with self.lock:
            device = self.devices.pop(client_id)
        device.client.disconnect()
        device.client.loop_stop()

    def start_all(self, client_ids: Iterable[str], batch: int = 50) -> None:
        """In batches, each given time to connect: hundreds of TLS handshakes at once, each
        on its own thread, time out and retry together, and never finish."""
        pending = list(client_ids)
        while pending:
            started = [self.start(client_id) for client_id in pending[:batch]]
            del pending[:batch]
            deadline = time.monotonic() + 20
            for device in started:
                device.connected.wait(max(0.0, deadline - time.monotonic()))

    def running(self) -> set[str]:
        with self.lock:
            return set(self.devices)

    def all_connected(self) -> bool:
        with self.lock:
            return all(d.connected.is_set() for d in self.devices.values())

    def churn(self, rng: random.Random, pool: list[str]) -> tuple[str, bool] | None:
        """One device leaves, or one of `pool` that is not running joins: (id, joined)."""
        running = self.running()
        idle = [c for c in pool if c not in running]
        if running and (not idle or rng.random() < 0.5):
            client_id = rng.choice(sorted(running))
            self.stop(client_id)
            return client_id, False
        if idle:
            client_id = rng.choice(idle)
            self.start(client_id)
            return client_id, True
        return None

    def publish_loop(self) -> None:
        while not self.stopping.wait(self.every):
            with self.lock:
                devices = list(self.devices.values())
            for device in devices:
                if device.connected.is_set():
                    topic = f"devices/{device.client_id}/telemetry"
                    device.client.publish(topic, json.dumps({"t": 21.5}), qos=self.qos)
                    self.sent += 1

    def close(self) -> None:
        self.stopping.set()
        self.publisher.join(5)
        for client_id in list(self.running()):
            self.stop(client_id)


def database_url() -> str:
    """The URL of the database this test runs on (the test database), for a child process."""
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    auth = s["USER"] + (f":{s['PASSWORD']}" if s.get("PASSWORD") else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


class MonitorProcess:
    """`manage.py monitor` as its own process, as production runs it."""

    def __init__(self, broker: Broker, workdir: Path, bound: int = 5) -> None:
        self.broker, self.workdir, self.bound = broker, workdir, bound
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "DATABASE_URL": database_url(),
            "MQTT_HOST": "127.0.0.1",
            "MQTT_PORT": str(self.broker.port),
            "MQTT_CA_FILE": str(self.broker.ca_file),
            "MONITOR_PASSWORD": MONITOR_PASSWORD,
            "MONITOR_CLIENT_ID": MONITOR_CLIENT_ID,
            "MONITOR_PRESENCE_BOUND_SECONDS": str(self.bound),
            "MONITOR_RECONNECT_MAX_SECONDS": "2",
            "LOG_TO_FILE": "0",
            "LOG_LEVEL": "INFO",
        }

    def start(self) -> MonitorProcess:
        self.starts += 1
        log = open(self.workdir / f"monitor-{self.starts}.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "monitor", "--flush-seconds", "0.2"],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        return self

    def kill(self) -> None:
        """SIGKILL: no clean disconnect, no last writes."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        path = self.workdir / f"monitor-{self.starts}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def broker_online(log_file: Path, probes: bool = False) -> set[str]:
    """The client ids connected now, replayed from the broker's own log file."""
    online: set[str] = set()
    for raw in log_file.read_text(errors="replace").splitlines():
        text = brokerlog.strip_timestamp(raw)
        if text.startswith("mosquitto version ") and text.endswith(("starting", "terminating")):
            online.clear()  # a broker restart ends every connection
            continue
        event = brokerlog.parse_line(text)
        if isinstance(event, brokerlog.Connected):
            online.add(event.client_id)
        elif isinstance(event, brokerlog.Disconnected):
            online.discard(event.client_id)
    return online if probes else {c for c in online if not presence.is_probe(c)}


def api_online(base_url: str, token: str) -> set[str]:
    """The client ids the REST API lists with status=online (every page)."""
    url: str | None = f"{base_url}/api/v1/clients/?status=online&page_size=1000"
    found: set[str] = set()
    while url:
        request = urllib.request.Request(url, headers={"Authorization": f"Token {token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            page: dict[str, Any] = json.load(response)
        found.update(item["client_id"] for item in page["results"])
        url = page["next"]
    return found
