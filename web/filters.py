"""Query filters shared by the REST API and the UI's list pages (one FilterSet per list).

Every filter has its own label: django-filter makes one from the model field it names, which
reads "Created at is greater than or equal to", and "[invalid name]" for a filter with a
method of its own."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import django_filters as filters
from django import forms
from django.contrib.admin.models import LogEntry
from django.db.models import QuerySet
from django_filters.fields import IsoDateTimeField
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field

from brokerauth.models import AuthEvent, Rule
from monitor.models import BrokerStatSample, Client, ClientQuerySet, Session

MAX_ID = 2**63 - 1


FIRST_INSTANT = datetime.min.replace(tzinfo=UTC)
LAST_INSTANT = datetime.max.replace(tzinfo=UTC)


def as_utc(value: datetime) -> datetime:
    """An aware date and time in UTC; one that leaves the years 1 to 9999 on the way
    (0001-01-01T00:00+01:00) is the first or last instant there is."""
    try:
        return value.astimezone(UTC)
    except OverflowError:
        return FIRST_INSTANT if value.year == 1 else LAST_INSTANT


class InstantField(IsoDateTimeField):
    """An ISO 8601 date and time, as an instant in UTC. PostgreSQL refuses the UTC offsets
    past 15:59 that ISO 8601 and Python allow, so a bound is converted before any query;
    converting may leave the years 1 to 9999 (0001-01-01T00:00+01:00), and then the bound
    is the first or last instant there is, which filters the same."""

    widget = forms.DateTimeInput(attrs={"type": "datetime-local", "step": "1"})

    def to_python(self, value: Any) -> datetime | None:
        parsed = super().to_python(value)
        if parsed is None:
            return None
        return as_utc(parsed)


class InstantFilter(filters.IsoDateTimeFilter):
    field_class = InstantField


def since_filter(field_name: str) -> InstantFilter:
    return InstantFilter(field_name=field_name, lookup_expr="gte", label="Since")


def until_filter(field_name: str) -> InstantFilter:
    return InstantFilter(field_name=field_name, lookup_expr="lte", label="Until")


class ClientFilter(filters.FilterSet):
    status = filters.ChoiceFilter(choices=Client.Status.choices, method="by_status", label="Status")
    username = filters.CharFilter(label="Account")

    class Meta:
        model = Client
        fields = ["status", "username"]

    def by_status(self, queryset: ClientQuerySet, name: str, value: str) -> ClientQuerySet:
        return queryset.with_status(value)


@extend_schema_field(OpenApiTypes.INT)
class IdFilter(filters.NumberFilter):
    """An object's id: an unknown one, or one past what the database stores, matches none."""

    def filter(self, qs: QuerySet[Any], value: Any) -> QuerySet[Any]:
        if value is not None and not 0 < value <= MAX_ID:
            return qs.none()
        return super().filter(qs, value)


class SessionFilter(filters.FilterSet):
    # A number, not a choice of existing clients: an unknown one has no sessions.
    client = IdFilter(field_name="client_id", label="Client")
    client_id = filters.CharFilter(field_name="client__client_id", label="Client id")
    since = since_filter("connected_at")
    until = until_filter("connected_at")

    class Meta:
        model = Session
        fields = ["client", "client_id", "reason", "since", "until"]


class RuleFilter(filters.FilterSet):
    account = filters.CharFilter(field_name="account__username", label="Account")
    group = filters.CharFilter(field_name="group__name", label="Group")

    class Meta:
        model = Rule
        fields = ["account", "group", "allow"]


class AuditFilter(filters.FilterSet):
    username = filters.CharFilter(label="Account")
    client_id = filters.CharFilter(label="Client id")
    kind = filters.ChoiceFilter(choices=AuthEvent.Kind.choices, label="Kind")
    broker = filters.ChoiceFilter(choices=AuthEvent.Broker.choices, label="Broker")
    result = filters.ChoiceFilter(
        choices=[("allow", "allow"), ("deny", "deny")], method="by_result", label="Result"
    )
    since = since_filter("created_at")
    until = until_filter("created_at")

    class Meta:
        model = AuthEvent
        fields = ["username", "client_id", "kind", "broker", "result", "since", "until"]

    def by_result(
        self, queryset: QuerySet[AuthEvent], name: str, value: str
    ) -> QuerySet[AuthEvent]:
        return queryset.filter(allowed=value == "allow")


class BrokerSampleFilter(filters.FilterSet):
    topic = filters.CharFilter(label="Topic")
    since = since_filter("at")
    until = until_filter("at")

    class Meta:
        model = BrokerStatSample
        fields = ["topic", "since", "until"]


class OperatorActionFilter(filters.FilterSet):
    user = filters.CharFilter(field_name="user__username", label="Operator")
    kind = filters.ChoiceFilter(
        field_name="content_type__model",
        choices=[
            ("account", "account"),
            ("group", "group"),
            ("rule", "rule"),
            ("client", "client"),
            ("change", "change feed note"),
        ],
        label="Object",
    )
    since = since_filter("action_time")
    until = until_filter("action_time")

    class Meta:
        model = LogEntry
        fields = ["user", "kind", "since", "until"]
