"""RabbitMQ cluster: the project's HTTP auth backend against RabbitMQ's own user database.

    .venv/bin/python -m bench.rabbitmq_cluster [--runs 3] [--messages 20000] [--devices 1000]

One 2-node RabbitMQ 3.10 cluster on loopback (rabbitmq/cluster.py, MQTT 3.1.1 over TLS), its
auth chain `internal` then `http`, so both kinds of account meet the same nodes in the same
run: int-* accounts live in RabbitMQ's internal database (imported as definitions: SHA-256
password hashes, permissions, topic permissions), http-* accounts in Django only, with the
same rights (publishers publish on bench/data/<username>, the subscriber subscribes to and
receives bench/#). An http-* login first misses in the internal database, then asks Django
(brokerauth/rabbitmq.py) under Gunicorn (web/gunicorn.conf.py, -w 2) on a scratch SQLite
database under var/bench/rabbitmq, BCRYPT_ROUNDS=12 (broker_throughput.py's environment).

Interleaved, internal then http, then http then internal, ..., --runs times (the report
gives medians and paired ratios):
  - messages/s at each --qos: --publishers mosquitto_pub -l on node 1, one mosquitto_sub on
    node 2 (every message crosses the cluster), counted at the subscriber from its first
    data message to the last, every publisher connected before the first line;
  - connections/s, warm: --storm-accounts accounts connect --storm-rounds times each (TLS,
    CONNECT, CONNACK, DISCONNECT) on node 1 from --storm-threads threads; then
    --serial-connects of one account, one at a time (ms per connect);
  - connections/s, cold: the first login of --storm-accounts fresh accounts, twice: with a
    chosen password (bcrypt, cost 12 in Django) and with a generated secret (Mosquitto's $7$
    PBKDF2-SHA512, brokerauth/passwords.py). RabbitMQ's own are salted SHA-256 either way.
Once per kind of account:
  - cross-node latency: a paho publisher on node 1, a subscriber on node 2, QoS 1,
    --latency-messages at 100/s, send to receive, p50 / p99;
  - memory per 1,000 devices: --devices idle TLS connections (half on each node, their own
    accounts and client ids), both nodes' erlang:memory(total) before and after.
Loopback only; every loop is bounded; everything started is stopped, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import platform
import queue
import secrets
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.broker_throughput import (
    PASSWORD,
    PY,
    ROOT,
    BrokerConfig,
    await_connected,
    connect_packet,
    django_env,
    median,
    paired_ratio,
    started,
    storm,
    stream,
    wait_port,
)
from rabbitmq.cluster import Cluster, Node, free_ports
from tests.brokers import make_certs
from web import secretfile

KINDS = ("int", "http")
LABELS = {"int": "RabbitMQ internal", "http": "Django (auth_http)"}

# Django's accounts: a chosen password's bcrypt hash (cost 12) for the publishers, the
# subscriber, the warm and the bcrypt cold storm; a generated secret's $7$ PBKDF2-SHA512
# hash (brokerauth/passwords.py) for the other cold storm and the memory fleet.
SEED = """
import sys
from brokerauth import passwords
from brokerauth.acl import Access
from brokerauth.models import Account, Group, Rule
lines = sys.stdin.read().split()
chosen = passwords.hash_password({password!r})
generated = passwords.hash_secret({password!r})
Account.objects.bulk_create(
    [Account(username=n, password_hash=generated if "-gen-" in n or "-dev-" in n else chosen)
     for n in lines]
)
sub = Account.objects.get(username="http-sub")
for access in (Access.SUBSCRIBE, Access.RECEIVE):
    Rule.objects.create(account=sub, pattern="bench/#", access=access)
fleet = Group.objects.create(name="fleet")
Rule.objects.create(group=fleet, pattern="bench/data/%u", access=Access.PUBLISH)
for account in Account.objects.filter(username__startswith="http-pub-"):
    fleet.memberships.create(account=account)
"""


def names(kind: str, args: argparse.Namespace) -> dict[str, list[str]]:
    return {
        "sub": [f"{kind}-sub"],
        "pub": [f"{kind}-pub-{i}" for i in range(args.publishers)],
        "warm": [f"{kind}-warm-{i}" for i in range(args.storm_accounts)],
        # First logins, a fresh batch per run: chosen passwords (bcrypt) and generated secrets.
        **{
            group: [
                f"{kind}-{group}-{r}-{i}"
                for r in range(args.runs)
                for i in range(args.storm_accounts)
            ]
            for group in ("cold", "gen")
        },
        "dev": [f"{kind}-dev-{i}" for i in range(args.devices)],
    }


def rabbit_hash(password: str) -> str:
    """rabbit_password_hashing_sha256: base64(salt + sha256(salt + password))."""
    salt = secrets.token_bytes(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def definitions(accounts: dict[str, list[str]]) -> dict[str, object]:
    """The int-* accounts with the rights the Django rules give http-* ones. Resource
    permissions cannot name the client's own queues in 3.10: any MQTT subscription queue."""
    everyone = [name for group in accounts.values() for name in group]
    queues = r"mqtt-subscription-.*"
    return {
        "users": [
            {
                "name": name,
                "password_hash": rabbit_hash(PASSWORD),
                "hashing_algorithm": "rabbit_password_hashing_sha256",
                "tags": "",
            }
            for name in everyone
        ],
        "permissions": [
            {
                "user": name,
                "vhost": "/",
                "configure": f"^{queues}$",
                "write": rf"^(amq\.topic|{queues})$",
                "read": rf"^(amq\.topic|{queues})$",
            }
            for name in everyone
        ],
        "topic_permissions": [
            {"user": name, "vhost": "/", "exchange": "amq.topic", "write": "^$", "read": "^$"}
            for name in everyone
            if not name.endswith(("-sub",)) and "-pub-" not in name
        ]
        + [
            {
                "user": name,
                "vhost": "/",
                "exchange": "amq.topic",
                "write": r"^bench\.data\.{username}$",
                "read": "^$",
            }
            for name in accounts["pub"]
        ]
        + [
            {
                "user": name,
                "vhost": "/",
                "exchange": "amq.topic",
                "write": "^$",
                "read": r"^bench\..*",
            }
            for name in accounts["sub"]
        ],
    }


def prepare_django(env: dict[str, str], accounts: dict[str, list[str]]) -> None:
    subprocess.run([PY, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    subprocess.run(
        [PY, "manage.py", "shell", "-c", SEED.format(password=PASSWORD)],
        cwd=ROOT,
        env=env,
        input="\n".join(n for group in accounts.values() for n in group).encode(),
        check=True,
    )


def target(node: Node) -> BrokerConfig:
    return BrokerConfig(node.name, node.workdir, node.mqtt_port, node.workdir / "rabbitmq.conf")


# ------------------------------------------------------------------- measurements


def throughput(
    cluster: Cluster, accounts: dict[str, list[str]], qos: int, messages: int, run: int
) -> float:
    """Publishers on node 1, the subscriber on node 2: every message crosses the cluster."""
    node1, node2 = cluster.nodes
    publishers, subscriber = accounts["pub"], accounts["sub"][0]
    log_start = node1.log_file.stat().st_size
    # A client id per run: a QoS 1 subscription queue left by the previous run stays empty.
    return stream(
        target(node1),
        target(node2),
        cluster.certs,
        (subscriber, f"{subscriber}-{run}"),
        publishers,
        qos,
        messages,
        # The node's "accepting MQTT connection ... client id: <id>)" line.
        lambda: await_connected(node1.log_file, log_start, publishers, "client id: {})"),
    )


def latency(cluster: Cluster, accounts: dict[str, list[str]], count: int) -> tuple[float, float]:
    """p50 and p99 ms from a publish on node 1 to its delivery on node 2 (QoS 1)."""
    received: queue.Queue[tuple[float, bytes]] = queue.Queue()

    def client(username: str, client_id: str, node: Node) -> mqtt.Client:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
        c.username_pw_set(username, PASSWORD)
        c.tls_set(ca_certs=str(cluster.ca_file), cert_reqs=ssl.CERT_REQUIRED)
        c.connect("127.0.0.1", node.mqtt_port)
        c.loop_start()
        return c

    subscribed = threading.Event()
    sub = client(accounts["sub"][0], f"{accounts['sub'][0]}-latency", cluster.nodes[1])
    sub.on_message = lambda _c, _u, m: received.put((time.perf_counter(), m.payload))
    sub.on_subscribe = lambda *_: subscribed.set()
    sub.subscribe("bench/#", qos=1)
    if not subscribed.wait(30):
        raise SystemExit("the latency subscriber was never subscribed")
    publisher = accounts["pub"][0]
    pub = client(publisher, f"{publisher}-latency", cluster.nodes[0])
    samples = []
    try:
        for _ in range(count):
            pub.publish(f"bench/data/{publisher}", repr(time.perf_counter()), qos=1)
            try:
                at, payload = received.get(timeout=10)
            except queue.Empty:
                raise SystemExit("a latency message was lost") from None
            samples.append((at - float(payload)) * 1000)
            time.sleep(0.01)
    finally:
        for c in (pub, sub):
            c.disconnect()
            c.loop_stop()
    cuts = statistics.quantiles(samples, n=100)
    return statistics.median(samples), cuts[98]


def erlang_memory(cluster: Cluster) -> int:
    """Both nodes' erlang:memory(total), in bytes: what is allocated now. (The VMs' RSS is
    no measure here: the allocators keep what they once grew to, so a second fleet on the
    same nodes costs almost nothing in RSS.)"""
    return sum(int(cluster.ctl(n, "eval", "erlang:memory(total).").strip()) for n in cluster.nodes)


def memory_per_thousand(cluster: Cluster, usernames: list[str], threads: int) -> float:
    """MiB per 1,000 idle connected devices, half on each node."""
    context = ssl.create_default_context(cafile=str(cluster.ca_file))
    before = erlang_memory(cluster)
    held: list[ssl.SSLSocket] = []
    refused: list[str] = []
    lock = threading.Lock()
    tasks: queue.Queue[tuple[int, str]] = queue.Queue()
    for index, name in enumerate(usernames):
        tasks.put((cluster.nodes[index % 2].mqtt_port, name))

    def work() -> None:
        while True:
            try:
                port, name = tasks.get_nowait()
            except queue.Empty:
                return
            tls = context.wrap_socket(
                socket.create_connection(("127.0.0.1", port), timeout=60),
                server_hostname="localhost",
            )
            tls.sendall(connect_packet(name, name))
            connack = tls.recv(4)
            with lock:
                held.append(tls)
                if connack[:1] != b"\x20" or connack[3:4] != b"\x00":
                    refused.append(f"{name}: {connack!r}")

    try:
        workers = [threading.Thread(target=work, daemon=True) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(300)
        if refused or len(held) != len(usernames):
            raise SystemExit(f"{len(held)} of {len(usernames)} connected; refused {refused[:3]}")
        time.sleep(2)  # let the nodes settle (stats, the client id tracker)
        after = erlang_memory(cluster)
    finally:
        for tls in held:
            tls.close()
    return (after - before) * 1000 / len(usernames) / 2**20


# ------------------------------------------------------------------------- report


def report(results: dict[str, dict[str, list[float]]], args: argparse.Namespace) -> str:
    metrics = [
        (f"qos{q}", f"messages/s, QoS {q}, node 1 -> node 2 ({args.publishers} publishers)")
        for q in args.qos
    ]
    metrics += [
        ("warm", f"connections/s, warm storm ({args.storm_accounts} x {args.storm_rounds})"),
        ("serial", f"ms per warm connect, one at a time ({args.serial_connects} connects)"),
        ("cold", f"connections/s, cold storm ({args.storm_accounts} first logins, bcrypt 12)"),
        ("gen", f"connections/s, cold storm ({args.storm_accounts} first logins, $7$ secrets)"),
        ("p50", f"cross-node latency p50 ms ({args.latency_messages} messages, QoS 1)"),
        ("p99", "cross-node latency p99 ms"),
        ("mem", f"memory MiB per 1,000 devices ({args.devices} connected, erlang total)"),
    ]
    out = [
        f"| metric | {LABELS['int']} | {LABELS['http']} | http / internal | paired |",
        "|---|---|---|---|---|",
    ]
    for key, label in metrics:
        base, ours = median(results["int"][key]), median(results["http"][key])
        ratio = f"{ours / base:.2f}" if base else "-"
        paired = paired_ratio(results["int"][key], results["http"][key])
        out.append(f"| {label} | {base:.1f} | {ours:.1f} | {ratio} | {paired} |")
    out += ["", "Every run (internal / http):"]
    for key, label in metrics:
        pairs = zip(results["int"][key], results["http"][key], strict=False)
        out.append(f"- {label}: " + "; ".join(f"{a:.1f} / {b:.1f}" for a, b in pairs))
    return "\n".join(out)


@contextmanager
def web(var: Path, env: dict[str, str], port: int, workers: int) -> Iterator[None]:
    cmd = [PY, "-m", "gunicorn", "-c", str(ROOT / "web" / "gunicorn.conf.py")]
    cmd += ["-b", f"127.0.0.1:{port}", "-w", str(workers)]
    with (
        (var / "gunicorn.log").open("wb") as log,
        started(cmd, "gunicorn", cwd=ROOT, env=env, stdout=log, stderr=log) as proc,
    ):
        wait_port(port, proc, "gunicorn")
        yield


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--qos", type=int, nargs="+", choices=(0, 1), default=[1, 0])
    parser.add_argument("--publishers", type=int, default=4)
    parser.add_argument("--storm-accounts", type=int, default=20)
    parser.add_argument("--storm-rounds", type=int, default=10)
    parser.add_argument("--storm-threads", type=int, default=10)
    parser.add_argument("--serial-connects", type=int, default=50)
    parser.add_argument("--latency-messages", type=int, default=500)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    for tool in ("mosquitto_pub", "mosquitto_sub"):
        if not shutil.which(tool):
            raise SystemExit(f"needs {tool}: apt-get install mosquitto-clients")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    var = ROOT / "var" / "bench" / "rabbitmq"
    shutil.rmtree(var, ignore_errors=True)
    var.mkdir(parents=True)
    (var / "static").mkdir(parents=True)  # STATIC_ROOT: WhiteNoise warns when it is missing
    secretfile.create_dev_secrets(var)
    secret = secrets.token_urlsafe(24)
    env = django_env(var, secret)
    accounts = {kind: names(kind, args) for kind in KINDS}
    prepare_django(env, accounts["http"])
    (var / "definitions.json").write_text(json.dumps(definitions(accounts["int"])))
    (http_port,) = free_ports(1)
    cluster = Cluster(
        workdir=var / "cluster",
        certs=make_certs(var / "certs"),
        auth_port=http_port,
        secret=secret,
        auth_backends=("internal", "http"),
    )
    results: dict[str, dict[str, list[float]]] = {kind: {} for kind in KINDS}

    def record(kind: str, key: str, value: float) -> None:
        results[kind].setdefault(key, []).append(value)

    with web(var, env, http_port, args.workers), ExitStack() as stack:
        stack.callback(cluster.stop)
        cluster.start()
        print(f"cluster ready in {cluster.started_in:.1f} s", file=sys.stderr, flush=True)
        cluster.ctl(cluster.nodes[0], "import_definitions", str(var / "definitions.json"))
        for kind in KINDS:
            # Warm-up: the first logins of the publishers, the subscriber and the warm storm's
            # accounts, on both Gunicorn workers (each remembers its own: 8 rounds leave about
            # one login in a hundred cold there).
            usernames = accounts[kind]["sub"] + accounts[kind]["pub"] + accounts[kind]["warm"]
            storm(cluster.nodes[0].mqtt_port, cluster.certs, usernames, 8, args.storm_threads)
        for run in range(args.runs):
            # Internal first in even runs, http first in odd ones: neither always follows the
            # other's storms.
            for kind in KINDS if run % 2 == 0 else KINDS[::-1]:
                print(f"run {run + 1}/{args.runs}, {kind}:", file=sys.stderr, flush=True)
                for qos in args.qos:
                    record(
                        kind,
                        f"qos{qos}",
                        throughput(cluster, accounts[kind], qos, args.messages, run),
                    )
                port = cluster.nodes[0].mqtt_port
                batch = slice(run * args.storm_accounts, (run + 1) * args.storm_accounts)
                for group in ("cold", "gen"):
                    fresh = accounts[kind][group][batch]
                    record(kind, group, storm(port, cluster.certs, fresh, 1, args.storm_threads))
                warm = accounts[kind]["warm"]
                record(
                    kind,
                    "warm",
                    storm(port, cluster.certs, warm, args.storm_rounds, args.storm_threads),
                )
                # One connect at a time: what a login costs, stalls included (Nagle's 40 ms
                # would show here once per HTTP call).
                serial = storm(port, cluster.certs, warm[:1], args.serial_connects, 1)
                record(kind, "serial", 1000 / serial if serial else 0.0)
                print(
                    "  " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in results[kind].items()),
                    file=sys.stderr,
                    flush=True,
                )
        for kind in KINDS:
            p50, p99 = latency(cluster, accounts[kind], args.latency_messages)
            record(kind, "p50", p50)
            record(kind, "p99", p99)
            mem = memory_per_thousand(cluster, accounts[kind]["dev"], args.storm_threads)
            record(kind, "mem", mem)
            print(
                f"  {kind}: latency {p50:.1f} / {p99:.1f} ms, {mem:.1f} MiB per 1,000 devices",
                file=sys.stderr,
                flush=True,
            )
    print(f"# RabbitMQ 3.10.8, 2 nodes; {os.cpu_count()} cores; {platform.platform()}")
    print(f"# load average after the run: {os.getloadavg()}")
    print(report(results, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
