from __future__ import annotations

from django.contrib import admin

from monitor.models import (
    BrokerStat,
    Client,
    LatestValue,
    LoginRefusal,
    MonitorState,
    Session,
)


class ReadOnly(admin.ModelAdmin):
    """The monitor writes these; the admin looks."""

    def has_add_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False

    def has_change_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False


class LatestInline(admin.TabularInline):
    model = LatestValue
    extra = 0
    can_delete = False
    readonly_fields = ["metric", "value", "at", "count"]

    def has_add_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False


class SessionInline(admin.TabularInline):
    model = Session
    extra = 0
    can_delete = False
    max_num = 0
    readonly_fields = [
        "connected_at",
        "disconnected_at",
        "reason",
        "detail",
        "address",
        "port",
        "protocol",
        "keepalive",
    ]
    fields = tuple(readonly_fields)

    def get_queryset(self, request):  # type: ignore[no-untyped-def]
        return super().get_queryset(request).order_by("-connected_at")


@admin.register(Client)
class ClientAdmin(ReadOnly):
    list_display = [
        "client_id",
        "username",
        "online",
        "uncertain",
        "last_address",
        "protocol",
        "connected_since",
        "last_seen",
        "message_count",
        "bad_message_count",
    ]
    list_filter = ["online", "uncertain", "protocol"]
    search_fields = ["client_id", "username", "last_address"]
    inlines = [LatestInline, SessionInline]

    def has_delete_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return True  # forgetting a retired device is allowed


@admin.register(BrokerStat)
class BrokerStatAdmin(ReadOnly):
    list_display = ["topic", "value", "updated_at"]
    search_fields = ["topic"]


@admin.register(LoginRefusal)
class LoginRefusalAdmin(ReadOnly):
    list_display = ["at", "client_id", "address"]
    date_hierarchy = "at"


@admin.register(MonitorState)
class MonitorStateAdmin(ReadOnly):
    list_display = [
        "connected",
        "heartbeat_at",
        "last_sys_at",
        "believed_online",
        "broker_connected",
        "mismatch",
        "refused_logins",
        "readings_stored",
        "bad_payloads",
    ]

    def has_delete_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False
