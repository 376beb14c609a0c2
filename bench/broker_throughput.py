"""Broker throughput and login storms: Mosquitto's own files against delegated auth.

    .venv/bin/python -m bench.broker_throughput [--runs 3] [--messages 20000] [--qos 1]

One run of this script measures, on the same mosquitto build, three brokers, each on its own
free port over TLS, rendered from mosquitto/mosquitto.conf.template so that everything but the
auth lines is identical:
  (a) files:    Mosquitto's password_file (mosquitto_passwd) and acl_file, no plugin;
  (b) cached:   the project's plugin asking Django, decision cache on (--cache-ttl seconds);
  (c) uncached: the same plugin with its cache off (every check is an HTTP call).
Django runs under Gunicorn (web/gunicorn.conf.py, -w 2) on a scratch SQLite database under
var/bench/broker, BCRYPT_ROUNDS=12, LOGIN_REMEMBER_SECONDS at its default.

For each config, interleaved, --runs times (the report is the median):
  - messages/s: --publishers mosquitto_pub -l processes (one account each, own topic) send
    --messages lines in total at --qos to one mosquitto_sub; the rate is counted at the
    subscriber from its first data message to the last, so logins are not in it;
  - connections/s, warm: --storm-accounts devices connect --storm-rounds times each (TLS,
    MQTT 3.1.1 CONNECT, CONNACK, DISCONNECT) from --storm-threads threads;
  - connections/s, cold: the first login of --storm-accounts fresh accounts (bcrypt cost 12
    in Django; nothing remembered anywhere).
Loopback only; every loop is bounded; everything started is stopped, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
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
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.brokers import (
    PLUGIN,
    ROOT,
    TEMPLATE,
    current_user,
    free_port,
    make_certs,
    wait_for,
)
from web import secretfile

PY = str(ROOT / ".venv" / "bin" / "python")
PASSWORD = "bench device password"
CONFIGS = ("files", "cached", "uncached")
PHASE_TIMEOUT = 300.0  # seconds: no phase may run longer than this
IDLE_TIMEOUT = 10.0  # seconds without a message: the rest were lost (QoS 0) or stuck


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    def listening() -> bool:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            return False

    wait_for(listening, 30, f"{what} on port {port}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextmanager
def started(cmd: list[str], what: str, **kw: object) -> Iterator[subprocess.Popen[bytes]]:
    """A process in its own session, so that it and its children stop together."""
    proc = subprocess.Popen(cmd, start_new_session=True, **kw)  # type: ignore[call-overload]
    try:
        yield proc
    finally:
        stop(proc)


# ------------------------------------------------------------------------ the fleet


@dataclass
class Fleet:
    """Accounts, the same in Django and in Mosquitto's password file."""

    publishers: list[str]
    storm: dict[tuple[int, str], list[str]] = field(default_factory=dict)  # (run, config)
    subscriber: str = "bench-sub"

    def everyone(self) -> list[str]:
        return [self.subscriber, *self.publishers, *(u for us in self.storm.values() for u in us)]


def make_fleet(args: argparse.Namespace) -> Fleet:
    fleet = Fleet(publishers=[f"bench-pub-{i}" for i in range(args.publishers)])
    for run in range(args.runs):
        for config in CONFIGS:
            fleet.storm[(run, config)] = [
                f"storm-{run}-{config}-{i}" for i in range(args.storm_accounts)
            ]
    return fleet


# Publishers may write their own topic, the subscriber read (and subscribe to) bench/#.
ACL_FILE = """\
user bench-sub
topic read bench/#

pattern write bench/data/%u
"""

SEED = """
import sys
from brokerauth import passwords
from brokerauth.acl import Access
from brokerauth.models import Account, Group, Rule
names = sys.stdin.read().split()
hashed = passwords.hash_password({password!r})  # one bcrypt (cost 12) hash, shared by the fleet
Account.objects.bulk_create([Account(username=n, password_hash=hashed) for n in names])
sub = Account.objects.get(username="bench-sub")
Rule.objects.create(account=sub, pattern="bench/#", access=Access.SUBSCRIBE)
Rule.objects.create(account=sub, pattern="bench/#", access=Access.RECEIVE)
fleet = Group.objects.create(name="fleet")
Rule.objects.create(group=fleet, pattern="bench/data/%u", access=Access.PUBLISH)
for account in Account.objects.exclude(username="bench-sub"):
    fleet.memberships.create(account=account)
"""


def django_env(var: Path, secret: str) -> dict[str, str]:
    return {
        **os.environ,
        "DEV_MODE": "1",
        "DEBUG": "0",
        "SECURE": "0",
        "VAR_DIR": str(var),
        "DATABASE_URL": f"sqlite:///{var / 'db.sqlite3'}",
        "LOG_TO_FILE": "0",
        "LOG_LEVEL": "WARNING",
        "BCRYPT_ROUNDS": "12",
        "MQTT_AUTH_SECRET": secret,
    }


def prepare_django(var: Path, env: dict[str, str], fleet: Fleet) -> None:
    subprocess.run([PY, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    subprocess.run(
        [PY, "manage.py", "shell", "-c", SEED.format(password=PASSWORD)],
        cwd=ROOT,
        env=env,
        input="\n".join(fleet.everyone()).encode(),
        check=True,
    )


def write_password_file(path: Path, fleet: Fleet) -> None:
    path.write_text("".join(f"{name}:{PASSWORD}\n" for name in fleet.everyone()))
    path.chmod(0o600)
    subprocess.run(["mosquitto_passwd", "-U", str(path)], check=True)


# ----------------------------------------------------------------------- the brokers


@dataclass
class BrokerConfig:
    name: str
    workdir: Path
    port: int
    conf: Path


def render_broker(
    name: str, var: Path, certs: Path, http_port: int, secret: str, cache_ttl: int
) -> BrokerConfig:
    workdir = var / name
    (workdir / "data").mkdir(parents=True, exist_ok=True)
    port = free_port()
    values = {
        "MQTT_PORT": port,
        "TLS_CA_FILE": certs / "ca.crt",
        "TLS_CERT_FILE": certs / "server.crt",
        "TLS_KEY_FILE": certs / "server.key",
        "AUTH_PLUGIN": PLUGIN,
        "AUTH_HTTP_PORT": http_port,
        "MQTT_AUTH_SECRET": secret,
        "LOG_FILE": workdir / "mosquitto.log",
        "PERSISTENCE_DIR": workdir / "data",
        "PID_FILE": workdir / "mosquitto.pid",
        "CACHE_LOGIN_TTL": cache_ttl,
        "CACHE_ACL_TTL": cache_ttl,
        "MQTT_RUN_AS_USER": current_user(),
    }
    conf = workdir / "mosquitto.conf"
    subprocess.run(
        [PY, str(ROOT / "mosquitto" / "render.py"), str(TEMPLATE), str(conf)]
        + [f"--set={key}={value}" for key, value in values.items()],
        check=True,
    )
    if name == "files":
        # The same config with Mosquitto's own files in place of the plugin lines.
        lines = [line for line in conf.read_text().splitlines() if not line.startswith("plugin")]
        lines += [f"password_file {var / 'passwords'}", f"acl_file {var / 'acl'}"]
        conf.write_text("\n".join(lines) + "\n")
    return BrokerConfig(name, workdir, port, conf)


# ------------------------------------------------------------------- measurements


def client_args(broker: BrokerConfig, certs: Path, user: str, client_id: str) -> list[str]:
    return [
        "-h", "127.0.0.1", "-p", str(broker.port), "--cafile", str(certs / "ca.crt"),
        "-u", user, "-P", PASSWORD, "-i", client_id, "-V", "mqttv311",
    ]  # fmt: skip


def throughput(broker: BrokerConfig, certs: Path, fleet: Fleet, qos: int, messages: int) -> float:
    """Messages/s delivered to the subscriber, first data message to last."""
    log = broker.workdir / "mosquitto.log"
    log_start = log.stat().st_size
    return stream(
        broker,
        broker,
        certs,
        (fleet.subscriber, "bench-sub"),
        fleet.publishers,
        qos,
        messages,
        lambda: await_connected(log, log_start, fleet.publishers),
    )


def stream(
    publish_to: BrokerConfig,
    subscribe_at: BrokerConfig,
    certs: Path,
    subscriber: tuple[str, str],
    publishers: list[str],
    qos: int,
    messages: int,
    all_connected: Callable[[], None],
) -> float:
    """Messages/s from `publishers` (mosquitto_pub -l, own topic each) to one mosquitto_sub
    (username, client id), first data message to last.

    Publishers get their lines only once `all_connected` returns: a login that the plugin
    asks Django about blocks the broker's event loop, and must not land in the window.
    """
    per_publisher = messages // len(publishers)
    total = per_publisher * len(publishers)
    lines = "".join(f"{i}\n" for i in range(per_publisher)).encode()
    sub_cmd = ["mosquitto_sub", *client_args(subscribe_at, certs, *subscriber)]
    sub_cmd += ["-q", str(qos), "-t", "bench/#", "-v"]
    with ExitStack() as stack:
        sub = stack.enter_context(started(sub_cmd, "mosquitto_sub", stdout=subprocess.PIPE))
        seen: queue.Queue[tuple[float, bytes]] = queue.Queue()
        threading.Thread(target=read_lines, args=(sub, seen), daemon=True).start()
        first = publishers[0]
        ready_cmd = ["mosquitto_pub", *client_args(publish_to, certs, first, first + "-ready")]
        ready_cmd += ["-t", f"bench/data/{first}", "-m", "ready", "-q", "1"]
        await_ready(ready_cmd, seen)
        procs = []
        for user in publishers:
            cmd = ["mosquitto_pub", *client_args(publish_to, certs, user, user)]
            cmd += ["-q", str(qos), "-t", f"bench/data/{user}", "-l"]
            procs.append(stack.enter_context(started(cmd, "mosquitto_pub", stdin=subprocess.PIPE)))
        all_connected()
        for proc in procs:
            threading.Thread(target=feed, args=(proc, lines), daemon=True).start()
        return count_messages(seen, total)


def await_connected(log: Path, start: int, client_ids: list[str], line: str = " as {} (") -> None:
    """Wait for the broker log's line for each client (Mosquitto's "New client connected
    ... as <id> (" by default), written after `start`."""
    deadline = time.monotonic() + 60
    wanted = [line.format(client_id).encode() for client_id in client_ids]
    while time.monotonic() < deadline:
        with log.open("rb") as f:
            f.seek(start)
            text = f.read()
        if all(w in text for w in wanted):
            return
        time.sleep(0.02)
    raise SystemExit(f"publishers did not all connect; see {log}")


def feed(proc: subprocess.Popen[bytes], data: bytes) -> None:
    assert proc.stdin is not None
    try:
        proc.stdin.write(data)
        proc.stdin.close()
    except BrokenPipeError:
        pass


def read_lines(proc: subprocess.Popen[bytes], out: queue.Queue[tuple[float, bytes]]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        out.put((time.perf_counter(), line))


def await_ready(cmd: list[str], seen: queue.Queue[tuple[float, bytes]]) -> None:
    """Publish "ready" until the subscriber shows it: it is connected and subscribed."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        subprocess.run(cmd, check=False, timeout=30, capture_output=True)
        try:
            while True:
                _, line = seen.get(timeout=0.5)
                if line.rstrip().endswith(b" ready"):
                    return
        except queue.Empty:
            continue
    raise SystemExit("the subscriber never became ready")


def count_messages(seen: queue.Queue[tuple[float, bytes]], total: int) -> float:
    """Messages/s between the first and the last data message; losses are reported."""
    deadline = time.monotonic() + PHASE_TIMEOUT
    got, first, last = 0, 0.0, 0.0
    while got < total:
        try:
            at, line = seen.get(timeout=max(0.1, min(IDLE_TIMEOUT, deadline - time.monotonic())))
        except queue.Empty:
            # QoS 0 at saturation: Mosquitto drops what exceeds max_queued_messages.
            print(f"  {qos0_note(got, total)}", file=sys.stderr)
            break
        if line.rstrip().endswith(b" ready"):
            continue
        got += 1
        first = first or at
        last = at
    return (got - 1) / (last - first) if got > 1 and last > first else 0.0


def qos0_note(got: int, total: int) -> str:
    return f"{got} of {total} messages delivered ({100 * (total - got) / total:.1f}% dropped)"


def connect_packet(username: str, client_id: str, password: str = PASSWORD) -> bytes:
    """An MQTT 3.1.1 CONNECT with username and password, clean session, keepalive 30."""

    def string(value: str) -> bytes:
        data = value.encode()
        return len(data).to_bytes(2, "big") + data

    body = string("MQTT") + bytes([4, 0xC2]) + (30).to_bytes(2, "big")
    body += string(client_id) + string(username) + string(password)
    length, encoded = len(body), b""
    while True:
        byte, length = length % 128, length // 128
        encoded += bytes([byte | (0x80 if length else 0)])
        if not length:
            break
    return b"\x10" + encoded + body


def connect_once(
    port: int, context: ssl.SSLContext, username: str, password: str = PASSWORD
) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(connect_packet(username, username, password))
            connack = b""
            while len(connack) < 4:
                chunk = tls.recv(4 - len(connack))
                if not chunk:
                    return False
                connack += chunk
            tls.sendall(b"\xe0\x00")  # DISCONNECT
            return connack[0] == 0x20 and connack[3] == 0


def storm(
    port: int,
    certs: Path,
    usernames: list[str],
    rounds: int,
    threads: int,
    passwords: dict[str, str] | None = None,
) -> float:
    """Connections/s of `rounds` connects of each username from `threads` threads (with
    PASSWORD, or each username's in `passwords`)."""
    context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    tasks: queue.Queue[str] = queue.Queue()
    for _ in range(rounds):
        for name in usernames:
            tasks.put(name)
    failures: list[str] = []

    def work() -> None:
        while True:
            try:
                name = tasks.get_nowait()
            except queue.Empty:
                return
            try:
                ok = connect_once(port, context, name, (passwords or {}).get(name, PASSWORD))
            except OSError as exc:
                ok = False
                failures.append(f"{name}: {exc}")
            if not ok:
                failures.append(name)

    workers = [threading.Thread(target=work, daemon=True) for _ in range(threads)]
    begin = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(PHASE_TIMEOUT)
    elapsed = time.perf_counter() - begin
    if failures:
        print(f"  {len(failures)} failed connects, e.g. {failures[:3]}", file=sys.stderr)
    return (rounds * len(usernames) - len(failures)) / elapsed


# ------------------------------------------------------------------------- report


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def paired_ratio(base: list[float], other: list[float]) -> str:
    ratios = [o / b for b, o in zip(base, other, strict=False) if b]
    return f"{statistics.median(ratios):.2f}" if ratios else "-"


def report(results: dict[str, dict[str, list[float]]], args: argparse.Namespace) -> str:
    metrics = [
        (f"qos{qos}", f"messages/s, QoS {qos} ({args.publishers} publishers, 1 subscriber)")
        for qos in args.qos
    ]
    metrics += [
        ("warm", f"connections/s, warm storm ({args.storm_accounts} x {args.storm_rounds})"),
        ("cold", f"connections/s, cold storm ({args.storm_accounts} first logins)"),
    ]
    out = [
        "| metric | (a) files | (b) plugin, cache on | (c) plugin, cache off "
        "| (b)/(a) | (c)/(a) | (b)/(a) paired | (c)/(a) paired |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, label in metrics:
        a, b, c = (median(results[config][key]) for config in CONFIGS)
        ratios = [f"{x / a:.2f}" if a else "-" for x in (b, c)]
        # Runs are interleaved a, b, c: the ratio within each run cancels some of the noise
        # of a shared machine; this is the median of those per-run ratios.
        paired = [paired_ratio(results["files"][key], results[cfg][key]) for cfg in CONFIGS[1:]]
        out.append(
            f"| {label} | {a:.0f} | {b:.0f} | {c:.0f} | {ratios[0]} | {ratios[1]} "
            f"| {paired[0]} | {paired[1]} |"
        )
    out.append("")
    out.append("Every run (a / b / c):")
    for key, label in metrics:
        runs = [
            " / ".join(
                f"{results[config][key][i]:.0f}" if results[config][key] else "-"
                for config in CONFIGS
            )
            for i in range(len(results[args.configs[0]][key]))
        ]
        out.append(f"- {label}: " + "; ".join(runs))
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--qos", type=int, nargs="+", choices=(0, 1), default=[1, 0])
    parser.add_argument("--publishers", type=int, default=4)
    parser.add_argument("--cache-ttl", type=int, default=5)
    parser.add_argument("--storm-accounts", type=int, default=20)
    parser.add_argument("--storm-rounds", type=int, default=10)
    parser.add_argument("--storm-threads", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS), help="measure only these"
    )
    args = parser.parse_args()
    for tool in ("mosquitto", "mosquitto_pub", "mosquitto_sub", "mosquitto_passwd"):
        if not shutil.which(tool):
            raise SystemExit(f"needs {tool}: apt-get install mosquitto mosquitto-clients")
    if not PLUGIN.exists():
        raise SystemExit(f"needs {PLUGIN}: make -C mosquitto/plugin")
    # Ctrl-C and SIGTERM unwind through the finally blocks that stop every process.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    var = ROOT / "var" / "bench" / "broker"
    shutil.rmtree(var, ignore_errors=True)
    (var / "static").mkdir(parents=True)  # STATIC_ROOT: WhiteNoise warns when it is missing
    secretfile.create_dev_secrets(var)
    certs = make_certs(var / "certs")
    secret = secrets.token_urlsafe(24)
    env = django_env(var, secret)
    fleet = make_fleet(args)
    prepare_django(var, env, fleet)
    write_password_file(var / "passwords", fleet)
    (var / "acl").write_text(ACL_FILE)

    http_port = free_port()
    gunicorn = [PY, "-m", "gunicorn", "-c", str(ROOT / "web" / "gunicorn.conf.py")]
    gunicorn += ["-b", f"127.0.0.1:{http_port}", "-w", str(args.workers)]
    brokers = {
        "files": render_broker("files", var, certs, http_port, secret, 0),
        "cached": render_broker("cached", var, certs, http_port, secret, args.cache_ttl),
        "uncached": render_broker("uncached", var, certs, http_port, secret, 0),
    }
    results: dict[str, dict[str, list[float]]] = {
        config: {**{f"qos{qos}": [] for qos in args.qos}, "warm": [], "cold": []}
        for config in CONFIGS
    }
    with ExitStack() as stack:
        log = stack.enter_context((var / "gunicorn.log").open("wb"))
        web = stack.enter_context(
            started(gunicorn, "gunicorn", cwd=ROOT, env=env, stdout=log, stderr=log)
        )
        wait_port(http_port, web, "gunicorn")
        for broker in brokers.values():
            proc = stack.enter_context(
                started(
                    ["mosquitto", "-c", str(broker.conf)],
                    "mosquitto",
                    stdout=subprocess.DEVNULL,
                    stderr=(broker.workdir / "stderr").open("wb"),
                )
            )
            wait_port(broker.port, proc, f"mosquitto ({broker.name})")
        for broker in brokers.values():
            # Warm-up: each publisher's first login (bcrypt) is not part of any measurement.
            storm(broker.port, certs, [fleet.subscriber, *fleet.publishers], 2, 2)
        for run in range(args.runs):
            for config in args.configs:
                broker = brokers[config]
                print(f"run {run + 1}/{args.runs}, {config}:", file=sys.stderr, flush=True)
                for qos in args.qos:
                    rate = throughput(broker, certs, fleet, qos, args.messages)
                    results[config][f"qos{qos}"].append(rate)
                names = fleet.storm[(run, config)]
                results[config]["cold"].append(
                    storm(broker.port, certs, names, 1, args.storm_threads)
                )
                results[config]["warm"].append(
                    storm(broker.port, certs, names, args.storm_rounds, args.storm_threads)
                )
                print(
                    "  " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in results[config].items()),
                    file=sys.stderr,
                    flush=True,
                )
    version = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True).stdout
    print(f"# {version.splitlines()[0]}; {os.cpu_count()} cores; {platform.platform()}")
    print(f"# load average after the run: {os.getloadavg()}")
    print(report(results, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
