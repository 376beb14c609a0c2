"""Presence under churn: how often the API's online set equals the broker's, and how late.

    .venv/bin/python -m bench.presence [--devices 100] [--minutes 3] [--churn 1] [--every 5]
    .venv/bin/python -m bench.presence --devices 1000 --database-url postgres://...@.../x

One run: Gunicorn (-w 2) on a scratch database answering the broker's plugin and the API, a
Mosquitto from mosquitto/mosquitto.conf.template (decision cache on, persistence on,
sys_interval --sys-interval), `manage.py monitor` as its own process, and --devices paho
devices (tests/fleet.py) of which three quarters start connected, each publishing one QoS 1
reading every --every seconds. For --minutes, one device leaves or joins --churn times a
second (random, seeded); at one third and two thirds of the run the monitor is SIGKILLed and
started again 3 s later, devices churning on.

An observer fetches the API's online set (`/api/v1/clients/?status=online&page_size=1000`)
over and over and, after each fetch, replays the broker's log file (the ground truth, as in
tests/test_presence_transitions.py) up to that moment:
- equal seconds: the share of whole seconds in which every fetch equalled the broker's set
  (strict), and the same where clients that changed within the last 2 s (the lag goal) are
  left out of the comparison (within the goal); both outside the settle window after each
  restart (from the kill to 3 s of start-up + 2 sys_intervals + one publish interval + 5 s
  after the new start), which is reported too, with how long each restart took to agree;
- lag: for each join (the device's CONNACK) and leave (its DISCONNECT sent) outside the
  settle windows, the time until the first fetch that began after it and shows it, up to that
  fetch's end (an upper bound: a fetch takes `fetch` ms).

SQLite: a fresh file under var/bench/presence. PostgreSQL: the database named in the URL gets
a `_bench` suffix and is dropped and created for the run.
"""

from __future__ import annotations

import argparse
import bisect
import multiprocessing as mp
import os
import queue
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # importing them needs Django set up, which main() does first
    from tests.brokers import Broker
    from tests.fleet import Device, MonitorProcess

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
GRACE = 2.0  # seconds: the lag goal; changes younger than this are the lag's business


@dataclass
class Sample:
    start: float
    end: float
    api: set[str]
    truth: set[str]
    recent: set[str]  # client ids with a join or leave within GRACE before `end`


@dataclass
class Run:
    started: float = 0.0
    samples: list[Sample] = field(default_factory=list)
    events: list[tuple[float, str, bool]] = field(default_factory=list)  # (t, id, joined)
    windows: list[tuple[float, float]] = field(default_factory=list)  # settle windows
    restarts: list[float] = field(default_factory=list)  # when the monitor started again
    lock: threading.Lock = field(default_factory=threading.Lock)


class LogReplay:
    """The broker's connected set from its log file, read incrementally."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.online = path, 0, set[str]()
        self.rest = b""

    def read(self) -> set[str]:
        from monitor import brokerlog, presence

        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = self.rest + f.read()
            self.offset = f.tell()
        *lines, self.rest = data.split(b"\n")
        for raw in lines:
            text = brokerlog.strip_timestamp(raw.decode("utf-8", "replace"))
            if text.startswith("mosquitto version ") and text.endswith("starting"):
                self.online.clear()
            event = brokerlog.parse_line(text)
            if isinstance(event, brokerlog.Connected) and not presence.is_probe(event.client_id):
                self.online.add(event.client_id)
            elif isinstance(event, brokerlog.Disconnected):
                self.online.discard(event.client_id)
        return set(self.online)


DEVICES_PER_PROCESS = 250  # paho waits in select(): file descriptors past 1,024 fail


def fleet_worker(broker: Broker, every: float, commands: Any, events: Any) -> None:
    """One process's share of the fleet (forked: Django is set up already)."""
    from tests.fleet import Fleet

    fleet = Fleet(broker, every=every)

    def report_join(device: Device) -> None:
        if device.connected.wait(30) and device.connected_at is not None:
            events.put(("joined", device.client_id, device.connected_at))

    while True:
        command, arg = commands.get()
        if command == "start":
            device = fleet.start(arg)
            threading.Thread(target=report_join, args=(device,), daemon=True).start()
        elif command == "stop":
            fleet.stop(arg)
        elif command == "start_all":
            fleet.start_all(arg)
            events.put(("ready", len(arg), fleet.all_connected()))
        else:
            fleet.close()
            return


class ProcessFleet:
    """tests/fleet.py's Fleet, spread over processes of DEVICES_PER_PROCESS devices each."""

    def __init__(self, broker: Broker, every: float, devices: int) -> None:
        ctx = mp.get_context("fork")
        workers = max(1, -(-devices // DEVICES_PER_PROCESS))
        self.commands = [ctx.Queue() for _ in range(workers)]
        self.events = ctx.Queue()
        self.procs = [
            ctx.Process(target=fleet_worker, args=(broker, every, q, self.events), daemon=True)
            for q in self.commands
        ]
        for proc in self.procs:
            proc.start()
        self.running: set[str] = set()

    def queue_of(self, client_id: str) -> Any:
        return self.commands[int(client_id.rsplit("-", 1)[1]) % len(self.commands)]

    def start_all(self, client_ids: list[str]) -> None:
        shares: dict[int, list[str]] = {}
        for client_id in client_ids:
            shares.setdefault(id(self.queue_of(client_id)), []).append(client_id)
        for share in shares.values():
            self.queue_of(share[0]).put(("start_all", share))
        for _ in shares:
            kind, n, ok = self.events.get(timeout=600)
            assert kind == "ready" and ok, f"{n} devices, not all connected"
        self.running.update(client_ids)

    def churn(self, rng: random.Random, pool: list[str]) -> tuple[str, bool] | None:
        idle = [c for c in pool if c not in self.running]
        if self.running and (not idle or rng.random() < 0.5):
            client_id = rng.choice(sorted(self.running))
            self.running.discard(client_id)
            self.queue_of(client_id).put(("stop", client_id))
            return client_id, False
        if idle:
            client_id = rng.choice(idle)
            self.running.add(client_id)
            self.queue_of(client_id).put(("start", client_id))
            return client_id, True
        return None

    def close(self) -> None:
        for q in self.commands:
            q.put(("close", None))
        for proc in self.procs:
            proc.join(30)


def collect_joins(run: Run, fleet: ProcessFleet, stop: threading.Event) -> None:
    """Joins count from the device's CONNACK, reported by its process."""
    while not stop.is_set():
        try:
            kind, client_id, at = fleet.events.get(timeout=0.5)
        except queue.Empty:
            continue
        if kind == "joined":
            with run.lock:
                run.events.append((at, client_id, True))


def prepare_database(url: str | None, var: Path) -> str:
    if not url:
        return f"sqlite:///{var / 'db.sqlite3'}"
    import psycopg

    base, _, name = url.rpartition("/")
    bench_name = f"{name}_bench"
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{bench_name}"')
        conn.execute(f'CREATE DATABASE "{bench_name}"')
    return f"{base}/{bench_name}"


def setup_django(var: Path, database_url: str) -> None:
    os.environ.update(
        DEV_MODE="1",
        VAR_DIR=str(var),
        DATABASE_URL=database_url,
        LOG_TO_FILE="0",
        LOG_LEVEL="WARNING",
        BCRYPT_ROUNDS="4",
        DJANGO_SETTINGS_MODULE="web.settings",
    )
    subprocess.run([PY, "-m", "web.secretfile", str(var)], check=True, cwd=ROOT)
    (var / "static").mkdir(exist_ok=True)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def seed() -> str:
    """The monitor's and the fleet's accounts, and an API token; returns the token."""
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from brokerauth.acl import Access
    from brokerauth.models import Account, Rule
    from monitor.account import ensure_rules
    from tests import fleet

    ensure_rules(Account.objects.create_account("mqtt-monitor", fleet.MONITOR_PASSWORD))
    devices = Account.objects.create_account(fleet.FLEET_USERNAME, fleet.FLEET_PASSWORD)
    Rule.objects.create(account=devices, pattern="devices/%c/#", access=Access.ALL)
    user = get_user_model().objects.create_user("bench", password="bench operator")
    return Token.objects.create(user=user).key


def observe(run: Run, url: str, token: str, replay: LogReplay, stop: threading.Event) -> None:
    from tests.fleet import api_online

    while not stop.is_set():
        start = time.time()
        try:
            api = api_online(url, token)
        except OSError:
            stop.wait(0.2)
            continue
        truth = replay.read()
        run.samples.append(Sample(start, time.time(), api, truth, set()))


def mark_recent(run: Run) -> None:
    """Per fetch, the clients with a join or leave from GRACE before it began to just after
    it ended (the broker logs a connect before the device has its CONNACK)."""
    events = sorted(run.events)
    times = [t for t, _c, _j in events]
    for s in run.samples:
        lo = bisect.bisect_left(times, s.start - GRACE)
        hi = bisect.bisect_right(times, s.end + 0.2)
        s.recent = {c for _t, c, _j in events[lo:hi]}


def in_window(t: float, windows: list[tuple[float, float]]) -> bool:
    return any(a <= t <= b for a, b in windows)


def lags(run: Run) -> list[float]:
    """Seconds from each join or leave to the first fetch showing it (its end)."""
    found: list[float] = []
    by_client: dict[str, list[float]] = {}
    for t, client_id, _joined in run.events:
        by_client.setdefault(client_id, []).append(t)
    for t, client_id, joined in run.events:
        if in_window(t, run.windows):
            continue
        later = [u for u in by_client[client_id] if u > t]
        until = later[0] if later else float("inf")
        for s in run.samples:
            if s.start < t:
                continue
            if s.start >= until:
                break  # changed again before any fetch saw it: not measurable
            if (client_id in s.api) == joined:
                found.append(s.end - t)
                break
    return found


def equal_seconds(run: Run, lenient: bool) -> tuple[int, int]:
    seconds: dict[int, bool] = {}
    for s in run.samples:
        if in_window(s.start, run.windows) or in_window(s.end, run.windows):
            continue
        differ = s.api ^ s.truth
        ok = not (differ - s.recent) if lenient else not differ
        second = int(s.start - run.started)
        seconds[second] = seconds.get(second, True) and ok
    return sum(seconds.values()), len(seconds)


def settle_times(run: Run) -> list[float]:
    out = []
    for restart in run.restarts:
        first = next(
            (s.end for s in run.samples if s.start >= restart and not (s.api ^ s.truth) - s.recent),
            None,
        )
        out.append(float("nan") if first is None else first - restart)
    return out


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--churn", type=float, default=1.0, help="Joins + leaves per second.")
    parser.add_argument("--every", type=float, default=5.0, help="Seconds between readings.")
    parser.add_argument("--sys-interval", type=int, default=1)
    parser.add_argument("--seed", type=int, default=10)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()

    var = ROOT / "var" / "bench" / "presence"
    shutil.rmtree(var, ignore_errors=True)
    var.mkdir(parents=True)
    setup_django(var, prepare_database(args.database_url, var))
    token = seed()

    from django.conf import settings

    from tests.brokers import Broker, free_port, make_certs, wait_for
    from tests.fleet import MonitorProcess

    http_port = free_port()
    gunicorn = [PY, "-m", "gunicorn", "-c", str(ROOT / "web" / "gunicorn.conf.py")]
    gunicorn += ["-b", f"127.0.0.1:{http_port}", "-w", "2"]
    # Start-up (about 2 s), two $SYS ticks, every device's next reading, and a margin.
    settle = 3 + 2 * args.sys_interval + args.every + 5
    run = Run()
    stop = threading.Event()
    with ExitStack() as stack:
        log = stack.enter_context((var / "gunicorn.log").open("wb"))
        web = subprocess.Popen(gunicorn, cwd=ROOT, stdout=log, stderr=log, start_new_session=True)
        stack.callback(web.wait, 10)
        stack.callback(web.terminate)
        broker = Broker(
            workdir=var / "broker",
            certs=make_certs(var / "certs"),
            auth_port=http_port,
            secret=settings.MQTT_AUTH_SECRET,
            cache_ttl=300,
            sys_interval=args.sys_interval,
        )
        broker.start()
        stack.callback(broker.stop)
        wait_for(lambda: api_ready(http_port, token), 30, "gunicorn")
        fleet = ProcessFleet(broker, args.every, args.devices)
        stack.callback(fleet.close)
        pool = [f"dev-{i:04d}" for i in range(args.devices)]
        print(f"connecting {len(pool) * 3 // 4} devices...", file=sys.stderr, flush=True)
        fleet.start_all(pool[: len(pool) * 3 // 4])
        joins = threading.Thread(target=collect_joins, args=(run, fleet, stop), daemon=True)
        joins.start()
        monitor = MonitorProcess(broker, var, bound=30)
        monitor.start()
        stack.callback(monitor.stop)
        run.started = time.time()
        run.restarts.append(run.started)
        run.windows.append((run.started, run.started + settle))
        url = f"http://127.0.0.1:{http_port}"
        observer = threading.Thread(
            target=observe, args=(run, url, token, LogReplay(broker.log_file), stop), daemon=True
        )
        observer.start()
        stack.callback(observer.join, 15)
        stack.callback(stop.set)
        churn(run, fleet, pool, monitor, args, settle)
        stop.set()
        observer.join(15)
    report(run, args, settle)
    return 0


def api_ready(port: int, token: str) -> bool:
    from tests.fleet import api_online

    try:
        api_online(f"http://127.0.0.1:{port}", token)
    except OSError:
        return False
    return True


def churn(
    run: Run,
    fleet: ProcessFleet,
    pool: list[str],
    monitor: MonitorProcess,
    args: argparse.Namespace,
    settle: float,
) -> None:
    rng = random.Random(args.seed)
    duration = args.minutes * 60
    kills = [run.started + duration / 3, run.started + 2 * duration / 3]
    end = run.started + duration
    while (now := time.time()) < end:
        if kills and now >= kills[0]:
            kills.pop(0)
            killed = time.time()  # before: the broker logs the drop while kill() waits
            monitor.kill()
            restart = killed + 3
            while time.time() < restart:
                one_churn(run, fleet, pool, rng)
                time.sleep(rng.expovariate(args.churn))
            monitor.start()
            run.restarts.append(time.time())
            run.windows.append((killed, time.time() + settle))
            print(f"monitor restarted at {time.time() - run.started:.0f} s", file=sys.stderr)
            continue
        one_churn(run, fleet, pool, rng)
        time.sleep(rng.expovariate(args.churn))


def one_churn(run: Run, fleet: ProcessFleet, pool: list[str], rng: random.Random) -> None:
    before = time.time()  # a leave counts from its DISCONNECT, sent right after
    event = fleet.churn(rng, pool)
    if event is not None and not event[1]:
        with run.lock:
            run.events.append((before, event[0], False))


def report(run: Run, args: argparse.Namespace, settle: float) -> None:
    from django.db import connection

    run.events.sort()
    mark_recent(run)
    strict, total = equal_seconds(run, lenient=False)
    within, _ = equal_seconds(run, lenient=True)
    lag = lags(run)
    fetch = [s.end - s.start for s in run.samples]
    joins = sum(1 for _t, _c, j in run.events if j)
    print(
        f"\n## presence, {args.devices} devices, {connection.vendor}\n\n"
        f"{args.minutes:g} min, churn {args.churn:g}/s ({joins} joins, "
        f"{len(run.events) - joins} leaves), a reading every {args.every:g} s per device, "
        f"sys_interval {args.sys_interval} s, the monitor SIGKILLed and restarted twice; "
        f"settle window {settle:g} s after each start\n\n"
        f"| measure | value |\n|---|---|\n"
        f"| seconds compared (outside settle windows) | {total} |\n"
        f"| API online set == broker's, strict | {100 * strict / max(total, 1):.1f} % |\n"
        f"| == broker's, changes younger than {GRACE:g} s aside | "
        f"{100 * within / max(total, 1):.1f} % |\n"
        f"| lag join/leave -> API, p50 / p99 / max | {percentile(lag, 50):.2f} / "
        f"{percentile(lag, 99):.2f} / {max(lag, default=float('nan')):.2f} s "
        f"({len(lag)} events) |\n"
        f"| fetch of the online set, p50 / p99 | {1000 * percentile(fetch, 50):.0f} / "
        f"{1000 * percentile(fetch, 99):.0f} ms ({len(fetch)} fetches) |\n"
        f"| first agreement after start, initial / restart 1 / restart 2 | "
        + " / ".join(f"{s:.1f} s" for s in settle_times(run))
        + " |\n"
    )
    print(f"statistics.mean(lag) = {statistics.mean(lag) if lag else float('nan'):.2f} s")
    print_differences(run)


def print_differences(run: Run, top: int = 8) -> None:
    """Which clients the API and the broker disagreed on longest (outside settle windows)."""
    api_only: dict[str, float] = {}
    broker_only: dict[str, float] = {}
    previous: Sample | None = None
    for s in run.samples:
        if previous is not None and not in_window(s.start, run.windows):
            step = s.end - previous.end
            for c in (s.api - s.truth) - s.recent:
                api_only[c] = api_only.get(c, 0.0) + step
            for c in (s.truth - s.api) - s.recent:
                broker_only[c] = broker_only.get(c, 0.0) + step
        previous = s
    for name, seen in (("API only", api_only), ("broker only", broker_only)):
        worst = sorted(seen.items(), key=lambda item: -item[1])[:top]
        print(f"{name}: " + ", ".join(f"{c} {t:.1f} s" for c, t in worst))


if __name__ == "__main__":
    raise SystemExit(main())
