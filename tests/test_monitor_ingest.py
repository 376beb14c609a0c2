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
from django.db import IntegrityError, connection

from brokerauth.models import Account, Rule
from monitor import telemetry
from monitor.ingest import Ingest
from monitor.models import Client, LatestValue, MonitorState, Reading

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
    def send(at: datetime) -> None:
        for i in range(clients):
            ingest.handle_message(f"devices/dev-{i}/telemetry", b'{"t": 1, "h": 2}', at)

    send(T0)
    ingest.flush()  # creates the clients and the state row
    send(T0 + timedelta(seconds=1))
    # savepoint, readings, rollups, latest values, counters, state, release; PostgreSQL's
    # COPY of the readings goes past Django's query log
    with django_assert_num_queries(7 if connection.vendor == "sqlite" else 6):
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

    def fail(batch: object) -> None:
        tries.append(batch)
        raise IntegrityError("the database went away during the retry")

    monkeypatch.setattr(ingest, "write", fail)
    with pytest.raises(IntegrityError):
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
