"""ACL endpoint throughput and latency under Gunicorn, against the framework's floor.

    .venv/bin/python -m bench.acl_endpoint [--seconds 10] [--concurrency 16]

Starts Gunicorn (gthread workers, keep-alive) on a scratch SQLite database under
var/bench, seeds accounts with group and account rules, then drives with `hey` (Go's HTTP
client, like go-auth's): (1) a trivial Django view returning 200, the floor; (2) the ACL
endpoint with a go-auth JSON body; both flat out, then the ACL endpoint at half its
measured capacity for the latency that the broker would see. Then logins/s cold (bcrypt
every time) and warm (remembered verification). Loopback only; everything started is stopped.
"""

from __future__ import annotations

import argparse
import base64
import csv
import io
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
from pathlib import Path
from typing import Any

from tests.brokers import free_port, wait_for
from web import secretfile

ROOT = Path(__file__).resolve().parent.parent
PY = str(ROOT / ".venv" / "bin" / "python")


def bench_env(var: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DEV_MODE": "1",
        "DEBUG": "0",
        "SECURE": "0",
        "VAR_DIR": str(var),
        "LOG_TO_FILE": "0",
        "LOG_LEVEL": "WARNING",
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "BCRYPT_ROUNDS": "12",
        **extra,
    }


SEED = """
from brokerauth.models import Account, Group, Rule
g = Group.objects.create(name="fleet")
Rule.objects.create(group=g, pattern="devices/%u/#", access=7)
Rule.objects.create(group=g, pattern="devices/%u/secret", access=7, allow=False)
Rule.objects.create(group=g, pattern="commands/%c", access=5)
for i in range(200):
    a = Account(username=f"dev-{i}")
    a.password_hash = "x"
    a.save()
    g.memberships.create(account=a)
    Rule.objects.create(account=a, pattern=f"shared/{i}/+", access=1)
a = Account.objects.get(username="dev-0")
a.change_password("bench password")
"""


def start_gunicorn(env: dict[str, str], port: int, workers: int, threads: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [
            PY,
            "-m",
            "gunicorn",
            "web.wsgi",
            "-b",
            f"127.0.0.1:{port}",
            "-w",
            str(workers),
            "-k",
            "gthread",
            "--threads",
            str(threads),
            "--keep-alive",
            "30",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )

    def listening() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            return False

    wait_for(listening, 30, "gunicorn")
    return proc


def hey(
    url: str, body: str, auth: str, seconds: int, concurrency: int, qps_per_worker: float = 0
) -> dict[str, Any]:
    cmd = [
        "hey",
        "-z",
        f"{seconds}s",
        "-c",
        str(concurrency),
        "-m",
        "POST",
        "-T",
        "application/json",
        "-d",
        body,
        "-H",
        f"Authorization: {auth}",
        "-o",
        "csv",
    ]
    if qps_per_worker:
        cmd += ["-q", f"{qps_per_worker:.2f}"]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    times = sorted(float(r["response-time"]) * 1000 for r in rows)
    codes = {r["status-code"] for r in rows}
    quantiles = statistics.quantiles(times, n=100)
    return {
        "rps": len(rows) / seconds,
        "p50": quantiles[49],
        "p99": quantiles[98],
        "n": len(rows),
        "codes": ",".join(sorted(codes)),
    }  # type: ignore[dict-item]


def fmt(name: str, r: dict[str, Any]) -> str:
    return (
        f"| {name} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['n']:.0f} "
        f"| {r['codes']} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    # A broker asks from its single event loop, one request at a time: a few connections.
    parser.add_argument("--latency-concurrency", type=int, default=2)
    args = parser.parse_args()
    if not shutil.which("hey"):
        raise SystemExit("needs hey: apt-get install hey")

    var = ROOT / "var" / "bench" / "acl"
    shutil.rmtree(var, ignore_errors=True)
    (var / "static").mkdir(parents=True)  # STATIC_ROOT: WhiteNoise warns when it is missing
    secretfile.create_dev_secrets(var)
    env = bench_env(var)
    subprocess.run([PY, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    subprocess.run([PY, "manage.py", "shell", "-c", SEED], cwd=ROOT, env=env, check=True)
    secret = (var / "mqtt_auth_secret").read_text().strip()
    auth = "Basic " + base64.b64encode(f"broker:{secret}".encode()).decode()
    acl = json.dumps(
        {"username": "dev-7", "clientid": "dev-7", "topic": "devices/dev-7/temp", "acc": 2}
    )
    login = json.dumps({"username": "dev-0", "password": "bench password", "clientid": "dev-0"})
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    rows = []
    proc = start_gunicorn(env, port, args.workers, args.threads)
    try:
        hey(f"{base}/mqtt/auth/acl", acl, auth, 2, args.concurrency)  # warm up
        floor = hey(f"{base}/bench/floor", acl, auth, args.seconds, args.concurrency)
        full = hey(f"{base}/mqtt/auth/acl", acl, auth, args.seconds, args.concurrency)
        lc = args.latency_concurrency
        half = hey(f"{base}/mqtt/auth/acl", acl, auth, args.seconds, lc, full["rps"] / 2 / lc)
        warm = hey(f"{base}/mqtt/auth/user", login, auth, args.seconds, args.concurrency)
        rows += [
            fmt("floor view (flat out)", floor),
            fmt("ACL endpoint (flat out)", full),
            fmt(f"ACL endpoint at half capacity, {lc} connections", half),
            fmt("login, remembered (warm)", warm),
        ]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()
    cold_env = bench_env(var, LOGIN_REMEMBER_SECONDS="0")
    proc = start_gunicorn(cold_env, port, args.workers, args.threads)
    try:
        cold = hey(f"{base}/mqtt/auth/user", login, auth, args.seconds, args.workers * 2)
        rows.append(fmt("login, bcrypt cost 12 (cold)", cold))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()
    print("| what | requests/s | p50 ms | p99 ms | requests | status |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    print(f"\nACL endpoint / floor throughput: {full['rps'] / floor['rps']:.2f}")
    print(f"warm / cold logins: {warm['rps'] / cold['rps']:.0f}x")


if __name__ == "__main__":
    main()
