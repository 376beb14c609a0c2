"""The REST API against its own OpenAPI schema, fuzzed by schemathesis with a staff token.

schemathesis' command line (`st run`) reads /api/v1/schema/ from the live server and calls
every operation over real HTTP, in three phases: the schema's examples, the coverage phase
(boundary values, wrong types, missing and unexpected parameters: what found the UTC offsets
past 15:59) and a bounded hypothesis fuzzing phase. Every answer must be no server error, a
status code the schema declares, with the content type and body the schema says; a request
valid by the schema must be accepted (2xx, or 404 / 409 for an object that does not exist or
already does), and a request invalid by it refused.

Bounded for CI: SCHEMATHESIS_EXAMPLES fuzzed examples per operation (25) and a time budget
for the fuzzing, about two minutes on two busy cores for the ~40 operations. The stateful
phase is left out: drf-spectacular's schema declares no links between operations.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rest_framework.authtoken.models import Token

from brokerauth.acl import Access
from brokerauth.models import Account, Group, Rule
from tests.seeds import seed_broker_state, seed_client

EXAMPLES = os.environ.get("SCHEMATHESIS_EXAMPLES", "25")
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "positive_data_acceptance",
]
pytestmark = pytest.mark.django_db(transaction=True)


def st(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """`st run`, in `cwd`: it keeps a cache directory where it runs."""
    command = [str(Path(sys.executable).with_name("st")), "run", *args]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "", "NO_COLOR": "1"}
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd
    )


def test_the_api_answers_every_request_as_its_schema_says(
    live_server: Any, operator: Any, tmp_path: Path, settings: Any
) -> None:
    # Thousands of requests a minute, from one address.
    settings.API_THROTTLE_RATES = {"user": None, "failed_auth": None}
    token = Token.objects.create(user=operator)
    alice = Account.objects.create_account("alice", "correct horse battery staple")
    Rule.objects.create(account=alice, pattern="devices/%u/#", access=Access.ALL)
    Group.objects.create(name="sensors").memberships.create(account=alice)
    seed_client("sensor-1", readings=30)
    seed_broker_state()
    result = st(
        f"{live_server.url}/api/v1/schema/?format=json",
        f"--header=Authorization: Token {token.key}",
        # One connection per request: Django's test server (not Gunicorn, which discards an
        # unread body) can leave part of a malformed request's body in a keep-alive
        # connection and read it as the next request line; the next answer is then its HTML
        # "400 Bad request syntax" page, and schemathesis reports "Connection aborted".
        "--header=Connection: close",
        "--phases=examples,coverage,fuzzing",
        f"--max-examples={EXAMPLES}",
        "--checks=" + ",".join(CHECKS),
        "--workers=1",
        "--seed=1",
        "--no-color",
        "--generation-database=none",
        # NUL and lone surrogates are refused by design (web/badinput.py, tested on their own):
        # valid JSON strings, but no database column holds them.
        "--generation-allow-x00=false",
        "--generation-codec=utf-8",
        cwd=tmp_path,
    )
    assert result.returncode == 0, report(result.stdout + result.stderr)


def report(output: str) -> str:
    """The failures, each line cut short: fuzzed bodies can be megabytes."""
    start = max(output.find("FAILURES"), output.find("ERRORS"), 0)
    lines = output[start:].splitlines()
    return "\n".join(line[:300] for line in lines[:400])
