from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone

from brokerauth.models import AuthEvent
from monitor.models import BrokerStat, LoginRefusal, MonitorState
from web import charts, series
from web.views import after_of, live_login_required, period_of

SYS = "$SYS/broker/"
# The dashboard's charts start on the last hour; the client page's on the last day.
DEFAULT_PERIOD = "1h"


def age_seconds(when: datetime | None, now: datetime) -> float | None:
    return None if when is None else max((now - when).total_seconds(), 0.0)


def uptime_text(value: str | None) -> str:
    seconds = int(value.split()[0]) if value and value.split()[0].isdigit() else None
    if seconds is None:
        return "unknown"
    days, rest = divmod(seconds, 86400)
    return f"{days} d {rest // 3600} h {rest % 3600 // 60} min"


def status(now: datetime) -> dict[str, Any]:
    """The cards and warnings: what the live fragment refreshes (six queries)."""
    hour_ago = now - timedelta(hours=1)
    stats = BrokerStat.objects.latest_values()
    state = MonitorState.get()
    stale_after = settings.WEB_STALE_SECONDS
    sys_age = age_seconds(state.last_sys_at, now)
    return {
        "version": stats.get(SYS + "version", "unknown"),
        "uptime": uptime_text(stats.get(SYS + "uptime")),
        # The card and the banner read the same numbers as the list, the API and /metrics.
        "presence": state.presence(),
        "refused_broker": LoginRefusal.objects.filter(at__gte=hour_ago).count(),
        "refused_auth": AuthEvent.objects.filter(
            kind=AuthEvent.Kind.LOGIN, allowed=False, created_at__gte=hour_ago
        ).count(),
        "state": state,
        "monitor_alive": state.is_alive(now),
        "sys_age": sys_age,
        "sys_stale": sys_age is None or sys_age > stale_after,
        "stale_after": stale_after,
        "now": now,
    }


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    period = period_of(request, DEFAULT_PERIOD)
    context = {
        **status(now),
        "period": period,
        "periods": list(series.PERIODS),
        "charts": charts.broker_charts(period, now),
    }
    return render(request, "web/dashboard.html", context)


@live_login_required
def dashboard_live(request: HttpRequest) -> HttpResponse:
    return render(request, "web/_dashboard_live.html", status(timezone.now()))


@live_login_required
def broker_series(request: HttpRequest) -> HttpResponse:
    """The broker charts as JSON: whole, or their tail from ?after= (web/charts.py)."""
    period = period_of(request, DEFAULT_PERIOD)
    return JsonResponse(charts.broker_charts(period, timezone.now(), after_of(request)))
