from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from brokerauth import passwords
from brokerauth.models import Account, AuthEvent, Group, Membership, Rule


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


class RuleInline(admin.TabularInline):
    model = Rule
    extra = 1
    fields = ["pattern", "access", "allow", "priority", "description"]


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 1
    autocomplete_fields = ["group"]


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
    form = PasswordFields
    list_display = [
        "username",
        "is_active",
        "is_superuser",
        "client_id",
        "credential",
        "last_login_at",
        "lockout",
    ]
    list_filter = ["is_active", "is_superuser", "credential", "groups"]
    search_fields = ["username", "client_id", "description"]
    readonly_fields = [
        "credential_text",
        "created_at",
        "changed_at",
        "last_login_at",
        "failed_logins",
        "locked_until",
    ]
    fields = [
        "username",
        "new_password",
        "generate",
        "is_active",
        "is_superuser",
        "client_id",
        "description",
        *readonly_fields,
    ]
    inlines = [MembershipInline, RuleInline]
    actions = ["unlock", "disable"]

    @admin.display(description="credential")
    def credential_text(self, account: Account) -> str:
        return account.credential_text

    @admin.display(description="lockout")
    def lockout(self, account: Account) -> str:
        if account.is_locked(timezone.now()):
            return f"locked until {account.locked_until:%H:%M:%S} ({account.failed_logins} fails)"
        return f"{account.failed_logins} recent failures" if account.failed_logins else ""

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


@admin.register(Group)
class GroupAdmin(admin.ModelAdmin):
    list_display = ["name", "description", "changed_at"]
    search_fields = ["name", "description"]
    inlines = [RuleInline]


@admin.register(Rule)
class RuleAdmin(admin.ModelAdmin):
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
