"""A RabbitMQ cluster on loopback, for the test suite, the benchmarks and `bin/run --rabbitmq`.

    python -m rabbitmq.cluster --workdir var/rabbitmq --certs var/certs --auth-port 8000

Debian's rabbitmq-server package may already run a node on the machine (AMQP 5672, its
distribution port 25672, epmd 4369, /etc/rabbitmq, /var/lib/rabbitmq). Nothing here touches
it. Every node gets its own name, ports, config, data and log directories under `workdir`,
the cluster its own Erlang cookie (in its own HOME) and its own epmd on its own port
(ERL_EPMD_PORT), and:
- the scripts under /usr/lib/rabbitmq/bin run, not /usr/sbin's wrappers, which `su` to the
  rabbitmq user when run as root and `cd /var/lib/rabbitmq`;
- RABBITMQ_CONF_ENV_FILE names an empty file of ours, or /etc/rabbitmq/rabbitmq-env.conf
  would be sourced; RABBITMQ_CONFIG_FILE, RABBITMQ_ADVANCED_CONFIG_FILE and
  RABBITMQ_ENABLED_PLUGINS_FILE would otherwise default to /etc/rabbitmq as well;
- the distribution listener binds to 127.0.0.1 (it listens on every interface by default).

The nodes start together and form one cluster by classic peer discovery (the config's
CLUSTER_NODES lines): the first to take the discovery lock starts it, the others join.
A cluster is ready when every node's MQTT listener accepts and `cluster_status` lists every
node as running. Each start is fresh (the data of an earlier run is removed) and stop() kills.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from web import secretfile

ROOT = Path(__file__).resolve().parent.parent
RENDER = ROOT / "mosquitto" / "render.py"

RABBITMQ_BIN = Path(os.environ.get("RABBITMQ_BIN", "/usr/lib/rabbitmq/bin"))
TEMPLATE = Path(__file__).resolve().parent / "rabbitmq.conf.template"
# MQTT, the HTTP auth backend, the event exchange and the management API (presence, later):
# the same file compose and the Ansible role install.
ENABLED_PLUGINS = Path(__file__).resolve().parent / "enabled_plugins"
START_TIMEOUT = 120.0
STOP_TIMEOUT = 10.0


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports (all sockets held until all are chosen)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _die_with_parent() -> None:
    """Children get SIGTERM when the process that started them dies (a killed pytest
    must not leave nodes running). Linux only; elsewhere they outlive it."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Node:
    name: str
    workdir: Path
    mqtt_port: int
    amqp_port: int
    management_port: int
    dist_port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def log_file(self) -> Path:
        return self.workdir / "log" / f"{self.name}.log"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        text = ""
        for path in (self.log_file, self.workdir / "stdout.log"):
            if path.exists():
                text += path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Cluster:
    """`size` nodes asking Django at 127.0.0.1:`auth_port`/mqtt/auth/rabbitmq/ with `secret`.

    `auth_backends` is RabbitMQ's chain: ("http",) asks Django only; the benchmark uses
    ("internal", "http") to compare against RabbitMQ's own user database.
    """

    workdir: Path
    certs: Path
    auth_port: int
    secret: str
    size: int = 2
    auth_username: str = "broker"
    auth_backends: tuple[str, ...] = ("http",)
    mqtt_ports: Sequence[int] = ()
    amqp_ports: Sequence[int] = ()
    management_ports: Sequence[int] = ()
    log_level: str = "info"
    nodes: list[Node] = field(default_factory=list)
    epmd: subprocess.Popen[bytes] | None = None
    epmd_port: int = 0
    started_in: float = 0.0

    @property
    def ca_file(self) -> Path:
        return self.certs / "ca.crt"

    @property
    def home(self) -> Path:
        return self.workdir / "home"

    def start(self) -> Cluster:
        began = time.monotonic()
        self._prepare()
        self._start_epmd()
        first, *others = self.nodes
        try:
            self._launch(first)
            self._wait(lambda: _accepts(first.mqtt_port), f"{first.name}'s MQTT listener")
            for node in others:
                self._launch(node)
            self._wait(lambda: all(_accepts(n.mqtt_port) for n in others), "MQTT listeners")
            self._wait(self._formed, "one cluster of every node")
        except BaseException:
            self.stop()
            raise
        self.started_in = time.monotonic() - began
        return self

    def _launch(self, node: Node) -> None:
        node.process = subprocess.Popen(
            [str(RABBITMQ_BIN / "rabbitmq-server")],
            cwd=node.workdir,
            env=self.env(node),
            stdin=subprocess.DEVNULL,
            stdout=open(node.workdir / "stdout.log", "ab"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
            # Ctrl-C in a terminal reaches us, not the VM's break handler; we stop it.
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )

    def stop(self) -> None:
        """Kill every node, then epmd. Each start is fresh, so nothing is lost; a clean stop
        (SIGTERM) takes about 6 s, mostly the MQTT plugin's Raft member timing out."""
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                node.process.kill()
                node.process.wait()
        if self.epmd is not None and self.epmd.poll() is None:
            self.epmd.terminate()
            self.epmd.wait(timeout=10)

    def kill(self, node: Node) -> None:
        """SIGKILL one node, as a crashed machine: it says goodbye to nobody."""
        assert node.process is not None
        node.process.kill()
        node.process.wait()

    def relaunch(self, node: Node) -> None:
        """Start a killed node again on its data; wait until it is back in the cluster."""
        self._launch(node)
        self._wait(lambda: _accepts(node.mqtt_port), f"{node.name}'s MQTT listener")
        self._wait(self._formed, "one cluster of every node")

    def start_in_background(self) -> Boot:
        return Boot(self)

    def env(self, node: Node) -> dict[str, str]:
        """The environment of a node and of the CLI tools aimed at it: nothing inherited that
        could point at the system's node, its cookie or its epmd."""
        inherited = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("RABBITMQ_", "ERL_"))
        }
        return {
            **inherited,
            "HOME": str(self.home),
            "LC_ALL": "C.UTF-8",
            # rabbitmq-server then execs the VM instead of running it behind a shell that
            # traps signals: our child is the node itself, so SIGTERM stops it cleanly,
            # SIGKILL kills it and PR_SET_PDEATHSIG reaches it. Without NOTIFY_SOCKET nothing
            # talks to systemd.
            "RUNNING_UNDER_SYSTEMD": "true",
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_CONF_ENV_FILE": str(self.workdir / "rabbitmq-env.conf"),
            "RABBITMQ_NODENAME": node.name,
            "RABBITMQ_CONFIG_FILE": str(node.workdir / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.workdir / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.workdir / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(node.workdir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(node.workdir / "log"),
            "RABBITMQ_PID_FILE": str(node.workdir / "rabbitmq.pid"),
            "RABBITMQ_DIST_PORT": str(node.dist_port),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    def ctl(self, node: Node, *args: str, timeout: float = 60) -> str:
        """rabbitmqctl against one node; CalledProcessError with its output on failure."""
        result = subprocess.run(
            [str(RABBITMQ_BIN / "rabbitmqctl"), "-n", node.name, *args],
            env=self.env(node),
            cwd=node.workdir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise subprocess.CalledProcessError(
                result.returncode, result.args, result.stdout, result.stderr
            )
        return result.stdout

    def running_nodes(self) -> set[str]:
        status = json.loads(self.ctl(self.nodes[0], "cluster_status", "--formatter", "json"))
        return set(status["running_nodes"])

    def tls_versions(self) -> list[str]:
        """A TLS handshake with each node's MQTT listener, verified against the CA."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        versions = []
        for node in self.nodes:
            with (
                socket.create_connection(("127.0.0.1", node.mqtt_port), timeout=5) as raw,
                context.wrap_socket(raw, server_hostname="localhost") as tls,
            ):
                versions.append(str(tls.version()))
        return versions

    def describe(self) -> str:
        lines = [f"RabbitMQ cluster in {self.workdir} (epmd on {self.epmd_port}):"]
        for node in self.nodes:
            lines.append(
                f"  {node.name}: MQTT over TLS 127.0.0.1:{node.mqtt_port}, "
                f"AMQP {node.amqp_port}, management http://127.0.0.1:{node.management_port}/"
            )
        return "\n".join(lines)

    def _prepare(self) -> None:
        if self.workdir.exists():
            shutil.rmtree(self.workdir)
        # Erlang wants the cookie readable by its owner only; 0600 from the start.
        secretfile.write(self.home / ".erlang.cookie", secrets.token_hex(20).upper())
        (self.workdir / "rabbitmq-env.conf").write_text(
            "# Our own (empty) env file: keeps /etc/rabbitmq/rabbitmq-env.conf out.\n"
        )
        (self.workdir / "advanced.config").write_text("[].\n")
        shutil.copy(ENABLED_PLUGINS, self.workdir / "enabled_plugins")
        ports = free_ports(4 * self.size + 1)
        self.epmd_port = ports.pop()
        prefix = f"mqtt-{secrets.token_hex(3)}"
        for index in range(self.size):
            mqtt, amqp, management, dist = ports[4 * index : 4 * index + 4]
            self.nodes.append(
                Node(
                    name=f"{prefix}-{index + 1}@localhost",
                    workdir=self.workdir / f"node-{index + 1}",
                    mqtt_port=self.mqtt_ports[index] if self.mqtt_ports else mqtt,
                    amqp_port=self.amqp_ports[index] if self.amqp_ports else amqp,
                    management_port=(
                        self.management_ports[index] if self.management_ports else management
                    ),
                    dist_port=dist,
                )
            )
        for node in self.nodes:
            (node.workdir / "log").mkdir(parents=True)
            self._render(node)

    def _render(self, node: Node) -> None:
        """The project's template, rendered by the same script as Mosquitto's (0600: it holds
        the secret). Values go through the environment, never a command line."""
        # Every placeholder set here: none may come from the caller's environment.
        values = {
            "AMQP_LISTEN_ADDRESS": "127.0.0.1",
            "MANAGEMENT_LISTEN_ADDRESS": "127.0.0.1",
            "MQTT_LISTEN_ADDRESS": "127.0.0.1",
            "AUTH_HTTP_HOST": "127.0.0.1",
            "AUTH_HTTP_TIMEOUT_MS": "5000",
            "MQTT_VHOST": "/",
            "AMQP_PORT": str(node.amqp_port),
            "MANAGEMENT_PORT": str(node.management_port),
            "MQTT_PORT": str(node.mqtt_port),
            "TLS_CA_FILE": str(self.ca_file),
            "TLS_CERT_FILE": str(self.certs / "server.crt"),
            "TLS_KEY_FILE": str(self.certs / "server.key"),
            "AUTH_HTTP_PORT": str(self.auth_port),
            "AUTH_HTTP_USERNAME": self.auth_username,
            "MQTT_AUTH_SECRET": self.secret,
            "AUTH_BACKENDS": "\n".join(
                f"auth_backends.{i} = {backend}" for i, backend in enumerate(self.auth_backends, 1)
            ),
            "CLUSTER_NODES": "\n".join(
                f"cluster_formation.classic_config.nodes.{i} = {other.name}"
                for i, other in enumerate(self.nodes, 1)
            ),
            "LOG_LEVEL": self.log_level,
            # Node 2 starts once node 1 is up, so the retries only cost time (5 s by default).
            "DISCOVERY_RETRY_LIMIT": "3",
            "DISCOVERY_RETRY_INTERVAL_MS": "300",
        }
        subprocess.run(
            [sys.executable, str(RENDER), str(TEMPLATE), str(node.workdir / "rabbitmq.conf")],
            env={**os.environ, **values},
            check=True,
            capture_output=True,
        )

    def _start_epmd(self) -> None:
        # Ours, in the foreground: the nodes find it on ERL_EPMD_PORT instead of starting a
        # daemon that would outlive them.
        self.epmd = subprocess.Popen(
            ["epmd", "-port", str(self.epmd_port), "-address", "127.0.0.1"],
            stdout=subprocess.DEVNULL,
            stderr=open(self.workdir / "epmd.log", "ab"),  # noqa: SIM115
            preexec_fn=_die_with_parent,
        )
        self._wait(lambda: _accepts(self.epmd_port), f"epmd on port {self.epmd_port}")

    def _formed(self) -> bool:
        try:
            return self.running_nodes() == {node.name for node in self.nodes}
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, ValueError, KeyError):
            return False

    def _wait(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not condition():
            for node in self.nodes:
                if node.process is not None and not node.alive():
                    raise RuntimeError(f"{node.name} exited:\n{node.log_tail()}")
            if time.monotonic() > deadline:
                tails = "\n".join(f"{n.name}:\n{n.log_tail()}" for n in self.nodes)
                raise TimeoutError(f"no {what} after {START_TIMEOUT}s\n{tails}")
            time.sleep(0.1)


class Boot:
    """A cluster starting in a thread while the caller does other work (the test suite boots
    it at collection time). The thread lives until stop(): the nodes are its children, and
    PR_SET_PDEATHSIG fires when the *thread* that started a child ends."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="rabbitmq-boot", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.cluster.start()
        except BaseException as exc:  # handed to wait()
            self._error = exc
            return
        finally:
            self._ready.set()
        self._stopping.wait()
        self.cluster.stop()

    def wait(self, timeout: float = START_TIMEOUT + 30) -> Cluster:
        if not self._ready.wait(timeout):
            raise TimeoutError(f"the RabbitMQ cluster did not start within {timeout}s")
        if self._error is not None:
            raise RuntimeError("the RabbitMQ cluster did not start") from self._error
        return self.cluster

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(STOP_TIMEOUT)


@contextlib.contextmanager
def running(cluster: Cluster) -> Iterator[Cluster]:
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a local RabbitMQ cluster until stopped.")
    parser.add_argument("--workdir", type=Path, default=ROOT / "var" / "rabbitmq")
    parser.add_argument("--certs", type=Path, default=ROOT / "var" / "certs")
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--auth-port", type=int, default=8000, help="Django's port")
    parser.add_argument("--mqtt-port", type=int, help="node 1's MQTT port, node 2 the next")
    parser.add_argument("--amqp-port", type=int, help="node 1's AMQP port, node 2 the next")
    parser.add_argument("--management-port", type=int, help="node 1's, node 2 the next")
    parser.add_argument("--once", action="store_true", help="start, report, stop (a check)")
    args = parser.parse_args(argv)
    secret = os.environ.get("MQTT_AUTH_SECRET", "")
    if not secret:
        parser.error("MQTT_AUTH_SECRET must be set (the secret Django expects)")

    def ports(first: int | None) -> list[int]:
        return [] if first is None else [first + i for i in range(args.nodes)]

    cluster = Cluster(
        workdir=args.workdir.resolve(),
        certs=args.certs.resolve(),
        auth_port=args.auth_port,
        secret=secret,
        size=args.nodes,
        mqtt_ports=ports(args.mqtt_port),
        amqp_ports=ports(args.amqp_port),
        management_ports=ports(args.management_port),
    )
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    with running(cluster):
        print(f"{cluster.describe()}\nready in {cluster.started_in:.1f} s", flush=True)
        if args.once:
            print(f"TLS handshakes verified: {', '.join(cluster.tls_versions())}", flush=True)
        while not args.once and not stopping.wait(1):
            for node in cluster.nodes:
                if not node.alive():
                    print(f"{node.name} exited:\n{node.log_tail()}", file=sys.stderr)
                    return 1
    print("RabbitMQ cluster stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
