from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone
from rest_framework import serializers

from brokerauth import acl, passwords, topics
from brokerauth.models import Account, AuthEvent, Group, Rule
from monitor.models import BrokerStat, BrokerStatSample, Client, LatestValue, Session
from web import series


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
            "description",
            "groups",
            "credential",
            "created_at",
            "changed_at",
            "last_login_at",
            "failed_logins",
            "locked_until",
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
    password = serializers.CharField(help_text="Shown once; only its bcrypt hash is kept.")


class GroupSerializer(serializers.ModelSerializer):
    accounts = serializers.SlugRelatedField(
        many=True, slug_field="username", queryset=Account.objects.all(), required=False
    )

    class Meta:
        model = Group
        fields = ["id", "name", "description", "accounts", "created_at", "changed_at"]


class RuleSerializer(serializers.ModelSerializer):
    account = serializers.SlugRelatedField(
        slug_field="username", queryset=Account.objects.all(), required=False, allow_null=True
    )
    group = serializers.SlugRelatedField(
        slug_field="name", queryset=Group.objects.all(), required=False, allow_null=True
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
        account = attrs.get("account", getattr(self.instance, "account", None))
        group = attrs.get("group", getattr(self.instance, "group", None))
        if (account is None) == (group is None):
            raise serializers.ValidationError(
                "A rule belongs to exactly one account or one group: give one of them."
            )
        return attrs


class ExplainSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=255)
    client_id = serializers.CharField(max_length=255, allow_blank=True, default="")
    topic = serializers.CharField(max_length=65535)
    access = serializers.CharField(
        help_text="receive (1), publish (2) or subscribe (4), by name or number."
    )

    def validate_access(self, value: str) -> acl.Access:
        try:
            return acl.parse_access(value)
        except ValueError as exc:
            raise serializers.ValidationError(
                "access must be receive, publish or subscribe (or 1, 2, 4)."
            ) from exc


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
    class Meta:
        model = Client
        fields = [
            "id",
            "client_id",
            "username",
            "status",
            "online",
            "uncertain",
            "last_address",
            "last_port",
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
            "protocol",
            "clean_start",
            "keepalive",
        ]


class TelemetryQuerySerializer(serializers.Serializer):
    client = serializers.CharField(help_text="The client's id number or its MQTT client id.")
    metric = serializers.CharField(required=False, max_length=100)
    period = serializers.ChoiceField(choices=list(series.PERIODS), required=False)
    since = serializers.DateTimeField(required=False)
    until = serializers.DateTimeField(required=False)
    points = serializers.IntegerField(min_value=2, max_value=series.MAX_POINTS, default=500)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if "period" in attrs and "since" in attrs:
            raise serializers.ValidationError("Give either period or since, not both.")
        until = attrs.get("until") or timezone.now()
        if "since" in attrs:
            since = attrs["since"]
        else:
            since = until - series.PERIODS[attrs.get("period", series.DEFAULT_PERIOD)][0]
        if since >= until:
            raise serializers.ValidationError("since must be before until.")
        if until - since > timedelta(days=400):
            raise serializers.ValidationError("A telemetry query spans at most 400 days.")
        attrs["since"], attrs["until"] = since, until
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
            "username",
            "client_id",
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
