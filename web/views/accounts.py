from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from brokerauth import acl, passwords, topics
from brokerauth.models import Account, AuthEvent, Group, Rule
from web.views import paginate, query_without_page, staff_required
from web.views.groups import JoinForm
from web.views.rules import RuleForm, note_policy_change


class SuperuserConfirmationMixin(forms.ModelForm):
    """Making an account a superuser takes a second, explicit tick: it then passes every ACL
    check, whatever its rules say. An account that already is one is not asked again."""

    confirm_superuser = forms.BooleanField(
        required=False, label="I understand this account may then use every topic"
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.is_superuser:
            del self.fields["confirm_superuser"]

    def clean(self) -> dict[str, Any] | None:
        data = super().clean() or {}
        promoted = data.get("is_superuser") and "is_superuser" in self.changed_data
        if promoted and not data.get("confirm_superuser"):
            self.add_error("confirm_superuser", "Tick this too, or untick superuser.")
        return data


class AccountForm(SuperuserConfirmationMixin):
    groups = forms.ModelMultipleChoiceField(
        queryset=Group.objects.all(), required=False, widget=forms.CheckboxSelectMultiple
    )

    class Meta:
        model = Account
        fields = ["username", "client_id", "description", "is_superuser"]
        widgets = {"description": forms.Textarea(attrs={"rows": 2})}


class AccountEditForm(SuperuserConfirmationMixin):
    class Meta:
        model = Account
        fields = ["description", "client_id", "is_active", "is_superuser"]
        widgets = {"description": forms.Textarea(attrs={"rows": 2})}


class ExplainForm(forms.Form):
    username = forms.CharField(max_length=255)
    client_id = forms.CharField(max_length=255, required=False, label="Client id")
    topic = forms.CharField(max_length=65535, help_text="A topic, or a filter for subscribe.")
    access = forms.ChoiceField(choices=[(a.label, a.label) for a in acl.REQUEST_ACCESSES])


@login_required
def account_list(request: HttpRequest) -> HttpResponse:
    q = request.GET.get("q", "").strip()[:255]
    accounts = (
        Account.objects.annotate(rule_count=Count("rules", distinct=True))
        .order_by("username")
        .prefetch_related("groups")
    )
    if q:
        accounts = accounts.filter(Q(username__icontains=q) | Q(client_id__icontains=q))
    context = {"page": paginate(request, accounts), "q": q, "query": query_without_page(request)}
    return render(request, "web/accounts.html", context)


@staff_required
def account_create(request: HttpRequest) -> HttpResponse:
    form = AccountForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        password = passwords.generate()
        account = form.save(commit=False)
        account.save_new(password)
        account.groups.set(form.cleaned_data["groups"])
        # Rendered, not redirected: the password exists only in this one response.
        return render(request, "web/password_once.html", {"account": account, "password": password})
    return render(request, "web/account_form.html", {"form": form, "account": None})


@staff_required
def account_edit(request: HttpRequest, pk: int) -> HttpResponse:
    account = get_object_or_404(Account, pk=pk)
    form = AccountEditForm(request.POST or None, instance=account)
    if request.method == "POST" and form.is_valid():
        changes = {
            name: form.cleaned_data[name]
            for name in form.changed_data
            if name != "confirm_superuser"
        }
        if changes:
            account.edit(**changes)
            labels = ", ".join(str(form.fields[name].label).lower() for name in changes)
            note_policy_change(request, f"Account {account.username} saved: {labels}.")
        else:
            # No save: it would bump changed_at and make every process re-read the policy.
            messages.info(request, "Nothing changed.")
        return redirect("account", pk=pk)
    return render(request, "web/account_form.html", {"form": form, "account": account})


def account_rules(account: Account) -> tuple[list[Rule], list[Rule]]:
    rules = Rule.objects.filter(
        Q(account=account) | Q(group__memberships__account=account)
    ).select_related("account", "group")
    own = [rule for rule in rules if rule.account_id == account.pk]
    return own, [rule for rule in rules if rule.account_id != account.pk]


@login_required
def account_detail(request: HttpRequest, pk: int) -> HttpResponse:
    account = get_object_or_404(Account.objects.prefetch_related("groups"), pk=pk)
    own, inherited = account_rules(account)
    context = {
        "account": account,
        "own_rules": own,
        "group_rules": inherited,
        "events": AuthEvent.objects.filter(username=account.username)[:20],
        "explain_form": ExplainForm(initial={"username": account.username}),
    }
    if request.user.is_staff:
        context["rule_form"] = RuleForm()
        context["join_form"], context["joinable"] = join_form(account)
    return render(request, "web/account.html", context)


def join_form(account: Account) -> tuple[JoinForm, bool]:
    """The "Add to group" form, and whether it offers any group. Its choices are read here, in
    the one query the select would have run, so that the page can say "member of every group"
    instead of offering an empty list."""
    form = JoinForm(account=account)
    field = form.fields["group"]
    assert isinstance(field, forms.ModelChoiceField) and field.queryset is not None
    groups = list(field.queryset)
    field.choices = [("", field.empty_label), *((group.pk, str(group)) for group in groups)]
    return form, bool(groups)


@require_POST
@staff_required
def account_set_active(request: HttpRequest, pk: int) -> HttpResponse:
    account = get_object_or_404(Account, pk=pk)
    account.set_active(request.POST.get("active") == "1")
    verb = "enabled" if account.is_active else "disabled"
    messages.success(request, f"Account {account.username} {verb}.")
    return redirect("account", pk=pk)


@require_POST
@staff_required
def account_reset(request: HttpRequest, pk: int) -> HttpResponse:
    account = get_object_or_404(Account, pk=pk)
    password = account.reset_password()
    return render(request, "web/password_once.html", {"account": account, "password": password})


def explain_decision(form: ExplainForm) -> acl.Decision | None:
    data = form.cleaned_data
    access = acl.parse_access(data["access"])
    try:
        return Account.objects.explain_acl(
            data["username"], data["client_id"], data["topic"], access
        )
    except topics.TopicError as exc:
        form.add_error("topic", str(exc))
        return None


@login_required
def explain(request: HttpRequest) -> HttpResponse:
    form = ExplainForm(request.GET or None)
    result = explain_decision(form) if form.is_valid() else None
    return render(request, "web/explain.html", {"form": form, "result": result})
