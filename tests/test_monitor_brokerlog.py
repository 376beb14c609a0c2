"""The log-line parser, against lines captured from a real Mosquitto 2.0.11 and 2.1-style lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from monitor import brokerlog

DATA = Path(__file__).parent / "data"


def captured(name: str) -> dict[str, list[brokerlog.Event | None]]:
    by_scenario: dict[str, list[brokerlog.Event | None]] = {}
    for line in (DATA / name).read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        by_scenario.setdefault(record["scenario"], []).append(
            brokerlog.parse_line(record["payload"])
        )
    return {key: [e for e in events if e is not None] for key, events in by_scenario.items()}


LOG_20 = captured("mosquitto-2.0.11-log.jsonl")
LOG_21 = captured("mosquitto-2.1-style-log.jsonl")


def test_it_reads_a_connect_line_with_address_protocol_clean_start_keepalive_and_username() -> None:
    connected, disconnected = LOG_20["mqtt5 clean disconnect"]
    assert connected == brokerlog.Connected(
        client_id="dev-1",
        address="127.0.0.1",
        port=connected.port,  # type: ignore[union-attr]
        protocol="mqtt5",
        clean_start=True,
        keepalive=60,
        username="alice",
    )
    assert disconnected == brokerlog.Disconnected("dev-1", brokerlog.CLEAN, "disconnected")


@pytest.mark.parametrize(
    ("scenario", "protocol", "clean"),
    [
        ("mqtt311 persistent session, clean disconnect", "mqtt3.1.1", False),
        ("mqtt31", "mqtt3.1", True),
    ],
)
def test_it_tells_protocol_versions_and_clean_start_apart(
    scenario: str, protocol: str, clean: bool
) -> None:
    connected = LOG_20[scenario][0]
    assert isinstance(connected, brokerlog.Connected)
    assert (connected.protocol, connected.clean_start) == (protocol, clean)


def test_a_client_id_and_username_with_spaces_quotes_parentheses_and_non_ascii_survive() -> None:
    connected, disconnected = LOG_20["weird client id and username"]
    assert isinstance(connected, brokerlog.Connected)
    assert connected.client_id == "dev 1 \"quoted\" 'single' Zoë-温度 (p2, c1)"
    assert connected.username == 'Zoë O\'Brien "the sensor" 温度'
    assert connected.keepalive == 60
    assert isinstance(disconnected, brokerlog.Disconnected)
    assert disconnected.client_id == connected.client_id


@pytest.mark.parametrize(
    ("scenario", "reason"),
    [
        ("connection dropped without DISCONNECT", brokerlog.CLOSED),
        ("keepalive timeout", brokerlog.TIMEOUT),
        ("protocol error", brokerlog.PROTOCOL_ERROR),
    ],
)
def test_each_way_of_leaving_has_its_reason(scenario: str, reason: str) -> None:
    event = LOG_20[scenario][-1]
    assert isinstance(event, brokerlog.Disconnected)
    assert event.reason == reason


def test_a_takeover_closes_the_old_connection_before_the_new_one_opens() -> None:
    events = LOG_20["session taken over"]
    assert [type(e).__name__ for e in events] == [
        "Connected",
        "TakenOver",
        "Connected",
        "Disconnected",
    ]


@pytest.mark.parametrize("scenario", ["bad password", "no username"])
def test_refused_logins_are_told_apart_from_disconnects(scenario: str) -> None:
    assert LOG_20[scenario] == [brokerlog.LoginRefused("<unknown>")]


def test_lines_that_are_not_about_presence_are_ignored() -> None:
    assert LOG_20["plain TCP, no TLS handshake"] == []
    assert brokerlog.parse_line("1795747775: mosquitto version 2.0.11 running") is None
    assert brokerlog.parse_line("") is None


@pytest.mark.parametrize(
    ("scenario", "reason"),
    [
        ("clean disconnect", brokerlog.CLEAN),
        ("closed", brokerlog.CLOSED),
        ("timeout", brokerlog.TIMEOUT),
        ("taken over", brokerlog.TAKEN_OVER),
        ("protocol error", brokerlog.PROTOCOL_ERROR),
        ("administrative", brokerlog.ADMINISTRATIVE),
    ],
)
def test_it_reads_the_2_1_disconnect_lines_with_their_address(scenario: str, reason: str) -> None:
    (event,) = LOG_21[scenario]
    assert event == brokerlog.Disconnected("dev-1", reason, event.detail, "10.0.0.5", 43476)  # type: ignore[union-attr]


def test_2_1_refusals_and_odd_ids() -> None:
    assert LOG_21["not authorised"] == [brokerlog.LoginRefused("<unknown>")]
    (event,) = LOG_21["ipv6 and weird id"]
    assert isinstance(event, brokerlog.Disconnected)
    assert event.client_id == 'dev 1 "quoted" Zoë [::1]:5000'
    assert (event.address, event.port, event.reason) == ("::1", 5000, brokerlog.CLOSED)


@pytest.mark.parametrize(
    "line",
    [
        "Client dev-1 disconnected due to out of memory.",
        "Client dev-1 disconnected: Connection reset by peer.",
        "Socket error on client dev-1, disconnecting.",
        "Bad socket read/write on client dev-1: Connection lost",
        "Client dev-1 been disconnected by administrative action.",
        "Client dev-1 disconnected due to malformed packet.",
    ],
)
def test_other_2_0_lines_from_the_source_are_disconnects(line: str) -> None:
    event = brokerlog.parse_line(line)
    assert isinstance(event, brokerlog.Disconnected)
    assert event.client_id == "dev-1"
