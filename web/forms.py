"""The operator UI's forms, beside the views that use them (web/views/), as healthchecks keeps
hc/front/forms.py. They validate input; the changes themselves are the models' methods."""

from __future__ import annotations

from typing import Any

from django import forms

from brokerauth import acl
from brokerauth.models import Account, AuthEvent, Group, Rule


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
        fields = ["username", "client_id", "client_id_prefix", "description", "is_superuser"]
        widgets = {"description": forms.Textarea(attrs={"rows": 2})}


class AccountEditForm(SuperuserConfirmationMixin):
    class Meta:
        model = Account
        fields = ["description", "client_id", "client_id_prefix", "is_active", "is_superuser"]
        widgets = {"description": forms.Textarea(attrs={"rows": 2})}

    def changes(self) -> dict[str, Any]:
        """The fields the operator changed, for Account.edit()."""
        return {
            name: self.cleaned_data[name]
            for name in self.changed_data
            if name != "confirm_superuser"
        }


class ExplainForm(forms.Form):
    username = forms.CharField(max_length=255)
    client_id = forms.CharField(max_length=255, required=False, label="Client id")
    topic = forms.CharField(max_length=65535, help_text="A topic, or a filter for subscribe.")
    access = forms.ChoiceField(choices=[(a.label, a.label) for a in acl.REQUEST_ACCESSES])
    broker = forms.ChoiceField(
        choices=AuthEvent.Broker.choices,
        initial=AuthEvent.Broker.MOSQUITTO,
        required=False,
        help_text="RabbitMQ reads '.' as a level separator and never asks per delivery.",
    )


class GroupForm(forms.ModelForm):
    class Meta:
        model = Group
        fields = ["name", "description"]
        widgets = {"description": forms.Textarea(attrs={"rows": 2})}


class MemberForm(forms.Form):
    username = forms.CharField(max_length=255, label="Add account")

    def __init__(self, *args: Any, group: Group, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.group = group

    def clean_username(self) -> Account:
        username = self.cleaned_data["username"].strip()
        account = Account.objects.filter(username=username).first()
        if account is None:
            raise forms.ValidationError(f"No account named {username!r}.")
        if account.memberships.filter(group=self.group).exists():
            raise forms.ValidationError(f"{username} is already a member.")
        return account


class JoinForm(forms.Form):
    group = forms.ModelChoiceField(queryset=Group.objects.none(), label="Add to group")

    def __init__(self, *args: Any, account: Account, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["group"]
        assert isinstance(field, forms.ModelChoiceField)
        field.queryset = Group.objects.exclude(memberships__account=account)


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
