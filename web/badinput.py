"""Input no page can store or search for is refused before any view: a 400 and a log line.

A NUL character passes Python and SQLite but not PostgreSQL, which raises on it in any query
parameter (a search box, a filter) and any form field: a 500 on one database only. The path,
the query string and form-encoded bodies are checked here, for the UI, the admin and the REST
API alike; the API's JSON bodies are checked by its parser (web/api/parsers.py). The broker's
endpoints under /mqtt/auth/ answer malformed input themselves, in their own wire format.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse, QueryDict

log = logging.getLogger(__name__)
EXEMPT = ("/mqtt/auth/",)


def unstorable(text: str) -> str | None:
    """Why a string cannot be stored or searched for in every database, or None."""
    if "\x00" in text:
        return "contains a NUL character"
    if any("\ud800" <= char <= "\udfff" for char in text):
        return "contains a lone surrogate (not valid Unicode)"
    return None


def first_problem(pairs: Iterable[tuple[str, str]]) -> tuple[str, str] | None:
    for name, value in pairs:
        for text in (name, value):
            problem = unstorable(text)
            if problem:
                return name, problem
    return None


def every_value(data: QueryDict) -> Iterator[tuple[str, str]]:
    return ((name, value) for name, values in data.lists() for value in values)


class RejectUnstorableInput:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith(EXEMPT):
            return self.get_response(request)
        found = self.problem(request)
        if found is None:
            return self.get_response(request)
        where, problem = found
        log.warning("bad input refused: %s %s %s", request.method, where, problem)
        message = f"{where} {problem}."
        if request.path.startswith("/api/"):
            return JsonResponse({"detail": message}, status=400)
        return HttpResponseBadRequest(message, content_type="text/plain; charset=utf-8")

    def problem(self, request: HttpRequest) -> tuple[str, str] | None:
        problem = unstorable(request.path)
        if problem:
            return "the path", problem
        found = first_problem(every_value(request.GET))
        if found:
            return f"query parameter {found[0][:50]!r}", found[1]
        if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            found = first_problem(every_value(request.POST))
            if found:
                return f"form field {found[0][:50]!r}", found[1]
        return None
