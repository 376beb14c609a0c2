"""Per-minute and per-hour rollups: written with the readings, read by long charts, pruned."""

from __future__ import annotations

import json
import math
import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.db import OperationalError, connection
from django.test import Client as HttpClient
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from monitor.ingest import Ingest
from monitor.models import Client, LatestValueQuerySet, Reading, ReadingRollup
from web import series

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 1, 1, 11, 59, 30, 250000, tzinfo=UTC)


@pytest.fixture
def ingest(db: None) -> Ingest:
    return Ingest(self_client_id="monitor")


def publish(ingest: Ingest, client_id: str, values: dict[str, float], at: datetime) -> None:
    ingest.handle_message(f"devices/{client_id}/telemetry", json.dumps(values).encode(), at)


def aggregates_of_readings(resolution: int) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    groups: dict[tuple[Any, ...], list[float]] = defaultdict(list)
    for reading in Reading.objects.all():
        at = reading.at.astimezone(UTC)
        start = datetime.fromtimestamp(at.timestamp() // resolution * resolution, UTC)
        groups[(reading.client_id, reading.metric, start)].append(reading.value)
    return {
        key: (len(values), sum(values), min(values), max(values)) for key, values in groups.items()
    }


def stored_rollups(resolution: int) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    return {
        (r.client_id, r.metric, r.start): (r.count, r.total, r.low, r.high)
        for r in ReadingRollup.objects.filter(resolution=resolution)
    }


def assert_same(got: dict[Any, tuple[Any, ...]], expected: dict[Any, tuple[Any, ...]]) -> None:
    assert got.keys() == expected.keys()
    for key, (count, total, low, high) in expected.items():
        assert got[key][0] == count
        assert math.isclose(got[key][1], total, rel_tol=1e-9)
        assert (got[key][2], got[key][3]) == (low, high)


def test_rollups_equal_the_aggregates_of_the_readings_across_batches(ingest: Ingest) -> None:
    rng = random.Random(5)
    for batch in range(6):
        # Every batch adds to the same minutes and hours: 12:00 and 12:01 of two hours.
        for i in range(40):
            at = T0 + timedelta(seconds=rng.uniform(0, 100), hours=i % 2)
            publish(ingest, f"dev-{i % 3}", {"temp": rng.uniform(-20, 40), "hum": batch + i}, at)
        publish(ingest, "dev-9", {"v": batch}, T0 + timedelta(seconds=45))
        ingest.flush()
    assert Reading.objects.count() == 6 * 40 * 2 + 6
    for resolution in ReadingRollup.Resolution.values:
        assert_same(stored_rollups(resolution), aggregates_of_readings(resolution))
    for resolution in ReadingRollup.Resolution.values:
        row = ReadingRollup.objects.get(client__client_id="dev-9", resolution=resolution)
        assert (row.count, row.total, row.low, row.high) == (6, 15.0, 0.0, 5.0)


def test_rebuilding_from_readings_gives_what_the_monitor_wrote(ingest: Ingest) -> None:
    for i in range(300):
        publish(ingest, f"dev-{i % 2}", {"v": i * 0.1}, T0 + timedelta(seconds=i * 37))
        if i % 70 == 0:
            ingest.flush()
    ingest.flush()
    written = {r: stored_rollups(r) for r in ReadingRollup.Resolution.values}
    assert ReadingRollup.objects.rebuild() == sum(len(rows) for rows in written.values())
    for resolution, rows in written.items():
        assert_same(stored_rollups(resolution), rows)


def test_a_failed_flush_writes_no_rollup(ingest: Ingest, monkeypatch: pytest.MonkeyPatch) -> None:
    Client.objects.create(client_id="dev-1")
    publish(ingest, "dev-1", {"v": 1.0}, T0)

    def fail(*_args: Any) -> None:
        raise OperationalError("database went away")

    monkeypatch.setattr(LatestValueQuerySet, "add", fail)
    with pytest.raises(OperationalError):
        ingest.flush()
    assert not ReadingRollup.objects.exists() and not Reading.objects.exists()
    monkeypatch.undo()
    ingest.flush()
    assert ReadingRollup.objects.get(resolution=60).count == 1


@pytest.mark.parametrize(
    ("period", "resolution"), [("1h", None), ("6h", 60), ("24h", 60), ("7d", 3600), ("30d", 3600)]
)
def test_long_periods_read_rollups_short_ones_raw_readings(
    period: str, resolution: int | None
) -> None:
    now = timezone.now()
    span = series.PERIODS[period][0]
    how = series.plan(now - span, now, 300)
    assert how.resolution == resolution
    if resolution:
        assert how.since.timestamp() % resolution == 0 and how.width % resolution == 0
        assert (span.total_seconds() + resolution) / resolution <= series.MAX_MINUTE_ROWS


def test_ranges_older_than_the_readings_retention_use_hourly_rollups(settings: Any) -> None:
    settings.TELEMETRY_RETENTION_DAYS = 30
    until = timezone.now() - timedelta(days=40)
    assert series.plan(until - timedelta(hours=6), until, 300).resolution == 3600


@pytest.fixture
def month_of_readings(ingest: Ingest) -> Client:
    """Two metrics of one client, irregularly over 30 days, stored by the monitor."""
    rng = random.Random(7)
    now = timezone.now()
    for i in range(3000):
        at = now - timedelta(seconds=rng.uniform(0, 30 * 86400 - 60))
        publish(ingest, "busy", {"temp": rng.gauss(20, 5), "hum": rng.uniform(30, 90)}, at)
        if i % 500 == 499:
            ingest.flush()
    ingest.flush()
    return Client.objects.get(client_id="busy")


def raw_buckets(client: Client, how: series.Plan) -> dict[str, list[tuple[float, int]]]:
    groups: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in Reading.objects.filter(client=client, at__gte=how.since):
        bucket = int((r.at - how.since).total_seconds() // how.width)
        groups[r.metric][bucket].append(r.value)
    return {
        metric: [(sum(v) / len(v), len(v)) for _b, v in sorted(buckets.items())]
        for metric, buckets in groups.items()
    }


@pytest.mark.parametrize("period", ["7d", "30d"])
def test_long_charts_average_like_the_raw_readings(month_of_readings: Client, period: str) -> None:
    now = timezone.now()
    since = now - series.PERIODS[period][0]
    how = series.plan(since, now, 300)
    with CaptureQueriesContext(connection) as queries:
        charts = series.telemetry(month_of_readings.pk, since, now, 300)
    [query] = queries.captured_queries
    assert "monitor_readingrollup" in query["sql"] and '"monitor_reading"' not in query["sql"]

    expected = raw_buckets(month_of_readings, how)
    assert charts.keys() == expected.keys() == {"temp", "hum"}
    for metric, points in charts.items():
        assert [p.count for p in points] == [n for _avg, n in expected[metric]]
        for point, (avg, _n) in zip(points, expected[metric], strict=True):
            assert math.isclose(point.avg, avg, rel_tol=1e-9)
            assert point.min <= point.avg <= point.max
        for window in series.PERIODS[period][1]:
            raw_points = [
                series.Point(p.at, p.last, avg, p.min, p.max, n, p.bucket)
                for p, (avg, n) in zip(points, expected[metric], strict=True)
            ]
            got, want = (
                series.moving_average(points, window),
                series.moving_average(raw_points, window),
            )
            assert all(math.isclose(a, b, rel_tol=1e-9) for a, b in zip(got, want, strict=True))


def test_client_page_draws_a_month_from_rollups_in_a_fixed_number_of_queries(
    operator: Any, month_of_readings: Client, django_assert_num_queries: Any
) -> None:
    http = HttpClient()
    http.force_login(operator)
    # session, user, client, owner (prefix, claim), sessions, latest values, telemetry buckets,
    # the change feed's followers (does a Disconnect reach a broker)
    with django_assert_num_queries(9):
        response = http.get(f"/clients/{month_of_readings.pk}/", {"period": "30d"})
    chart = response.context["charts"]["charts"]["temp"]
    assert 200 <= len([v for v in chart["lines"][0] if v is not None]) <= 301
    assert sum(p["count"] for p in api_points(operator, month_of_readings)) == 3000


def api_points(operator: Any, client: Client) -> list[dict[str, Any]]:
    from rest_framework.test import APIClient

    api = APIClient()
    api.force_authenticate(operator)
    body = api.get("/api/v1/telemetry/", {"client": "busy", "period": "30d", "metric": "temp"})
    return body.json()["series"][0]["points"]


def test_prune_keeps_minute_rollups_as_long_as_readings_and_hourly_ones_longer(
    ingest: Ingest,
) -> None:
    now = timezone.now()
    for days in (500, 40, 0):
        publish(ingest, "dev-1", {"v": float(days)}, now - timedelta(days=days))
    ingest.flush()
    out = StringIO()
    call_command("prune_telemetry", "--days", "30", "--hourly-days", "400", stdout=out)
    assert list(Reading.objects.values_list("value", flat=True)) == [0.0]
    kept = ReadingRollup.objects.values_list("resolution", "total").order_by("resolution", "start")
    assert list(kept) == [(60, 0.0), (3600, 40.0), (3600, 0.0)]
    assert "2 minute rollups" in out.getvalue() and "1 hourly rollups" in out.getvalue()
