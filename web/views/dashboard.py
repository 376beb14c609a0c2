from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from brokerauth.models import AuthEvent
from monitor.models import BrokerStat, Client, LoginRefusal, MonitorState
from web import series

SYS = "$SYS/broker/"
COUNTERS = {
    "messages": (SYS + "messages/received", SYS + "messages/sent"),
    "bytes": (SYS + "bytes/received", SYS + "bytes/sent"),
}


def age_seconds(when: datetime | None, now: datetime) -> float | None:
    return None if when is None else max((now - when).total_seconds(), 0.0)


def rate_charts(now: datetime) -> dict[str, Any]:
    """Per-second rates over the last hour, from the sampled $SYS counters (one query)."""
    topics = [topic for pair in COUNTERS.values() for topic in pair]
    samples = series.broker_series(topics, now - timedelta(hours=1), now, 240)
    charts: dict[str, Any] = {}
    for name, (received, sent) in COUNTERS.items():
        charts[name] = {
            label: [[p[0].timestamp(), round(p[1], 3)] for p in series.rates(samples[topic])]
            for label, topic in (("received", received), ("sent", sent))
        }
    return charts


def uptime_text(value: str | None) -> str:
    seconds = int(value.split()[0]) if value and value.split()[0].isdigit() else None
    if seconds is None:
        return "unknown"
    days, rest = divmod(seconds, 86400)
    return f"{days} d {rest // 3600} h {rest % 3600 // 60} min"


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    hour_ago = now - timedelta(hours=1)
    stats = BrokerStat.objects.latest_values()
    state = MonitorState.get()
    stale_after = settings.WEB_STALE_SECONDS
    sys_age = age_seconds(state.last_sys_at, now)
    context = {
        "version": stats.get(SYS + "version", "unknown"),
        "uptime": uptime_text(stats.get(SYS + "uptime")),
        "broker_connected": stats.get(SYS + "clients/connected"),
        "online": Client.objects.online().count(),
        "refused_broker": LoginRefusal.objects.filter(at__gte=hour_ago).count(),
        "refused_auth": AuthEvent.objects.filter(
            kind=AuthEvent.Kind.LOGIN, allowed=False, created_at__gte=hour_ago
        ).count(),
        "state": state,
        "monitor_alive": state.is_alive(now),
        "sys_age": sys_age,
        "sys_stale": sys_age is None or sys_age > stale_after,
        "stale_after": stale_after,
        "charts": rate_charts(now),
    }
    return render(request, "web/dashboard.html", context)
