from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from django.contrib.admin.models import LogEntry
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from brokerauth import acl, clientids, passwords, topics
from brokerauth.models import Account, AuthEvent, ClientId, Credential, Group, Lockout, Rule
from monitor.models import BrokerStat, BrokerStatSample, Client, LatestValue, Session
from web import filters, operatorlog, series

# A telemetry query reads at most this much time, and never before EARLIEST: the buckets are
# aligned on whole hours before `since`, which must stay a date Python can represent.
MAX_SPAN = timedelta(days=400)
EARLIEST = datetime(1, 1, 2, tzinfo=UTC)


class LockoutSerializer(serializers.ModelSerializer):
    class Meta:
        model = Lockout
        fields = ["source", "failures", "last_failure_at", "locked_until"]
        extra_kwargs = {"source": {"help_text": "The client address (IPv6: its /64); empty: any."}}


class AccountSerializer(serializers.ModelSerializer):
    password = serializers.CharField(
        write_only=True,
        required=False,
        min_length=passwords.MIN_PASSWORD_LENGTH,
        max_length=passwords.MAX_PASSWORD_BYTES,
        validators=[passwords.validate],
        style={"input_type": "password"},
        help_text="A chosen password (bcrypt). Left out on create: a secret is generated "
        "(PBKDF2-SHA512, checked in microseconds) and returned once as `password`.",
    )
    groups = serializers.SlugRelatedField(
        many=True, slug_field="name", queryset=Group.objects.all(), required=False
    )
    credential = serializers.CharField(
        source="credential_text",
        read_only=True,
        help_text="The kind of secret and how it is stored: a generated secret (PBKDF2-SHA512), "
        "a chosen password (bcrypt) or a hash imported from a mosquitto_passwd file.",
    )
    credential_kind = serializers.ChoiceField(
        source="credential",
        choices=Credential.choices,
        read_only=True,
        help_text="generated: never locked out (it cannot be guessed online); password and "
        "imported: locked out per client address after failed logins.",
    )
    lockouts = LockoutSerializer(many=True, read_only=True)
    secret: str = ""

    class Meta:
        model = Account
        fields = [
            "id",
            "username",
            "password",
            "is_active",
            "is_superuser",
            "client_id",
            "client_id_prefix",
            "description",
            "groups",
            "credential",
            "credential_kind",
            "created_at",
            "changed_at",
            "last_login_at",
            "lockouts",
        ]

    def create(self, validated_data: dict[str, Any]) -> Account:
        groups = validated_data.pop("groups", [])
        password = validated_data.pop("password", "")
        account = Account(**validated_data)
        # Given: a chosen password; left out: a generated secret, returned once by the view.
        self.secret = account.save_new(password)
        account.groups.set(groups)
        return account

    def update(self, instance: Account, validated_data: dict[str, Any]) -> Account:
        groups = validated_data.pop("groups", None)
        instance.edit(**validated_data)
        if groups is not None:
            instance.groups.set(groups)
        return instance


class PasswordSerializer(serializers.Serializer):
    password = serializers.CharField(
        min_length=passwords.MIN_PASSWORD_LENGTH,
        max_length=passwords.MAX_PASSWORD_BYTES,
        validators=[passwords.validate],
    )


class GeneratedPasswordSerializer(serializers.Serializer):
    username = serializers.CharField()
    password = serializers.CharField(
        help_text="A generated secret, shown once; only its PBKDF2-SHA512 hash is kept."
    )


class OwnerSerializer(serializers.Serializer):
    username = serializers.CharField()
    why = serializers.CharField(
        help_text="reserved for the service account, under the client id prefix of account, "
        "or in use by account (the first to use it, or bound to it, until released)."
    )


class ClientIdSerializer(serializers.ModelSerializer):
    account: serializers.SlugRelatedField = serializers.SlugRelatedField(
        slug_field="username", read_only=True
    )
    bound = serializers.SerializerMethodField(
        help_text="The account is bound to this client id: change its binding to release it."
    )

    class Meta:
        model = ClientId
        fields = ["id", "client_id", "account", "bound", "created_at"]

    def get_bound(self, claim: ClientId) -> bool:
        return claim.account.client_id == claim.client_id


class GroupSerializer(serializers.ModelSerializer):
    accounts = serializers.SlugRelatedField(
        many=True, slug_field="username", queryset=Account.objects.all(), required=False
    )

    class Meta:
        model = Group
        fields = ["id", "name", "description", "accounts", "created_at", "changed_at"]


class RuleSerializer(serializers.ModelSerializer):
    """A rule belongs to one account or one group: a new rule (and a PUT) names exactly one of
    them; a PATCH that names one moves the rule to it."""

    account = serializers.SlugRelatedField(
        slug_field="username", queryset=Account.objects.all(), required=False
    )
    group = serializers.SlugRelatedField(
        slug_field="name", queryset=Group.objects.all(), required=False
    )
    access_name = serializers.SerializerMethodField()

    class Meta:
        model = Rule
        fields = [
            "id",
            "account",
            "group",
            "pattern",
            "access",
            "access_name",
            "allow",
            "priority",
            "description",
            "created_at",
            "changed_at",
        ]

    def get_access_name(self, rule: Rule) -> str:
        access = acl.Access(rule.access)
        return access.label if access in acl.RULE_ACCESSES else str(rule.access)

    def validate_pattern(self, value: str) -> str:
        try:
            topics.validate_pattern(value)
        except topics.TopicError as exc:
            raise serializers.ValidationError(str(exc)) from exc
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        named = [owner for owner in ("account", "group") if attrs.get(owner) is not None]
        if len(named) == 2 or (not named and not self.partial):
            raise serializers.ValidationError(
                "A rule belongs to exactly one account or one group: give one of them."
            )
        if named:
            attrs["group" if named == ["account"] else "account"] = None
        return attrs


class ExplainSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=255)
    client_id = serializers.CharField(max_length=255, allow_blank=True, default="")
    topic = serializers.CharField(max_length=65535)
    access = serializers.ChoiceField(
        choices=[
            *(access.label for access in acl.REQUEST_ACCESSES),
            "read",
            "write",
            *(str(int(access)) for access in acl.REQUEST_ACCESSES),
        ],
        help_text="publish (2, write), subscribe (4) or receive (1, read).",
    )
    broker = serializers.ChoiceField(
        choices=AuthEvent.Broker.choices,
        default=AuthEvent.Broker.MOSQUITTO,
        help_text="Which broker asks: RabbitMQ reads '.' as a level separator, has no "
        "$share/, and never asks per delivery.",
    )

    def validate_access(self, value: str) -> acl.Access:
        return acl.parse_access(value)


class ExplainQuerySerializer(ExplainSerializer):
    """The same question as query parameters: the request line of a GET has room for a topic
    of a couple of thousand characters (Gunicorn's limit is 4094 bytes); POST longer ones."""

    topic = serializers.CharField(max_length=2000, help_text="A topic, or a filter for subscribe.")


class DisconnectSerializer(serializers.Serializer):
    client_id = serializers.CharField(max_length=255, help_text="The MQTT client id to kick.")


class DisconnectedSerializer(serializers.Serializer):
    client_id = serializers.CharField()
    seq = serializers.IntegerField(help_text="The change feed's note that carries it.")
    followers = serializers.IntegerField(
        help_text="Brokers following the change feed now: 0 means nobody will act on it "
        "(go-auth cannot follow the feed; the project's plugin does)."
    )
    detail = serializers.CharField()


class DecisionSerializer(serializers.Serializer):
    allowed = serializers.BooleanField()
    reason = serializers.CharField()
    rule_id = serializers.IntegerField(allow_null=True)
    rule = serializers.CharField(allow_null=True)


class LatestValueSerializer(serializers.ModelSerializer):
    class Meta:
        model = LatestValue
        fields = ["metric", "value", "at", "count"]


class ClientSerializer(serializers.ModelSerializer):
    owner = serializers.SerializerMethodField(
        help_text="The account this client id belongs to (brokerauth/clientids.py), if any."
    )

    class Meta:
        model = Client
        fields = [
            "id",
            "client_id",
            "owner",
            "username",
            "status",
            "online",
            "uncertain",
            "last_address",
            "last_port",
            "node",
            "protocol",
            "keepalive",
            "connected_since",
            "last_disconnected_at",
            "last_disconnect_reason",
            "first_seen",
            "last_seen",
            "connect_count",
            "message_count",
            "bad_message_count",
        ]

    @extend_schema_field(OwnerSerializer(allow_null=True))
    def get_owner(self, client: Client) -> dict[str, str] | None:
        # The view annotates each client with the username of its claim, and gives the
        # prefixes once per request: no query per client.
        prefixes = self.context["client_id_prefixes"]
        claimed = getattr(client, "claimed_by", None)
        owner = clientids.owner(client.client_id, prefixes.owner, lambda _id: claimed)
        return {"username": owner.username, "why": owner.why} if owner else None


class ClientDetailSerializer(ClientSerializer):
    latest = LatestValueSerializer(many=True, read_only=True)

    class Meta(ClientSerializer.Meta):
        fields = [
            *ClientSerializer.Meta.fields,
            "clean_start",
            "disconnect_count",
            "last_message_at",
            "last_bad_message_at",
            "last_bad_message_error",
            "latest",
        ]


class SessionSerializer(serializers.ModelSerializer):
    client_id = serializers.CharField(source="client.client_id", read_only=True)

    class Meta:
        model = Session
        fields = [
            "id",
            "client",
            "client_id",
            "connected_at",
            "disconnected_at",
            "reason",
            "detail",
            "username",
            "address",
            "port",
            "node",
            "protocol",
            "clean_start",
            "keepalive",
        ]


class InstantField(serializers.DateTimeField):
    """A date and time as an instant in UTC (filters.as_utc: no offset reaches PostgreSQL)."""

    def enforce_timezone(self, value: datetime) -> datetime:
        if timezone.is_aware(value):
            return filters.as_utc(value)
        return super().enforce_timezone(value)


def back(when: datetime, span: timedelta) -> datetime:
    """`span` before `when`, or EARLIEST when that is earlier."""
    return when - span if when - EARLIEST > span else EARLIEST


class TelemetryQuerySerializer(serializers.Serializer):
    client = serializers.CharField(help_text="The client's id number or its MQTT client id.")
    metric = serializers.CharField(required=False, max_length=100)
    period = serializers.ChoiceField(
        choices=list(series.PERIODS),
        required=False,
        help_text=f"How far back from `until` (default {series.DEFAULT_PERIOD}); "
        "`since` wins when both are given.",
    )
    since = InstantField(required=False)
    until = InstantField(required=False, help_text="Default: now.")
    points = serializers.IntegerField(min_value=2, max_value=series.MAX_POINTS, default=500)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """Any since and until make a range: an empty one (since after until) has no readings,
        and a query reads at most the MAX_SPAN before `until` (the answer says which range)."""
        until = attrs.get("until") or timezone.now()
        period = series.PERIODS[attrs.get("period", series.DEFAULT_PERIOD)][0]
        since = max(attrs.get("since") or back(until, period), back(until, MAX_SPAN))
        attrs["since"], attrs["until"] = since, max(since, until)
        return attrs


class PointSerializer(serializers.Serializer):
    at = serializers.DateTimeField()
    avg = serializers.FloatField()
    min = serializers.FloatField()
    max = serializers.FloatField()
    count = serializers.IntegerField()


class SeriesSerializer(serializers.Serializer):
    metric = serializers.CharField()
    points = PointSerializer(many=True)


class TelemetrySerializer(serializers.Serializer):
    client = serializers.CharField()
    since = serializers.DateTimeField()
    until = serializers.DateTimeField()
    series = SeriesSerializer(many=True)


class BrokerStatSerializer(serializers.ModelSerializer):
    class Meta:
        model = BrokerStat
        fields = ["topic", "name", "value", "number", "updated_at"]


class BrokerStatSampleSerializer(serializers.ModelSerializer):
    class Meta:
        model = BrokerStatSample
        fields = ["topic", "value", "at"]


class AuthEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = AuthEvent
        fields = [
            "id",
            "created_at",
            "kind",
            "broker",
            "username",
            "client_id",
            "address",
            "topic",
            "access",
            "allowed",
            "reason",
        ]


class StepSerializer(serializers.Serializer):
    name = serializers.CharField()
    ok = serializers.BooleanField(allow_null=True, help_text="null: skipped")
    ms = serializers.FloatField()
    detail = serializers.CharField()


class RoundTripSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    steps = StepSerializer(many=True)


class OperatorActionSerializer(serializers.ModelSerializer):
    user = serializers.CharField(source="user.get_username", read_only=True)
    action = serializers.SerializerMethodField()
    kind = serializers.CharField(source="content_type.model", read_only=True, allow_null=True)
    message = serializers.CharField(source="get_change_message", read_only=True)

    class Meta:
        model = LogEntry
        fields = [
            "id",
            "action_time",
            "user",
            "action",
            "kind",
            "object_id",
            "object_repr",
            "message",
        ]

    def get_action(self, entry: LogEntry) -> str:
        return operatorlog.ACTIONS.get(entry.action_flag, str(entry.action_flag))
