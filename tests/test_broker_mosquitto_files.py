"""The same CONNECT, PUBLISH, SUBSCRIBE and delivery answers from a plain Mosquitto with its
own password_file and acl_file (written by the real mosquitto_passwd) before the import, from
Mosquitto with the project's plugin asking Django after it, and from a plain Mosquitto again
with the files export_mosquitto writes back."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management import CommandError

from brokerauth.policy import policy
from tests.brokers import Broker, MqttSession, NativeBroker, live_port
from tests.test_mosquitto_files import mosquitto_passwd, run_command

pytestmark = [pytest.mark.broker, pytest.mark.django_db(transaction=True)]

# (username, client id, password); bob's hash is $6$ (-H sha512), the others' $7$.
USERS = [
    ("alice", "a1", "alice's secret"),
    ("bob", "b1", "bob's secret"),
    ("x+y", "xy", "xy's secret"),
    ("site/7", "s7", "site 7's secret"),
    ("feeder", "f1", "feeder's secret"),
]
ACL = """\
# Mosquitto's own example starts with this line, for anonymous clients.
topic read $SYS/#

user alice
topic readwrite devices/alice/#
topic deny devices/alice/secret/#
topic read public/bob/private
topic write $SYS/broker/alice

user bob
topic write fleet/bob
topic read public/bob/private
topic devices/bob/#

user x+y
topic read weird/#

user feeder
topic write #

pattern read public/%u/#
pattern deny public/%u/private
pattern readwrite clients/%c/#
pattern write dev-%u/up
"""
PUBLISH = {
    "alice": [
        "devices/alice/t",
        "devices/alice/secret/k",
        "fleet/bob",
        "public/alice/x",
        "clients/a1/up",
        "clients/b1/up",
        "dev-alice/up",
        "$SYS/broker/alice",
        "elsewhere",
    ],
    "bob": ["fleet/bob", "devices/bob/x", "dev-bob/up", "clients/b1/x", "devices/alice/t"],
    "x+y": ["weird/x", "clients/xy/x", "elsewhere"],
    "site/7": ["dev-site/7/up", "clients/s7/x", "public/site/7/x"],
}
SUBSCRIBE = {
    "alice": ["#", "$SYS/#", "devices/alice/secret/#", "$share/g/fleet/#", "nothing/+"],
    "bob": ["#", "devices/alice/#"],
    "x+y": ["weird/#", "#"],
}
DELIVERED = [
    "devices/alice/t",
    "devices/alice/secret/k",
    "devices/bob/x",
    "fleet/bob",
    "public/alice/x",
    "public/alice/private",
    "public/bob/private",
    "public/bob/x",
    "public/site/7/x",
    "public/site/7/private",
    "clients/a1/x",
    "clients/b1/x",
    "clients/xy/x",
    "weird/x",
    "dev-alice/up",
    "elsewhere",
]
# Each subscriber's last message, one it may read: everything published before has arrived.
MARKERS = {
    "alice": "public/alice/marker",
    "bob": "public/bob/marker",
    "x+y": "weird/marker",
    "site/7": "public/site/7/marker",
}
# A few answers checked by hand against Mosquitto's source, so that equal is not trivially
# equal (both all-deny, say).
KNOWN = {
    ("connect", "alice", "right"): True,
    ("connect", "alice", "wrong"): False,
    ("connect", "bob", "right"): True,
    ("connect", "carol", "right"): False,
    ("publish", "alice", "devices/alice/t"): True,
    ("publish", "alice", "devices/alice/secret/k"): False,
    ("publish", "alice", "$SYS/broker/alice"): False,
    ("publish", "alice", "clients/a1/up"): True,
    ("publish", "x+y", "clients/xy/x"): False,
    ("publish", "site/7", "dev-site/7/up"): True,
    ("subscribe", "bob", "devices/alice/#"): True,
    ("receive", "alice", "devices/alice/t"): True,
    ("receive", "alice", "devices/alice/secret/k"): False,
    ("receive", "alice", "public/alice/private"): False,
    ("receive", "bob", "public/bob/private"): True,
    ("receive", "bob", "devices/bob/x"): True,
    ("receive", "x+y", "weird/x"): True,
    ("receive", "x+y", "clients/xy/x"): False,
    ("receive", "site/7", "public/site/7/x"): True,
}
Answers = dict[tuple[str, str, str], bool]


@pytest.fixture
def native_files(tmp_path: Path) -> tuple[Path, Path]:
    password_file = tmp_path / "native" / "passwd"
    password_file.parent.mkdir()
    for username, _clientid, password in USERS:
        algorithm = ("-H", "sha512") if username == "bob" else ()
        mosquitto_passwd(password_file, username, password, *algorithm)
    # An entry Mosquitto removes as it loads the file: carol cannot log in there either.
    password_file.write_text(password_file.read_text() + "carol:plain text\n")
    acl_file = password_file.parent / "acl"
    acl_file.write_text(ACL)
    return password_file, acl_file


@contextmanager
def running(broker: Broker) -> Iterator[Broker]:
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def observe(broker: Broker) -> Answers:
    """Every case, answered by this broker."""
    answers: Answers = {}
    answers |= _connects(broker)
    with _sessions(broker) as sessions:
        answers |= _subscribes(sessions)
        answers |= _publishes(sessions)
    with _sessions(broker) as sessions:
        answers |= _deliveries(sessions)
    return answers


def _connects(broker: Broker) -> Answers:
    answers: Answers = {}
    cases = [(u, p, "right") for u, _c, p in USERS] + [
        ("alice", "not alice's secret", "wrong"),
        ("carol", "plain text", "right"),
        ("nobody", "whatever", "right"),
    ]
    for username, password, kind in cases:
        # A client id of its own each: with the plugin, a client id belongs to the first
        # account that uses it (brokerauth/clientids.py), where Mosquitto lets anyone take it.
        session = broker.session(username, password, f"connect-{username}-{kind}")
        session.connect(timeout=8)
        answers["connect", username, kind] = session.connected()
        session.close()
    return answers


@contextmanager
def _sessions(broker: Broker) -> Iterator[dict[str, MqttSession]]:
    sessions = {}
    try:
        for username, clientid, password in USERS:
            sessions[username] = broker.session(username, password, clientid)
            sessions[username].connect(timeout=8)
            assert sessions[username].connected(), (username, broker.log_tail())
        yield sessions
    finally:
        for session in sessions.values():
            session.close()


def _subscribes(sessions: dict[str, MqttSession]) -> Answers:
    answers: Answers = {}
    for username, filters in SUBSCRIBE.items():
        for topic_filter in filters:
            reason = sessions[username].subscribe(topic_filter)
            answers["subscribe", username, topic_filter] = not reason.is_failure
        sessions[username].client.unsubscribe(filters)
    return answers


def _publishes(sessions: dict[str, MqttSession]) -> Answers:
    answers: Answers = {}
    for username, topics in PUBLISH.items():
        for topic in topics:
            reason = sessions[username].publish(topic, "probe")
            answers["publish", username, topic] = reason is not None and not reason.is_failure
    return answers


def _deliveries(sessions: dict[str, MqttSession]) -> Answers:
    for username in MARKERS:
        assert not sessions[username].subscribe("#").is_failure
    feeder = sessions["feeder"]
    for topic in [*DELIVERED, *MARKERS.values()]:
        assert not feeder.publish(topic, topic).is_failure
    answers: Answers = {}
    for username, marker in MARKERS.items():
        received = _until(sessions[username], marker)
        answers |= {("receive", username, topic): topic in received for topic in DELIVERED}
    return answers


def _until(session: MqttSession, marker: str) -> set[str]:
    """The topics received before `marker` (one publisher's messages arrive in order)."""
    received: set[str] = set()
    while marker not in received:
        received.add(session.next_message(timeout=10).topic)
    return received


def import_files(password_file: Path, acl_file: Path) -> str:
    err = StringIO()
    with pytest.raises(CommandError):
        run_command("import_mosquitto", password_file, acl_file, err=err)
    policy.clear()
    return err.getvalue()


def test_the_broker_answers_the_same_before_and_after_the_import_and_after_the_export(
    native_files: tuple[Path, Path], live_server: Any, tls_certs: Path, tmp_path: Path
) -> None:
    native = NativeBroker(
        workdir=tmp_path / "native",
        certs=tls_certs,
        auth_port=0,
        secret="",
        password_file=native_files[0],
        acl_file=native_files[1],
    )
    with running(native):
        before = observe(native)
    assert {case: before[case] for case in KNOWN} == KNOWN

    report = import_files(*native_files)
    # Dead in both: Mosquitto loads neither, and allow_anonymous is false.
    assert "acl_file line 2: for clients without a username" in report
    assert "password_file line 6" in report

    plugin = Broker(
        workdir=tmp_path / "plugin",
        certs=tls_certs,
        auth_port=live_port(live_server),
        secret=settings.MQTT_AUTH_SECRET,
    )
    with running(plugin):
        after = observe(plugin)
    assert _differences(before, after) == {}

    exported = tmp_path / "exported"
    out = run_command("export_mosquitto", exported / "passwd", exported / "acl")
    assert "Wrote 5 accounts" in out
    again = NativeBroker(
        workdir=exported,
        certs=tls_certs,
        auth_port=0,
        secret="",
        password_file=exported / "passwd",
        acl_file=exported / "acl",
    )
    with running(again):
        from_export = observe(again)
    assert _differences(before, from_export) == {}


def _differences(before: Answers, after: Answers) -> dict[tuple[str, str, str], tuple[bool, bool]]:
    assert before.keys() == after.keys()
    return {case: (before[case], after[case]) for case in before if before[case] != after[case]}
