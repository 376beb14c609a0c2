from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from brokerauth import acl, topics
from brokerauth.models import Account, AuthEvent, Rule
from web import operatorlog
from web.forms import AccountEditForm, AccountForm, ExplainForm, RuleForm, join_form
from web.views import note_policy_change, paginate, query_without_page, staff_required


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
        account = form.save(commit=False)
        password = account.save_new()
        account.groups.set(form.cleaned_data["groups"])
        operatorlog.added(request.user, account)
        # Rendered, not redirected: the password exists only in this one response.
        return render(request, "web/password_once.html", {"account": account, "password": password})
    return render(request, "web/account_form.html", {"form": form, "account": None})


@staff_required
def account_edit(request: HttpRequest, pk: int) -> HttpResponse:
    account = get_object_or_404(Account, pk=pk)
    form = AccountEditForm(request.POST or None, instance=account)
    if request.method == "POST" and form.is_valid():
        changes = form.changes()
        if changes:
            account.edit(**changes)
            operatorlog.changed(request.user, account, [str(form.fields[n].label) for n in changes])
            labels = ", ".join(str(form.fields[name].label).lower() for name in changes)
            note_policy_change(request, f"Account {account.username} saved: {labels}.")
        else:
            # No save: it would bump changed_at and make every process re-read the policy.
            messages.info(request, "Nothing changed.")
        return redirect("account", pk=pk)
    return render(request, "web/account_form.html", {"form": form, "account": account})


def account_rules(account: Account) -> tuple[list[Rule], list[Rule]]:
    rules = Rule.objects.applying_to(account)
    own = [rule for rule in rules if rule.account_id == account.pk]
    return own, [rule for rule in rules if rule.account_id != account.pk]


@login_required
def account_detail(request: HttpRequest, pk: int) -> HttpResponse:
    account = get_object_or_404(Account.objects.prefetch_related("groups"), pk=pk)
    own, inherited = account_rules(account)
    context = {
        "account": account,
        "client_ids": account.claimed_client_ids.all(),
        "lockouts": account.lockouts.order_by("-last_failure_at"),
        "own_rules": own,
        "group_rules": inherited,
        "events": AuthEvent.objects.filter(username=account.username)[:20],
        "explain_form": ExplainForm(initial={"username": account.username}),
    }
    if request.user.is_staff:
        context["rule_form"] = RuleForm()
        context["join_form"], context["joinable"] = join_form(account)
    return render(request, "web/account.html", context)


@require_POST
@staff_required
def account_set_active(request: HttpRequest, pk: int) -> HttpResponse:
    account = get_object_or_404(Account, pk=pk)
    account.set_active(request.POST.get("active") == "1")
    verb = "enabled" if account.is_active else "disabled"
    operatorlog.changed(request.user, account, note=verb.capitalize() + ".")
    messages.success(request, f"Account {account.username} {verb}.")
    return redirect("account", pk=pk)


@require_POST
@staff_required
def account_release_client_id(request: HttpRequest, pk: int) -> HttpResponse:
    account = get_object_or_404(Account, pk=pk)
    claim = get_object_or_404(account.claimed_client_ids, client_id=request.POST.get("client_id"))
    try:
        claim.release()
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        operatorlog.changed(request.user, account, note=f"Released client id {claim.client_id}.")
        note_policy_change(
            request, f"Client id {claim.client_id} released: another account may now use it."
        )
    return redirect("account", pk=pk)


@require_POST
@staff_required
def account_reset(request: HttpRequest, pk: int) -> HttpResponse:
    account = get_object_or_404(Account, pk=pk)
    password = account.reset_password()
    operatorlog.changed(request.user, account, note="Password reset.")
    return render(request, "web/password_once.html", {"account": account, "password": password})


def explain_decision(form: ExplainForm) -> acl.Decision | None:
    data = form.cleaned_data
    access = acl.parse_access(data["access"])
    try:
        dialect = topics.DIALECTS[data["broker"] or AuthEvent.Broker.MOSQUITTO]
        return Account.objects.explain_acl(
            data["username"], data["client_id"], data["topic"], access, dialect
        )
    except topics.TopicError as exc:
        form.add_error("topic", str(exc))
        return None


@login_required
def explain(request: HttpRequest) -> HttpResponse:
    form = ExplainForm(request.GET or None)
    result = explain_decision(form) if form.is_valid() else None
    return render(request, "web/explain.html", {"form": form, "result": result})
