"""Where a login's time goes: server time of /mqtt/auth/user in-process, piece by piece.

    .venv/bin/python -m bench.login_request [--accounts 2000]
    .venv/bin/python -m bench.login_request --database-url postgres://postgres@127.0.0.1:5432/DB

Django's whole stack through its test client (no network, DEBUG off), on a scratch SQLite
database under var/bench/login_request or the given PostgreSQL database (its brokerauth
tables are emptied). Accounts have generated secrets (`$7$`). Measured, each over batches of
250 requests (median and best batch, per request):
  - refused caller: the same request without the broker's secret, no database at all
    (the floor: middleware, the fence, the JSON answer, the warning log line);
  - first login: Django's first for the account (claim of its client id, login time, audit
    row, one commit);
  - login again: the same accounts a second time (login time, audit row);
and the pieces of a login apart: the one read (`Account.objects.for_login`) against the
same read built with the ORM (annotate with two subqueries), the PBKDF2 verification, the
writes with one commit and with one commit each.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from base64 import b64encode
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BATCH = 250


def per_request(run: Callable[[int], object], batches: range) -> tuple[float, float]:
    """Median and best of the batches, milliseconds per call."""
    times = []
    for batch in batches:
        start = time.perf_counter()
        for i in range(batch * BATCH, (batch + 1) * BATCH):
            run(i)
        times.append((time.perf_counter() - start) / BATCH * 1000)
    return statistics.median(times), min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()
    var = ROOT / "var" / "bench" / "login_request"
    shutil.rmtree(var, ignore_errors=True)
    (var / "static").mkdir(parents=True)
    os.environ.update(
        DJANGO_SETTINGS_MODULE="web.settings",
        DEV_MODE="1",
        DEBUG="0",
        SECURE="0",
        VAR_DIR=str(var),
        DATABASE_URL=args.database_url or f"sqlite:///{var / 'db.sqlite3'}",
        LOG_TO_FILE="0",
        LOG_LEVEL="ERROR",
    )
    from web import secretfile

    secretfile.create_dev_secrets(var)
    import django

    django.setup()
    return measure(args.accounts)


def measure(count: int) -> int:
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection, transaction
    from django.db.models import F, Subquery, Value
    from django.db.models.functions import Length, Substr
    from django.test import Client
    from django.utils import timezone

    from brokerauth import acl, passwords
    from brokerauth.models import Account, AuthEvent, ClientId, Credential

    call_command("migrate", verbosity=0)
    Account.objects.all().delete()
    AuthEvent.objects.all().delete()
    fleet = {f"dev-{i}": passwords.generate() for i in range(count)}
    Account.objects.bulk_create(
        Account(username=n, password_hash=passwords.hash_secret(s), credential=Credential.GENERATED)
        for n, s in fleet.items()
    )
    secret = f"{settings.MQTT_AUTH_USERNAME}:{settings.MQTT_AUTH_SECRET}".encode()
    http = Client(HTTP_AUTHORIZATION=f"Basic {b64encode(secret).decode()}", HTTP_HOST="localhost")
    batches = range(count // BATCH)

    def body(i: int) -> str:
        name = f"dev-{i}"
        fields = {"username": name, "password": fleet[name], "clientid": name, "address": "::1"}
        return json.dumps(fields)

    def login(i: int) -> None:
        response = http.post("/mqtt/auth/user", body(i), content_type="application/json")
        assert response.status_code == 200, response.content

    def refused(i: int) -> None:
        http.post("/mqtt/auth/user", body(i), "application/json", HTTP_AUTHORIZATION="")

    def orm_read(i: int) -> None:
        name = f"dev-{i}"
        claim = ClientId.objects.filter(client_id=name).values("account__username")[:1]
        head = Substr(Value(name), 1, Length("client_id_prefix"))
        prefixed = Account.objects.exclude(client_id_prefix="").alias(head=head)
        holder = prefixed.filter(head=F("client_id_prefix")).values("username")[:1]
        Account.objects.filter(username=name).annotate(
            claimed_by=Subquery(claim), prefix_holder=Subquery(holder)
        ).first()

    stored = passwords.hash_secret("another secret")
    decision = acl.Decision(True, "password verified")
    account_ids = dict(Account.objects.values_list("username", "id"))

    def writes(i: int) -> None:
        name = f"dev-{i}"
        ClientId.objects.claim(f"{name}-w", account_id=account_ids[name], username=name)
        Account(pk=account_ids[name]).record_success(timezone.now())
        AuthEvent.objects.record(AuthEvent.Kind.LOGIN, decision, name, f"{name}-w")

    def writes_one_commit(i: int) -> None:
        with transaction.atomic():
            writes(i)

    rows = [
        ("refused caller (floor)", per_request(refused, batches)),
        ("first login", per_request(login, batches)),
        ("login again", per_request(login, batches)),
        ("  the read, written out (for_login)", per_request(
            lambda i: Account.objects.for_login(f"dev-{i}", f"dev-{i}"), batches)),
        ("  the same read through the ORM", per_request(orm_read, batches)),
        ("  PBKDF2-SHA512 verification ($7$)", per_request(
            lambda i: passwords.verify(fleet[f"dev-{i}"], stored), batches)),
    ]  # fmt: skip
    AuthEvent.objects.all().delete()
    rows.append(("  first login's writes, one commit", per_request(writes_one_commit, batches)))
    ClientId.objects.filter(client_id__endswith="-w").delete()
    rows.append(("  the same, a commit each", per_request(writes, batches)))
    print(f"# {connection.vendor}, {count} accounts, batches of {BATCH}; {os.getloadavg()}")
    print("| what | ms per request, median | best batch |")
    print("|---|---:|---:|")
    for label, (median, best) in rows:
        print(f"| {label} | {median:.3f} | {best:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
