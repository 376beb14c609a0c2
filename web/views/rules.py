"""ACL rules of an account or a group: add, edit, delete (staff only)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse

from brokerauth.models import Account, Group, Rule
from web.views import staff_required

EFFECTS = [(True, "allow"), (False, "deny")]


class RuleForm(forms.ModelForm):
    class Meta:
        model = Rule
        fields = ["pattern", "access", "allow", "priority", "description"]
        labels = {"allow": "Effect"}
        widgets = {"allow": forms.Select(choices=EFFECTS)}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Own ids: the account page also carries the explain form, with its own id_access.
        kwargs.setdefault("auto_id", "rule_%s")
        super().__init__(*args, **kwargs)


def note_policy_change(request: HttpRequest, text: str) -> None:
    """Say what changed and when the broker sees it: each web process re-reads the policy at
    most every POLICY_REFRESH_SECONDS, then the broker plugin may answer from its own cache."""
    messages.success(
        request,
        f"{text} It reaches the broker within POLICY_REFRESH_SECONDS "
        f"({settings.POLICY_REFRESH_SECONDS:g} s) plus the broker plugin's cache TTL "
        "(CACHE_ACL_TTL, 5 s in the shipped config).",
    )


def owner_url(rule: Rule) -> str:
    if rule.account_id:
        return reverse("account", args=[rule.account_id])
    return reverse("group", args=[rule.group_id])


def save_rule(request: HttpRequest, rule: Rule, verb: str) -> HttpResponse:
    form = RuleForm(request.POST or None, instance=rule)
    if request.method == "POST" and form.is_valid():
        rule = form.save()
        note_policy_change(request, f"Rule {verb}: {rule}.")
        return redirect(owner_url(rule))
    context = {"form": form, "rule": rule, "back": owner_url(rule)}
    return render(request, "web/rule_form.html", context)


@staff_required
def account_rule_create(request: HttpRequest, pk: int) -> HttpResponse:
    return save_rule(request, Rule(account=get_object_or_404(Account, pk=pk)), "added")


@staff_required
def group_rule_create(request: HttpRequest, pk: int) -> HttpResponse:
    return save_rule(request, Rule(group=get_object_or_404(Group, pk=pk)), "added")


@staff_required
def rule_edit(request: HttpRequest, pk: int) -> HttpResponse:
    rule = get_object_or_404(Rule.objects.select_related("account", "group"), pk=pk)
    return save_rule(request, rule, "changed")


@staff_required
def rule_delete(request: HttpRequest, pk: int) -> HttpResponse:
    rule = get_object_or_404(Rule.objects.select_related("account", "group"), pk=pk)
    back = owner_url(rule)
    if request.method == "POST":
        text = f"Rule deleted: {rule}."
        rule.delete()
        note_policy_change(request, text)
        return redirect(back)
    context = {"title": "Delete rule", "thing": f"the rule {rule}", "back": back}
    return render(request, "web/confirm_delete.html", context)
