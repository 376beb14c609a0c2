from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from brokerauth.models import AuthEvent
from web import operatorlog
from web.filters import AuditFilter, OperatorActionFilter
from web.views import paginate, query_without_page


@login_required
def audit(request: HttpRequest) -> HttpResponse:
    """Logins and denials, newest first, filtered like /api/v1/audit/ (one FilterSet)."""
    found = AuditFilter(request.GET, queryset=AuthEvent.objects.all())
    events = found.qs if found.is_valid() else AuthEvent.objects.none()
    context = {
        "filter": found,
        "page": paginate(request, events),
        "query": query_without_page(request),
    }
    return render(request, "web/audit.html", context)


@login_required
def operator_actions(request: HttpRequest) -> HttpResponse:
    """Who changed which account, group or rule, and when (operatorlog), newest first."""
    found = OperatorActionFilter(request.GET, queryset=operatorlog.recent())
    actions = found.qs if found.is_valid() else operatorlog.recent().none()
    context = {
        "filter": found,
        "page": paginate(request, actions),
        "query": query_without_page(request),
        "names": operatorlog.ACTIONS,
    }
    return render(request, "web/operator_actions.html", context)
