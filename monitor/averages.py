"""Moving averages of telemetry: plain functions over plain numbers.

Every function returns None for an empty input and never divides by zero: a window of one
value averages to that value; all-zero values average to 0.0.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

WINDOWS = {"1m": timedelta(minutes=1), "5m": timedelta(minutes=5), "15m": timedelta(minutes=15)}


def mean(values: Iterable[float]) -> float | None:
    total, count = 0.0, 0
    for value in values:
        total += value
        count += 1
    return total / count if count else None


def sma(values: Sequence[float], n: int) -> float | None:
    """Simple moving average of the last `n` values (all of them when fewer)."""
    if n <= 0:
        return None
    return mean(values[-n:])


def ewma(values: Iterable[float], alpha: float = 0.3) -> float | None:
    """Exponentially weighted average, oldest value first; `alpha` in (0, 1]."""
    if not 0 < alpha <= 1:
        raise ValueError("alpha must be in (0, 1]")
    result: float | None = None
    for value in values:
        result = value if result is None else alpha * value + (1 - alpha) * result
    return result


def window_mean(
    readings: Iterable[tuple[datetime, float]], now: datetime, window: timedelta
) -> float | None:
    """Mean of the readings taken within `window` before `now`."""
    start = now - window
    return mean(value for at, value in readings if start < at <= now)


def summary(
    readings: Sequence[tuple[datetime, float]], now: datetime, n: int = 10, alpha: float = 0.3
) -> dict[str, float | None]:
    """sma, ewma and the 1/5/15-minute means of (time, value) pairs, oldest first."""
    values = [value for _at, value in readings]
    result = {"sma": sma(values, n), "ewma": ewma(values, alpha)}
    for name, window in WINDOWS.items():
        result[name] = window_mean(readings, now, window)
    return result


def for_metric(
    client_pk: int, metric: str, now: datetime, n: int = 10, alpha: float = 0.3
) -> dict[str, float | None]:
    """The summary for one client's metric: last 15 minutes, or at least the last n readings."""
    from monitor.models import Reading

    since = now - max(WINDOWS.values())
    recent = list(Reading.objects.series(client_pk, metric, since=since).values_list("at", "value"))
    if len(recent) < n:
        older = Reading.objects.filter(client_id=client_pk, metric=metric, at__lt=since)
        tail = list(older.order_by("-at").values_list("at", "value")[: n - len(recent)])
        recent = tail[::-1] + recent
    return summary(recent, now, n, alpha)
