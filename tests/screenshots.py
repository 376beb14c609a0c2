"""The README's screenshots (docs/screenshots/*.png), taken from a day of realistic data.

    bin/test tests/screenshots.py

Not part of the suite (its name is not test_*.py): run it by name after a change to the
pages. It fills the test database with fourteen devices and a day of their telemetry, a day
of the broker's $SYS samples (with a monitor outage and a device that was offline for a
while, so the gaps show), serves the pages with pytest-django's live server, runs the Test
service against a real Mosquitto with the project's plugin, and photographs each page with
headless Chromium. The database is the test database: nothing of it is kept.
"""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from brokerauth.acl import Access
from brokerauth.models import Account, AuthEvent, Rule
from monitor.models import (
    BrokerStat,
    BrokerStatSample,
    Client,
    LatestValue,
    LoginRefusal,
    MonitorState,
    Reading,
    ReadingRollup,
    Session,
)
from tests.brokers import Broker
from tests.test_browser import PASSWORD, serve_the_test_service

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
DOCS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
DEVICES = [
    *(f"greenhouse-{i:02d}" for i in range(1, 7)),
    *(f"pump-{i:02d}" for i in range(1, 4)),
    *(f"meter-{i:02d}" for i in range(1, 5)),
    "weather-01",
]
OFFLINE = {"meter-04", "pump-03"}  # disconnected an hour ago and still away
FLAKY = "greenhouse-03"  # offline for 45 minutes, three hours ago
SYS = "$SYS/broker/"


def shoot(page: Any, url: str, name: str) -> None:
    page.goto(url)
    page.wait_for_load_state("networkidle")
    DOCS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(DOCS / f"{name}.png"), full_page=True)


def device_readings(client: Client, now: datetime, rng: random.Random, outage: Any) -> None:
    rows = []
    base = 18 + rng.uniform(-2, 3)
    for minute in range(24 * 60, 0, -1):
        at = now - timedelta(minutes=minute, seconds=rng.uniform(0, 20))
        if outage(at):
            continue
        day = math.sin((at.hour * 60 + at.minute) / 1440 * 2 * math.pi - 2.0)
        temperature = base + 5 * day + rng.gauss(0, 0.3)
        humidity = 62 - 12 * day + rng.gauss(0, 1.2)
        battery = 3300 - (24 * 60 - minute) * 0.08 + rng.gauss(0, 4)
        for metric, value in (("temp_c", temperature), ("humidity_pct", humidity)):
            rows.append(Reading(client=client, metric=metric, value=round(value, 2), at=at))
        if client.client_id.startswith("greenhouse"):
            rows.append(Reading(client=client, metric="battery_mv", value=round(battery), at=at))
    Reading.objects.bulk_create(rows, batch_size=5000)
    last: dict[str, Reading] = {}
    for row in rows:
        last[row.metric] = row
    counts = {metric: sum(r.metric == metric for r in rows) for metric in last}
    LatestValue.objects.bulk_create(
        LatestValue(client=client, metric=m, value=r.value, at=r.at, count=counts[m])
        for m, r in last.items()
    )


def seed_devices(now: datetime) -> None:
    rng = random.Random(10)
    for i, client_id in enumerate(DEVICES):
        account = Account.objects.create_account(client_id, PASSWORD, client_id=client_id)
        Rule.objects.create(account=account, pattern="devices/%u/#", access=Access.ALL)
        online = client_id not in OFFLINE
        since = now - timedelta(hours=2, minutes=15) if client_id == FLAKY else None
        client = Client.objects.create(
            client_id=client_id,
            username=client_id,
            online=online,
            uncertain=client_id == "weather-01",
            last_address=f"10.20.0.{11 + i}",
            last_port=40000 + rng.randrange(20000),
            protocol=Client.Protocol.MQTT5 if i % 3 else Client.Protocol.MQTT311,
            clean_start=False,
            keepalive=60,
            connected_since=since or now - timedelta(days=2, hours=i),
            last_seen=now - timedelta(seconds=rng.uniform(1, 50)),
            connect_count=3 + i % 4,
            disconnect_count=2 + i % 4,
            message_count=1440 + rng.randrange(40),
            last_message_at=now - timedelta(seconds=rng.uniform(1, 50)),
            bad_message_count=2 if client_id == "pump-02" else 0,
            last_bad_message_error="not a JSON object" if client_id == "pump-02" else "",
            last_bad_message_at=now - timedelta(hours=5) if client_id == "pump-02" else None,
        )
        seed_sessions(client, now, online)
        if not online:
            gone = now - timedelta(hours=1)
            Client.objects.filter(pk=client.pk).update(
                connected_since=None,
                last_disconnected_at=gone,
                last_disconnect_reason="timeout",
                last_seen=gone,
                last_message_at=gone,
            )

            def outage(at: datetime, gone: datetime = gone) -> bool:
                return at > gone
        elif client_id == FLAKY:

            def outage(at: datetime) -> bool:
                return now - timedelta(hours=3) < at < now - timedelta(hours=2, minutes=15)
        else:

            def outage(at: datetime) -> bool:
                return False

        device_readings(client, now, rng, outage)
    Client.objects.create(client_id="probe-7f3a", username="", first_seen=now)  # never seen
    ReadingRollup.objects.rebuild()


def seed_sessions(client: Client, now: datetime, online: bool) -> None:
    reasons = [Session.Reason.TIMEOUT, Session.Reason.CLOSED, Session.Reason.TIMEOUT]
    start = now - timedelta(days=3)
    for n, reason in enumerate(reasons):
        Session.objects.create(
            client=client,
            connected_at=start + timedelta(hours=n * 9),
            disconnected_at=start + timedelta(hours=n * 9 + 7),
            reason=reason,
            address=client.last_address,
            port=client.last_port,
            protocol=client.protocol,
            keepalive=60,
        )
    if client.client_id == FLAKY:
        Session.objects.create(
            client=client,
            connected_at=now - timedelta(days=1, hours=2),
            disconnected_at=now - timedelta(hours=3),
            reason=Session.Reason.TIMEOUT,
            detail="has exceeded timeout",
            address=client.last_address,
            protocol=client.protocol,
            keepalive=60,
        )
    Session.objects.create(
        client=client,
        connected_at=client.connected_since or now - timedelta(days=1, hours=2),
        disconnected_at=None if online else now - timedelta(hours=1),
        reason="" if online else Session.Reason.TIMEOUT,
        address=client.last_address,
        port=client.last_port,
        protocol=client.protocol,
        keepalive=60,
    )


def seed_broker(now: datetime) -> None:
    """A day of $SYS every 10 s, as the broker publishes it: counters and uptime always, the
    client count only when it changes; the monitor was away for 20 minutes five hours ago."""
    rng = random.Random(11)
    rows = []
    received = sent = bytes_in = bytes_out = 0.0
    connected, uptime = 12, 5 * 86400
    away = (now - timedelta(hours=5, minutes=20), now - timedelta(hours=5))
    for step in range(24 * 360, 0, -1):
        at = now - timedelta(seconds=step * 10)
        day = 1 + 0.5 * math.sin((at.hour * 60 + at.minute) / 1440 * 2 * math.pi - 2.0)
        rate = 30 * day + rng.gauss(0, 2)
        received += rate * 10
        sent += rate * 10 * 1.6 + 10
        bytes_in += rate * 10 * 180
        bytes_out += rate * 10 * 1.6 * 160
        uptime += 10
        changed = rng.random() < 0.01
        if changed:
            connected = max(9, min(14, connected + rng.choice((-1, 1))))
        if away[0] < at < away[1]:
            continue
        for topic, value in (
            ("uptime", uptime),
            ("messages/received", received),
            ("messages/sent", sent),
            ("bytes/received", bytes_in),
            ("bytes/sent", bytes_out),
        ):
            rows.append(BrokerStatSample(topic=SYS + topic, value=round(value), at=at))
        # The count is retained: the broker sends it to a monitor that (re)subscribes.
        back = away[1] <= at < away[1] + timedelta(seconds=10)
        if changed or back or step == 24 * 360:
            rows.append(BrokerStatSample(topic=SYS + "clients/connected", value=connected, at=at))
    online = len(DEVICES) - len(OFFLINE)
    rows.append(BrokerStatSample(topic=SYS + "clients/connected", value=online, at=now))
    BrokerStatSample.objects.bulk_create(rows, batch_size=5000)
    for topic, value in (
        ("version", "mosquitto version 2.0.18"),
        ("uptime", f"{uptime} seconds"),
        ("clients/connected", str(online)),
    ):
        number = float(value.split()[0]) if value[0].isdigit() else None
        BrokerStat.objects.create(topic=SYS + topic, value=value, number=number, updated_at=now)
    state = MonitorState.get()
    state.started_at = now - timedelta(hours=5)
    state.connected, state.connected_at = True, now - timedelta(hours=5)
    state.last_sys_at = state.heartbeat_at = now
    state.believed_online, state.broker_connected = online, online
    state.bad_payloads = 2
    state.save()


def seed_decisions(now: datetime) -> None:
    for _ in range(3):
        AuthEvent.objects.create(
            kind=AuthEvent.Kind.LOGIN,
            username="pump-03",
            client_id="pump-03",
            allowed=False,
            reason="wrong password",
        )
    AuthEvent.objects.create(
        kind="acl",
        username="greenhouse-03",
        client_id="greenhouse-03",
        topic="devices/greenhouse-04/telemetry",
        allowed=False,
        reason="no rule matched",
    )
    LoginRefusal.objects.create(at=now - timedelta(minutes=12))


def test_take_the_readme_screenshots(
    page: Any,
    live_server: Any,
    mosquitto: Broker,
    settings: Any,
) -> None:
    now = timezone.now()
    seed_devices(now)
    seed_broker(now)
    seed_decisions(now)
    page.set_viewport_size({"width": 1280, "height": 860})
    shoot(page, live_server.url + "/?period=24h", "dashboard")
    shoot(page, live_server.url + "/clients/", "clients")
    flaky = Client.objects.get(client_id=FLAKY)
    shoot(page, f"{live_server.url}/clients/{flaky.pk}/?period=6h", "client")

    serve_the_test_service(live_server, mosquitto, settings)
    page.goto(live_server.url + "/test-service/")
    page.click("#run-test")
    page.wait_for_selector("text=All steps passed", timeout=20_000)
    DOCS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(DOCS / "test-service.png"), full_page=True)
    assert all((DOCS / f"{name}.png").stat().st_size > 10_000 for name in ("dashboard", "client"))
    assert settings.VAR_DIR  # the database stays the test database's
