"""Cold-login storm: fresh devices with generated secrets log in right after a web restart.

    .venv/bin/python -m bench.login_storm [--accounts 1000] [--runs 3] [--threads 10]
    .venv/bin/python -m bench.login_storm --database-url postgres://postgres@127.0.0.1:5432/DB

Issue 14's transition: a fleet reconnecting after a web deploy or a broker restart. Two
brokers from mosquitto/mosquitto.conf.template, over TLS, differing only in their auth lines:
  (a) files:  Mosquitto's own password_file holding the very hashes Django stores for the
      same accounts (generated secrets are `$7$`, so the file is an export of the table);
  (b) plugin: the project's plugin asking Django (Gunicorn, web/gunicorn.conf.py, -w 2).
Each run, interleaved a, b, --runs times: (a) a freshly started broker; (b) Gunicorn started
afresh (nothing remembered, no policy loaded) and a freshly started broker (empty plugin
cache), then --accounts accounts that never logged in before connect once each (raw TLS +
MQTT 3.1.1 CONNECT / CONNACK / DISCONNECT, client id = username) from --threads threads.
For (b) every login is Django's first for that account: a claim of its client id, its
last-login time and its audit row, all checked after the run. The report gives connections/s,
their medians and the per-run ratio (b)/(a).

SQLite under var/bench/login_storm by default; --database-url uses that PostgreSQL database
(its brokerauth tables are emptied first). Loopback only; everything started is stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path

from bench.broker_throughput import PY, render_broker, started, storm, wait_port
from tests.brokers import ROOT, free_port, make_certs
from web import secretfile

CONFIGS = ("files", "plugin")

SEED = """
import json, sys
from brokerauth import passwords
from brokerauth.models import Account, AuthEvent, Credential
Account.objects.all().delete()
AuthEvent.objects.all().delete()
fleet = json.load(sys.stdin)
Account.objects.bulk_create(
    Account(username=name, password_hash=passwords.hash_secret(secret),
            credential=Credential.GENERATED)
    for name, secret in fleet.items()
)
print("\\n".join(f"{a.username}:{a.password_hash}" for a in Account.objects.all()))
"""

CHECK = """
import json, sys
from brokerauth.models import Account, AuthEvent, ClientId
names = json.load(sys.stdin)
print(json.dumps({
    "audited": AuthEvent.objects.filter(username__in=names, allowed=True).count(),
    "claimed": ClientId.objects.filter(account__username__in=names).count(),
    "last_login": Account.objects.filter(username__in=names, last_login_at__isnull=False).count(),
}))
"""


def django_env(var: Path, secret: str, database_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "DEV_MODE": "1",
        "DEBUG": "0",
        "SECURE": "0",
        "VAR_DIR": str(var),
        "DATABASE_URL": database_url or f"sqlite:///{var / 'db.sqlite3'}",
        "LOG_TO_FILE": "0",
        "LOG_LEVEL": "WARNING",
        "MQTT_AUTH_SECRET": secret,
    }


def manage(env: dict[str, str], code: str, stdin: str) -> str:
    result = subprocess.run(
        [PY, "manage.py", "shell", "--no-imports", "-c", code],
        cwd=ROOT,
        env=env,
        input=stdin.encode(),
        capture_output=True,
        check=True,
    )
    return result.stdout.decode()


def wait_answering(port: int, workers: int) -> None:
    """Until Gunicorn's workers have loaded the app: its master listens before they do, and
    a storm that waits for a worker to boot would measure the boot, not the logins."""
    deadline = time.monotonic() + 60
    answered = 0
    while answered < 4 * workers:
        if time.monotonic() > deadline:
            raise SystemExit("gunicorn never answered")
        request = urllib.request.Request(f"http://127.0.0.1:{port}/mqtt/auth/user", data=b"{}")
        try:
            urllib.request.urlopen(request, timeout=5)  # noqa: S310 - loopback
        except urllib.error.HTTPError:
            answered += 1  # 403: caller not allowed, from a worker that has the app
        except OSError:
            time.sleep(0.05)


def run_broker(stack: ExitStack, conf: Path, port: int, workdir: Path) -> None:
    shutil.rmtree(workdir / "data", ignore_errors=True)
    (workdir / "data").mkdir()
    proc = stack.enter_context(
        started(
            ["mosquitto", "-c", str(conf)],
            "mosquitto",
            stdout=subprocess.DEVNULL,
            stderr=(workdir / "stderr").open("ab"),
        )
    )
    wait_port(port, proc, f"mosquitto ({workdir.name})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    var = ROOT / "var" / "bench" / "login_storm"
    shutil.rmtree(var, ignore_errors=True)
    (var / "static").mkdir(parents=True)
    secretfile.create_dev_secrets(var)
    certs = make_certs(var / "certs")
    secret = secrets.token_urlsafe(24)
    env = django_env(var, secret, args.database_url)
    subprocess.run([PY, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    fleet = {
        f"storm-{run}-{i}": secrets.token_urlsafe(18)
        for run in range(args.runs)
        for i in range(args.accounts)
    }
    (var / "passwords").write_text(manage(env, SEED, json.dumps(fleet)))
    (var / "passwords").chmod(0o600)
    (var / "acl").write_text("pattern readwrite devices/%u/#\n")

    http_port = free_port()
    gunicorn = [PY, "-m", "gunicorn", "-c", str(ROOT / "web" / "gunicorn.conf.py")]
    gunicorn += ["-b", f"127.0.0.1:{http_port}", "-w", str(args.workers)]
    brokers = {
        name: render_broker(name, var, certs, http_port, secret, cache_ttl=5) for name in CONFIGS
    }
    rates: dict[str, list[float]] = {name: [] for name in CONFIGS}
    checks = []
    for run in range(args.runs):
        names = [f"storm-{run}-{i}" for i in range(args.accounts)]
        for name in CONFIGS:
            broker = brokers[name]
            with ExitStack() as stack:
                if name == "plugin":  # the web restart: new processes, nothing in memory
                    log = stack.enter_context((var / "gunicorn.log").open("ab"))
                    web = stack.enter_context(
                        started(gunicorn, "gunicorn", cwd=ROOT, env=env, stdout=log, stderr=log)
                    )
                    wait_port(http_port, web, "gunicorn")
                    wait_answering(http_port, args.workers)
                run_broker(stack, broker.conf, broker.port, broker.workdir)
                rate = storm(broker.port, certs, names, 1, args.threads, fleet)
            rates[name].append(rate)
            print(f"run {run + 1}/{args.runs}, {name}: {rate:.0f} connections/s", file=sys.stderr)
        checks.append(json.loads(manage(env, CHECK, json.dumps(names))))

    version = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True).stdout
    database = "PostgreSQL" if args.database_url.startswith("postgres") else "SQLite"
    print(f"# {version.splitlines()[0]}; {os.cpu_count()} cores; {platform.platform()}")
    print(f"# {database}; load average after the run: {os.getloadavg()}")
    files, plugin = rates["files"], rates["plugin"]
    ratios = [b / a for a, b in zip(files, plugin, strict=True) if a]
    print(f"| {args.accounts} fresh accounts | (a) files | (b) plugin | (b)/(a) |")
    print("|---|---|---|---|")
    for run, (a, b) in enumerate(zip(files, plugin, strict=True)):
        print(f"| run {run + 1}, connections/s | {a:.0f} | {b:.0f} | {b / a:.2f} |")
    print(
        f"| median | {statistics.median(files):.0f} | {statistics.median(plugin):.0f} "
        f"| **{statistics.median(ratios):.2f}** (per-run ratios) |"
    )
    print(f"# Django's side of each (b) run (audited, claimed, last login): {checks}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
