"""Groups in the operator UI: list, create, rename, delete, members; and an account's groups."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from brokerauth.models import Account, Group, Membership, Rule
from web import operatorlog
from web.forms import GroupForm, JoinForm, MemberForm, RuleForm
from web.views import rules_changed, staff_required


@login_required
def group_list(request: HttpRequest) -> HttpResponse:
    groups = Group.objects.annotate(
        member_count=Count("memberships", distinct=True), rule_count=Count("rules", distinct=True)
    )
    return render(request, "web/groups.html", {"groups": groups, "form": GroupForm()})


@staff_required
def group_create(request: HttpRequest) -> HttpResponse:
    form = GroupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        group = form.save()
        operatorlog.added(request.user, group)
        rules_changed(request, f"Group {group.name} created.")
        return redirect("group", pk=group.pk)
    return render(request, "web/group_form.html", {"form": form, "group": None})


def group_page(request: HttpRequest, group: Group, **forms_: forms.Form) -> HttpResponse:
    context = {
        "group": group,
        "rules": Rule.objects.filter(group=group).select_related("group"),
        "members": group.memberships.select_related("account").order_by("account__username"),
        "rule_form": RuleForm(),
        "member_form": MemberForm(group=group),
        **forms_,
    }
    return render(request, "web/group.html", context)


@login_required
def group_detail(request: HttpRequest, pk: int) -> HttpResponse:
    return group_page(request, get_object_or_404(Group, pk=pk))


@staff_required
def group_edit(request: HttpRequest, pk: int) -> HttpResponse:
    group = get_object_or_404(Group, pk=pk)
    form = GroupForm(request.POST or None, instance=group)
    if request.method == "POST" and form.is_valid():
        form.save()
        labels = [str(form.fields[name].label) for name in form.changed_data]
        operatorlog.changed(request.user, group, labels)
        rules_changed(request, f"Group {group.name} saved.")
        return redirect("group", pk=pk)
    return render(request, "web/group_form.html", {"form": form, "group": group})


@staff_required
def group_delete(request: HttpRequest, pk: int) -> HttpResponse:
    group = get_object_or_404(Group, pk=pk)
    if request.method == "POST":
        operatorlog.deleted(request.user, group)
        group.delete()
        rules_changed(request, f"Group {group.name} deleted, with its rules and memberships.")
        return redirect("groups")
    thing = (
        f"the group {group.name}, its {group.rules.count()} rule(s) "
        f"and its {group.memberships.count()} membership(s)"
    )
    context = {"title": "Delete group", "thing": thing, "back": reverse("group", args=[pk])}
    return render(request, "web/confirm_delete.html", context)


@staff_required
def member_add(request: HttpRequest, pk: int) -> HttpResponse:
    group = get_object_or_404(Group, pk=pk)
    form = MemberForm(request.POST or None, group=group)
    if request.method == "POST" and form.is_valid():
        account = form.cleaned_data["username"]
        # get_or_create: a double submit must not trip the unique constraint.
        Membership.objects.get_or_create(account=account, group=group)
        operatorlog.changed(request.user, group, note=f"Added member {account.username}.")
        rules_changed(request, f"{account.username} added to group {group.name}.")
        return redirect("group", pk=pk)
    return group_page(request, group, member_form=form)


def leave(request: HttpRequest, account_pk: int, group_pk: int) -> None:
    membership = get_object_or_404(
        Membership.objects.select_related("account", "group"),
        account_id=account_pk,
        group_id=group_pk,
    )
    membership.delete()
    note = f"Removed member {membership.account.username}."
    operatorlog.changed(request.user, membership.group, note=note)
    text = f"{membership.account.username} removed from group {membership.group.name}."
    rules_changed(request, text)


@require_POST
@staff_required
def member_remove(request: HttpRequest, pk: int, account_pk: int) -> HttpResponse:
    leave(request, account_pk, pk)
    return redirect("group", pk=pk)


@require_POST
@staff_required
def account_join(request: HttpRequest, pk: int) -> HttpResponse:
    account = get_object_or_404(Account, pk=pk)
    form = JoinForm(request.POST, account=account)
    if form.is_valid():
        group = form.cleaned_data["group"]
        # get_or_create: a double submit must not trip the unique constraint.
        Membership.objects.get_or_create(account=account, group=group)
        operatorlog.changed(request.user, group, note=f"Added member {account.username}.")
        rules_changed(request, f"{account.username} added to group {group.name}.")
    else:
        messages.error(request, "Choose a group the account is not in yet.")
    return redirect("account", pk=pk)


@require_POST
@staff_required
def account_leave(request: HttpRequest, pk: int, group_pk: int) -> HttpResponse:
    leave(request, pk, group_pk)
    return redirect("account", pk=pk)
