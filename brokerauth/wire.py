"""go-auth's HTTP wire format: reading its requests and writing answers it understands.

Requests come as JSON (`http_params_mode json`, any method, `acc` an integer) or as a form
(`form`, POST, `acc` a decimal string). Answers: allow = 200 `{"ok": true, "error": ""}`,
deny = 403 `{"ok": false, "error": reason}`, which both the `status` and `json` response
modes read correctly; `MQTT_AUTH_RESPONSE_MODE=text` answers `ok` / the reason instead.
A 5xx means "error" to the broker (drop the client, retry later), never "no".
"""

from __future__ import annotations

import json

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse

MAX_FIELD_BYTES = 65535  # MQTT's own limit on strings


class WireError(ValueError):
    """A request go-auth would never send: answered 400, logged."""


def fields(request: HttpRequest, *names: str) -> dict[str, str]:
    """The named fields of a broker request, as strings; WireError when malformed."""
    data = _form(request) if _is_form(request) else _json(request)
    out = {}
    for name in names:
        value = data.get(name)
        if value is None:
            raise WireError(f"missing field {name!r}")
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise WireError(f"field {name!r} must be a string")
        value = str(value)
        if "\0" in value or len(value.encode("utf-8", "surrogatepass")) > MAX_FIELD_BYTES:
            raise WireError(f"field {name!r} has a NUL character or is too long")
        out[name] = value
    return out


def _is_form(request: HttpRequest) -> bool:
    return request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data")


def _body(request: HttpRequest) -> bytes:
    length = request.META.get("CONTENT_LENGTH") or "0"
    if not length.isdigit() or int(length) > settings.MQTT_AUTH_MAX_BODY:
        raise WireError("body too large")
    try:
        return request.body
    except RequestDataTooBig as exc:
        raise WireError("body too large") from exc


def _form(request: HttpRequest) -> dict[str, object]:
    _body(request)
    if request.method != "POST":
        raise WireError("form parameters need POST")
    return {key: request.POST.get(key) for key in request.POST}


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


def deny(reason: str, status: int = 403) -> HttpResponse:
    if settings.MQTT_AUTH_RESPONSE_MODE == "text":
        return HttpResponse(reason, status=status, content_type="text/plain")
    return JsonResponse({"ok": False, "error": reason}, status=status)
