"""explain_acl explains, prune_audit bounds the audit table."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from brokerauth.acl import Access
from brokerauth.models import Account, AuthEvent, Rule

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_explain_acl_names_the_deciding_rule(device: Account) -> None:
    out = run("explain_acl", "alice", "dev-1", "devices/alice/temp", "publish")
    assert out.startswith("ALLOW: allowed by rule #")
    assert "devices/%u/#" in out


def test_explain_acl_says_when_nothing_matched(device: Account) -> None:
    assert run("explain_acl", "alice", "c", "other/topic", "receive") == "DENY: no rule matched\n"


def test_explain_acl_explains_as_rabbitmq_would_ask(device: Account) -> None:
    # RabbitMQ asks at subscribe only: alice may subscribe to news/#, never receive it.
    Rule.objects.create(account=device, pattern="news/#", access=Access.SUBSCRIBE)
    assert run("explain_acl", "alice", "c", "news/#", "subscribe").startswith("ALLOW")
    out = run("explain_acl", "--broker", "rabbitmq", "alice", "c", "news/#", "subscribe")
    assert out == "DENY: receive no rule matched, checked at subscribe\n"


def test_explain_acl_rejects_bad_input(device: Account) -> None:
    with pytest.raises(CommandError, match="wildcard"):
        run("explain_acl", "alice", "c", "a/#", "publish")
    with pytest.raises(CommandError):
        run("explain_acl", "alice", "c", "a", "fly")


def test_prune_audit_keeps_recent_rows(db: Any) -> None:
    old = timezone.now() - timedelta(days=40)
    for created in (old, timezone.now()):
        AuthEvent.objects.create(
            created_at=created, kind="login", username="a", allowed=False, reason="x"
        )
    assert "Deleted 1 audit rows" in run("prune_audit", "--days", "30")
    assert AuthEvent.objects.count() == 1
