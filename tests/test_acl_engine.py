"""The decision engine, without Django."""

from __future__ import annotations

from brokerauth.acl import Access, Rule, Subject, decide
from brokerauth.topics import RABBITMQ


def subject(*rules: Rule, **flags: bool) -> Subject:
    return Subject(username="alice", rules=rules, **flags)


OWN = Rule("devices/%u/#", Access.ALL, allow=True, id=1)


def test_it_allows_publish_inside_own_topics() -> None:
    decision = decide(subject(OWN), "dev-1", "devices/alice/temp", Access.PUBLISH)
    assert decision.allowed and decision.rule == OWN


def test_it_denies_publish_outside_own_topics() -> None:
    decision = decide(subject(OWN), "dev-1", "devices/bob/temp", Access.PUBLISH)
    assert not decision.allowed and decision.reason == "no rule matched"


def test_deny_beats_allow_at_equal_priority() -> None:
    secret = Rule("devices/%u/secret", Access.ALL, allow=False, id=2)
    decision = decide(subject(OWN, secret), "c", "devices/alice/secret", Access.RECEIVE)
    assert not decision.allowed and decision.rule == secret


def test_higher_priority_allow_beats_deny() -> None:
    deny = Rule("devices/#", Access.PUBLISH, allow=False, priority=0, id=2)
    allow = Rule("devices/%u/#", Access.PUBLISH, allow=True, priority=10, id=3)
    assert decide(subject(deny, allow), "c", "devices/alice/t", Access.PUBLISH).allowed


def test_the_rule_access_must_include_the_request() -> None:
    read_only = Rule("devices/%u/#", Access.RECEIVE | Access.SUBSCRIBE, allow=True)
    assert not decide(subject(read_only), "c", "devices/alice/t", Access.PUBLISH).allowed
    assert decide(subject(read_only), "c", "devices/alice/#", Access.SUBSCRIBE).allowed


def test_subscribe_denied_when_filter_is_wider_than_rule() -> None:
    assert not decide(subject(OWN), "c", "devices/#", Access.SUBSCRIBE).allowed
    assert decide(subject(OWN), "c", "$share/g/devices/alice/+/temp", Access.SUBSCRIBE).allowed


def test_a_deny_rule_applies_to_overlapping_subscriptions() -> None:
    wide = Rule("devices/#", Access.SUBSCRIBE, allow=True)
    secret = Rule("devices/+/secret", Access.SUBSCRIBE, allow=False)
    assert not decide(subject(wide, secret), "c", "devices/#", Access.SUBSCRIBE).allowed
    assert decide(subject(wide, secret), "c", "devices/alice/temp", Access.SUBSCRIBE).allowed


def test_clientid_substitution() -> None:
    rule = Rule("commands/%c", Access.RECEIVE, allow=True)
    assert decide(subject(rule), "dev-1", "commands/dev-1", Access.RECEIVE).allowed
    assert not decide(subject(rule), "dev-2", "commands/dev-1", Access.RECEIVE).allowed


def test_superuser_and_disabled_and_unknown() -> None:
    assert decide(subject(superuser=True), "c", "$SYS/x", Access.SUBSCRIBE).allowed
    disabled = subject(OWN, active=False)
    assert decide(disabled, "c", "devices/alice/t", Access.PUBLISH).reason == "account disabled"
    assert decide(None, "c", "a", Access.PUBLISH).reason == "unknown account"


def test_the_reason_names_the_rule() -> None:
    rule = Rule("devices/%u/#", Access.PUBLISH, allow=True, priority=5, source="group s", id=7)
    reason = decide(subject(rule), "c", "devices/alice/t", Access.PUBLISH).reason
    assert reason == "allowed by rule #7 allow publish devices/%u/# priority 5 (group s)"


def test_rabbitmq_reads_a_dot_as_a_level_separator_in_rules() -> None:
    # RabbitMQ delivers devices/alice.secret/x as devices/alice/secret/x: a deny rule
    # written with the dot must still stop it.
    secret = Rule("devices/alice.secret/#", Access.ALL, allow=False, priority=1)
    rules = subject(OWN, secret)
    assert not decide(rules, "c", "devices/alice/secret/x", Access.PUBLISH, RABBITMQ).allowed
    assert decide(rules, "c", "devices/alice/secret/x", Access.PUBLISH).allowed


def test_rabbitmq_never_substitutes_a_username_with_a_dot() -> None:
    # "alice.smith" would be the levels alice/smith, inside the topics of a device "alice".
    dotted = Subject(username="alice.smith", rules=(OWN,))
    assert not decide(dotted, "c", "devices/alice/smith/t", Access.PUBLISH, RABBITMQ).allowed
    assert decide(dotted, "c", "devices/alice.smith/t", Access.PUBLISH).allowed


def test_rabbitmq_has_no_shared_subscriptions() -> None:
    topic_filter = "$share/g/devices/alice/t"
    assert decide(subject(OWN), "c", topic_filter, Access.SUBSCRIBE).allowed
    assert not decide(subject(OWN), "c", topic_filter, Access.SUBSCRIBE, RABBITMQ).allowed


def test_rabbitmq_subscribe_needs_receive_for_all_the_filter_matches() -> None:
    # RabbitMQ never asks about deliveries: what Mosquitto would filter per message must
    # be refused at subscribe.
    watch = Rule("devices/#", Access.SUBSCRIBE, allow=True, id=1)
    some = Rule("devices/+/telemetry", Access.RECEIVE, allow=True, id=2)
    rules = subject(watch, some)
    assert decide(rules, "c", "devices/#", Access.SUBSCRIBE).allowed
    refused = decide(rules, "c", "devices/#", Access.SUBSCRIBE, RABBITMQ)
    assert not refused.allowed
    assert refused.reason == "receive no rule matched, checked at subscribe"
    assert decide(rules, "c", "devices/+/telemetry", Access.SUBSCRIBE, RABBITMQ).allowed
    assert decide(subject(superuser=True), "c", "#", Access.SUBSCRIBE, RABBITMQ).allowed
