"""go-auth's HTTP wire format: reading its requests and writing answers it understands.

Requests come as JSON (`http_params_mode json`, any method, `acc` an integer) or as a form
(`form`, POST, `acc` a decimal string). Answers: allow = 200 `{"ok": true, "error": ""}`,
deny = 403 `{"ok": false, "error": reason}`, which both the `status` and `json` response
modes read correctly; `MQTT_AUTH_RESPONSE_MODE=text` answers an allow with `ok`. A denial is
JSON in every mode (every mode reads any 4xx as a denial, and the project's plugin reads a
JSON one's `limit_username`, CONTRACTS.md 1). A 5xx means "error" to the broker (drop the
client, retry later), never "no".

Passwords are bytes: MQTT allows any, and a plugin may pass bytes that are not UTF-8 as they
are. The body is decoded with `surrogateescape`, so such bytes arrive as lone surrogates that
passwords.as_bytes() turns back into the same bytes, in JSON and in form bodies alike. Every
other field must be valid Unicode without NUL: the database cannot store anything else.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qsl

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse

MAX_FIELD_BYTES = 65535  # MQTT's own limit on strings
BINARY_FIELDS = frozenset({"password"})
# What every refused login answers, whatever the reason: a wrong password, an unknown name, a
# lockout, a client id that belongs to someone else all look the same from outside; the audit
# (AuthEvent) keeps the real reason.
LOGIN_REFUSED = "not authorised"
FORM_TYPE = "application/x-www-form-urlencoded"


class WireError(ValueError):
    """A request go-auth would never send: answered 400, logged."""


def fields(request: HttpRequest, *names: str, optional: tuple[str, ...] = ()) -> dict[str, str]:
    """The named fields of a broker request, as strings ("" for a missing optional one);
    WireError when malformed."""
    data = _form(request) if request.content_type == FORM_TYPE else _json(request)
    out = {}
    for name in (*names, *optional):
        value = data.get(name)
        if value is None and name in optional:
            value = ""
        if value is None:
            raise WireError(f"missing field {name!r}")
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise WireError(f"field {name!r} must be a string")
        out[name] = _check(name, str(value))
    return out


def _check(name: str, value: str) -> str:
    if len(value.encode("utf-8", "surrogatepass")) > MAX_FIELD_BYTES:
        raise WireError(f"field {name!r} is too long")
    if name in BINARY_FIELDS:
        return value
    if "\0" in value:
        raise WireError(f"field {name!r} has a NUL character")
    try:
        value.encode()
    except UnicodeEncodeError as exc:
        raise WireError(f"field {name!r} is not valid UTF-8") from exc
    return value


def _body(request: HttpRequest) -> str:
    length = request.META.get("CONTENT_LENGTH") or "0"
    if not (length.isascii() and length.isdigit()) or int(length) > settings.MQTT_AUTH_MAX_BODY:
        raise WireError("body too large")
    try:
        return request.body.decode("utf-8", "surrogateescape")
    except RequestDataTooBig as exc:
        raise WireError("body too large") from exc


def _form(request: HttpRequest) -> dict[str, object]:
    if request.method != "POST":
        raise WireError("form parameters need POST")
    try:
        pairs = parse_qsl(
            _body(request),
            keep_blank_values=True,
            encoding="utf-8",
            errors="surrogateescape",
            max_num_fields=16,
        )
    except ValueError as exc:
        raise WireError(f"malformed form: {exc}") from exc
    return dict(pairs)


def _json(request: HttpRequest) -> dict[str, object]:
    try:
        data = json.loads(_body(request))
    except (ValueError, RecursionError) as exc:
        raise WireError("body is not JSON") from exc
    if not isinstance(data, dict):
        raise WireError("body is not a JSON object")
    return data


def allow() -> HttpResponse:
    if settings.MQTT_AUTH_RESPONSE_MODE == "text":
        return HttpResponse("ok", content_type="text/plain")
    return JsonResponse({"ok": True, "error": ""})


def deny(reason: str, status: int = 403, **hints: bool) -> HttpResponse:
    return JsonResponse({"ok": False, "error": reason, **hints}, status=status)


def refuse_login(*, limit_username: bool) -> HttpResponse:
    """The one answer to every refused login, with the limiter's hint (CONTRACTS.md 1)."""
    return deny(LOGIN_REFUSED, limit_username=limit_username)
