"""ACL rules of an account or a group: add, edit, delete (staff only)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse

from brokerauth.models import Account, Group, Rule
from web import operatorlog
from web.forms import RuleForm
from web.views import rules_changed, staff_required


def owner_url(rule: Rule) -> str:
    if rule.account_id:
        return reverse("account", args=[rule.account_id])
    return reverse("group", args=[rule.group_id])


def save_rule(request: HttpRequest, rule: Rule, verb: str) -> HttpResponse:
    form = RuleForm(request.POST or None, instance=rule)
    if request.method == "POST" and form.is_valid():
        new = rule.pk is None
        rule = form.save()
        if new:
            operatorlog.added(request.user, rule)
        else:
            labels = [str(form.fields[name].label) for name in form.changed_data]
            operatorlog.changed(request.user, rule, labels)
        rules_changed(request, f"Rule {verb}: {rule}.")
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
        operatorlog.deleted(request.user, rule)
        rule.delete()
        rules_changed(request, text)
        return redirect(back)
    context = {"title": "Delete rule", "thing": f"the rule {rule}", "back": back}
    return render(request, "web/confirm_delete.html", context)
