"""What the UI and API tests seed: clients with sessions and readings, the broker's $SYS."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from monitor.models import (
    BrokerStat,
    BrokerStatSample,
    Client,
    LatestValue,
    MonitorState,
    Reading,
    ReadingRollup,
    Session,
)


def seed_client(client_id: str, username: str = "alice", online: bool = True, readings: int = 60):
    """A client with two sessions, two metrics and `readings` readings of each (one a minute)."""
    now = timezone.now()
    client = Client.objects.create(
        client_id=client_id,
        username=username,
        online=online,
        last_address="10.0.0.5",
        last_port=43476,
        protocol=Client.Protocol.MQTT5,
        keepalive=60,
        connected_since=now - timedelta(hours=1) if online else None,
        last_seen=now,
        connect_count=2,
        message_count=readings * 2,
        bad_message_count=3,
        last_bad_message_error="not JSON",
        last_bad_message_at=now,
    )
    Session.objects.create(
        client=client,
        connected_at=now - timedelta(hours=3),
        disconnected_at=now - timedelta(hours=2),
        reason=Session.Reason.TIMEOUT,
        detail="has exceeded timeout",
        address="10.0.0.5",
    )
    Session.objects.create(client=client, connected_at=now - timedelta(hours=1), address="10.0.0.5")
    rows = []
    for metric, base in (("temperature", 20.0), ("humidity", 50.0)):
        for i in range(readings):
            at = now - timedelta(minutes=readings - i, seconds=-30)
            rows.append(Reading(client=client, metric=metric, value=base + i % 7, at=at))
        LatestValue.objects.create(client=client, metric=metric, value=base, at=now, count=readings)
    Reading.objects.bulk_create(rows)
    ReadingRollup.objects.rebuild()  # as the monitor would have written them
    return client


def seed_broker_state() -> MonitorState:
    """$SYS values, an hour of counter samples (10 msg/s, 100 B/s) and a fresh monitor."""
    now = timezone.now()
    for topic, value in (
        ("$SYS/broker/version", "mosquitto version 2.0.18"),
        ("$SYS/broker/uptime", "93784 seconds"),
        ("$SYS/broker/clients/connected", "1"),
    ):
        number = float(value.split()[0]) if value[0].isdigit() else None
        BrokerStat.objects.create(topic=topic, value=value, number=number, updated_at=now)
    samples = []
    for i in range(30):
        at = now - timedelta(minutes=30 - i)
        samples.append(
            BrokerStatSample(topic="$SYS/broker/messages/received", value=i * 600, at=at)
        )
        samples.append(BrokerStatSample(topic="$SYS/broker/messages/sent", value=i * 900, at=at))
        samples.append(BrokerStatSample(topic="$SYS/broker/bytes/sent", value=i * 6000, at=at))
        samples.append(BrokerStatSample(topic="$SYS/broker/bytes/received", value=i * 4000, at=at))
    BrokerStatSample.objects.bulk_create(samples)
    state = MonitorState.get()
    state.last_sys_at = state.heartbeat_at = now
    state.believed_online, state.broker_connected = 1, 1
    state.save()
    return state
