"""Query filters shared by the REST API and the UI's list pages (one FilterSet per list)."""

from __future__ import annotations

import django_filters as filters
from django.db.models import QuerySet

from brokerauth.models import AuthEvent, Rule
from monitor.models import BrokerStatSample, Client, ClientQuerySet, Session


class ClientFilter(filters.FilterSet):
    status = filters.ChoiceFilter(choices=Client.Status.choices, method="by_status")
    username = filters.CharFilter()

    class Meta:
        model = Client
        fields = ["status", "username"]

    def by_status(self, queryset: ClientQuerySet, name: str, value: str) -> ClientQuerySet:
        return queryset.with_status(value)


class SessionFilter(filters.FilterSet):
    client_id = filters.CharFilter(field_name="client__client_id")
    since = filters.IsoDateTimeFilter(field_name="connected_at", lookup_expr="gte")
    until = filters.IsoDateTimeFilter(field_name="connected_at", lookup_expr="lte")

    class Meta:
        model = Session
        fields = ["client", "client_id", "reason", "since", "until"]


class RuleFilter(filters.FilterSet):
    account = filters.CharFilter(field_name="account__username")
    group = filters.CharFilter(field_name="group__name")

    class Meta:
        model = Rule
        fields = ["account", "group", "allow"]


class AuditFilter(filters.FilterSet):
    username = filters.CharFilter()
    client_id = filters.CharFilter()
    result = filters.ChoiceFilter(
        choices=[("allow", "allow"), ("deny", "deny")], method="by_result"
    )
    since = filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    until = filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lte")

    class Meta:
        model = AuthEvent
        fields = ["username", "client_id", "kind", "result", "since", "until"]

    def by_result(
        self, queryset: QuerySet[AuthEvent], name: str, value: str
    ) -> QuerySet[AuthEvent]:
        return queryset.filter(allowed=value == "allow")


class BrokerSampleFilter(filters.FilterSet):
    since = filters.IsoDateTimeFilter(field_name="at", lookup_expr="gte")
    until = filters.IsoDateTimeFilter(field_name="at", lookup_expr="lte")

    class Meta:
        model = BrokerStatSample
        fields = ["topic", "since", "until"]
