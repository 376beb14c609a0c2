from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.db.models import F, Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.utils import timezone

from brokerauth.models import Account, AuthEvent
from monitor.models import Client
from web import series
from web.views import paginate, query_without_page

SORTS = {
    "-last_seen": ("last seen, newest first", F("last_seen").desc(nulls_last=True)),
    "last_seen": ("last seen, oldest first", F("last_seen").asc(nulls_first=True)),
    "client_id": ("client id", F("client_id").asc()),
}


def search_clients(q: str, status: str, sort: str) -> QuerySet[Client]:
    clients = Client.objects.with_status(status)
    if q:
        clients = clients.filter(Q(client_id__icontains=q) | Q(username__icontains=q))
    _label, order = SORTS.get(sort, SORTS["-last_seen"])
    return clients.order_by(order, "client_id")


@login_required
def client_list(request: HttpRequest) -> HttpResponse:
    q = request.GET.get("q", "").strip()[:255]
    status = request.GET.get("status", "")
    sort = request.GET.get("sort", "-last_seen")
    page = paginate(request, search_clients(q, status, sort))
    context = {
        "page": page,
        "q": q,
        "status": status,
        "sort": sort,
        "statuses": dict(Client.Status.choices),
        "sorts": {key: label for key, (label, _o) in SORTS.items()},
        "query": query_without_page(request),
        "full_query": request.GET.urlencode(),
        "now": timezone.now(),
    }
    # htmx asks for the table alone (search as you type, and the 5-second refresh).
    template = "web/_client_table.html" if request.headers.get("HX-Request") else "web/clients.html"
    return render(request, template, context)


def chart_data(client: Client, period: str) -> dict[str, Any]:
    span, windows = series.PERIODS[period]
    now = timezone.now()
    charts = {}
    for metric, points in series.telemetry(client.pk, now - span, now, 300).items():
        charts[metric] = {
            "t": [p.at.timestamp() for p in points],
            "avg": [p.avg for p in points],
            "min": [p.min for p in points],
            "max": [p.max for p in points],
            "ma": [series.moving_average(points, window) for window in windows],
        }
    return {"metrics": charts, "windows": [_duration(w) for w in windows]}


def _duration(delta: Any) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


@login_required
def client_detail(request: HttpRequest, pk: int) -> HttpResponse:
    client = get_object_or_404(Client, pk=pk)
    period = request.GET.get("period", series.DEFAULT_PERIOD)
    if period not in series.PERIODS:
        period = series.DEFAULT_PERIOD
    events = AuthEvent.objects.none()
    account = None
    if client.username:
        account = Account.objects.filter(username=client.username).first()
        events = AuthEvent.objects.filter(username=client.username)[:20]
    context = {
        "client": client,
        "account": account,
        "sessions": client.sessions.all()[:20],
        "latest": client.latest.all(),
        "events": events,
        "period": period,
        "periods": list(series.PERIODS),
        "charts": chart_data(client, period),
    }
    return render(request, "web/client.html", context)
