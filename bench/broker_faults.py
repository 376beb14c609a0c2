"""A fleet at QoS 1 while the broker is flooded with bad logins, and while the web app is frozen.

    .venv/bin/python -m bench.broker_faults [--seconds 30] [--devices 50] [--rate 10]
        [--flood 2000] [--legacy]

Brokers rendered from mosquitto/mosquitto.conf.template with the project's plugin at its
shipped defaults (cache TTL 5 s, http_timeout 2 s, breaker 1 s doubling to 30 s,
cache_stale_if_error 300 s, 20 refused logins per address per minute), Django under Gunicorn
(web/gunicorn.conf.py, -w 2) on a scratch SQLite database under var/bench/faults.

--devices mosquitto_pub -l processes (one account each, own topic, QoS 1) each send --rate
messages a second, every line carrying the time it was written, to one mosquitto_sub; for
--seconds, in runs one after the other:
  (a0) native: Mosquitto's own password_file and acl_file, no plugin: the floor of this
               harness on this machine;
  (a) steady:  the plugin, nothing else happens;
  (b0) the flood of (b) against (a0): what the TLS handshakes cost without any plugin;
  (b) flood:   --flood CONNECTs with unknown usernames arrive over TLS from 127.0.0.2
               (4 threads, as fast as they go), the devices connect from 127.0.0.1;
  (c) frozen:  the web app's processes are SIGSTOPped one second in, for --seconds, then
               SIGCONTed; the run ends when every message is in.
With --legacy, (d) and (e) repeat (b) and (c) on a broker with the breaker, stale-if-error and
the limiter off (what the plugin did before).
Throughput = messages delivered / (last delivery - first send); latency = delivery time minus
the time written into the message. Ratios are against (a) of the same invocation.
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
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from bench.broker_throughput import (
    ACL_FILE,
    PY,
    BrokerConfig,
    await_connected,
    connect_packet,
    django_env,
    prepare_django,
    render_broker,
    started,
    wait_port,
    write_password_file,
)
from bench.broker_throughput import Fleet as Accounts
from tests.brokers import PLUGIN, ROOT, free_port, make_certs
from web import secretfile

PASSWORD = "bench device password"  # bench.broker_throughput's SEED gives every account this
RUN_TIMEOUT = 300.0
# What the plugin did before: no breaker, no stale-if-error, no limiter.
LEGACY_OPTIONS = (
    "plugin_opt_breaker_min_interval 0\nplugin_opt_cache_stale_if_error 0\n"
    "plugin_opt_limit_address_failures 0\nplugin_opt_limit_username_failures 0\n"
)
# Latencies of messages written in the first second are left out: the first message of each
# device and to the subscriber costs an ACL check on the backend (100 in a row for 50 devices),
# a cold start that is not what the runs compare. The flood starts after it.
WARMUP = 1.0


@dataclass
class Run:
    name: str
    sent: int
    delivered: int
    seconds: float
    latencies: list[float]
    note: str = ""

    @property
    def throughput(self) -> float:
        return self.delivered / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000


def client_args(port: int, certs: Path, user: str, client_id: str) -> list[str]:
    return [
        "-h", "127.0.0.1", "-p", str(port), "--cafile", str(certs / "ca.crt"),
        "-u", user, "-P", PASSWORD, "-i", client_id, "-V", "mqttv311",
    ]  # fmt: skip


def read_lines(proc: subprocess.Popen[bytes], out: queue.Queue[tuple[float, bytes]]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        out.put((time.perf_counter(), line))


def feed(pubs: list[subprocess.Popen[bytes]], rate: float, seconds: float) -> int:
    """Write one timestamped line a tick to every publisher; the number of lines written."""
    sent, tick, start = 0, 1.0 / rate, time.perf_counter()
    for n in range(int(seconds * rate)):
        delay = start + n * tick - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        for proc in pubs:
            assert proc.stdin is not None
            try:
                proc.stdin.write(f"{time.perf_counter():.6f}\n".encode())
                proc.stdin.flush()
                sent += 1
            except BrokenPipeError:
                pass  # a publisher that was dropped: its messages are counted as lost
    return sent


def close_inputs(pubs: list[subprocess.Popen[bytes]]) -> None:
    """Only once every message is in: mosquitto_pub -l disconnects at the end of its input,
    and what it still has in flight then is lost."""
    for proc in pubs:
        try:
            assert proc.stdin is not None
            proc.stdin.close()
        except BrokenPipeError:
            pass


def measured(latencies: list[tuple[float, float]], first: float) -> list[float]:
    return [latency for written, latency in latencies if written >= first + WARMUP]


def collect(
    seen: queue.Queue[tuple[float, bytes]],
    sent_box: list[int],
    feeder: threading.Thread,
    idle: float,
) -> tuple[int, float, list[tuple[float, float]]]:
    """(delivered, last delivery, latencies) once every line sent is in, or `idle` seconds
    passed without a message after the feeder finished."""
    delivered, last = 0, 0.0
    latencies: list[tuple[float, float]] = []
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        if not feeder.is_alive() and delivered >= sent_box[0]:
            break
        try:
            at, line = seen.get(timeout=idle if not feeder.is_alive() else 1.0)
        except queue.Empty:
            if not feeder.is_alive():
                break
            continue
        try:
            written = float(line.split()[-1])
        except ValueError:
            continue
        delivered += 1
        last = at
        latencies.append((written, at - written))
    return delivered, last, latencies


def run_fleet(
    name: str,
    port: int,
    certs: Path,
    accounts: Accounts,
    args: argparse.Namespace,
    log: Path,
    during: threading.Thread | None = None,
) -> Run:
    sub_cmd = ["mosquitto_sub", *client_args(port, certs, accounts.subscriber, f"sub-{name}")]
    sub_cmd += ["-q", "1", "-t", "bench/#"]
    with ExitStack() as stack:
        start = log.stat().st_size
        sub = stack.enter_context(started(sub_cmd, "mosquitto_sub", stdout=subprocess.PIPE))
        seen: queue.Queue[tuple[float, bytes]] = queue.Queue()
        threading.Thread(target=read_lines, args=(sub, seen), daemon=True).start()
        await_connected(log, start, [f"sub-{name}"])
        time.sleep(0.5)  # SUBSCRIBE follows the CONNACK; the broker log does not show it
        pubs = []
        for user in accounts.publishers:
            cmd = ["mosquitto_pub", *client_args(port, certs, user, f"{user}-{name}")]
            cmd += ["-q", "1", "-t", f"bench/data/{user}", "-l"]
            pubs.append(stack.enter_context(started(cmd, "mosquitto_pub", stdin=subprocess.PIPE)))
        await_connected(log, start, [f"{u}-{name}" for u in accounts.publishers])
        sent_box = [args.devices * int(args.seconds * args.rate)]
        first = time.perf_counter()

        def feeder_body() -> None:
            sent_box[0] = feed(pubs, args.rate, args.seconds)

        feeder = threading.Thread(target=feeder_body, daemon=True)
        feeder.start()
        if during is not None:
            during.start()
        delivered, last, latencies = collect(seen, sent_box, feeder, idle=10.0)
        close_inputs(pubs)
        if during is not None:
            during.join(RUN_TIMEOUT)
    # A run whose clients were dropped ends early: it still had the whole run to deliver in.
    seconds = max(last - first, args.seconds) if last else args.seconds
    return Run(name, sent_box[0], delivered, seconds, measured(latencies, first))


def flood(port: int, certs: Path, count: int, threads: int, result: dict[str, float]) -> None:
    """`count` CONNECTs with unknown usernames from 127.0.0.2; how they were answered."""
    context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    names: queue.Queue[int] = queue.Queue()
    for i in range(count):
        names.put(i)
    tally = {"refused": 0, "other": 0}
    lock = threading.Lock()
    tag = secrets.token_hex(3)

    def one(i: int) -> str:
        with socket.create_connection(("127.0.0.1", port), 30, ("127.0.0.2", 0)) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(connect_packet(f"nobody-{tag}-{i}", f"x-{i}", "wrong"))
                connack = tls.recv(4)
                return "refused" if connack[:1] == b"\x20" and connack[3:4] == b"\x05" else "other"

    def work() -> None:
        while True:
            try:
                i = names.get_nowait()
            except queue.Empty:
                return
            try:
                kind = one(i)
            except OSError:
                kind = "other"
            with lock:
                tally[kind] += 1

    time.sleep(WARMUP)
    begin = time.perf_counter()
    workers = [threading.Thread(target=work, daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(RUN_TIMEOUT)
    result.update(tally, seconds=time.perf_counter() - begin)


def freeze(web: subprocess.Popen[bytes], after: float, seconds: float) -> None:
    time.sleep(after)
    os.killpg(web.pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        os.killpg(web.pid, signal.SIGCONT)


def one_run(
    name: str,
    broker: BrokerConfig,
    certs: Path,
    accounts: Accounts,
    args: argparse.Namespace,
    web: subprocess.Popen[bytes],
    fault: str | None,
) -> Run:
    log = broker.workdir / "mosquitto.log"
    if fault == "freeze":
        freezer = threading.Thread(target=freeze, args=(web, WARMUP, args.seconds))
        run = run_fleet(name, broker.port, certs, accounts, args, log, freezer)
        run.note = f"web frozen {args.seconds:g} s from {WARMUP:g} s in"
        return run
    if fault == "flood":
        tally: dict[str, float] = {}
        flooder = threading.Thread(
            target=flood, args=(broker.port, certs, args.flood, args.flood_threads, tally)
        )
        run = run_fleet(name, broker.port, certs, accounts, args, log, flooder)
        run.note = (
            f"{tally.get('refused', 0):.0f} refused, {tally.get('other', 0):.0f} other, "
            f"in {tally.get('seconds', 0):.1f} s"
        )
        return run
    return run_fleet(name, broker.port, certs, accounts, args, log)


def report(runs: list[Run], args: argparse.Namespace) -> str:
    base = next((run for run in runs if run.name == "a-steady"), runs[0])
    out = [
        f"{args.devices} devices x {args.rate:g} msg/s at QoS 1 for {args.seconds:g} s per run",
        "",
        "| run | sent | delivered | msg/s | ratio to a-steady | p50 ms | p99 ms | max ms | note |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for run in runs:
        ratio = run.throughput / base.throughput if base.throughput else 0.0
        out.append(
            f"| {run.name} | {run.sent} | {run.delivered} | {run.throughput:.0f} | {ratio:.2f} "
            f"| {run.percentile(50):.1f} | {run.percentile(99):.1f} "
            f"| {max(run.latencies, default=0) * 1000:.0f} | {run.note} |"
        )
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--rate", type=float, default=10, help="messages/s per device")
    parser.add_argument("--flood", type=int, default=2000)
    parser.add_argument("--flood-threads", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cache-ttl", type=int, default=5, help="the template's default: 5")
    parser.add_argument("--legacy", action="store_true", help="also run (c) without the breaker")
    args = parser.parse_args()
    if not PLUGIN.exists():
        raise SystemExit(f"needs {PLUGIN}: make -C mosquitto/plugin")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    var = ROOT / "var" / "bench" / "faults"
    shutil.rmtree(var, ignore_errors=True)
    (var / "static").mkdir(parents=True)
    secretfile.create_dev_secrets(var)
    certs = make_certs(var / "certs")
    secret = secrets.token_urlsafe(24)
    env = {**django_env(var, secret), "BCRYPT_ROUNDS": "4"}  # logins are not measured here
    accounts = Accounts(publishers=[f"bench-pub-{i}" for i in range(args.devices)])
    prepare_django(var, env, accounts)
    http_port = free_port()
    ttl = args.cache_ttl
    write_password_file(var / "passwords", accounts)
    (var / "acl").write_text(ACL_FILE)
    brokers = {
        "files": render_broker("files", var, certs, http_port, secret, 0),
        "shipped": render_broker("shipped", var, certs, http_port, secret, ttl),
    }
    if args.legacy:
        legacy = render_broker("legacy", var, certs, http_port, secret, ttl)
        with legacy.conf.open("a") as conf:
            conf.write(LEGACY_OPTIONS)
        brokers["legacy"] = legacy
    gunicorn = [PY, "-m", "gunicorn", "-c", str(ROOT / "web" / "gunicorn.conf.py")]
    gunicorn += ["-b", f"127.0.0.1:{http_port}", "-w", str(args.workers)]
    plan: list[tuple[str, str, str | None]] = [("a0-native", "files", None)]
    plan += [("a-steady", "shipped", None)]
    plan += [("b0-flood-native", "files", "flood"), ("b-flood", "shipped", "flood")]
    plan += [("c-frozen", "shipped", "freeze")]
    if args.legacy:
        plan += [("d-flood-legacy", "legacy", "flood"), ("e-frozen-legacy", "legacy", "freeze")]
    runs: list[Run] = []
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
        for name, config, fault in plan:
            print(f"({name})", file=sys.stderr, flush=True)
            runs.append(one_run(name, brokers[config], certs, accounts, args, web, fault))
    version = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True).stdout
    print(f"# {version.splitlines()[0]}; {os.cpu_count()} cores; {platform.platform()}")
    print(f"# load average after the run: {os.getloadavg()}")
    print(report(runs, args))
    shipped_log = brokers["shipped"].workdir / "mosquitto.log"
    limiter = [line for line in shipped_log.read_text().splitlines() if "refusing logins" in line]
    print(f"\nlimiter: {limiter[:1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
