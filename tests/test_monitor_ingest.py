"""Telemetry parsing and the plain handlers behind the paho callbacks."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.db import DataError, IntegrityError, OperationalError, connection

from brokerauth.models import Account, Rule
from monitor import telemetry
from monitor.ingest import Ingest
from monitor.models import (
    BrokerStat,
    Client,
    DeliveryCursor,
    LatestValue,
    MonitorState,
    Reading,
    ReadingQuerySet,
)

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


# -- telemetry payloads --------------------------------------------------------------------
def test_a_json_object_of_numbers_gives_one_reading_per_metric() -> None:
    parsed = telemetry.parse("devices/dev-1/telemetry", b'{"temp": 21.5, "hum": 40}')
    assert parsed == telemetry.Telemetry("dev-1", [("temp", 21.5), ("hum", 40.0)])


def test_a_plain_number_on_a_metric_topic_is_one_reading() -> None:
    assert telemetry.parse("devices/dev-1/telemetry/temp", b" 21.5\n").values == [("temp", 21.5)]


@pytest.mark.parametrize(
    "payload",
    [
        b"\xff\xfe",
        b"{not json",
        b'{"t": NaN}',
        b'{"t": -Infinity}',
        b'{"t": 1e400}',
        b'{"t": "warm"}',
        b'{"t": true}',
        b'{"t": {"deep": 1}}',
        b"[" * 50_000 + b"]" * 50_000,
        b'{"t": ' + b"9" * 5000 + b"}",
        b"x" * 70_000,
        b"[1, 2]",
        b"{}",
        b"",
    ],
)
def test_bad_payloads_are_rejected_with_a_reason(payload: bytes) -> None:
    with pytest.raises(telemetry.BadPayload):
        telemetry.parse("devices/dev-1/telemetry", payload)


@pytest.mark.parametrize("payload", [b"NaN", b"Infinity", b'"12"', b"true", b"{}", b"oops"])
def test_bad_plain_numbers_are_rejected(payload: bytes) -> None:
    with pytest.raises(telemetry.BadPayload):
        telemetry.parse("devices/dev-1/telemetry/temp", payload)


# -- the handlers, straight into the database ----------------------------------------------
@pytest.fixture
def ingest(db: None) -> Ingest:
    return Ingest(self_client_id="monitor")


def log_line(ingest: Ingest, text: str, at: datetime) -> None:
    ingest.handle_message("$SYS/broker/log/N", f"1795747775: {text}".encode(), at)


def test_readings_latest_values_and_counts_are_written_in_one_flush(ingest: Ingest) -> None:
    for i in range(3):
        payload = json.dumps({"temp": 20 + i, "hum": 40}).encode()
        ingest.handle_message("devices/dev-1/telemetry", payload, T0 + timedelta(seconds=i))
    ingest.handle_message("devices/dev-1/telemetry/temp", b"not a number", T0)
    assert ingest.flush() == 6

    client = Client.objects.get(client_id="dev-1")
    assert client.message_count == 3
    assert client.bad_message_count == 1 and client.last_bad_message_error
    latest = client.latest.get(metric="temp")
    assert (latest.value, latest.count) == (22.0, 3)
    temps = client.readings.filter(metric="temp").order_by("at").values_list("value", flat=True)
    assert list(temps) == [20.0, 21.0, 22.0]
    ingest.handle_message("devices/dev-1/telemetry/temp", b"19", T0 - timedelta(hours=1))
    ingest.flush()
    assert LatestValue.objects.get(client=client, metric="temp").value == 22.0  # older: kept
    assert MonitorState.get().readings_stored == 7


@pytest.mark.parametrize("clients", [1, 50])
def test_a_flush_of_known_clients_costs_the_same_queries_for_one_or_many(
    ingest: Ingest, clients: int, django_assert_num_queries: Any
) -> None:
    mids = iter(range(1, 1000))

    def send(at: datetime) -> None:
        for i in range(clients):
            payload = b'{"t": 1, "h": 2}'
            ingest.handle_message(f"devices/dev-{i}/telemetry", payload, at, mid=next(mids))

    send(T0)
    ingest.flush()  # creates the clients and the state row
    send(T0 + timedelta(seconds=1))
    # savepoint, readings, rollups, latest values, counters, delivery cursor, state, release;
    # PostgreSQL's COPY of the readings goes past Django's query log
    with django_assert_num_queries(8 if connection.vendor == "sqlite" else 7):
        ingest.flush()
    assert set(Client.objects.values_list("message_count", flat=True)) == {2}
    assert MonitorState.get().readings_stored == 4 * clients


def test_a_client_id_too_long_to_store_is_a_bad_payload_not_a_stuck_batch(
    ingest: Ingest,
) -> None:
    long_id = "x" * 300
    ingest.handle_message(f"devices/{long_id}/telemetry/t", b"1", T0)
    ingest.handle_message("devices/dev-1/telemetry/t", b"2", T0)
    assert ingest.flush() == 1
    assert Client.objects.get(client_id=long_id[:255]).bad_message_count == 1
    assert ingest.pending() == 0


@pytest.mark.django_db(transaction=True)  # foreign keys are checked at a real commit
def test_a_client_deleted_under_the_monitor_is_created_again(ingest: Ingest) -> None:
    ingest.handle_message("devices/dev-1/telemetry/t", b"1", T0)
    ingest.flush()
    Client.objects.filter(client_id="dev-1").delete()  # the admin forgets a device
    ingest.handle_message("devices/dev-1/telemetry/t", b"2", T0 + timedelta(seconds=1))
    assert ingest.flush() == 1
    client = Client.objects.get(client_id="dev-1")
    assert list(client.readings.values_list("value", flat=True)) == [2.0]


def test_a_batch_whose_retry_fails_too_is_kept_for_the_next_flush(
    ingest: Ingest, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest.handle_message("devices/dev-1/telemetry/t", b"1", T0)
    ingest.handle_message("devices/dev-1/telemetry/t", b"oops", T0)
    tries: list[object] = []

    def fail(messages: object, stats: object) -> None:
        tries.append(messages)
        if len(tries) == 1:
            raise IntegrityError("a client row deleted under the monitor")
        raise OperationalError("the database went away during the retry")

    monkeypatch.setattr(ingest, "write", fail)
    with pytest.raises(OperationalError):
        ingest.flush()
    assert len(tries) == 2 and ingest.pending() == 2
    monkeypatch.undo()
    assert ingest.flush() == 1
    assert Client.objects.get(client_id="dev-1").bad_message_count == 1
    assert MonitorState.get().bad_payloads == 1


# -- commands ------------------------------------------------------------------------------
def test_monitor_account_makes_precise_rules_and_a_private_password_file(
    db: None, tmp_path: Path
) -> None:
    path = tmp_path / "monitor_password"
    call_command("monitor_account", "--password-file", str(path), stdout=StringIO())
    account = Account.objects.get(username="mqtt-monitor")
    assert not account.is_superuser
    assert account.check_password(path.read_text().strip())
    assert path.stat().st_mode & 0o777 == 0o600
    patterns = set(Rule.objects.filter(account=account).values_list("pattern", flat=True))
    assert patterns == {"$SYS/#", "devices/+/telemetry", "devices/+/telemetry/+", "probe/%c"}

    old = path.read_text()
    call_command("monitor_account", "--password-file", str(path), stdout=StringIO())
    assert path.read_text() == old
    out = StringIO()
    call_command("monitor_account", "--rotate", "--print", stdout=out)
    assert "MONITOR_PASSWORD=" in out.getvalue()
    account.refresh_from_db()
    assert not account.check_password(old.strip())


def test_prune_telemetry_keeps_the_retention_period(ingest: Ingest) -> None:
    now = datetime.now(UTC)
    ingest.handle_message("devices/d/telemetry/t", b"1", now - timedelta(days=40))
    ingest.handle_message("devices/d/telemetry/t", b"2", now)
    ingest.flush()
    call_command("prune_telemetry", "--days", "30", stdout=StringIO())
    assert list(Reading.objects.values_list("value", flat=True)) == [2.0]
    assert math.isclose(LatestValue.objects.get().value, 2.0)


# -- poisoned payloads: quarantined, never retried ----------------------------------------
POISON = [
    b'{"\\ud800": 1}',  # a lone surrogate, spelled as a JSON escape
    b'{"\\udfff": 1, "t": 2}',
    b'{"a\\u0000b": 1}',  # NUL: PostgreSQL text cannot hold it
    b'{"' + b"k" * 10_000 + b'": 1}',  # a giant key
    b'{"t": NaN}',
    b'{"t": 1e999}',
    b'{"t": ' + b'{"x": ' * 5000 + b"1" + b"}" * 5000 + b"}",  # deep nesting
    b"[" * 100_000,
    b'{"t": 1, "\xff\xfe": 2}',  # invalid UTF-8 bytes
    b"\xed\xa0\x80",  # a surrogate encoded as UTF-8: not UTF-8 either
]


def test_poisoned_payloads_are_counted_and_every_good_reading_is_stored(
    ingest: Ingest,
) -> None:
    for i, payload in enumerate(POISON):
        ingest.handle_message("devices/evil/telemetry", payload, T0, mid=2 * i + 1)
        good = json.dumps({"seq": i}).encode()
        ingest.handle_message("devices/good/telemetry", good, T0, mid=2 * i + 2)
    ingest.handle_message("devices/evil/telemetry/a\x00b", b"1", T0)
    ingest.handle_message("devices/ev\x00il/telemetry/t", b"1", T0)
    ingest.handle_message("devices/\ud800/telemetry/t", b"1", T0)
    assert ingest.flush() == len(POISON)
    assert set(Reading.objects.values_list("client__client_id", "value")) == {
        ("good", float(i)) for i in range(len(POISON))
    }
    assert Client.objects.get(client_id="evil").bad_message_count == len(POISON) + 1
    assert MonitorState.get().bad_payloads == len(POISON) + 3
    assert ingest.pending() == 0 and ingest.quarantined == 0  # all caught before the batch


@pytest.mark.django_db(transaction=True)  # real commits: each part of the bisection is one
def test_a_message_the_database_refuses_is_found_by_bisection_and_quarantined(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Validation let one through (as `check_metric` once let surrogates and NUL through):
    the batch is split until the bad message is alone, every other reading is stored."""
    monkeypatch.setattr(telemetry, "storable", lambda _text: True)
    ingest = Ingest(self_client_id="monitor")
    poison = {
        "sqlite": b'{"\\ud800": 1}',  # the driver cannot encode it
        "postgresql": b'{"a\\u0000b": 1}',  # PostgreSQL refuses it
    }[connection.vendor]
    for seq in range(40):
        ingest.handle_message("devices/good/telemetry", b'{"seq": %d}' % seq, T0, mid=seq + 1)
        if seq == 25:
            ingest.handle_message("devices/evil/telemetry", poison, T0, mid=100)
    ingest.handle_message("$SYS/broker/uptime", b"10 seconds", T0)
    assert ingest.flush() == 40
    assert ingest.quarantined == 1 and ingest.pending() == 0
    assert Reading.objects.filter(client__client_id="good").count() == 40
    evil = Client.objects.get(client_id="evil")
    assert evil.bad_message_count == 1 and "cannot be stored" in evil.last_bad_message_error
    assert MonitorState.get().bad_payloads == 1
    assert BrokerStat.objects.get(topic="$SYS/broker/uptime").value == "10 seconds"
    assert ingest.cursor == 40  # the last message in order, whatever part it was in
    # The next batch flows as one again.
    ingest.handle_message("devices/good/telemetry", b'{"seq": 40}', T0, mid=41)
    assert ingest.flush() == 1


def test_a_bug_in_the_writers_keeps_the_batch_instead_of_quarantining_it(
    ingest: Ingest, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest.handle_message("devices/good/telemetry/seq", b"1", T0, mid=1)

    def bug(*_args: object) -> None:
        raise AttributeError("a deploy half done")

    monkeypatch.setattr(ReadingQuerySet, "insert_rows", bug)
    with pytest.raises(AttributeError):
        ingest.flush()
    assert ingest.pending() == 1 and ingest.quarantined == 0
    monkeypatch.undo()
    assert ingest.flush() == 1
    assert not Client.objects.filter(bad_message_count__gt=0).exists()


@pytest.mark.django_db(transaction=True)
def test_the_database_going_away_during_a_bisection_keeps_only_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ingest = Ingest(self_client_id="monitor")
    for seq in range(8):
        ingest.handle_message("devices/good/telemetry/seq", b"%d" % seq, T0, mid=seq + 1)
    write = Ingest.write
    calls = 0

    def flaky(self: Ingest, messages: list[Any], stats: object) -> int:
        nonlocal calls
        calls += 1
        if calls in (1, 2):
            raise DataError("some bad data")
        if calls == 4:
            raise OperationalError("the database went away")
        return write(self, messages, stats)

    monkeypatch.setattr(Ingest, "write", flaky)
    with pytest.raises(OperationalError):
        ingest.flush()  # 8 and its first 4 fail, 2 are stored, then the database is away
    assert Reading.objects.count() == 2 and ingest.pending() == 6
    monkeypatch.undo()
    assert ingest.flush() == 6
    assert sorted(Reading.objects.values_list("value", flat=True)) == [float(i) for i in range(8)]


def test_broker_log_lines_and_sys_values_with_nul_or_bad_bytes_do_not_stop_presence(
    ingest: Ingest,
) -> None:
    ingest.handle_message("$SYS/broker/log/N", b"New client connected \x00\xff\xfe as", T0)
    ingest.handle_message(
        "$SYS/broker/log/N",
        b"New client connected from 10.0.0.5:1 as d\x00v (p5, c1, k60, u'al\x00ce').",
        T0,
    )
    ingest.handle_message("$SYS/broker/version", b"mosquitto \x00 version \xff", T0)
    ingest.handle_message("$SYS/broker/\x00odd", b"1", T0)
    log_line(ingest, "New client connected from 10.0.0.5:1 as dev-1 (p5, c1, k60, u'alice').", T0)
    ingest.flush()
    assert Client.objects.get(client_id="dev-1").online
    assert "\x00" not in BrokerStat.objects.latest_values()["$SYS/broker/version"]
    assert all("\x00" not in c for c in Client.objects.values_list("client_id", flat=True))


# -- exactly once -----------------------------------------------------------------------------
def send(ingest: Ingest, seqs: range, dup: bool = False, mid_of: Any = None) -> None:
    for seq in seqs:
        mid = mid_of(seq) if mid_of else seq
        ingest.handle_message("devices/d/telemetry/seq", b"%d" % seq, T0, mid=mid, dup=dup)


def stored_seqs() -> list[float]:
    return sorted(Reading.objects.values_list("value", flat=True))


def test_a_redelivery_of_committed_messages_is_acknowledged_not_stored_again(
    ingest: Ingest,
) -> None:
    ingest.session_started(session_present=False)
    send(ingest, range(1, 101))
    ingest.flush()  # committed; the monitor dies before its PUBACKs leave
    restarted = Ingest(self_client_id="monitor")
    restarted.session_started(session_present=True)
    send(restarted, range(1, 151), dup=True)  # the broker resends the unacknowledged ones
    send(restarted, range(151, 201))  # then what it had queued
    assert restarted.duplicates == 100
    restarted.flush()
    assert stored_seqs() == [float(i) for i in range(1, 201)]
    client = Client.objects.get(client_id="d")
    assert client.message_count == 200
    assert client.latest.get().count == 200
    assert client.rollups.get(resolution=60).count == 200


def test_the_cursor_follows_packet_ids_across_their_wrap(ingest: Ingest) -> None:
    def mid(seq: int) -> int:
        return (65500 + seq - 1) % 65535 + 1  # 65500 .. 65535, 1, 2, ...

    ingest.session_started(session_present=False)
    send(ingest, range(60), mid_of=mid)
    ingest.flush()
    assert ingest.cursor == mid(59) == 24
    send(ingest, range(50, 70), dup=True, mid_of=mid)  # 10 committed, 10 not
    assert ingest.duplicates == 10
    ingest.flush()
    assert stored_seqs() == [float(i) for i in range(70)]


def test_a_new_session_forgets_the_cursor(ingest: Ingest) -> None:
    ingest.session_started(session_present=False)
    send(ingest, range(1, 11))
    ingest.flush()
    ingest.session_started(session_present=False)  # the broker lost or expired our session
    assert DeliveryCursor.objects.position("monitor") is None
    send(ingest, range(11, 21), mid_of=lambda seq: seq - 10)  # packet ids start again at 1
    ingest.flush()
    restarted = Ingest(self_client_id="monitor")
    restarted.session_started(session_present=True)
    send(restarted, range(5, 11), dup=True, mid_of=lambda seq: seq + 10)  # never committed
    restarted.flush()
    assert stored_seqs() == sorted(
        [float(i) for i in range(1, 21)] + [float(i) for i in range(5, 11)]
    )


def test_qos_0_and_first_deliveries_are_never_taken_for_duplicates(ingest: Ingest) -> None:
    ingest.session_started(session_present=True)  # no cursor stored yet
    send(ingest, range(1, 4), dup=True)
    send(ingest, range(1, 4))
    ingest.flush()
    send(ingest, range(1, 4))  # the same ids again without DUP: new messages
    ingest.handle_message("devices/d/telemetry/seq", b"0", T0, mid=0, dup=True)
    ingest.flush()
    assert len(stored_seqs()) == 10 and ingest.duplicates == 0
