"""Revocation: how long a rule change and a disabled account take to reach a live session.

    .venv/bin/python -m bench.revocation [--samples 20] [--baseline-samples 4]
    .venv/bin/python -m bench.revocation --database-url postgres://postgres@127.0.0.1:5432/DB

Issue 14, item 3. Two brokers from mosquitto/mosquitto.conf.template over TLS, asking the same
Django (Gunicorn, web/gunicorn.conf.py, -w 2), differing only in these lines:
  (a) ttl:  no change feed, the 5 s cache the configs shipped before it;
  (b) feed: the shipped config: the plugin follows the change feed, a 600 s (10-minute) cache.
For each sample, on a fresh account (generated secret, one rule devices/<name>/#) with an
MQTT 5 session whose allow is cached (two publishes acknowledged), this process changes the
database through the ORM, as the UI and API do, and times from the commit:
  - rule change -> enforcement: the account's rule is deleted (a rule write path: the note
    is Change.objects.note_policy, as the UI and API write it); the session publishes at QoS 1
    every 20 ms until a PUBACK says "not authorised";
  - disable -> disconnect: Account.set_active(False); until the broker closes the session.
(a) is the baseline measured in the same run: its bound is the TTL (plus the web processes'
POLICY_REFRESH_SECONDS), and it never disconnects anyone (it gives up after --give-up s).
Samples are spaced POLICY_REFRESH_SECONDS + 0.5 s apart, so that no sample rides on the
previous one's second cache clear. The report gives p50, p99 and max per broker.

SQLite under var/bench/revocation by default; --database-url uses that PostgreSQL database
(its brokerauth tables are emptied first). Loopback only; everything started is stopped.
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from bench.broker_throughput import PY, BrokerConfig, render_broker, started, wait_port
from bench.login_storm import django_env, run_broker, wait_answering
from tests.brokers import NOT_AUTHORIZED, ROOT, Broker, MqttSession, free_port, make_certs
from web import secretfile

CONFIGS = {"ttl": 5, "feed": 600}
PUBLISH_EVERY = 0.02


def setup_django(env: dict[str, str]) -> None:
    """This process writes the changes itself, through the models, as the UI and API do."""
    os.environ.update(env)
    os.environ["DJANGO_SETTINGS_MODULE"] = "web.settings"
    import django

    django.setup()


def without_feed(broker: BrokerConfig) -> BrokerConfig:
    lines = broker.conf.read_text().splitlines(keepends=True)
    broker.conf.write_text("".join(x for x in lines if not x.startswith("plugin_opt_http_changes")))
    return broker


def fresh_account(name: str) -> str:
    from brokerauth.acl import Access
    from brokerauth.models import Account, Rule

    account = Account(username=name)
    secret = account.save_new()
    Rule.objects.create(account=account, pattern="devices/%u/#", access=Access.ALL)
    return secret


def session(broker: Broker, name: str, secret: str) -> MqttSession:
    mqtt = MqttSession(broker, name, secret, name)
    if mqtt.connect() != 0:
        raise SystemExit(f"{name} could not connect")
    for _ in range(2):  # the second one is answered from the plugin's cache
        reason = mqtt.publish(f"devices/{name}/t", "warm")
        if reason is None or reason.is_failure:
            raise SystemExit(f"{name} may not publish")
    return mqtt


def until(condition: Callable[[], bool], started_at: float, give_up: float) -> float:
    while not condition():
        if time.monotonic() - started_at > give_up:
            return float("inf")
        time.sleep(PUBLISH_EVERY)
    return time.monotonic() - started_at


def rule_change(broker: Broker, name: str, give_up: float) -> float:
    from brokerauth.models import Change, Rule

    mqtt = session(broker, name, fresh_account(name))
    try:
        Rule.objects.filter(account__username=name).delete()
        Change.objects.note_policy(f"rules of {name} deleted")
        t0 = time.monotonic()
        denied = lambda: mqtt.publish(f"devices/{name}/t", "x") == NOT_AUTHORIZED  # noqa: E731
        return until(denied, t0, give_up)
    finally:
        mqtt.close()


def disable(broker: Broker, name: str, give_up: float) -> float:
    from brokerauth.models import Account

    mqtt = session(broker, name, fresh_account(name))
    try:
        account = Account.objects.get(username=name)
        account.set_active(False)
        t0 = time.monotonic()
        return until(mqtt.disconnected.is_set, t0, give_up)
    finally:
        mqtt.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def seconds(value: float) -> str:
    return "never" if value == float("inf") else f"{value:.2f} s"


def report(results: dict[str, dict[str, list[float]]], give_up: float) -> None:
    print("| broker | measure | samples | p50 | p99 | max |")
    print("|---|---|---|---|---|---|")
    for config, measures in results.items():
        for measure, values in measures.items():
            label = f"(a) ttl {CONFIGS['ttl']} s" if config == "ttl" else "(b) feed, ttl 600 s"
            never = f" (never = not within {give_up:g} s)" if float("inf") in values else ""
            print(
                f"| {label} | {measure}{never} | {len(values)} | "
                f"{seconds(statistics.median(values))} | {seconds(percentile(values, 0.99))} | "
                f"{seconds(max(values))} |"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--baseline-samples", type=int, default=4)
    parser.add_argument("--give-up", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    var = ROOT / "var" / "bench" / "revocation"
    shutil.rmtree(var, ignore_errors=True)
    (var / "static").mkdir(parents=True)
    secretfile.create_dev_secrets(var)
    certs = make_certs(var / "certs")
    secret = secrets.token_urlsafe(24)
    env = django_env(var, secret, args.database_url)
    subprocess.run([PY, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    setup_django(env)
    from django.conf import settings

    from brokerauth.models import Account

    Account.objects.all().delete()
    spacing = settings.POLICY_REFRESH_SECONDS + 0.5

    http_port = free_port()
    gunicorn = [PY, "-m", "gunicorn", "-c", str(ROOT / "web" / "gunicorn.conf.py")]
    gunicorn += ["-b", f"127.0.0.1:{http_port}", "-w", str(args.workers)]
    results: dict[str, dict[str, list[float]]] = {}
    with ExitStack() as stack:
        log = stack.enter_context((var / "gunicorn.log").open("ab"))
        web = stack.enter_context(
            started(gunicorn, "gunicorn", cwd=ROOT, env=env, stdout=log, stderr=log)
        )
        wait_port(http_port, web, "gunicorn")
        wait_answering(http_port, args.workers)
        brokers: dict[str, Any] = {}
        for config, ttl in CONFIGS.items():
            conf = render_broker(config, var, certs, http_port, secret, cache_ttl=ttl)
            if config == "ttl":
                conf = without_feed(conf)
            run_broker(stack, conf.conf, conf.port, conf.workdir)
            brokers[config] = Broker(conf.workdir, certs, http_port, secret, port=conf.port)
        time.sleep(spacing)  # the feed broker's first poll (a reset) has been answered
        for config, broker in brokers.items():
            count = args.samples if config == "feed" else args.baseline_samples
            results[config] = {"rule change -> enforced": [], "disable -> disconnected": []}
            for i in range(count):
                for measure, probe in (
                    ("rule change -> enforced", rule_change),
                    ("disable -> disconnected", disable),
                ):
                    value = probe(broker, f"{config}-{measure[:4]}-{i}", args.give_up)
                    results[config][measure].append(value)
                    print(f"{config} {measure} {i + 1}/{count}: {seconds(value)}", file=sys.stderr)
                    time.sleep(spacing)

    version = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True).stdout
    database = "PostgreSQL" if args.database_url.startswith("postgres") else "SQLite"
    print(f"# {version.splitlines()[0]}; {os.cpu_count()} cores; {platform.platform()}")
    refresh = settings.POLICY_REFRESH_SECONDS
    print(f"# {database}; POLICY_REFRESH_SECONDS={refresh:g}; load average {os.getloadavg()}")
    report(results, args.give_up)
    return 0


if __name__ == "__main__":
    sys.exit(main())
