"""Telemetry payloads: from (topic, bytes) to readings, or a reason why not.

Convention (TELEMETRY_TOPICS): `<prefix>/<client id>/telemetry` carries a JSON object whose
values are all finite numbers (`{"temperature": 21.5, "humidity": 40}`);
`<prefix>/<client id>/telemetry/<metric>` carries one plain number (`21.5`). Anything else is
a bad payload: not UTF-8, not JSON, NaN or infinity, strings, booleans, nested objects, too
large, too many metrics. A bad message is rejected whole, so a device never half-reports.

Names are checked against what both databases can store, before a message joins a batch: JSON
escapes can spell a lone surrogate (`{"\\ud800": 1}`), which neither SQLite's nor PostgreSQL's
driver can encode, and NUL (`{"a\\u0000b": 1}`), which PostgreSQL text cannot hold. One such
name used to fail every batch it joined (issue 9).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

MAX_METRIC_LENGTH = 100
MAX_METRICS = 200
MAX_CLIENT_ID_LENGTH = 255  # Client.client_id's max_length
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class BadPayload(ValueError):
    """Why a telemetry message was not stored (short, safe to log and show)."""


@dataclass(frozen=True)
class Telemetry:
    client_id: str
    values: list[tuple[str, float]]


def _reject_constant(name: str) -> float:
    raise BadPayload(f"{name} is not a number")


def number(value: object, metric: str) -> float:
    # bool is an int subclass: true/false are not measurements.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadPayload(f"{metric}: {type(value).__name__} is not a number")
    try:
        result = float(value)
    except OverflowError as exc:
        raise BadPayload(f"{metric}: number out of range") from exc
    if not math.isfinite(result):
        raise BadPayload(f"{metric}: not a finite number")
    return result


def storable(text: str) -> bool:
    """True when both databases can store `text`: no NUL, no lone surrogate."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # surrogates: only JSON escapes and tests make them
        return False
    return True


def check_metric(name: str) -> str:
    if not name or len(name) > MAX_METRIC_LENGTH or "/" in name or not storable(name):
        raise BadPayload(f"bad metric name {name[:40]!r}")
    return name


def decode(payload: bytes, max_bytes: int) -> object:
    if len(payload) > max_bytes:
        raise BadPayload(f"payload of {len(payload)} bytes is larger than {max_bytes}")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadPayload("not UTF-8") from exc
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError as exc:
        raise BadPayload("nested too deeply") from exc
    except ValueError as exc:  # JSONDecodeError, and int() of a 5000-digit number
        if isinstance(exc, BadPayload):
            raise
        raise BadPayload("not JSON") from exc


def client_and_metric(topic: str) -> tuple[str, str | None]:
    """`devices/dev-1/telemetry` -> ("dev-1", None); `.../telemetry/temp` -> ("dev-1", "temp")."""
    levels = topic.split("/")
    if len(levels) in (3, 4) and levels[2] == "telemetry" and levels[1]:
        if len(levels[1]) > MAX_CLIENT_ID_LENGTH:
            raise BadPayload(f"client id longer than {MAX_CLIENT_ID_LENGTH} characters")
        if not storable(levels[1]):
            raise BadPayload("client id with NUL or a lone surrogate")
        return levels[1], check_metric(levels[3]) if len(levels) == 4 else None
    raise BadPayload("topic is not <prefix>/<client id>/telemetry[/<metric>]")


def parse(topic: str, payload: bytes, max_bytes: int = 65536) -> Telemetry:
    """The readings in one message; raises BadPayload."""
    client_id, metric = client_and_metric(topic)
    data = decode(payload, max_bytes)
    if metric is not None:
        return Telemetry(client_id, [(metric, number(data, metric))])
    if not isinstance(data, dict):
        raise BadPayload(f"expected a JSON object, got {type(data).__name__}")
    if not data:
        raise BadPayload("empty object")
    if len(data) > MAX_METRICS:
        raise BadPayload(f"{len(data)} metrics, more than {MAX_METRICS}")
    return Telemetry(client_id, [(check_metric(k), number(v, k)) for k, v in data.items()])


def client_id_of(topic: str) -> str:
    """Best effort, for counting a bad message against someone."""
    levels = topic.split("/")
    client_id = levels[1][:MAX_CLIENT_ID_LENGTH] if len(levels) > 1 else ""
    return storable_text(client_id)


def storable_text(text: str, max_length: int | None = None) -> str:
    """`text` made storable (NUL and lone surrogates become U+FFFD), cut to `max_length`:
    for what must be kept even when malformed, such as broker log lines and $SYS values."""
    if not storable(text):
        text = UNSTORABLE.sub("\ufffd", text)
    return text[:max_length] if max_length is not None else text
