from __future__ import annotations

from typing import Any

from django.db.models import OuterRef, QuerySet
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action, api_view, permission_classes
from rest_framework.pagination import PageNumberPagination
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from brokerauth import topics
from brokerauth.models import Account, AuthEvent, Change, ClientId, Follower, Group, Rule
from monitor import testservice
from monitor.models import BrokerStat, BrokerStatSample, Client, Session
from web import filters, operatorlog, series
from web.api import serializers as s
from web.api.permissions import StaffOnly


class LoggedChanges(viewsets.GenericViewSet):
    """Every create, update and delete through the API is an operator action (operatorlog).
    Groups and rules also tell the brokers that follow the change feed (`feed_note`);
    accounts do so in their own methods (Account.edit, Account.remove)."""

    feed_note = True

    def perform_create(self, serializer: Any) -> None:
        serializer.save()
        operatorlog.added(self.request.user, serializer.instance)
        self._note(f"{serializer.instance} added")

    def perform_update(self, serializer: Any) -> None:
        fields = [name for name in serializer.validated_data if name != "password"]
        serializer.save()
        note = "Password set." if "password" in serializer.validated_data else ""
        operatorlog.changed(self.request.user, serializer.instance, fields, note=note)
        self._note(f"{serializer.instance} changed")

    def perform_destroy(self, instance: Any) -> None:
        operatorlog.deleted(self.request.user, instance)
        text = f"{instance} deleted"
        instance.delete()
        self._note(text)

    def _note(self, why: str) -> None:
        if self.feed_note:
            Change.objects.note_policy(f"{self.get_queryset().model.__name__.lower()} {why}")


class AccountViewSet(LoggedChanges, viewsets.ModelViewSet):
    """MQTT accounts. Passwords are write-only: set one, or have one generated (shown once)."""

    queryset = Account.objects.prefetch_related("groups", "lockouts")
    serializer_class = s.AccountSerializer
    feed_note = False
    filterset_fields = ["is_active", "is_superuser"]
    search_fields = ["username", "client_id", "description"]
    ordering_fields = ["username", "created_at", "last_login_at"]

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = s.AccountSerializer(data=request.data, context=self.get_serializer_context())
        serializer.is_valid(raise_exception=True)
        given = serializer.validated_data.get("password")
        account = serializer.save()
        operatorlog.added(request.user, account)
        data = dict(serializer.data)
        if not given:
            data["password"] = serializer.secret  # generated: shown in this answer only
        return Response(data, status=status.HTTP_201_CREATED)

    @extend_schema(request=s.PasswordSerializer, responses={204: None})
    @action(detail=True, methods=["post"], url_path="set-password")
    def set_password(self, request: Request, pk: str | None = None) -> Response:
        account = self.get_object()
        serializer = s.PasswordSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        account.change_password(serializer.validated_data["password"])
        operatorlog.changed(request.user, account, note="Password set.")
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses=s.GeneratedPasswordSerializer)
    @action(detail=True, methods=["post"], url_path="reset-password")
    def reset_password(self, request: Request, pk: str | None = None) -> Response:
        account = self.get_object()
        password = account.reset_password()
        operatorlog.changed(request.user, account, note="Password reset.")
        return Response({"username": account.username, "password": password})

    def perform_destroy(self, instance: Account) -> None:
        operatorlog.deleted(self.request.user, instance)
        instance.remove()


class ClientIdViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Who owns each client id: the first account to use it (or the one bound to it), until
    released. DELETE releases one, so that another account may use it (not a bound one:
    change the account's binding first). Ids reserved for the service and ids under an
    account's prefix are not listed here: a client's `owner` says."""

    queryset = ClientId.objects.select_related("account")
    serializer_class = s.ClientIdSerializer
    filterset_fields = {"account__username": ["exact"], "client_id": ["exact"]}
    search_fields = ["client_id", "account__username"]
    ordering_fields = ["client_id", "created_at"]

    def perform_destroy(self, instance: ClientId) -> None:
        instance.release()  # a bound id: ValidationError, a 400 (web/api/errors.py)
        note = f"Released client id {instance.client_id}."
        operatorlog.changed(self.request.user, instance.account, note=note)


class GroupViewSet(LoggedChanges, viewsets.ModelViewSet):
    queryset = Group.objects.prefetch_related("accounts")
    serializer_class = s.GroupSerializer
    search_fields = ["name", "description"]


class RuleViewSet(LoggedChanges, viewsets.ModelViewSet):
    queryset = Rule.objects.select_related("account", "group")
    serializer_class = s.RuleSerializer
    filterset_class = filters.RuleFilter
    search_fields = ["pattern", "description"]
    ordering_fields = ["priority", "pattern", "created_at"]


@extend_schema(
    parameters=[s.ExplainQuerySerializer], responses=s.DecisionSerializer, methods=["GET"]
)
@extend_schema(request=s.ExplainSerializer, responses=s.DecisionSerializer, methods=["POST"])
@api_view(["GET", "POST"])
@permission_classes([IsAuthenticated])
def explain(request: Request) -> Response:
    """Which rule decides a (username, client id, topic, access) request, and why."""
    if request.method == "GET":
        serializer: s.ExplainSerializer = s.ExplainQuerySerializer(data=request.query_params)
    else:
        serializer = s.ExplainSerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    v = serializer.validated_data
    try:
        decision = Account.objects.explain_acl(
            v["username"], v["client_id"], v["topic"], v["access"], topics.DIALECTS[v["broker"]]
        )
    except topics.TopicError as exc:
        return Response({"topic": [str(exc)]}, status=status.HTTP_400_BAD_REQUEST)
    rule = decision.rule
    return Response(
        {
            "allowed": decision.allowed,
            "reason": decision.reason,
            "rule_id": rule.id if rule else None,
            "rule": rule.describe() if rule else None,
        }
    )


class ClientPagination(PageNumberPagination):
    """`page_size` up to 1,000: a whole fleet's online set in one request, not twenty."""

    page_size_query_param = "page_size"
    max_page_size = 1000


class ClientViewSet(viewsets.ReadOnlyModelViewSet):
    """Clients seen by the monitor. `status`: online, offline, never_seen, uncertain
    (online ones whose evidence predates an outage or a disagreeing count)."""

    filterset_class = filters.ClientFilter
    pagination_class = ClientPagination
    search_fields = ["client_id", "username"]
    ordering_fields = ["last_seen", "client_id", "first_seen", "message_count"]

    def get_queryset(self) -> QuerySet[Client]:
        clients = Client.objects.annotate(
            claimed_by=ClientId.objects.claimant_of(OuterRef("client_id"))
        )
        if self.action == "retrieve":
            return clients.prefetch_related("latest")
        return clients

    @extend_schema(request=s.DisconnectSerializer, responses={202: s.DisconnectedSerializer})
    @action(detail=False, methods=["post"], permission_classes=[StaffOnly])
    def disconnect(self, request: Request) -> Response:
        """Kick the client's live session on every broker that follows the change feed
        (the project's Mosquitto plugin), within about a second. Audited as an operator
        action. Accepted, not done: `followers` says whether any broker will act on it."""
        serializer = s.DisconnectSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        client_id = serializer.validated_data["client_id"]
        change = Change.objects.disconnect(client_id)
        known = Client.objects.filter(client_id=client_id).first()
        operatorlog.disconnected(request.user, known or change, client_id)
        body = {
            "client_id": client_id,
            "seq": change.seq,
            "followers": Follower.objects.live().count(),
            "detail": Follower.objects.reach(),
        }
        return Response(s.DisconnectedSerializer(body).data, status=status.HTTP_202_ACCEPTED)

    def get_serializer_context(self) -> dict[str, Any]:
        prefixes = Account.objects.prefix_index()
        return {**super().get_serializer_context(), "client_id_prefixes": prefixes}

    def get_serializer_class(self) -> type[s.ClientSerializer]:
        return s.ClientDetailSerializer if self.action == "retrieve" else s.ClientSerializer


class SessionViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = Session.objects.select_related("client")
    serializer_class = s.SessionSerializer
    filterset_class = filters.SessionFilter
    ordering_fields = ["connected_at", "disconnected_at"]


@extend_schema(parameters=[s.TelemetryQuerySerializer], responses=s.TelemetrySerializer)
@api_view(["GET"])
def telemetry(request: Request) -> Response:
    """Readings of one client, per metric, downsampled to at most `points` time buckets
    (each with average, min, max and count). `period` (1h, 6h, 24h, 7d, 30d) or `since`
    and `until`; the default is the last 24 hours. Buckets of a minute or more are read from
    the monitor's per-minute or per-hour rollups: they are then whole minutes or hours, and a
    bucket's `at` is the start of its first one."""
    query = s.TelemetryQuerySerializer(data=request.query_params)
    query.is_valid(raise_exception=True)
    q = query.validated_data
    client = _client(q["client"])
    # Buckets are aligned on the epoch, so a range holds one more than it is divided into.
    buckets = max(q["points"] - 1, 1)
    data = series.telemetry(client.pk, q["since"], q["until"], buckets, q.get("metric"))
    body = {
        "client": client.client_id,
        "since": q["since"],
        "until": q["until"],
        "series": [{"metric": metric, "points": points} for metric, points in data.items()],
    }
    return Response(s.TelemetrySerializer(body).data)


def _client(key: str) -> Client:
    if key.isdigit():
        found = Client.objects.filter(pk=int(key)).first()
        if found is not None:
            return found
    return get_object_or_404(Client, client_id=key)


class BrokerStatViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """Latest value of every $SYS topic the monitor has seen."""

    queryset = BrokerStat.objects.all()
    serializer_class = s.BrokerStatSerializer
    pagination_class = None
    search_fields = ["topic"]


class BrokerSampleViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """Samples of the numeric $SYS topics over time."""

    queryset = BrokerStatSample.objects.all()
    serializer_class = s.BrokerStatSampleSerializer
    filterset_class = filters.BrokerSampleFilter


class AuditViewSet(viewsets.ReadOnlyModelViewSet):
    """Every login and every ACL denial. `result`: allow or deny."""

    queryset = AuthEvent.objects.all()
    serializer_class = s.AuthEventSerializer
    filterset_class = filters.AuditFilter
    ordering_fields = ["created_at"]


class OperatorActionViewSet(viewsets.ReadOnlyModelViewSet):
    """Who changed which account, group or rule, and when: from the UI, the API and the
    admin alike (Django admin's LogEntry). `action`: added, changed or deleted."""

    queryset = operatorlog.recent()
    serializer_class = s.OperatorActionSerializer
    filterset_class = filters.OperatorActionFilter
    ordering_fields = ["action_time"]


@extend_schema(request=None, responses=s.RoundTripSerializer)
@api_view(["POST"])
@permission_classes([StaffOnly])
def test_service(request: Request) -> Response:
    """Run the live round trip (broker, auth endpoints, database, $SYS freshness)."""
    steps = testservice.configured_round_trip()
    return Response(s.RoundTripSerializer({"ok": testservice.passed(steps), "steps": steps}).data)
