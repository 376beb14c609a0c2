"""/metrics in the Prometheus text format, read from the database on each scrape.

Gunicorn runs several workers and the monitor is another process, so in-process counters
would disagree between scrapes; the database is the one place that knows the totals.
Audit rows are pruned, so auth decisions are exposed as gauges over fixed windows.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from datetime import timedelta

from django.conf import settings
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from brokerauth.models import AuthEvent
from monitor.models import BrokerStat, MonitorState


class ServiceCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        state = MonitorState.get()  # read once: the presence numbers and the monitor's totals
        yield from self.broker()
        yield from self.clients(state)
        yield from self.decisions()
        yield from self.monitor(state)

    def broker(self) -> Iterator[Metric]:
        sys = GaugeMetricFamily(
            "mqtt_broker_sys", "Latest numeric value of each $SYS/broker topic.", labels=["topic"]
        )
        for topic, number in BrokerStat.objects.filter(number__isnull=False).values_list(
            "topic", "number"
        ):
            if number is not None:
                sys.add_metric([topic], number)
        yield sys

    def clients(self, state: MonitorState) -> Iterator[Metric]:
        presence = state.presence()
        yield GaugeMetricFamily(
            "mqtt_clients_online",
            "Clients believed online (uncertain ones included).",
            value=presence.online,
        )
        yield GaugeMetricFamily(
            "mqtt_clients_uncertain",
            "Clients believed online without fresh evidence (monitor or broker was away).",
            value=presence.uncertain,
        )
        if presence.broker_connected is not None:
            yield GaugeMetricFamily(
                "mqtt_clients_broker_connected",
                "The broker's own count of connected clients, as the monitor last applied it.",
                value=presence.broker_connected,
            )
        yield GaugeMetricFamily(
            "mqtt_clients_mismatch",
            "1 when the broker's count has disagreed with the clients online past the bound.",
            value=presence.mismatch,
        )

    def decisions(self) -> Iterator[Metric]:
        now = timezone.now()
        for window, seconds in (("1h", 3600), ("24h", 86400)):
            family = GaugeMetricFamily(
                f"mqtt_auth_decisions_{window}",
                f"Audited auth decisions in the last {window} (logins, ACL denials).",
                labels=["kind", "result"],
            )
            rows = (
                AuthEvent.objects.filter(created_at__gte=now - timedelta(seconds=seconds))
                .order_by()
                .values("kind", "allowed")
                .annotate(n=Count("id"))
            )
            for row in rows:
                family.add_metric([row["kind"], "allow" if row["allowed"] else "deny"], row["n"])
            yield family

    def monitor(self, state: MonitorState) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "mqtt_monitor_up", "1 when the monitor reported in recently.", value=state.is_alive()
        )
        if state.last_sys_at is not None:
            age = (timezone.now() - state.last_sys_at).total_seconds()
            yield GaugeMetricFamily(
                "mqtt_monitor_sys_age_seconds", "Age of the last $SYS message.", value=age
            )
        for name, value, text in (
            ("refused_logins", state.refused_logins, "Refused CONNECTs seen in the broker log."),
            ("test_service_runs", state.test_service_runs, "Test service probe clients seen."),
            ("bad_payloads", state.bad_payloads, "Telemetry messages that could not be read."),
            ("readings_stored", state.readings_stored, "Telemetry readings stored."),
        ):
            yield GaugeMetricFamily(f"mqtt_monitor_{name}", text, value=value)


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    token = settings.METRICS_TOKEN
    if token:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            return HttpResponse("bearer token required\n", status=401, content_type="text/plain")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
