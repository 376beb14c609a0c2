"""Telemetry and broker time series for charts: downsampled in the database, smoothed here.

A chart never needs more points than it has pixels, so readings are grouped into `points`
equal time buckets (one more when the range does not start on a bucket's edge) by one GROUP BY
query, whatever the number of metrics; the moving averages are then computed over those few
buckets, weighted by their counts. A bucket without readings is not a point: where a series
pauses for longer than its usual step, `breaks()` says so, and the chart draws a gap.

Short periods group the raw readings. Longer ones group the monitor's per-minute or per-hour
rollups (`ReadingRollup`), so that no chart reads more than a few thousand rows per metric
however often a device publishes: the buckets are then whole numbers of rollups, aligned on
them, and each bucket's average is its sum over its count, exactly that of its raw readings.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from itertools import pairwise
from math import ceil
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
    bucket: int  # floor(epoch seconds / width): the same bucket keeps its number as time goes


@dataclass(frozen=True)
class Plan:
    """Where a chart's buckets come from: raw readings (resolution None) or rollups of
    `resolution` seconds, with the bucket `width` a whole multiple of it. Buckets are aligned
    on multiples of `width` since the epoch (`since` is the start of the first one), so that
    a bucket is the same bucket in every answer: a live chart re-reads only its last ones."""

    resolution: int | None
    since: datetime
    width: float

    def starting(self, when: datetime) -> Plan:
        """The same buckets from the one holding `when` on."""
        return replace(self, since=aligned(when, self.width))

    def first_bucket(self) -> int:
        return round(self.since.timestamp() / self.width)


def aligned(when: datetime, width: float) -> datetime:
    return datetime.fromtimestamp(when.timestamp() // width * width, when.tzinfo)


def plan(since: datetime, until: datetime, points: int) -> Plan:
    span = (until - since).total_seconds()
    width = span / max(points, 1)
    if width < MINUTE:
        return raw_plan(since, until, points)
    resolution = MINUTE
    beyond_minutes = since < timezone.now() - timedelta(days=settings.TELEMETRY_RETENTION_DAYS)
    if width >= HOUR or span / MINUTE > MAX_MINUTE_ROWS or beyond_minutes:
        resolution = HOUR
    width = -(-width // resolution) * resolution
    return Plan(resolution, aligned(since, width), width)


def raw_plan(since: datetime, until: datetime, points: int) -> Plan:
    """Buckets of the raw rows, whatever their width (the broker's samples have no rollups)."""
    width = max((until - since).total_seconds() / max(points, 1), 1e-3)
    return Plan(None, aligned(since, width), width)


def bucketed(
    qs: QuerySet[Any], time_field: str, how: Plan, since: datetime, until: datetime, *group: str
) -> QuerySet[Any]:
    bucket = Bucket(F(time_field), Value(how.since.timestamp()), Value(how.width))
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


def telemetry(
    client: Client | int,
    since: datetime,
    until: datetime,
    points: int,
    metric: str | None = None,
) -> dict[str, list[Point]]:
    """Every metric of one client (or just `metric`), each downsampled: one query."""
    return planned_telemetry(client, plan(since, until, points), since, until, metric)


def planned_telemetry(
    client: Client | int,
    how: Plan,
    since: datetime,
    until: datetime,
    metric: str | None = None,
) -> dict[str, list[Point]]:
    """Like telemetry(), in the buckets of `how` (a live chart's tail: Plan.starting())."""
    if how.resolution is None:
        return raw_telemetry(client, how, since, until, metric)
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
    first = how.first_bucket()
    for row in rows:
        last = min(row["t_last"] + step, until)
        avg = row["added"] / row["n"]
        number = first + int(row["bucket"])
        point = Point(row["t"], last, avg, row["lo"], row["hi"], row["n"], number)
        series[row["metric"]].append(point)
    return dict(series)


def raw_telemetry(
    client: Client | int,
    how: Plan,
    since: datetime,
    until: datetime,
    metric: str | None = None,
) -> dict[str, list[Point]]:
    qs = Reading.objects.filter(client=client)
    if metric:
        qs = qs.filter(metric=metric)
    return grouped(bucketed(qs, "at", how, since, until, "metric"), "metric", how)


def broker_series(
    topics: list[str], how: Plan, since: datetime, until: datetime
) -> dict[str, list[Point]]:
    """The $SYS samples of `topics` in the buckets of `how` (a raw_plan()): one query."""
    qs = BrokerStatSample.objects.filter(topic__in=topics)
    series: dict[str, list[Point]] = {topic: [] for topic in topics}
    series.update(grouped(bucketed(qs, "at", how, since, until, "topic"), "topic", how))
    return series


def grouped(rows: Iterable[dict[str, Any]], key: str, how: Plan) -> dict[str, list[Point]]:
    series: dict[str, list[Point]] = defaultdict(list)
    first = how.first_bucket()
    for row in rows:
        bucket = first + int(row["bucket"])
        point = Point(row["t"], row["t_last"], row["avg"], row["lo"], row["hi"], row["n"], bucket)
        series[row[key]].append(point)
    return dict(series)


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


# A series breaks where it pauses for longer than this many times its usual step.
GAP_FACTOR = 1.5
USUAL_STEP_QUANTILE = 0.9


def breaks(buckets: Sequence[int]) -> set[int]:
    """The positions i where a gap lies between buckets[i - 1] and buckets[i].

    The usual step is the series' own: a device that publishes once a minute fills one
    12-second bucket in five, which is its rhythm, not five gaps. It is the 90th percentile
    of the steps between the series' buckets (so that a rhythm close to the bucket width,
    one bucket filled and the next skipped now and then, is still a rhythm), or their median
    while there are fewer than ten. A pause longer than GAP_FACTOR usual steps (the device
    was offline, the monitor away, a reading lost) is a gap. With fewer than three steps
    there is no rhythm to go by, and every empty bucket is a gap."""
    steps = [b - a for a, b in pairwise(buckets)]
    ordered = sorted(steps)
    usual = 1
    if len(steps) >= 10:
        usual = ordered[ceil(USUAL_STEP_QUANTILE * len(steps)) - 1]
    elif len(steps) >= 3:
        usual = ordered[(len(steps) - 1) // 2]
    limit = max(1, int(usual * GAP_FACTOR))
    return {i + 1 for i, step in enumerate(steps) if step > limit}
