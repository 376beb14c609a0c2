"""The data behind the pages' uPlot charts (web/static/web/charts.js), whole or as a tail.

A chart set is what one page draws: `{"span", "now", "from", "windows", "charts": {name:
{"unit", "labels", "t", "lines"}}}`, with `t` the x values (epoch seconds) and one list per
line in `lines`, where None is a gap (uPlot breaks a line at null). The x axis runs from
`now - span` to `now`, so the right edge is the present and a device that stopped publishing
shows as an empty stretch before it, not as a line that goes on.

A live page asks for its tail every few seconds with `after`, the x of its newest point: the
answer holds the points from the bucket of that x on (that bucket may have grown), `from` its
start, and the page replaces its points from `from` on. Buckets are aligned on the epoch
(web/series.py, Plan), so a bucket of the tail is the very bucket the page holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from monitor.models import Client
from web import series
from web.units import unit_of

POINTS = 300
# A chart or tail is read from this many buckets before its first (or the longer moving
# average window), so that its rates, averages and gaps come out as in the whole chart.
CONTEXT_BUCKETS = 30

SYS = "$SYS/broker/"
CONNECTED, UPTIME = SYS + "clients/connected", SYS + "uptime"
COUNTERS = {
    "messages": (SYS + "messages/received", SYS + "messages/sent", "msg/s"),
    "bytes": (SYS + "bytes/received", SYS + "bytes/sent", "B/s"),
}
BROKER_TOPICS = [CONNECTED, UPTIME, *(t for r, s, _u in COUNTERS.values() for t in (r, s))]


def client_charts(
    client: Client | int, period: str, now: datetime, after: float | None = None
) -> dict[str, Any]:
    """One chart per metric of the client: bucket averages and two moving averages."""
    span, windows = series.PERIODS[period]
    whole = series.plan(now - span, now, POINTS)
    tail, first, read = _ranges(whole, now - span, now, after, max(windows))
    charts = {}
    for metric, points in series.planned_telemetry(client, read, read.since, now).items():
        averages: list[float | None] = [p.avg for p in points]
        lines = [averages, *(series.moving_average(points, w) for w in windows)]
        labels = ["average", *(f"moving avg {duration(w)}" for w in windows)]
        charts[metric] = _chart(unit_of(metric), labels, points, lines, whole, first)
    return _chart_set(span, now, tail, charts, windows)


def broker_charts(period: str, now: datetime, after: float | None = None) -> dict[str, Any]:
    """Clients connected, and messages and bytes per second in and out, from $SYS samples."""
    span, _windows = series.PERIODS[period]
    whole = series.raw_plan(now - span, now, POINTS)
    tail, first, read = _ranges(whole, now - span, now, after, timedelta(0))
    samples = series.broker_series(BROKER_TOPICS, read, read.since, now)
    charts = {"clients": _connected_chart(samples[CONNECTED], samples[UPTIME], whole, first)}
    for name, (received, sent, unit) in COUNTERS.items():
        charts[name] = _rate_chart(unit, samples[received], samples[sent], whole, first)
    return _chart_set(span, now, tail, charts, ())


def duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def _ranges(
    whole: series.Plan, since: datetime, now: datetime, after: float | None, window: timedelta
) -> tuple[series.Plan | None, series.Plan, series.Plan]:
    """The tail's buckets (None for the whole chart), the first bucket to answer, and the
    buckets to read: from a context earlier, so that the moving averages, rates and gaps of
    the first points are those of a chart that began earlier (a tail continues the chart)."""
    tail = None
    if after is not None and since.timestamp() <= after <= now.timestamp():
        tail = whole.starting(datetime.fromtimestamp(after, now.tzinfo))
    first = tail or whole
    context = max(window, timedelta(seconds=CONTEXT_BUCKETS * whole.width))
    return tail, first, whole.starting(first.since - context)


def _chart_set(
    span: timedelta,
    now: datetime,
    tail: series.Plan | None,
    charts: dict[str, Any],
    windows: Sequence[timedelta],
) -> dict[str, Any]:
    return {
        "span": span.total_seconds(),
        "now": now.timestamp(),
        "from": tail.since.timestamp() if tail else None,
        "windows": [duration(w) for w in windows],
        "charts": charts,
    }


def _chart(
    unit: str,
    labels: list[str],
    points: Sequence[series.Point],
    lines: Sequence[Sequence[float | None]],
    whole: series.Plan,
    first: series.Plan,
) -> dict[str, Any]:
    return {
        "unit": unit,
        "labels": labels,
        **lined_up(
            [p.at.timestamp() for p in points],
            [p.bucket for p in points],
            lines,
            whole.width,
            first.since.timestamp(),
        ),
    }


def lined_up(
    xs: Sequence[float],
    buckets: Sequence[int],
    lines: Sequence[Sequence[float | None]],
    width: float,
    keep_from: float | None = None,
) -> dict[str, list[Any]]:
    """uPlot's arrays: a null point at the start of the first empty bucket of each gap (so
    every line breaks there), then only the points from `keep_from` on."""
    gaps = series.breaks(buckets)
    t: list[float] = []
    out: list[list[float | None]] = [[] for _ in lines]
    for i, x in enumerate(xs):
        if i in gaps:
            t.append((buckets[i - 1] + 1) * width)
            for column in out:
                column.append(None)
        t.append(x)
        for column, line in zip(out, lines, strict=True):
            column.append(line[i])
    keep = [i for i, x in enumerate(t) if keep_from is None or x >= keep_from]
    return {"t": [t[i] for i in keep], "lines": [[column[i] for i in keep] for column in out]}


def _connected_chart(
    connected: list[series.Point],
    uptime: list[series.Point],
    whole: series.Plan,
    first: series.Plan,
) -> dict[str, Any]:
    """The broker publishes its client count only when it changes, and its uptime at every
    $SYS interval: a bucket with an uptime sample and no count means "unchanged since", and
    the count is carried through it; a bucket with neither is a gap (the monitor was away)."""
    counts, ticks = {p.bucket: p for p in connected}, {p.bucket: p for p in uptime}
    buckets = sorted(counts.keys() | ticks.keys())
    gaps = series.breaks(buckets)
    values: list[float | None] = []
    carried: float | None = None
    for i, bucket in enumerate(buckets):
        if i in gaps:
            carried = None  # the count may have changed while nobody listened
        if bucket in counts:
            carried = counts[bucket].max
        values.append(carried)
    xs = [min(p.at for p in (counts.get(b), ticks.get(b)) if p).timestamp() for b in buckets]
    keep_from = first.since.timestamp()
    return {
        "unit": "clients",
        "labels": ["connected"],
        "step": True,
        **lined_up(xs, buckets, [values], whole.width, keep_from),
    }


def _rate_chart(
    unit: str,
    received: list[series.Point],
    sent: list[series.Point],
    whole: series.Plan,
    first: series.Plan,
) -> dict[str, Any]:
    """Per-second rates of two cumulative counters, bucket by bucket. A drop (the broker
    restarted) or a gap gives no rate rather than a negative or an averaged one."""
    by_bucket = [{p.bucket: p for p in received}, {p.bucket: p for p in sent}]
    buckets = sorted(by_bucket[0].keys() | by_bucket[1].keys())
    gaps = series.breaks(buckets)
    lines = [
        [
            None if i == 0 or i in gaps else _rate(points.get(buckets[i - 1]), points.get(b))
            for i, b in enumerate(buckets)
        ]
        for points in by_bucket
    ]
    xs = [min(p.at for p in (by_bucket[0].get(b), by_bucket[1].get(b)) if p) for b in buckets]
    keep_from = first.since.timestamp()
    return {
        "unit": unit,
        "labels": ["in", "out"],
        **lined_up([x.timestamp() for x in xs], buckets, lines, whole.width, keep_from),
    }


def _rate(before: series.Point | None, after: series.Point | None) -> float | None:
    if before is None or after is None:
        return None
    seconds = (after.last - before.last).total_seconds()
    if seconds <= 0 or after.max < before.max:
        return None
    return round((after.max - before.max) / seconds, 3)
