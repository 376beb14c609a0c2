"""ACL checks cost no query in steady state; changes arrive within POLICY_REFRESH_SECONDS."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import override_settings

from brokerauth.acl import Access
from brokerauth.models import Account, Membership, Rule
from brokerauth.policy import PolicyCache
from tests.conftest import BrokerClient

pytestmark = pytest.mark.django_db


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_steady_state_acl_check_costs_no_query(
    broker: BrokerClient, device: Account, sensors: Any, django_assert_num_queries: Any
) -> None:
    request = {"username": "alice", "clientid": "dev-1", "topic": "devices/alice/t", "acc": 2}
    with override_settings(POLICY_REFRESH_SECONDS=3600):
        assert broker.ask("acl", **request).status_code == 200
        with django_assert_num_queries(0):
            for _ in range(20):
                assert broker.ask("acl", **request).status_code == 200


@pytest.mark.parametrize(
    "change", ["add rule", "edit rule", "delete rule", "leave group", "disable account"]
)
def test_every_kind_of_change_is_seen_after_the_refresh_interval(
    device: Account, sensors: Any, change: str
) -> None:
    clock = Clock()
    cache = PolicyCache(clock=clock)
    before = cache.lookup("alice")
    rule = Rule.objects.filter(group=sensors).first()
    assert rule is not None
    match change:
        case "add rule":
            Rule.objects.create(account=device, pattern="x", access=Access.ALL)
        case "edit rule":
            rule.pattern = "commands/other"
            rule.save()
        case "delete rule":
            rule.delete()
        case "leave group":
            Membership.objects.filter(account=device).delete()
        case "disable account":
            device.is_active = False
            device.save()
    assert cache.lookup("alice") is before  # within the interval: the cached subject
    clock.now += 1.0
    assert cache.lookup("alice") != before
