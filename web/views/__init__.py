"""The operator UI: one small module per page family; every page needs a signed-in user.

The page modules share only what is here and web/forms.py; they never import each other."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Page, Paginator
from django.http import HttpRequest, HttpResponse

View = Callable[..., HttpResponse]


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
    most every POLICY_REFRESH_SECONDS, then the broker plugin may answer from its own cache."""
    messages.success(
        request,
        f"{text} It reaches the broker within POLICY_REFRESH_SECONDS "
        f"({settings.POLICY_REFRESH_SECONDS:g} s) plus the broker plugin's cache TTL "
        "(CACHE_ACL_TTL, 5 s in the shipped config).",
    )


def query_without_page(request: HttpRequest) -> str:
    params = request.GET.copy()
    params.pop("page", None)
    return params.urlencode()
