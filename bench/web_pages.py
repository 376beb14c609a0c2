"""Server time of the operator pages and the telemetry API on a large data set.

    .venv/bin/python -m bench.web_pages [--runs 40]                     # SQLite
    .venv/bin/python -m bench.web_pages --database-url postgres://postgres@127.0.0.1:5432/x

Seeds (bulk_create) 10,000 clients, 1,000,000 readings, 100,000 audit rows and a week of the
broker's $SYS samples (five counters every 10 s, the client count every minute: 312,480 rows)
into a scratch database (var/bench-web/ for SQLite; the named PostgreSQL database is dropped
and re-created), then times each page through Django's full stack in-process (DEBUG off, no
network), after a warm-up, and counts its queries. The "hot" client holds 100,000 readings
over 30 days; the other 900,000 readings belong to 900 clients. What a live page asks on each
tick (its htmx fragment, its charts' tail after their newest point) is timed beside the pages.
The per-minute and per-hour rollups the monitor would have written alongside are rebuilt from
the readings in one pass (`rebuild()`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from web import secretfile

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var" / "bench-web"
CLIENTS, READINGS, HOT_READINGS, AUDIT = 10_000, 1_000_000, 100_000, 100_000


def setup(database_url: str | None) -> None:
    os.environ.update(
        DEV_MODE="1", DEBUG="0", SECURE="0", VAR_DIR=str(VAR), LOG_TO_FILE="0",
        LOG_LEVEL="WARNING", ALLOWED_HOSTS="testserver", DJANGO_SETTINGS_MODULE="web.settings",
    )  # fmt: skip
    if database_url:
        recreate_postgres(database_url)
        os.environ["DATABASE_URL"] = database_url
    else:
        VAR.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal", "-shm"):
            (VAR / f"db.sqlite3{suffix}").unlink(missing_ok=True)
    secretfile.create_dev_secrets(VAR)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    call_command("collectstatic", interactive=False, verbosity=0)


def recreate_postgres(url: str) -> None:
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')


def seed() -> dict[str, int]:
    from django.contrib.auth.models import User
    from django.utils import timezone

    from brokerauth.models import Account, AuthEvent
    from monitor.models import Client, LatestValue, Reading, ReadingRollup, Session

    now = timezone.now()
    start = time.perf_counter()
    User.objects.create_superuser("bench", "", "bench-pass")
    Account.objects.bulk_create(
        Account(username=f"user-{i:04d}", password_hash="x") for i in range(1000)
    )
    Client.objects.bulk_create(
        (
            Client(
                client_id=f"dev-{i:05d}",
                username=f"user-{i % 1000:04d}",
                online=i % 3 == 0,
                uncertain=i % 97 == 0,
                connect_count=0 if i % 10 == 9 else 1 + i % 5,
                last_address=f"10.0.{i // 256 % 256}.{i % 256}",
                protocol="mqtt5",
                keepalive=60,
                last_seen=now - timedelta(seconds=i * 7),
                message_count=i,
            )
            for i in range(CLIENTS)
        ),
        batch_size=2000,
    )
    ids = list(Client.objects.order_by("id").values_list("id", flat=True))
    hot = ids[0]
    Session.objects.bulk_create(
        (
            Session(client_id=ids[i % CLIENTS], connected_at=now - timedelta(hours=i % 700))
            for i in range(50_000)
        ),
        batch_size=5000,
    )
    span = 30 * 86400

    def readings(client_id: int, count: int) -> list[Reading]:
        step = span / (count / 2)
        return [
            Reading(
                client_id=client_id,
                metric=metric,
                value=20 + (j % 50) / 5,
                at=now - timedelta(seconds=span - j * step),
            )
            for j in range(count // 2)
            for metric in ("temperature", "humidity")
        ]

    Reading.objects.bulk_create(readings(hot, HOT_READINGS), batch_size=10_000)
    per_client = (READINGS - HOT_READINGS) // 900
    for n, client_id in enumerate(ids[1:901]):
        Reading.objects.bulk_create(readings(client_id, per_client), batch_size=10_000)
        if n % 100 == 0:
            print(f"  seeded readings of {n} clients", file=sys.stderr)
    rollups = ReadingRollup.objects.rebuild()
    print(f"  {rollups} rollups rebuilt", file=sys.stderr)
    LatestValue.objects.bulk_create(
        LatestValue(client_id=c, metric=m, value=1.0, at=now, count=1)
        for c in ids[:901]
        for m in ("temperature", "humidity")
    )
    AuthEvent.objects.bulk_create(
        (
            AuthEvent(
                created_at=now - timedelta(seconds=i * 25),
                kind="acl" if i % 3 else "login",
                username=f"user-{i % 1000:04d}",
                client_id=f"dev-{i % CLIENTS:05d}",
                topic=f"devices/user-{i % 1000:04d}/x",
                allowed=i % 4 == 0,
                reason="no rule matched",
            )
            for i in range(AUDIT)
        ),
        batch_size=10_000,
    )
    seed_broker_week(now)
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")  # planner statistics, as autovacuum would gather in service
    print(f"seeded in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return {"hot": hot}


def seed_broker_week(now: Any) -> None:
    """$SYS as the monitor stores it: every 10 s for a week, the client count on changes."""
    from monitor.models import BrokerStatSample

    sys_ = "$SYS/broker/"
    topics = ["uptime", "messages/received", "messages/sent", "bytes/received", "bytes/sent"]
    steps = 7 * 8640
    for first in range(0, steps, 20_000):
        rows = [
            BrokerStatSample(topic=sys_ + topic, value=float(i * (n + 1) * 10), at=at)
            for i in range(first, min(first + 20_000, steps))
            for at in [now - timedelta(seconds=(steps - i) * 10)]
            for n, topic in enumerate(topics)
        ]
        rows += [
            BrokerStatSample(topic=sys_ + "clients/connected", value=3000 + i % 50, at=row.at)
            for i, row in enumerate(rows[::5])
            if i % 6 == 0
        ]
        BrokerStatSample.objects.bulk_create(rows, batch_size=10_000)


def tail_url(http: Any, url: str) -> str:
    """The URL a live chart asks on its next tick: the points after its newest one."""
    charts = http.get(url, HTTP_ACCEPT="application/json").json()["charts"]
    newest = max(chart["t"][-1] for chart in charts.values() if chart["t"])
    return f"{url}&after={newest}"


def measure(runs: int, hot: int) -> list[tuple[str, float, float, int]]:
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import Client as HttpClient
    from django.test.utils import CaptureQueriesContext

    http = HttpClient()
    http.force_login(User.objects.get(username="bench"))
    pages = [
        ("clients list, sorted by last seen", "/clients/"),
        ("clients list, search", "/clients/?q=dev-0421"),
        ("clients list, online, page 20", "/clients/?status=online&page=20"),
        ("client detail, 30 days (100k readings)", f"/clients/{hot}/?period=30d"),
        ("client detail, 7 days (100k readings)", f"/clients/{hot}/?period=7d"),
        ("client detail, 24 hours (100k readings)", f"/clients/{hot}/?period=24h"),
        ("client detail, 1 hour (100k readings)", f"/clients/{hot}/?period=1h"),
        ("client detail, 30 days (1k readings)", f"/clients/{hot + 1}/?period=30d"),
        ("API telemetry, 30 days, 500 points", f"/api/v1/telemetry/?client={hot}&period=30d"),
        ("API clients list", "/api/v1/clients/?status=online"),
        ("audit, denials", "/audit/?result=deny"),
        ("dashboard, 1 hour", "/?period=1h"),
        ("dashboard, 24 hours", "/?period=24h"),
        ("dashboard, 7 days", "/?period=7d"),
        ("tick: dashboard cards", "/dashboard/live/"),
        ("tick: broker charts' tail, 1 hour", tail_url(http, "/dashboard/series/?period=1h")),
        ("tick: broker charts' tail, 7 days", tail_url(http, "/dashboard/series/?period=7d")),
        ("tick: clients table", "/clients/?status=online"),
        ("tick: client facts and history", f"/clients/{hot}/live/"),
        ("tick: client charts' tail, 1 hour", tail_url(http, f"/clients/{hot}/series/?period=1h")),
        ("tick: client charts' tail, 30 d", tail_url(http, f"/clients/{hot}/series/?period=30d")),
    ]
    fragments = {"/dashboard/live/", f"/clients/{hot}/live/", "/clients/?status=online"}
    results = []
    for name, url in pages:
        # A tick's fragment is asked by htmx.
        headers = (
            {"HTTP_HX_REQUEST": "true"} if name.startswith("tick") and url in fragments else {}
        )
        for _ in range(3):
            assert http.get(url, headers=headers).status_code == 200, url
        times = []
        for _ in range(runs):
            with CaptureQueriesContext(connection) as queries:
                start = time.perf_counter()
                http.get(url, headers=headers)
                times.append((time.perf_counter() - start) * 1000)
        cuts = statistics.quantiles(times, n=20)
        results.append((name, statistics.median(times), cuts[18], len(queries)))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="a scratch PostgreSQL database (dropped first)")
    parser.add_argument("--runs", type=int, default=40)
    args = parser.parse_args()
    setup(args.database_url)
    from django.db import connection

    hot = seed()["hot"]
    print(f"\n{connection.vendor}, {args.runs} runs each\n")
    print("| page | p50 ms | p95 ms | queries |\n|---|---:|---:|---:|")
    for name, p50, p95, count in measure(args.runs, hot):
        print(f"| {name} | {p50:.1f} | {p95:.1f} | {count} |")


if __name__ == "__main__":
    main()
