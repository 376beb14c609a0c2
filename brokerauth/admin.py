from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone

from brokerauth import passwords
from brokerauth.models import (
    Account,
    AuthEvent,
    Change,
    ClientId,
    Group,
    Lockout,
    Membership,
    Rule,
)


class PasswordFields(forms.ModelForm):
    """Set or reset an account's password; a generated one is shown once, after saving."""

    new_password = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Leave empty to keep the current password.",
    )
    generate = forms.BooleanField(
        required=False,
        label="Generate a random password",
        help_text="A generated secret is shown once after saving and stored as "
        "PBKDF2-SHA512, checked in microseconds; a chosen password keeps bcrypt.",
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        password = data.get("new_password") or ""
        if password and data.get("generate"):
            self.add_error("generate", "Either type a password or generate one, not both.")
        elif password:
            try:
                passwords.validate(password)
            except ValidationError as exc:
                self.add_error("new_password", exc)
        new = not (self.instance.pk and self.instance.password_hash)
        if new and not password and not data.get("generate"):
            self.add_error("new_password", "A new account needs a password (or generate one).")
        return data


class NotesPolicyChanges(admin.ModelAdmin):
    """Saves (with their rule and membership inlines) and deletes tell the brokers that
    follow the change feed, after everything is written (Change.objects.note)."""

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        Change.objects.note_policy(f"{form.instance} saved in the admin")

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        super().delete_model(request, obj)
        Change.objects.note_policy(f"{obj} deleted in the admin")

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        super().delete_queryset(request, queryset)
        Change.objects.note_policy("deleted in the admin")


class RuleInline(admin.TabularInline):
    model = Rule
    extra = 1
    fields = ["pattern", "access", "allow", "priority", "description"]


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 1
    autocomplete_fields = ["group"]


class ClientIdInline(admin.TabularInline):
    """The client ids the account owns; released from the client ids page (ClientIdAdmin)."""

    model = ClientId
    extra = 0
    fields = readonly_fields = ("client_id", "created_at")
    can_delete = False
    verbose_name_plural = "client ids it owns (release them under Client ids)"

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class LockoutInline(admin.TabularInline):
    """Failed logins per source; deleting a row unlocks that source."""

    model = Lockout
    extra = 0
    fields = readonly_fields = ("source", "failures", "last_failure_at", "locked_until")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Account)
class AccountAdmin(NotesPolicyChanges):
    form = PasswordFields
    list_display = [
        "username",
        "is_active",
        "is_superuser",
        "client_id",
        "client_id_prefix",
        "credential",
        "last_login_at",
        "lockout",
    ]
    list_filter = ["is_active", "is_superuser", "credential", "groups"]
    search_fields = ["username", "client_id", "description"]
    readonly_fields = ["credential_text", "created_at", "changed_at", "last_login_at"]
    fields = [
        "username",
        "new_password",
        "generate",
        "is_active",
        "is_superuser",
        "client_id",
        "client_id_prefix",
        "description",
        *readonly_fields,
    ]
    inlines = [MembershipInline, RuleInline, ClientIdInline, LockoutInline]
    actions = ["unlock", "disable"]

    def get_inlines(self, request: HttpRequest, obj: Account | None) -> list[type[Any]]:
        # A new account owns no client id and has failed no login yet.
        return self.inlines if obj is not None else [MembershipInline, RuleInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Account]:
        locked = Q(lockouts__locked_until__gt=timezone.now())
        return (
            super()
            .get_queryset(request)
            .annotate(locked=Count("lockouts", filter=locked), failing=Count("lockouts"))
        )

    @admin.display(description="credential")
    def credential_text(self, account: Account) -> str:
        return account.credential_text

    @admin.display(description="lockout")
    def lockout(self, account: Any) -> str:
        if account.locked:
            return f"locked for {account.locked} of {account.failing} sources"
        return f"recent failures from {account.failing} sources" if account.failing else ""

    def save_model(self, request: HttpRequest, obj: Account, form: Any, change: bool) -> None:
        # Through the model's own methods, as the UI and the API do (see Account.edit).
        password = form.cleaned_data.get("new_password") or ""
        generate = bool(form.cleaned_data.get("generate"))
        if change:
            changes = {
                name: form.cleaned_data[name]
                for name in form.changed_data
                if name not in ("new_password", "generate")
            }
            obj.edit(password=password, **changes)
            if generate:
                password = obj.reset_password()
        else:
            password = obj.save_new(password)
        if generate:
            messages.warning(
                request,
                f"Password of {obj.username}: {password} (shown once; copy it now).",
            )

    def delete_model(self, request: HttpRequest, obj: Account) -> None:
        obj.remove()  # its live sessions go too

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Account]) -> None:
        for account in queryset:
            account.remove()

    @admin.action(description="Unlock the selected accounts")
    def unlock(self, request: HttpRequest, queryset: QuerySet[Account]) -> None:
        accounts = list(queryset)
        for account in accounts:
            account.unlock()
            self.log_change(request, account, "Unlocked.")  # actions are not logged otherwise
        self.message_user(request, f"Unlocked {len(accounts)} accounts.")

    @admin.action(description="Disable the selected accounts")
    def disable(self, request: HttpRequest, queryset: QuerySet[Account]) -> None:
        accounts = list(queryset)
        for account in accounts:
            account.set_active(False)
            self.log_change(request, account, "Disabled.")
        self.message_user(request, f"Disabled {len(accounts)} accounts.")


@admin.register(ClientId)
class ClientIdAdmin(admin.ModelAdmin):
    """Who owns each client id (brokerauth/clientids.py). Claimed by logins, never typed in;
    an operator releases one so that another account may use it."""

    list_display = ["client_id", "account", "created_at"]
    search_fields = ["client_id", "account__username"]
    list_select_related = ["account"]
    actions = ["release"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # through the release action, which keeps a bound id and notes the change

    @admin.action(description="Release the selected client ids", permissions=["release"])
    def release(self, request: HttpRequest, queryset: QuerySet[ClientId]) -> None:
        released = 0
        for claim in queryset.select_related("account"):
            try:
                claim.release()
            except ValidationError as exc:
                self.message_user(request, " ".join(exc.messages), messages.ERROR)
            else:
                released += 1
                self.log_change(request, claim.account, f"Released client id {claim.client_id}.")
        self.message_user(request, f"Released {released} client ids.")

    def has_release_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("brokerauth.delete_clientid")


@admin.register(Group)
class GroupAdmin(NotesPolicyChanges):
    list_display = ["name", "description", "changed_at"]
    search_fields = ["name", "description"]
    inlines = [RuleInline]


@admin.register(Rule)
class RuleAdmin(NotesPolicyChanges):
    list_display = ["pattern", "access", "allow", "priority", "account", "group"]
    list_filter = ["access", "allow", "group"]
    search_fields = ["pattern", "account__username", "group__name", "description"]
    autocomplete_fields = ["account", "group"]


@admin.register(AuthEvent)
class AuthEventAdmin(admin.ModelAdmin):
    list_display = [
        "created_at",
        "kind",
        "broker",
        "username",
        "client_id",
        "address",
        "allowed",
        "access",
        "topic",
        "reason",
    ]
    list_filter = ["kind", "broker", "allowed", "created_at"]
    search_fields = ["username", "client_id", "topic"]
    date_hierarchy = "created_at"
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
