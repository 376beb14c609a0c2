"""The test-service round trip against a real Mosquitto asking this test's live Django."""

from __future__ import annotations

from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone
from rest_framework.test import APIClient

from brokerauth.acl import Access
from brokerauth.models import Account, Rule
from monitor import testservice
from monitor.models import MonitorState
from tests.brokers import Broker

pytestmark = [pytest.mark.broker, pytest.mark.django_db(transaction=True)]
PASSWORD = "service-password-1"


@pytest.fixture
def service_account(db: None, tmp_path: Path) -> Account:
    """The monitor's own account with the rules `manage.py monitor_account` gives it."""
    call_command("monitor_account", "--password-file", str(tmp_path / "pw"), stdout=StringIO())
    account = Account.objects.get(username=settings.MONITOR_USERNAME)
    account.change_password(PASSWORD)
    return account


def run(mosquitto: Broker, live_server: Any, username: str = "") -> list[testservice.Step]:
    target = testservice.Target(
        host="127.0.0.1",
        port=mosquitto.port,
        ca_file=str(mosquitto.ca_file),
        username=username or settings.MONITOR_USERNAME,
        password=PASSWORD,
        topic="probe/{client_id}",
    )
    return testservice.run_round_trip(
        target,
        auth_url=live_server.url,
        auth_secret=settings.MQTT_AUTH_SECRET,
        auth_user=settings.MQTT_AUTH_USERNAME,
        last_sys=timezone.now,
        stale_after=60,
    )


def test_every_step_passes_with_a_working_service(
    mosquitto: Broker, live_server: Any, service_account: Account
) -> None:
    steps = run(mosquitto, live_server)
    assert [s.name for s in steps] == [
        "TLS connect",
        "subscribe",
        "publish probe",
        "receive probe",
        "auth endpoints",
        "database",
        "$SYS freshness",
    ]
    assert all(s.ok for s in steps), steps
    assert all(s.ms >= 0 for s in steps)


def test_a_refused_login_fails_the_first_step_and_skips_the_rest(
    mosquitto: Broker, live_server: Any, service_account: Account
) -> None:
    steps = {s.name: s for s in run(mosquitto, live_server, username="nobody")}
    assert steps["TLS connect"].ok is False
    assert "refused" in steps["TLS connect"].detail or "closed" in steps["TLS connect"].detail
    assert steps["receive probe"].ok is None
    assert steps["auth endpoints"].ok is False
    assert steps["database"].ok is True


def test_missing_publish_rights_fail_the_publish_step(
    mosquitto: Broker, live_server: Any, service_account: Account
) -> None:
    Rule.objects.filter(account=service_account).update(access=Access.SUBSCRIBE)
    Rule.objects.create(account=service_account, pattern="probe/%c", access=1)
    steps = {s.name: s for s in run(mosquitto, live_server)}
    assert steps["subscribe"].ok is True
    assert steps["publish probe"].ok is False
    assert "refused" in steps["publish probe"].detail


def test_the_api_and_the_page_run_the_configured_round_trip(
    mosquitto: Broker, live_server: Any, service_account: Account, operator: Any
) -> None:
    settings_override = {
        "MQTT_HOST": "127.0.0.1",
        "MQTT_PORT": mosquitto.port,
        "MQTT_CA_FILE": str(mosquitto.ca_file),
        "MONITOR_USERNAME": settings.MONITOR_USERNAME,
        "MONITOR_PASSWORD": PASSWORD,
        "TEST_SERVICE_AUTH_URL": live_server.url,
    }
    state = MonitorState.get()
    state.last_sys_at = timezone.now()
    state.save()
    with override_settings(**settings_override):
        api = APIClient()
        api.force_authenticate(operator)
        body = api.post("/api/v1/test-service/").json()
        assert body["ok"] is True, body
        api.force_login(operator)
        html = api.post("/test-service/", HTTP_HX_REQUEST="true").content.decode()
    assert html.startswith('<div id="steps"') and "All steps passed" in html
