"""The Test service: one live round trip through every part an operator depends on.

TLS connect to the broker as a service account, subscribe, publish a probe, receive it, ask the
auth endpoints over HTTP, query the database and read the age of the last `$SYS` update. Each
step is timed and says what it saw; a failed MQTT step skips the ones that need it.
`run_round_trip()` takes everything explicitly so that tests can point it at their own broker;
`configured_round_trip()` is the one the UI's Test service page and the API run: it logs in as
the monitor's account, on TEST_SERVICE_TOPIC, which `ensure_probe_rule()` opens to that account
(`manage.py monitor_account` calls it). `database_step()` is /status/'s check too.
"""

from __future__ import annotations

import base64
import json
import queue
import secrets
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import paho.mqtt.client as mqtt
from django.conf import settings
from django.db import connection
from django.utils import timezone
from paho.mqtt.enums import CallbackAPIVersion

from brokerauth import clientids
from brokerauth.acl import Access
from brokerauth.models import Account, Rule
from monitor import account as monitor_account
from monitor.models import MonitorState


@dataclass
class Step:
    name: str
    ok: bool | None  # None: skipped
    ms: float
    detail: str


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    ca_file: str | None
    username: str
    password: str
    topic: str = "probe/{client_id}"
    client_id: str = ""
    timeout: float = 5.0


class _Probe:
    """A paho client whose callbacks only hand results to queues the steps wait on."""

    def __init__(self, target: Target, client_id: str) -> None:
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        self.client.username_pw_set(target.username, target.password)
        if target.ca_file:
            self.client.tls_set(ca_certs=target.ca_file, cert_reqs=ssl.CERT_REQUIRED)
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.client.on_connect = lambda _c, _u, _f, rc, _p: self.events.put(("connack", rc))
        self.client.on_disconnect = lambda _c, _u, _f, rc, _p: self.events.put(("gone", rc))
        self.client.on_subscribe = lambda _c, _u, mid, rcs, _p: self.events.put(("suback", rcs))
        self.client.on_publish = lambda _c, _u, mid, rc, _p: self.events.put(("puback", rc))
        self.client.on_message = lambda _c, _u, msg: self.events.put(("message", msg.payload))
        self.pending: list[tuple[str, Any]] = []

    def wait(self, kind: str, timeout: float) -> Any:
        """The next event of this kind; others are kept (the probe can arrive before PUBACK)."""
        for i, (got, value) in enumerate(self.pending):
            if got == kind:
                del self.pending[i]
                return value
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                got, value = self.events.get(timeout=left)
            except queue.Empty:
                break
            if got == kind:
                return value
            if got == "gone":
                raise ConnectionError(f"broker closed the connection ({value})")
            self.pending.append((got, value))
        raise TimeoutError(f"no {kind} within {timeout:g} s")


@contextmanager
def _timed(steps: list[Step], name: str) -> Iterator[Callable[[str], None]]:
    """Times the block; it reports its detail through the callable; an exception fails it."""
    start = time.perf_counter()
    detail = [""]
    try:
        yield lambda text: detail.__setitem__(0, text)
    except Exception as exc:  # noqa: BLE001 - any failure is the step's result, shown to the operator
        steps.append(Step(name, False, _ms(start), f"{type(exc).__name__}: {exc}"))
        raise _StepFailed from exc
    steps.append(Step(name, True, _ms(start), detail[0]))


class _StepFailed(Exception):
    pass


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 1)


def mqtt_steps(target: Target) -> list[Step]:
    """The four MQTT steps, as the client id `run_round_trip` chose."""
    steps: list[Step] = []
    client_id = target.client_id
    topic = target.topic.format(username=target.username, client_id=client_id)
    payload = f"probe {secrets.token_hex(8)}".encode()
    names = ["TLS connect", "subscribe", "publish probe", "receive probe"]
    probe: _Probe | None = None
    try:
        with _timed(steps, names[0]) as say:
            probe = _Probe(target, client_id)  # reads the CA file: a missing one fails here
            probe.client.connect(target.host, target.port, keepalive=30)
            probe.client.loop_start()
            rc = probe.wait("connack", target.timeout)
            if rc.is_failure:
                raise PermissionError(f"CONNACK refused: {rc}")
            say(f"{target.username} as {client_id} on {target.host}:{target.port}")
        with _timed(steps, names[1]) as say:
            probe.client.subscribe(topic, qos=1)
            (rc,) = probe.wait("suback", target.timeout)
            if rc.is_failure:
                raise PermissionError(f"subscription to {topic} refused: {rc}")
            say(topic)
        with _timed(steps, names[2]) as say:
            probe.client.publish(topic, payload, qos=1)
            rc = probe.wait("puback", target.timeout)
            if rc.is_failure:
                raise PermissionError(f"publish to {topic} refused: {rc}")
            say(f"{len(payload)} bytes, QoS 1")
        with _timed(steps, names[3]) as say:
            while probe.wait("message", target.timeout) != payload:
                pass  # a retained or older message on the topic: keep waiting for ours
            say("payload matches")
    except _StepFailed:
        pass
    finally:
        if probe is not None:
            probe.client.disconnect()
            probe.client.loop_stop()
    for name in names[len(steps) :]:
        steps.append(Step(name, None, 0.0, "skipped: an earlier step failed"))
    return steps


def auth_step(
    url: str, username: str, password: str, client_id: str, secret: str, user: str
) -> Step:
    """Ask /mqtt/auth/user the way the broker's plugin does."""
    start = time.perf_counter()
    if not url:
        return Step("auth endpoints", None, 0.0, "skipped: TEST_SERVICE_AUTH_URL is empty")
    body = json.dumps({"username": username, "password": password, "clientid": client_id})
    request = urllib.request.Request(
        url.rstrip("/") + "/mqtt/auth/user",
        data=body.encode(),
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Authorization": "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode(),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - own URL
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except OSError as exc:
        return Step("auth endpoints", False, _ms(start), f"{type(exc).__name__}: {exc}")
    return Step("auth endpoints", status == 200, _ms(start), f"user check answered {status}")


def database_step() -> Step:
    start = time.perf_counter()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # noqa: BLE001 - shown to the operator
        return Step("database", False, _ms(start), f"{type(exc).__name__}: {exc}")
    return Step("database", True, _ms(start), connection.vendor)


def sys_age_step(last_sys: datetime | None, stale_after: float) -> Step:
    start = time.perf_counter()
    if last_sys is None:
        return Step("$SYS freshness", False, _ms(start), "no $SYS update recorded yet")
    age = (timezone.now() - last_sys).total_seconds()
    return Step("$SYS freshness", age <= stale_after, _ms(start), f"last update {age:.0f} s ago")


def run_round_trip(
    target: Target,
    *,
    auth_url: str,
    auth_secret: str,
    auth_user: str,
    last_sys: Callable[[], datetime | None],
    stale_after: float,
) -> list[Step]:
    # A probe id: reserved for the service account (brokerauth/clientids.py).
    client_id = target.client_id or clientids.probe_id(target.username)
    steps = mqtt_steps(replace(target, client_id=client_id))
    steps.append(
        auth_step(auth_url, target.username, target.password, client_id, auth_secret, auth_user)
    )
    steps.append(database_step())
    steps.append(sys_age_step(last_sys(), stale_after))
    return steps


def probe_pattern() -> str:
    """The probe topic as an ACL pattern: each client id its own topic only."""
    return settings.TEST_SERVICE_TOPIC.replace("{client_id}", "%c")


def ensure_probe_rule(account: Account) -> int:
    """All rights on the probe topic for the account the round trip logs in as; 1 if added."""
    _rule, created = Rule.objects.get_or_create(
        account=account,
        pattern=probe_pattern(),
        access=Access.ALL,
        defaults={"allow": True, "description": "test service probe"},
    )
    return int(created)


def passed(steps: list[Step]) -> bool:
    """No step failed (skipped ones do not count against the run)."""
    return all(step.ok is not False for step in steps)


def configured_round_trip() -> list[Step]:
    """The round trip as the service is configured (the monitor's account and broker)."""
    target = Target(
        host=settings.MQTT_HOST,
        port=settings.MQTT_PORT,
        ca_file=settings.MQTT_CA_FILE or None,
        username=settings.MONITOR_USERNAME,
        password=monitor_account.password(),
        topic=settings.TEST_SERVICE_TOPIC,
    )
    return run_round_trip(
        target,
        auth_url=settings.TEST_SERVICE_AUTH_URL,
        auth_secret=settings.MQTT_AUTH_SECRET,
        auth_user=settings.MQTT_AUTH_USERNAME,
        last_sys=lambda: MonitorState.get().last_sys_at,
        stale_after=settings.WEB_STALE_SECONDS,
    )
