"""Monitor ingest: readings stored per second with zero loss, against a bare paho subscriber.

    .venv/bin/python -m bench.monitor_ingest [--messages 40000] [--metrics 5] [--publishers 2]
    .venv/bin/python -m bench.monitor_ingest --database-url postgres://postgres@127.0.0.1:5432/x

One run: a Mosquitto rendered from mosquitto/mosquitto.conf.template on a free port (TLS, the
project's plugin with its decision cache on, asking a stand-in that allows everything, so auth
is out of the measurement), the real monitor (`monitor.subscriber.Subscriber`, default batch
settings) in a thread against a scratch database, and in a separate process a bare paho-mqtt
subscriber on the same filter at QoS 1 (the ceiling: receive and count, nothing else).
--publishers mosquitto_pub -l processes send --messages QoS 1 messages in total, each a
JSON object of --metrics numbers, as fast as the broker takes them. Both rates are readings
per second from the first publish to the moment that side has everything (the subscriber's
last message; the database holding every reading, counted with COUNT(*)). Zero loss: the
database must end with exactly messages x metrics readings, every sequence number present
once (exactly-once storage, the delivery cursor, is always on: there is no switch to measure
it off), and the per-minute and per-hour rollups must count exactly as many.

The template's queue limits (MQTT_MAX_QUEUED_MESSAGES, 1,000,000, and MQTT_MAX_QUEUED_BYTES,
256 MiB) hold the default stream, but a larger --messages could make the broker drop for
whichever subscriber falls that far behind (the bare one too), so this run lifts both: what
is measured is each subscriber's drain rate, with nothing dropped.

SQLite: a fresh file under var/bench/monitor. PostgreSQL: the database named in the URL gets a
`_bench` suffix and is dropped and created for the run.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from web import secretfile

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var" / "bench" / "monitor"
FILTER = "devices/+/telemetry"


class AllowAll(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Length", "25")
        self.end_headers()
        self.wfile.write(b'{"ok": true, "error": ""}')

    def log_message(self, *args: object) -> None:
        pass


def paho_client(client_id: str, ca_file: str) -> Any:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.username_pw_set(client_id, "x")
    client.tls_set(ca_certs=ca_file, cert_reqs=ssl.CERT_REQUIRED)
    return client


def bare_subscriber(port: int, ca_file: str, expected: int, ready: Any, out: Any) -> None:
    """The ceiling: a paho subscriber that only counts."""
    state = {"n": 0, "first": 0.0, "last": 0.0}
    done = threading.Event()
    client = paho_client("bench-bare-subscriber", ca_file)

    def on_message(_c: Any, _u: Any, _m: Any) -> None:
        now = time.time()
        state["first"] = state["first"] or now
        state["n"] += 1
        state["last"] = now
        if state["n"] >= expected:
            done.set()

    client.on_message = on_message
    client.on_subscribe = lambda *_: ready.set()
    client.on_connect = lambda c, *_: c.subscribe(FILTER, qos=1)
    client.connect("127.0.0.1", port)
    client.loop_start()
    done.wait(600)
    client.loop_stop()
    out.put(dict(state))


def publisher(port: int, ca_file: str, index: int, count: int, metrics: int) -> Any:
    """mosquitto_pub -l: a C publisher, so that the stream is not the bottleneck."""
    lines = []
    for seq in range(count):
        values = {f"m{k}": seq * 0.5 + k for k in range(metrics - 1)}
        values["seq"] = seq
        lines.append(json.dumps(values))
    data = VAR / f"publisher-{index}.txt"
    data.write_text("\n".join(lines) + "\n")
    name = f"bench-{index}"
    cmd = [
        "mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "--cafile", ca_file,
        "-u", name, "-P", "x", "-i", name, "-V", "mqttv5", "-q", "1", "-M", "1000",
        "-t", f"devices/{name}/telemetry", "-l",
    ]  # fmt: skip
    return cmd, data


def prepare_database(url: str | None) -> str:
    if not url:
        VAR.mkdir(parents=True, exist_ok=True)
        for name in ("bench.sqlite3", "bench.sqlite3-wal", "bench.sqlite3-shm"):
            (VAR / name).unlink(missing_ok=True)
        return f"sqlite:///{VAR / 'bench.sqlite3'}"
    import psycopg

    base, _, name = url.rpartition("/")
    bench_name = name.split("?")[0] + "_bench"
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{bench_name}"')
        conn.execute(f'CREATE DATABASE "{bench_name}"')
    return f"{base}/{bench_name}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=40000)
    parser.add_argument("--metrics", type=int, default=5)
    parser.add_argument("--publishers", type=int, default=2)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()

    secretfile.create_dev_secrets(VAR)
    os.environ.update(
        DEV_MODE="1",
        VAR_DIR=str(VAR),
        LOG_TO_FILE="0",
        LOG_LEVEL="WARNING",
        DATABASE_URL=prepare_database(args.database_url),
        DJANGO_SETTINGS_MODULE="web.settings",
    )
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection
    from django.db.models import Sum

    from monitor.models import Reading, ReadingRollup
    from monitor.subscriber import Options, Subscriber
    from tests.brokers import Broker, make_certs

    call_command("migrate", verbosity=0)
    auth = ThreadingHTTPServer(("127.0.0.1", 0), AllowAll)
    threading.Thread(target=auth.serve_forever, daemon=True).start()

    class BigQueueBroker(Broker):
        def render(self) -> Path:
            conf = super().render()
            with conf.open("a") as fh:
                fh.write("\nmax_queued_messages 0\nmax_queued_bytes 0\n")
            return conf

    broker = BigQueueBroker(
        workdir=VAR / "broker",
        certs=make_certs(VAR / "certs"),
        auth_port=auth.server_address[1],
        secret="bench",
        cache_ttl=300,
        sys_interval=10,
    )
    import shutil

    shutil.rmtree(broker.workdir, ignore_errors=True)
    broker.start()
    ca = str(broker.ca_file)
    per = args.messages // args.publishers
    total_messages = per * args.publishers
    expected = total_messages * args.metrics

    monitor = Subscriber(
        Options(
            host="127.0.0.1",
            port=broker.port,
            ca_file=ca,
            username="mqtt-monitor",
            password="x",
            telemetry_topics=[FILTER],
            share_group="",
        )
    )
    thread = threading.Thread(target=monitor.run, daemon=True)
    ctx = mp.get_context("spawn")
    ready, out = ctx.Event(), ctx.Queue()
    bare = ctx.Process(target=bare_subscriber, args=(broker.port, ca, total_messages, ready, out))
    pubs = [publisher(broker.port, ca, i, per, args.metrics) for i in range(args.publishers)]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        thread.start()
        bare.start()
        if not (monitor.subscribed.wait(20) and ready.wait(20)):
            raise SystemExit("subscribers did not start")
        time.sleep(1)
        start = time.time()
        for cmd, data in pubs:
            procs.append(subprocess.Popen(cmd, stdin=data.open("rb")))
        stored, stored_at = 0, 0.0
        deadline = time.time() + 600
        while stored < expected and time.time() < deadline:
            time.sleep(0.05)
            stored = Reading.objects.count()
            stored_at = time.time()
        ceiling = out.get(timeout=600)
        for proc in procs:
            proc.wait(60)
        seq_rows = list(Reading.objects.filter(metric="seq").values_list("client_id", "value"))
        seqs = set(seq_rows)
        rollups = dict(
            ReadingRollup.objects.values_list("resolution").annotate(Sum("count")).order_by()
        )
    finally:
        monitor.stop()
        thread.join(30)
        broker.stop()
        auth.shutdown()
        if bare.is_alive():
            bare.terminate()
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()

    stored_rate = stored / (stored_at - start)
    ceiling_rate = ceiling["n"] * args.metrics / (ceiling["last"] - start)
    lost = expected - stored
    vendor = connection.vendor
    print(
        f"{vendor}: {total_messages} messages x {args.metrics} metrics = {expected} readings, "
        f"batch {settings.MONITOR_BATCH_SIZE} / {settings.MONITOR_FLUSH_SECONDS}s"
    )
    print(f"  bare subscriber: {ceiling['n']} messages, {ceiling_rate:,.0f} readings/s")
    print(f"  monitor stored:  {stored} readings, {stored_rate:,.0f} readings/s")
    print(
        f"  lost: {lost}, duplicated: {len(seq_rows) - len(seqs)}, "
        f"distinct sequence numbers {len(seqs)} of {total_messages}"
    )
    print(f"  rollups count (per minute, per hour): {rollups.get(60)}, {rollups.get(3600)}")
    print(f"  ratio stored / ceiling: {stored_rate / ceiling_rate:.2f}")


if __name__ == "__main__":
    main()
