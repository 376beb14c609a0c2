"""Topic matching, property-tested against paho-mqtt, and filter-versus-filter tables."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.client import topic_matches_sub

from brokerauth import topics

levels = st.sampled_from(["a", "b", "", "$SYS", "x y", "é"])
topic_names = st.lists(levels, min_size=1, max_size=5).map("/".join).filter(bool)
filter_levels = st.sampled_from(["a", "b", "", "+", "$SYS", "é"])


@st.composite
def filters(draw: st.DrawFn) -> str:
    parts = draw(st.lists(filter_levels, min_size=1, max_size=5))
    if draw(st.booleans()):
        parts.append("#")
    text = "/".join(parts)
    return text or "#"


@given(filters(), topic_names)
def test_matching_agrees_with_paho(topic_filter: str, topic: str) -> None:
    ours = topics.matches(topics.expand(topic_filter, "u", "c"), topic)
    assert ours == topic_matches_sub(topic_filter, topic)


@given(filters(), filters(), topic_names)
def test_a_covering_rule_matches_every_topic_of_the_filter(
    rule: str, wanted: str, topic: str
) -> None:
    levels = topics.expand(rule, "u", "c")
    if topics.covers(levels, wanted) and topic_matches_sub(wanted, topic):
        assert topic_matches_sub(rule, topic)


@given(filters(), filters(), topic_names)
def test_a_topic_matched_by_both_means_overlap(rule: str, wanted: str, topic: str) -> None:
    if topic_matches_sub(rule, topic) and topic_matches_sub(wanted, topic):
        assert topics.overlaps(topics.expand(rule, "u", "c"), wanted)


COVERS = [
    ("devices/%u/#", "devices/alice/+/temp", True),
    ("devices/%u/#", "devices/alice", True),
    ("devices/%u/#", "devices/alice/#", True),
    ("devices/%u/#", "devices/#", False),
    ("devices/%u/#", "devices/+/temp", False),
    ("devices/%u/#", "devices/bob/temp", False),
    ("devices/+/temp", "devices/+/temp", True),
    ("devices/+/temp", "devices/alice/temp", True),
    ("devices/+/temp", "devices/alice/#", False),
    ("devices/alice/temp", "devices/+/temp", False),
    ("#", "anything/at/all", True),
    ("#", "$SYS/broker/uptime", False),
    ("+/x", "$SYS/x", False),
    ("$SYS/#", "$SYS/broker/#", True),
    ("a/b", "a/b/c", False),
    ("a/b/c", "a/b", False),
    ("a/+/#", "a/#", False),
]


@pytest.mark.parametrize(("rule", "wanted", "expected"), COVERS)
def test_covers(rule: str, wanted: str, expected: bool) -> None:
    assert topics.covers(topics.expand(rule, "alice", "dev-1"), wanted) is expected


OVERLAPS = [
    ("devices/+/secret", "devices/#", True),
    ("devices/+/secret", "devices/alice/temp", False),
    ("devices/+/secret", "+/+/secret", True),
    ("a/#", "a", True),
    ("a", "a/#", True),
    ("a/b", "a/b/c", False),
    ("#", "$SYS/#", False),
    ("$SYS/#", "#", False),
]


@pytest.mark.parametrize(("rule", "wanted", "expected"), OVERLAPS)
def test_overlaps(rule: str, wanted: str, expected: bool) -> None:
    assert topics.overlaps(topics.expand(rule, "alice", "dev-1"), wanted) is expected


@pytest.mark.parametrize("name", ["+", "#", "a/b", "", "x\0"])
def test_an_unsafe_username_never_matches(name: str) -> None:
    levels = topics.expand("devices/%u/#", name, "c")
    assert not topics.matches(levels, "devices/+/x".replace("+", name or "x"))
    assert not topics.covers(levels, "devices/+/#")


@pytest.mark.parametrize("bad", ["a/#/b", "a#", "a/b+", "", "x\0y", "a/%ux", "a" * 70000])
def test_invalid_patterns_are_rejected(bad: str) -> None:
    with pytest.raises(topics.TopicError):
        topics.validate_pattern(bad)


def test_shared_subscription_prefix_is_stripped() -> None:
    assert topics.strip_share("$share/workers/devices/+/telemetry") == "devices/+/telemetry"
    with pytest.raises(topics.TopicError):
        topics.strip_share("$share/workers")
