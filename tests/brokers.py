"""A real Mosquitto with the project's plugin, and paho-mqtt sessions to drive it.

`start_broker()` renders mosquitto/mosquitto.conf.template (the file the local stack and the
Ansible check use too) on free ports, starts Mosquitto and waits until it accepts TLS.
`MqttSession` wraps a paho client with blocking helpers that wait on conditions with timeouts.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

# paho reports MQTT 3.1.1 return codes as MQTT 5 reason codes: CONNACK rc 5 ("not authorised")
# arrives as 0x87 too, and a 3.1.1 SUBACK failure (0x80) as "Unspecified error".
NOT_AUTHORIZED = 0x87
SUBACK_FAILURE = 0x80

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = ROOT / "mosquitto" / "plugin" / "auth_http.so"
ASAN_PLUGIN = ROOT / "mosquitto" / "plugin" / "auth_http_asan.so"
TEMPLATE = ROOT / "mosquitto" / "mosquitto.conf.template"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listens(pid: int, port: int) -> bool:
    """Whether process `pid` holds a TCP socket listening on `port` (Linux /proc)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # local_address is ADDR:PORT in hex; state 0A is LISTEN.
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    if not inodes:
        return False
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            return True
    return False


def live_port(live_server: Any) -> int:
    """The port of pytest-django's live server, which the broker's plugin asks."""
    return int(live_server.url.rsplit(":", 1)[1])


def change_bound(cache_ttl: float = 0, slack: float = 3.0) -> float:
    """How long a change made in Django may take to reach the broker: each web process's
    policy refresh plus the plugin's cache TTL, with slack for a loaded machine."""
    from django.conf import settings

    return float(settings.POLICY_REFRESH_SECONDS) + cache_ttl + slack


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def make_certs(outdir: Path, key_group: str = "") -> Path:
    subprocess.run(
        [str(ROOT / "certs" / "make-certs.sh"), str(outdir)],
        check=True,
        capture_output=True,
        env={**os.environ, "CERT_CLIENTS": "", "CERT_KEY_GROUP": key_group},
    )
    return outdir


def current_user() -> str:
    """The broker's `user` that keeps it as the user running the tests."""
    return "root" if os.geteuid() == 0 else os.environ.get("USER", "nobody")


@dataclass
class Broker:
    workdir: Path
    certs: Path
    auth_port: int
    secret: str
    port: int = field(default_factory=free_port)
    sys_interval: int = 1
    cache_ttl: int = 0
    http_timeout: float = 2
    # Follow Django's change feed (the shipped config does); off by default in tests, so
    # that no test but the feed's own holds a live-server thread with a long poll.
    changes: bool = False
    changes_wait: int = 2
    # Started as root, Mosquitto drops to this user before it opens anything but its config.
    user: str = field(default_factory=current_user)
    plugin: Path = PLUGIN
    # More `plugin_opt_NAME value` lines (breaker, limiter, stale-if-error), after the template's.
    plugin_options: dict[str, Any] = field(default_factory=dict)
    # Extra environment for the broker process (LD_PRELOAD and ASAN_OPTIONS for the ASan build).
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    _log_start: int = 0

    @property
    def ca_file(self) -> Path:
        return self.certs / "ca.crt"

    @property
    def log_file(self) -> Path:
        return self.workdir / "mosquitto.log"

    def render(self) -> Path:
        conf = self.workdir / "mosquitto.conf"
        (self.workdir / "data").mkdir(parents=True, exist_ok=True)
        values = {
            "MQTT_PORT": self.port,
            "TLS_CA_FILE": self.ca_file,
            "TLS_CERT_FILE": self.certs / "server.crt",
            "TLS_KEY_FILE": self.certs / "server.key",
            "AUTH_PLUGIN": self.plugin,
            "AUTH_HTTP_PORT": self.auth_port,
            "AUTH_HTTP_TIMEOUT": self.http_timeout,
            "MQTT_AUTH_SECRET": self.secret,
            "LOG_FILE": self.log_file,
            "PERSISTENCE_DIR": self.workdir / "data",
            "PID_FILE": self.workdir / "mosquitto.pid",
            "SYS_INTERVAL": self.sys_interval,
            "CACHE_LOGIN_TTL": self.cache_ttl,
            "CACHE_ACL_TTL": self.cache_ttl,
            "MQTT_RUN_AS_USER": self.user,
            "AUTH_CHANGES_WAIT": self.changes_wait,
        }
        sets = [f"--set={key}={value}" for key, value in values.items()]
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "mosquitto" / "render.py"),
                str(TEMPLATE),
                str(conf),
                *sets,
            ],
            check=True,
        )
        if self.plugin_options:
            # One plugin in the file: its options may come anywhere after its `plugin` line.
            with conf.open("a") as out:
                out.writelines(f"plugin_opt_{k} {v}\n" for k, v in self.plugin_options.items())
        if not self.changes:
            kept = [
                line
                for line in conf.read_text().splitlines(keepends=True)
                if not line.startswith("plugin_opt_http_changes_")
            ]
            conf.write_text("".join(kept))
        return conf

    def start(self) -> Broker:
        conf = self.render()
        self._log_start = self.log_file.stat().st_size if self.log_file.exists() else 0
        self.process = subprocess.Popen(
            ["mosquitto", "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=open(self.workdir / "mosquitto.stderr", "ab"),  # noqa: SIM115
            env={**os.environ, **self.env},
        )
        wait_for(self._accepting, timeout=10, what=f"mosquitto on port {self.port}")
        return self

    def _accepting(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"mosquitto exited: {self.log_tail()}")
        # Mosquitto listens before it loads the TLS files, and a broker that then fails still
        # accepts connections while it shuts down: only its "running" line says it started.
        # And a port that accepts is not enough: free_port() races with every other test that
        # picks one, so the listener must be this broker's own socket.
        if not self._logged_running():
            return False
        return self.process is not None and listens(self.process.pid, self.port)

    def _logged_running(self) -> bool:
        if not self.log_file.exists():
            return False
        with self.log_file.open("rb") as log:
            log.seek(self._log_start)
            return b" running" in log.read()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, lines: int = 30) -> str:
        text = ""
        for path in (self.log_file, self.workdir / "mosquitto.stderr"):
            if path.exists():
                text += path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def session(
        self, username: str | None, password: str | None, client_id: str, **kwargs: Any
    ) -> MqttSession:
        return MqttSession(self, username, password, client_id, **kwargs)


@dataclass
class NativeBroker(Broker):
    """A plain Mosquitto deciding from its own password_file and acl_file, without the
    project's plugin: what an operator runs before importing, or after exporting."""

    password_file: Path | None = None
    acl_file: Path | None = None

    def render(self) -> Path:
        conf = self.workdir / "mosquitto.conf"
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf.write_text(
            "per_listener_settings false\n"
            "allow_anonymous false\n"
            f"user {self.user}\n"
            f"pid_file {self.workdir / 'mosquitto.pid'}\n"
            f"listener {self.port} 127.0.0.1\n"
            f"cafile {self.ca_file}\n"
            f"certfile {self.certs / 'server.crt'}\n"
            f"keyfile {self.certs / 'server.key'}\n"
            f"password_file {self.password_file}\n"
            f"acl_file {self.acl_file}\n"
            f"log_dest file {self.log_file}\n"
            # information: the "running" line that start() waits for.
            "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
            "persistence false\n"
            f"sys_interval {self.sys_interval}\n"
        )
        return conf


class MqttSession:
    """One paho client with blocking helpers. Messages land in `self.messages`."""

    def __init__(
        self,
        broker: Broker,
        username: str | None,
        password: str | None,
        client_id: str,
        protocol: mqtt.MQTTProtocolVersion = mqtt.MQTTv5,
        ca_file: Path | None = None,
        tls: bool = True,
        reconnect_delay: float = 0.1,
        bind_address: str = "",
    ) -> None:
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol
        )
        # paho's loop thread sleeps the reconnect delay before it can be stopped: with the
        # default 1 s every refused connection would cost a second in connect()/close().
        self.client.reconnect_delay_set(min_delay=reconnect_delay, max_delay=2)  # type: ignore[arg-type]
        if username is not None:
            self.client.username_pw_set(username, password)
        if tls:
            self.client.tls_set(
                ca_certs=str(ca_file or broker.ca_file), cert_reqs=ssl.CERT_REQUIRED
            )
        self.broker = broker
        # A source address of its own (127.0.0.2, ...): another "host" for the login limiter.
        self.bind_address = bind_address
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.connack: ReasonCode | None = None
        self.disconnected = threading.Event()
        self.disconnect_reason: ReasonCode | None = None
        self._acks: dict[int, Any] = {}
        self._lock = threading.Lock()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = lambda _c, _u, message: self.messages.put(message)
        self.client.on_publish = self._on_ack
        self.client.on_subscribe = self._on_subscribe

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        self.connack = reason

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        self.disconnect_reason = reason
        self.disconnected.set()

    def _on_ack(self, _c: Any, _u: Any, mid: int, reason: ReasonCode, _p: Any) -> None:
        with self._lock:
            self._acks[mid] = reason

    def _on_subscribe(self, _c: Any, _u: Any, mid: int, reasons: list[ReasonCode], _p: Any) -> None:
        with self._lock:
            self._acks[mid] = reasons

    def connect(
        self, timeout: float = 10, properties: Properties | None = None, clean_start: bool = True
    ) -> ReasonCode | None:
        """CONNECT and wait for a CONNACK or a drop; returns the CONNACK reason (None: none)."""
        self.client.connect_async(
            "127.0.0.1",
            self.broker.port,
            keepalive=30,
            bind_address=self.bind_address,
            clean_start=clean_start,
            properties=properties,
        )
        self.client.loop_start()
        wait_for(
            lambda: self.connack is not None or self.disconnected.is_set(),
            timeout,
            "CONNACK or disconnect",
        )
        if self.connack is None or self.connack.is_failure:
            self.client.loop_stop()
        return self.connack

    def connected(self) -> bool:
        return self.connack is not None and not self.connack.is_failure

    def _ack(self, mid: int, timeout: float) -> Any:
        return wait_for(lambda: self._acks.get(mid), timeout, f"ack of message {mid}")

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        qos: int = 1,
        retain: bool = False,
        timeout: float = 10,
    ) -> ReasonCode | None:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if qos == 0:
            return None
        return self._ack(info.mid, timeout)

    def subscribe(self, topic_filter: str, qos: int = 1, timeout: float = 10) -> ReasonCode:
        _result, mid = self.client.subscribe(topic_filter, qos=qos)
        assert mid is not None
        reasons = self._ack(mid, timeout)
        return reasons[0]

    def next_message(self, timeout: float = 10) -> mqtt.MQTTMessage:
        return self.messages.get(timeout=timeout)

    def expect(self, payload: bytes | str, timeout: float = 10) -> mqtt.MQTTMessage:
        """The first message carrying `payload`; earlier ones are dropped."""
        want = payload.encode() if isinstance(payload, str) else payload
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no message {want!r} within {timeout}s")
            try:
                message = self.messages.get(timeout=remaining)
            except queue.Empty:
                continue
            if message.payload == want:
                return message

    def drain(self) -> list[mqtt.MQTTMessage]:
        """Take every message received so far."""
        taken = []
        while True:
            try:
                taken.append(self.messages.get_nowait())
            except queue.Empty:
                return taken

    def no_message(self, within: float) -> bool:
        """True when nothing arrives within `within` seconds (a negative check needs a wait)."""
        try:
            self.messages.get(timeout=within)
        except queue.Empty:
            return True
        return False

    def close(self) -> None:
        if self.connected() and not self.disconnected.is_set():
            self.client.disconnect()
            self.disconnected.wait(5)
        self.client.loop_stop()


@dataclass
class Web:
    """The web app under Gunicorn in a process group of its own, on the test's database, so
    that a test can freeze it (SIGSTOP), thaw it, kill it and start it again."""

    workdir: Path
    database_url: str
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Web:
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "GUNICORN_BIND": f"127.0.0.1:{self.port}",
            "WEB_CONCURRENCY": "1",
            "LOG_TO_FILE": "0",
        }
        with (self.workdir / "gunicorn.log").open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", "web/gunicorn.conf.py"],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # master and workers: one group to stop and kill
            )
        wait_for(self._answering, 30, f"gunicorn on port {self.port}")
        return self

    def _answering(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"gunicorn exited: {self.log_tail()}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"GET /status/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                sock.settimeout(2)
                return sock.recv(12).startswith(b"HTTP/1.")
        except OSError:
            return False

    def _signal(self, signum: int) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signum)

    def freeze(self) -> None:
        self._signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self._signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL, every process of the group: no graceful shutdown, sockets reset."""
        if self.process is None or self.process.poll() is not None:
            return
        self._signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self._signal(signal.SIGCONT)  # a frozen master would never see the SIGTERM
        self._signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self.process.wait()

    def log_tail(self, lines: int = 30) -> str:
        path = self.workdir / "gunicorn.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])
