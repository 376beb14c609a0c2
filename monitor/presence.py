"""Client presence from broker log events, and reconciliation with the broker's own count."""

from __future__ import annotations

import logging
from datetime import datetime

from django.db import transaction
from django.db.models import F

from monitor import brokerlog
from monitor.models import Client, LoginRefusal, MonitorState, Session

log = logging.getLogger("monitor.presence")


def apply(event: brokerlog.Event, at: datetime) -> None:
    """Record one presence event (each in its own short transaction)."""
    with transaction.atomic():
        if isinstance(event, brokerlog.Connected):
            connected(event, at)
        elif isinstance(event, brokerlog.Disconnected):
            disconnected(event, at)
        elif isinstance(event, brokerlog.TakenOver):
            close(event.client_id, at, brokerlog.TAKEN_OVER, "already connected, closing old")
        elif isinstance(event, brokerlog.LoginRefused):
            refused(event.client_id, at)


def close_open_sessions(client: Client, at: datetime, reason: str, detail: str = "") -> int:
    return client.sessions.filter(disconnected_at=None).update(
        disconnected_at=at, reason=reason, detail=detail[:255]
    )


def connected(event: brokerlog.Connected, at: datetime) -> None:
    client, _ = Client.objects.select_for_update().get_or_create(
        client_id=event.client_id, defaults={"first_seen": at}
    )
    # A connect while we believe it online: we missed its disconnect (monitor away).
    close_open_sessions(client, at, Session.Reason.UNKNOWN)
    fields = {
        "username": event.username,
        "protocol": event.protocol,
        "clean_start": event.clean_start,
        "keepalive": event.keepalive,
    }
    Session.objects.create(
        client=client, connected_at=at, address=event.address, port=event.port, **fields
    )
    Client.objects.filter(pk=client.pk).update(
        online=True,
        uncertain=False,
        connected_since=at,
        last_seen=at,
        connect_count=F("connect_count") + 1,
        last_address=event.address,
        last_port=event.port,
        **fields,
    )


def disconnected(event: brokerlog.Disconnected, at: datetime) -> None:
    client = Client.objects.select_for_update().filter(client_id=event.client_id).first()
    if event.reason == brokerlog.NOT_AUTHORISED and (client is None or not client.online):
        refused(event.client_id, at)
        return
    if client is None:
        # Connected before the monitor started: we learn of it as it leaves.
        client = Client.objects.create(client_id=event.client_id, first_seen=at)
    if event.port is not None and client.online and event.port != client.last_port:
        # 2.1.1+ names the connection: this one is an older one the broker is closing.
        client.sessions.filter(disconnected_at=None, port=event.port).update(
            disconnected_at=at, reason=event.reason, detail=event.detail[:255]
        )
        return
    close(event.client_id, at, event.reason, event.detail, client)


def close(
    client_id: str, at: datetime, reason: str, detail: str, client: Client | None = None
) -> None:
    client = client or Client.objects.filter(client_id=client_id).first()
    if client is None:
        return
    close_open_sessions(client, at, reason, detail)
    Client.objects.filter(pk=client.pk).update(
        online=False,
        uncertain=False,
        last_seen=at,
        last_disconnected_at=at,
        last_disconnect_reason=reason,
        disconnect_count=F("disconnect_count") + 1,
    )


def refused(client_id: str, at: datetime) -> None:
    LoginRefusal.objects.create(at=at, client_id=client_id[:255])
    MonitorState.objects.filter(pk=1).update(refused_logins=F("refused_logins") + 1)


def self_online(client_id: str, username: str, at: datetime) -> None:
    """The monitor is a client too: the broker counts it in clients/connected."""
    Client.objects.update_or_create(
        client_id=client_id,
        defaults={
            "username": username,
            "online": True,
            "uncertain": False,
            "protocol": Client.Protocol.MQTT5,
            "clean_start": False,
            "connected_since": at,
            "last_seen": at,
        },
    )
    Client.objects.filter(client_id=client_id).update(connect_count=F("connect_count") + 1)


def self_offline(client_id: str, at: datetime) -> None:
    Client.objects.filter(client_id=client_id).update(
        online=False, last_disconnected_at=at, last_disconnect_reason=Session.Reason.CLEAN
    )


def mark_uncertain(before: datetime, except_client_id: str) -> int:
    """Clients whose last event predates a monitor outage that ended at `before`."""
    count = (
        Client.objects.exclude(client_id=except_client_id)
        .filter(last_seen__lt=before)
        .update(uncertain=True)
    )
    if count:
        log.info("%d clients marked uncertain: their last event predates the outage", count)
    return count


def broker_restarted(at: datetime, since: datetime, except_client_id: str) -> int:
    """Every session opened before the broker restarted `since` ended then."""
    stale = Client.objects.online().exclude(client_id=except_client_id)
    stale = stale.filter(connected_since__lt=since)
    Session.objects.filter(client__in=stale, disconnected_at=None).update(
        disconnected_at=since, reason=Session.Reason.BROKER_RESTART
    )
    return stale.update(
        online=False,
        uncertain=False,
        last_disconnected_at=since,
        last_disconnect_reason=Session.Reason.BROKER_RESTART,
        disconnect_count=F("disconnect_count") + 1,
    )


def reconcile(broker_connected: int, at: datetime, self_client_id: str) -> bool:
    """Compare our online count with the broker's; True when they agree.

    A disagreement is recorded only when it lasts two checks in a row: $SYS counts and log
    lines travel separately and may cross. When the broker counts only the monitor, every
    other client is known to be offline.
    """
    state = MonitorState.get()
    # Only clients last seen before the count was taken: log lines are applied at once,
    # counts at the next flush, so a connect can be newer than the count that denies it.
    gone = Client.objects.online().exclude(client_id=self_client_id).filter(last_seen__lt=at)
    if broker_connected <= 1 and gone:
        Session.objects.filter(client__in=gone, disconnected_at=None).update(
            disconnected_at=at, reason=Session.Reason.UNKNOWN
        )
        gone.update(online=False, uncertain=False, last_disconnected_at=at)
    believed = Client.objects.online().count()
    agree = believed == broker_connected
    was_off = state.reconciled_at is not None and state.believed_online != state.broker_connected
    mismatch = not agree and was_off
    if mismatch and not state.mismatch:
        log.warning(
            "presence mismatch: %d clients believed online, broker says %d",
            believed,
            broker_connected,
        )
    MonitorState.objects.filter(pk=1).update(
        believed_online=believed,
        broker_connected=broker_connected,
        reconciled_at=at,
        mismatch=mismatch,
        mismatch_since=(state.mismatch_since or at) if mismatch else None,
    )
    return agree
