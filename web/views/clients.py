from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import F, Q, QuerySet
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from brokerauth import acl
from brokerauth.models import Account, AuthEvent, Change, ClientId, Follower
from monitor.models import Client
from web import charts, operatorlog, series
from web.units import unit_of
from web.views import (
    after_of,
    live_login_required,
    paginate,
    period_of,
    query_without_page,
    staff_required,
)

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


@live_login_required
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
    # htmx asks for the table alone (search as you type, and the live refresh).
    template = "web/_client_table.html" if request.headers.get("HX-Request") else "web/clients.html"
    return render(request, template, context)


def live_context(client: Client) -> dict[str, Any]:
    """What the client page refreshes: the facts, latest values, sessions and decisions."""
    events = AuthEvent.objects.none()
    account = None
    if client.username:
        account = Account.objects.filter(username=client.username).first()
        events = AuthEvent.objects.filter(username=client.username)[:20]
    return {
        "client": client,
        "account": account,
        "sessions": client.sessions.all()[:20],
        "latest": [(value, unit_of(value.metric)) for value in client.latest.all()],
        "events": events,
        "now": timezone.now(),
    }


def owner_context(client: Client) -> dict[str, Any]:
    """Who the client id belongs to (brokerauth/clientids.py): on the page, not in its live
    parts, since it changes only when an operator releases it."""
    owner = ClientId.objects.owner(client.client_id)
    account = Account.objects.filter(username=owner.username).first() if owner else None
    releasable = owner is not None and owner.why == acl.Owner.Why.CLAIMED
    return {"owner": owner, "owner_account": account, "releasable": releasable}


@login_required
def client_detail(request: HttpRequest, pk: int) -> HttpResponse:
    client = get_object_or_404(Client, pk=pk)
    period = period_of(request)
    context = {
        **live_context(client),
        **owner_context(client),
        "period": period,
        "periods": list(series.PERIODS),
        "charts": charts.client_charts(client.pk, period, timezone.now()),
        "reach": Follower.objects.reach(),
    }
    return render(request, "web/client.html", context)


@require_POST
@staff_required
def client_disconnect(request: HttpRequest, pk: int) -> HttpResponse:
    """Kick the client's live session on every broker that follows the change feed."""
    client = get_object_or_404(Client, pk=pk)
    Change.objects.disconnect(client.client_id)
    operatorlog.disconnected(request.user, client, client.client_id)
    messages.success(request, f"Disconnect of {client.client_id} sent. {Follower.objects.reach()}")
    return redirect("client", pk=pk)


@live_login_required
def client_live(request: HttpRequest, pk: int) -> HttpResponse:
    """The client page's live parts, one htmx swap (sessions and decisions out of band)."""
    client = get_object_or_404(Client, pk=pk)
    return render(request, "web/_client_live.html", {**live_context(client), "oob": True})


@live_login_required
def client_series(request: HttpRequest, pk: int) -> HttpResponse:
    """The client's charts as JSON: whole, or their tail from ?after= (web/charts.py)."""
    client = get_object_or_404(Client, pk=pk)
    data = charts.client_charts(client.pk, period_of(request), timezone.now(), after_of(request))
    return JsonResponse(data)
