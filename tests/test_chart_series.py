"""What the charts are drawn from (web/series.py, web/charts.py, web/units.py): gaps where a
series pauses, units, the broker's charts, and tails that continue the whole chart exactly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from monitor.models import BrokerStatSample, Client, Reading, ReadingRollup
from web import charts, series
from web.units import unit_of

pytestmark = pytest.mark.django_db
# Twelve-second buckets (1 h / 300) start on whole multiples of 12 s since the epoch.
NOW = datetime(2030, 5, 1, 12, 0, 0, tzinfo=UTC)
SYS = "$SYS/broker/"


def test_a_dense_series_breaks_at_every_empty_bucket() -> None:
    assert series.breaks([1, 2, 3, 4, 6, 7, 8, 9]) == {4}
    assert series.breaks([1, 2, 3, 4, 5, 6]) == set()


def test_a_sparse_series_breaks_only_past_its_own_rhythm() -> None:
    every_fifth = list(range(0, 100, 5))
    assert series.breaks(every_fifth) == set()
    paused = [*range(0, 50, 5), *range(100, 150, 5)]
    assert series.breaks(paused) == {10}
    one_message_lost = [0, 5, 10, 15, 25, 30, 35, 40]
    assert series.breaks(one_message_lost) == {4}


def test_a_rhythm_near_the_bucket_width_is_not_a_row_of_gaps() -> None:
    # A device every 15 s in 12 s buckets fills one bucket, then skips one, now and then.
    jitter = [0, 1, 2, 4, 5, 6, 7, 9, 10, 11, 12, 14, 15, 16, 17, 19, 20]
    assert series.breaks(jitter) == set()


def test_with_too_few_steps_for_a_rhythm_every_empty_bucket_is_a_gap() -> None:
    assert series.breaks([3, 9]) == {1}
    assert series.breaks([3]) == set() == series.breaks([])


def test_lined_up_puts_a_null_at_the_first_empty_bucket_of_each_gap() -> None:
    got = charts.lined_up([0.5, 12.5, 48.5, 60.5], [0, 1, 4, 5], [[1, 2, 3, 4], [9, 8, 7, 6]], 12)
    assert got == {
        "t": [0.5, 12.5, 24.0, 48.5, 60.5],
        "lines": [[1, 2, None, 3, 4], [9, 8, None, 7, 6]],
    }
    tail = charts.lined_up([0.5, 12.5, 48.5], [0, 1, 4], [[1, 2, 3]], 12, keep_from=12.0)
    assert tail == {"t": [12.5, 24.0, 48.5], "lines": [[2, None, 3]]}


def readings(client: Client, start: datetime, minutes: int, value: float = 20.0) -> None:
    Reading.objects.bulk_create(
        Reading(client=client, metric="temp_c", value=value + i % 3, at=at)
        for i, at in enumerate(start + timedelta(minutes=i) for i in range(minutes))
    )


@pytest.fixture
def sensor() -> Client:
    return Client.objects.create(client_id="sensor-1", connect_count=1)


def test_a_device_that_was_offline_is_drawn_with_a_gap_not_a_line(sensor: Client) -> None:
    readings(sensor, NOW - timedelta(minutes=59, seconds=30), 20)  # then offline 20 minutes
    readings(sensor, NOW - timedelta(minutes=19, seconds=30), 20)
    chart = charts.client_charts(sensor.pk, "1h", NOW)["charts"]["temp_c"]
    for line in chart["lines"]:
        assert [i for i, v in enumerate(line) if v is None] == [20]
    before, gap, after = chart["t"][19], chart["t"][20], chart["t"][21]
    assert before < gap <= before + 12 < after
    assert chart["unit"] == "°C"
    assert len(chart["t"]) == 41


def test_the_chart_set_ends_now_and_spans_the_period(sensor: Client) -> None:
    readings(sensor, NOW - timedelta(minutes=30), 5)
    got = charts.client_charts(sensor.pk, "1h", NOW)
    assert (got["now"], got["span"], got["from"]) == (NOW.timestamp(), 3600.0, None)
    assert got["windows"] == ["5 min", "15 min"]


def merged(whole: dict[str, Any], tail: dict[str, Any]) -> dict[str, Any]:
    """What charts.js does with a tail: replace the points from `from` on, drop those that
    slid out of the window."""
    out = {}
    for name, chart in whole["charts"].items():
        part = tail["charts"].get(name, {"t": [], "lines": [[] for _ in chart["lines"]]})
        cut = next((i for i, x in enumerate(chart["t"]) if x >= tail["from"]), len(chart["t"]))
        t = chart["t"][:cut] + part["t"]
        lines = [line[:cut] + new for line, new in zip(chart["lines"], part["lines"], strict=True)]
        keep = next((i for i, x in enumerate(t) if x >= tail["now"] - tail["span"]), len(t))
        out[name] = {"t": t[keep:], "lines": [line[keep:] for line in lines]}
    return out


def trimmed(chart_set: dict[str, Any]) -> dict[str, Any]:
    edge = chart_set["now"] - chart_set["span"]
    out = {}
    for name, chart in chart_set["charts"].items():
        keep = next(i for i, x in enumerate(chart["t"]) if x >= edge)
        out[name] = {"t": chart["t"][keep:], "lines": [line[keep:] for line in chart["lines"]]}
    return out


@pytest.mark.parametrize("period", ["1h", "24h"])
def test_a_tail_continues_the_whole_chart_exactly(sensor: Client, period: str) -> None:
    span = series.PERIODS[period][0]
    readings(sensor, NOW - span, int(span.total_seconds() // 60))
    ReadingRollup.objects.rebuild()
    whole = charts.client_charts(sensor.pk, period, NOW)
    later = NOW + timedelta(minutes=7)
    readings(sensor, NOW, 5, value=30.0)  # then two quiet minutes
    ReadingRollup.objects.rebuild()
    after = whole["charts"]["temp_c"]["t"][-1]
    with CaptureQueriesContext(connection) as queries:
        tail = charts.client_charts(sensor.pk, period, later, after=after)
    assert len(queries) == 1
    assert tail["from"] is not None and tail["from"] <= after
    assert len(tail["charts"]["temp_c"]["t"]) < 40
    assert merged(whole, tail) == trimmed(charts.client_charts(sensor.pk, period, later))


def test_an_after_outside_the_period_gets_the_whole_chart(sensor: Client) -> None:
    readings(sensor, NOW - timedelta(minutes=30), 5)
    stale = charts.client_charts(sensor.pk, "1h", NOW, after=(NOW - timedelta(hours=2)).timestamp())
    assert stale == charts.client_charts(sensor.pk, "1h", NOW)


def test_units_come_from_the_setting_then_from_the_name(settings: Any) -> None:
    settings.TELEMETRY_UNITS = {"temperature": "°F", "temp_c": "K"}
    assert unit_of("temperature") == "°F"
    assert unit_of("temp_c") == "K"
    assert unit_of("humidity_pct") == "%"
    assert unit_of("Supply_V") == "V"
    assert unit_of("battery_mv") == "mV"
    assert unit_of("humidity") == ""
    assert unit_of("_c") == ""  # a suffix alone is not a name that says something
    assert unit_of("rssi_dbm") == "dBm"


def samples(topic: str, values: list[float], start: datetime, every: int = 10) -> None:
    BrokerStatSample.objects.bulk_create(
        BrokerStatSample(topic=SYS + topic, value=v, at=start + timedelta(seconds=every * i))
        for i, v in enumerate(values)
    )


def test_the_client_count_is_held_while_the_broker_only_ticks_its_uptime() -> None:
    start = NOW - timedelta(minutes=50)
    samples("uptime", [float(i) for i in range(120)], start)  # 20 minutes of ticks
    samples("clients/connected", [3.0], start)
    samples("clients/connected", [5.0], start + timedelta(minutes=10))
    samples("uptime", [float(i) for i in range(60)], start + timedelta(minutes=30))
    clients = charts.broker_charts("1h", NOW)["charts"]["clients"]
    values = clients["lines"][0]
    assert values[0] == 3.0 and values[len(values) // 4] == 3.0
    assert 5.0 in values
    gap = values.index(None)
    assert set(values[:gap]) == {3.0, 5.0}
    # After the monitor was away, the count is unknown until the broker says it again.
    assert set(values[gap + 1 :]) == {None}
    assert clients["unit"] == "clients" and clients["step"] is True


def test_rates_skip_a_broker_restart_and_break_at_a_gap() -> None:
    # One sample in the middle of each 12-second bucket: on its edge, float rounding of the
    # bucket number could put it on either side.
    start = NOW - timedelta(minutes=40, seconds=-6)
    samples("messages/received", [i * 120.0 for i in range(30)], start, every=12)
    samples("messages/sent", [i * 240.0 for i in range(30)], start, every=12)
    after_restart = start + timedelta(minutes=20)  # 14 minutes of silence, then a new broker
    samples("messages/received", [i * 120.0 for i in range(10)], after_restart, every=12)
    samples("messages/sent", [i * 240.0 for i in range(10)], after_restart, every=12)
    received, sent = charts.broker_charts("1h", NOW)["charts"]["messages"]["lines"]
    assert received[0] is None
    assert received[1:30] == pytest.approx([10.0] * 29) and sent[1:30] == pytest.approx([20.0] * 29)
    assert received[30:32] == [None, None]  # the gap, then the first sample after it
    assert received[32:] == pytest.approx([10.0] * 9)


def test_the_broker_charts_are_one_query_whole_or_tail() -> None:
    samples("messages/received", [i * 100.0 for i in range(30)], NOW - timedelta(minutes=5))
    with CaptureQueriesContext(connection) as queries:
        whole = charts.broker_charts("7d", NOW)
        charts.broker_charts("7d", NOW, after=whole["charts"]["messages"]["t"][-1])
    assert len(queries) == 2
