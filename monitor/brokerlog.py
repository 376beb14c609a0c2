"""Parse the log lines Mosquitto republishes on `$SYS/broker/log/<level>` into presence events.

Mosquitto 2.0 has no per-client topic; these lines are the presence signal. Formats accepted
(see tests/data/ for lines captured from a real 2.0.11 broker):

    New client connected from 10.0.0.5:43476 as dev-1 (p2, c1, k60, u'alice').
    Client dev-1 disconnected.                              (clean DISCONNECT)
    Client dev-1 closed its connection.
    Client dev-1 has exceeded timeout, disconnecting.
    Client <unknown> disconnected, not authorised.
    Client dev-1 already connected, closing old connection.
    Client dev-1 disconnected due to protocol error.        (and other "due to ..." lines)
    Client dev-1 been disconnected by administrative action.
    Client dev-1 disconnected: Connection reset by peer.    (2.0 socket errors)
    Client dev-1 [10.0.0.5:43476] disconnected: <reason>.   (2.1.1 and later)

Each payload may start with the broker's timestamp ("1712345678: " with `log_timestamp true`,
or a `log_timestamp_format` date); it is skipped, the receive time is used instead.
Client ids and usernames may hold spaces, quotes, parentheses and any UTF-8: the connect line
is therefore read from its end, where the broker's own "(p5, c1, k60, u'...')." tail is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Session.Reason values (kept as plain strings so this module has no Django import).
CLEAN = "clean"
CLOSED = "closed"
TIMEOUT = "timeout"
NOT_AUTHORISED = "not_authorised"
TAKEN_OVER = "taken_over"
PROTOCOL_ERROR = "protocol_error"
ADMINISTRATIVE = "administrative"
OTHER = "other"

UNKNOWN_CLIENT = "<unknown>"

PROTOCOLS = {"1": "mqtt3.1", "2": "mqtt3.1.1", "3": "mqtt3.1.1", "4": "mqtt3.1.1", "5": "mqtt5"}


@dataclass(frozen=True)
class Connected:
    client_id: str
    address: str
    port: int | None
    protocol: str
    clean_start: bool | None
    keepalive: int | None
    username: str


@dataclass(frozen=True)
class Disconnected:
    client_id: str
    reason: str
    detail: str
    address: str = ""
    port: int | None = None


@dataclass(frozen=True)
class TakenOver:
    """The broker is closing an older connection because the same client id connected again."""

    client_id: str


@dataclass(frozen=True)
class LoginRefused:
    """A connection that never became a client: a refused login, or a failed TLS handshake
    or CONNECT (`Client <unknown> ...`, whatever the reason)."""

    client_id: str  # usually "<unknown>": 2.0 refuses before it records the id
    detail: str = field(default="", compare=False)


Event = Connected | Disconnected | TakenOver | LoginRefused

TIMESTAMP = re.compile(r"^\d[\d\-T:. +]*?: ")
CONNECT = re.compile(
    r"^New client connected from (?P<addr>\S+) as (?P<id>.*) "
    r"\((?P<fields>p\d+, c\d, k\d+(?:, [a-z]+\d+)*)(?:, u'(?P<user>.*)')?\)\.$",
    re.DOTALL,
)
DISCONNECT_21 = re.compile(
    r"^Client (?P<id>.*) \[(?P<addr>[^\]]*)\] disconnected(?::|,)? ?(?P<detail>.*?)\.?$",
    re.DOTALL,
)
TAKEOVER = re.compile(r"^Client (?P<id>.*) already connected, closing old connection\.$", re.DOTALL)
# Fixed 2.0 phrases after "Client <id> ", longest first where one is a prefix of another.
DISCONNECT_20 = [
    (" disconnected, not authorised.", NOT_AUTHORISED),
    (" disconnected.", CLEAN),
    (" closed its connection.", CLOSED),
    (" has exceeded timeout, disconnecting.", TIMEOUT),
    (" been disconnected by administrative action.", ADMINISTRATIVE),
    (" disconnected due to protocol error.", PROTOCOL_ERROR),
    (" disconnected due to malformed packet.", PROTOCOL_ERROR),
    (" disconnected due to oversize packet.", PROTOCOL_ERROR),
    (" disconnected due to oversize payload.", PROTOCOL_ERROR),
]
DUE_TO = re.compile(r"^Client (?P<id>.*) disconnected due to (?P<detail>.*)\.$", re.DOTALL)
SOCKET_ERROR = re.compile(
    r"^(?:Client (?P<id1>.*) disconnected: (?P<d1>.*?)\.?"
    r"|Bad socket read/write on client (?P<id2>.*): (?P<d2>.*)"
    r"|Socket error on client (?P<id3>.*), disconnecting\.)$",
    re.DOTALL,
)

# 2.1.1+ reasons are free text: map by keyword, first match wins.
REASON_WORDS = [
    ("taken over", TAKEN_OVER),
    ("already connected", TAKEN_OVER),
    ("not authori", NOT_AUTHORISED),
    ("timeout", TIMEOUT),
    ("timed out", TIMEOUT),
    ("keepalive", TIMEOUT),
    ("keep alive", TIMEOUT),
    ("administrative", ADMINISTRATIVE),
    ("kicked", ADMINISTRATIVE),
    ("protocol", PROTOCOL_ERROR),
    ("malformed", PROTOCOL_ERROR),
    ("oversize", PROTOCOL_ERROR),
    ("too large", PROTOCOL_ERROR),
    ("closed", CLOSED),
    ("connection lost", CLOSED),
    ("reset", CLOSED),
    ("socket", CLOSED),
    ("eof", CLOSED),
    ("normal", CLEAN),
    ("disconnect", CLEAN),
]


def strip_timestamp(line: str) -> str:
    return TIMESTAMP.sub("", line, count=1)


def split_address(text: str) -> tuple[str, int | None]:
    """'10.0.0.5:43476' -> ('10.0.0.5', 43476); '::1:5000' and '[::1]:5000' work too."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        return text, None
    return host.strip("[]"), int(port)


def reason_from_words(detail: str) -> str:
    lowered = detail.lower()
    for word, reason in REASON_WORDS:
        if word in lowered:
            return reason
    return OTHER


def parse_connect(line: str) -> Connected | None:
    match = CONNECT.match(line)
    if match is None:
        return None
    fields = {item[0]: item[1:] for item in match["fields"].split(", ")}
    address, port = split_address(match["addr"])
    clean = fields.get("c")
    keepalive = fields.get("k")
    return Connected(
        client_id=match["id"],
        address=address,
        port=port,
        protocol=PROTOCOLS.get(fields["p"], f"p{fields['p']}"),
        clean_start=None if clean is None else clean == "1",
        keepalive=int(keepalive) if keepalive else None,
        username=match["user"] or "",
    )


def parse_disconnect(line: str) -> Event | None:
    if (match := DISCONNECT_21.match(line)) is not None:
        address, port = split_address(match["addr"])
        detail = match["detail"]
        return disconnect_or_refusal(match["id"], reason_from_words(detail), detail, address, port)
    if (match := TAKEOVER.match(line)) is not None:
        return TakenOver(match["id"])
    if line.startswith("Client "):
        for tail, reason in DISCONNECT_20:
            if line.endswith(tail):
                return disconnect_or_refusal(line[7 : -len(tail)], reason, tail[1:-1])
        if (match := DUE_TO.match(line)) is not None:
            return disconnect_or_refusal(match["id"], OTHER, f"due to {match['detail']}")
    if (match := SOCKET_ERROR.match(line)) is not None:
        client_id = match["id1"] or match["id2"] or match["id3"] or ""
        return disconnect_or_refusal(
            client_id, CLOSED, match["d1"] or match["d2"] or "socket error"
        )
    return None


def disconnect_or_refusal(
    client_id: str, reason: str, detail: str, address: str = "", port: int | None = None
) -> Event:
    if client_id == UNKNOWN_CLIENT:
        # Never connected as a client (refused, or a handshake that failed): not a device.
        return LoginRefused(client_id, detail.strip())
    return Disconnected(client_id, reason, detail.strip(), address, port)


def parse_line(payload: str) -> Event | None:
    """The presence event in one log line, or None for every other line."""
    line = strip_timestamp(payload.rstrip("\r\n"))
    if line.startswith("New client connected from "):
        return parse_connect(line)
    return parse_disconnect(line)
