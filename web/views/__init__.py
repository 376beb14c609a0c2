"""The operator UI: one small module per page family; every page needs a signed-in user.

The page modules share only what is here and web/forms.py; they never import each other."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Page, Paginator
from django.http import HttpRequest, HttpResponse, JsonResponse

from brokerauth.models import Change
from web import series

View = Callable[..., HttpResponse]
log = logging.getLogger("web.views")


class BadQuery(ValueError):
    """A query parameter no page can use: answered 400 with the reason, and logged."""


def live_login_required(view: View) -> View:
    """login_required for what live pages fetch (htmx fragments, chart tails): asked by htmx
    or for JSON while signed out, they answer 401 with HX-Refresh, so that the page reloads
    onto the login page instead of swapping a login form into a table; a browser that opens
    them is sent to the login page. A BadQuery is a 400 with a log line."""
    guarded = login_required(view)

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        fetched = request.headers.get("HX-Request") or "json" in request.headers.get("Accept", "")
        if fetched and not request.user.is_authenticated:
            response = HttpResponse("Sign in again.", status=401, content_type="text/plain")
            response["HX-Refresh"] = "true"
            return response
        try:
            return guarded(request, *args, **kwargs)
        except BadQuery as exc:
            log.warning("bad query on %s: %s", request.path, exc)
            return JsonResponse({"error": str(exc)}, status=400)

    return wrapper


def period_of(request: HttpRequest, default: str = series.DEFAULT_PERIOD) -> str:
    """The chart period the page asks for (?period=1h); an unknown one is the default."""
    period = request.GET.get("period", default)
    return period if period in series.PERIODS else default


def after_of(request: HttpRequest) -> float | None:
    """?after=<epoch seconds>, the x of a live chart's newest point; None when absent."""
    value = request.GET.get("after", "")
    if not value:
        return None
    try:
        after = float(value)
    except ValueError:
        raise BadQuery(f"after={value[:40]!r} is not a number of seconds") from None
    if not math.isfinite(after):
        raise BadQuery(f"after={value[:40]!r} is not a finite number of seconds")
    return after


def staff_required(view: View) -> View:
    """Signed in, and staff: for every page that changes something."""

    @login_required
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_staff:
            raise PermissionDenied("Only staff users may change this.")
        return view(request, *args, **kwargs)

    return wrapper


def paginate(request: HttpRequest, queryset: Any, per_page: int = 50) -> Page[Any]:
    return Paginator(queryset, per_page).get_page(request.GET.get("page"))


def note_policy_change(request: HttpRequest, text: str) -> None:
    """Say what changed and when the broker sees it: each web process re-reads the policy at
    most every POLICY_REFRESH_SECONDS; a broker that follows the change feed (the project's
    plugin) drops its cached decisions then, go-auth only after its cache TTL."""
    messages.success(
        request,
        f"{text} Brokers that follow the change feed (the project's plugin) apply it within "
        f"about POLICY_REFRESH_SECONDS ({settings.POLICY_REFRESH_SECONDS:g} s); go-auth only "
        "after its cache TTL (CACHE_ACL_TTL).",
    )


def rules_changed(request: HttpRequest, text: str) -> None:
    """Rules, groups or memberships changed: tell the following brokers (every cached
    decision may be wrong) and the operator."""
    Change.objects.note_policy(text)
    note_policy_change(request, text)


def query_without_page(request: HttpRequest) -> str:
    params = request.GET.copy()
    params.pop("page", None)
    return params.urlencode()


def live_settings(request: HttpRequest) -> dict[str, Any]:
    """Context processor: the refresh interval every page hands to web/static/web/live.js."""
    return {"live_seconds": settings.WEB_LIVE_SECONDS}
