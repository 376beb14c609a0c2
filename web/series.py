"""Telemetry and broker time series for charts: downsampled in the database, smoothed here.

A chart never needs more points than it has pixels, so readings are grouped into at most
`points` equal time buckets by one GROUP BY query, whatever the number of metrics; the moving
averages are then computed over those few buckets, weighted by their counts.

Short periods group the raw readings. Longer ones group the monitor's per-minute or per-hour
rollups (`ReadingRollup`), so that no chart reads more than a few thousand rows per metric
however often a device publishes: the buckets are then whole numbers of rollups, aligned on
them, and each bucket's average is its sum over its count, exactly that of its raw readings.
"""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Avg, Count, F, FloatField, Func, Max, Min, QuerySet, Sum, Value
from django.utils import timezone

from monitor.models import BrokerStatSample, Client, Reading, ReadingRollup

# Chart periods the UI offers, with the windows of the two moving averages drawn over them.
PERIODS: dict[str, tuple[timedelta, tuple[timedelta, timedelta]]] = {
    "1h": (timedelta(hours=1), (timedelta(minutes=5), timedelta(minutes=15))),
    "6h": (timedelta(hours=6), (timedelta(minutes=15), timedelta(hours=1))),
    "24h": (timedelta(hours=24), (timedelta(hours=1), timedelta(hours=4))),
    "7d": (timedelta(days=7), (timedelta(hours=6), timedelta(days=1))),
    "30d": (timedelta(days=30), (timedelta(days=1), timedelta(days=7))),
}
DEFAULT_PERIOD = "24h"
MAX_POINTS = 2000
# Minute rollups while a period holds at most this many minutes (24 h does), hours beyond.
MAX_MINUTE_ROWS = 2000
MINUTE, HOUR = ReadingRollup.Resolution.MINUTE.value, ReadingRollup.Resolution.HOUR.value


class Bucket(Func):
    """floor((epoch(at) - start) / width), in each database's own words."""

    output_field = FloatField()  # type: ignore[assignment]
    arity = 3

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        # Django stores SQLite datetimes as ISO text; julianday() reads it. Values are >= 0,
        # so CAST truncation is floor.
        template = (
            "CAST(((julianday(%(expressions)s) - 2440587.5) * 86400.0 - %(start)s) "
            "/ %(width)s AS INTEGER)"
        )
        return self._vendor_sql(compiler, connection, template)

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        template = "FLOOR((EXTRACT(EPOCH FROM %(expressions)s) - %(start)s) / %(width)s)"
        return self._vendor_sql(compiler, connection, template)

    def _vendor_sql(self, compiler: Any, connection: Any, template: str) -> Any:
        column, start, width = self.get_source_expressions()
        column_sql, params = compiler.compile(column)
        start_sql, start_params = compiler.compile(start)
        width_sql, width_params = compiler.compile(width)
        sql = template % {"expressions": column_sql, "start": start_sql, "width": width_sql}
        return sql, (*params, *start_params, *width_params)


@dataclass(frozen=True)
class Point:
    at: datetime  # first reading in the bucket (from rollups: start of its first rollup)
    last: datetime
    avg: float
    min: float
    max: float
    count: int


def bucketed(
    qs: QuerySet[Any], time_field: str, since: datetime, until: datetime, points: int, *group: str
) -> QuerySet[Any]:
    width = max((until - since).total_seconds() / max(points, 1), 1e-3)
    bucket = Bucket(F(time_field), Value(since.timestamp()), Value(width))
    return (
        qs.filter(**{f"{time_field}__gte": since, f"{time_field}__lte": until})
        .annotate(bucket=bucket)
        .values(*group, "bucket")
        .annotate(
            t=Min(time_field),
            t_last=Max(time_field),
            avg=Avg("value"),
            lo=Min("value"),
            hi=Max("value"),
            n=Count("pk"),
        )
        .order_by(*group, "bucket")
    )


@dataclass(frozen=True)
class Plan:
    """Where a chart's buckets come from: raw readings (resolution None) or rollups of
    `resolution` seconds, with `since` and the bucket `width` whole multiples of it."""

    resolution: int | None
    since: datetime
    width: float


def plan(since: datetime, until: datetime, points: int) -> Plan:
    span = (until - since).total_seconds()
    width = span / max(points, 1)
    if width < MINUTE:
        return Plan(None, since, width)
    resolution = MINUTE
    beyond_minutes = since < timezone.now() - timedelta(days=settings.TELEMETRY_RETENTION_DAYS)
    if width >= HOUR or span / MINUTE > MAX_MINUTE_ROWS or beyond_minutes:
        resolution = HOUR
    start = since.timestamp() // resolution * resolution
    return Plan(
        resolution,
        datetime.fromtimestamp(start, since.tzinfo),
        -(-width // resolution) * resolution,
    )


def telemetry(
    client: Client | int,
    since: datetime,
    until: datetime,
    points: int,
    metric: str | None = None,
) -> dict[str, list[Point]]:
    """Every metric of one client (or just `metric`), each downsampled: one query."""
    how = plan(since, until, points)
    if how.resolution is None:
        return raw_telemetry(client, since, until, points, metric)
    qs = ReadingRollup.objects.filter(
        client=client, resolution=how.resolution, start__gte=how.since, start__lte=until
    )
    if metric:
        qs = qs.filter(metric=metric)
    # Half a rollup off the boundaries: a rollup's bucket never depends on float rounding.
    bucket = Bucket(F("start"), Value(how.since.timestamp() - how.resolution / 2), Value(how.width))
    rows = (
        qs.annotate(bucket=bucket)
        .values("metric", "bucket")
        .annotate(
            t=Min("start"),
            t_last=Max("start"),
            added=Sum("total"),
            lo=Min("low"),
            hi=Max("high"),
            n=Sum("count"),
        )
        .order_by("metric", "bucket")
    )
    series: dict[str, list[Point]] = defaultdict(list)
    step = timedelta(seconds=how.resolution)
    for row in rows:
        last = min(row["t_last"] + step, until)
        avg = row["added"] / row["n"]
        series[row["metric"]].append(Point(row["t"], last, avg, row["lo"], row["hi"], row["n"]))
    return dict(series)


def raw_telemetry(
    client: Client | int,
    since: datetime,
    until: datetime,
    points: int,
    metric: str | None = None,
) -> dict[str, list[Point]]:
    qs = Reading.objects.filter(client=client)
    if metric:
        qs = qs.filter(metric=metric)
    series: dict[str, list[Point]] = defaultdict(list)
    for row in bucketed(qs, "at", since, until, points, "metric"):
        series[row["metric"]].append(
            Point(row["t"], row["t_last"], row["avg"], row["lo"], row["hi"], row["n"])
        )
    return dict(series)


def broker_series(
    topics: list[str], since: datetime, until: datetime, points: int
) -> dict[str, list[Point]]:
    qs = BrokerStatSample.objects.filter(topic__in=topics)
    series: dict[str, list[Point]] = {topic: [] for topic in topics}
    for row in bucketed(qs, "at", since, until, points, "topic"):
        series[row["topic"]].append(
            Point(row["t"], row["t_last"], row["avg"], row["lo"], row["hi"], row["n"])
        )
    return series


def moving_average(points: list[Point], window: timedelta) -> list[float | None]:
    """Trailing average over `window`, weighted by each bucket's count of readings."""
    out: list[float | None] = []
    inside: deque[Point] = deque()
    total = weight = 0.0
    for point in points:
        inside.append(point)
        total += point.avg * point.count
        weight += point.count
        while inside[0].at <= point.at - window:
            gone = inside.popleft()
            total -= gone.avg * gone.count
            weight -= gone.count
        out.append(total / weight if weight else None)
    return out


def rates(points: list[Point]) -> list[tuple[datetime, float]]:
    """Per-second rates from samples of a cumulative counter; a drop (broker restart) is
    skipped rather than drawn as a negative rate."""
    out = []
    for before, after in zip(points, points[1:], strict=False):
        seconds = (after.last - before.last).total_seconds()
        if seconds > 0 and after.max >= before.max:
            out.append((after.last, (after.max - before.max) / seconds))
    return out
