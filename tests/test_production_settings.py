"""Production mode: fails closed, passes `check --deploy`, serves through Gunicorn + WhiteNoise.

Each test runs manage.py or Gunicorn in a subprocess with a production environment (no
DEV_MODE, no DEBUG), since the settings are read once per process.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.brokers import free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent


def production_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "SECRET_KEY": secrets.token_urlsafe(50),
        "MQTT_AUTH_SECRET": secrets.token_urlsafe(32),
        # The monitor's MQTT password (monitor.W001 is a deploy check).
        "MONITOR_PASSWORD": secrets.token_urlsafe(32),
        "ALLOWED_HOSTS": "mqtt.example.com,localhost",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "VAR_DIR": str(tmp_path / "var"),
        "STATIC_ROOT": str(tmp_path / "static"),
        "LOG_TO_FILE": "0",
    }
    env.update(overrides)
    return env


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def settings_values(env: dict[str, str], *names: str) -> dict[str, object]:
    code = (
        "import json; from django.conf import settings; "
        f"names = {list(names)!r}; "
        "print(json.dumps({n: getattr(settings, n, None) for n in names}, default=str))"
    )
    result = manage(env, "shell", "-c", code)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_production_passes_check_deploy_with_zero_warnings(tmp_path: Path) -> None:
    result = manage(production_env(tmp_path), "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_production_is_https_only_and_without_debug(tmp_path: Path) -> None:
    values = settings_values(
        production_env(tmp_path),
        "DEBUG",
        "SESSION_COOKIE_SECURE",
        "CSRF_COOKIE_SECURE",
        "SECURE_SSL_REDIRECT",
        "SECURE_HSTS_SECONDS",
        "SECURE_PROXY_SSL_HEADER",
    )
    assert values == {
        "DEBUG": False,
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
        "SECURE_SSL_REDIRECT": True,
        "SECURE_HSTS_SECONDS": 31536000,
        "SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"],
    }


def test_production_without_secret_key_refuses_to_start(tmp_path: Path) -> None:
    env = production_env(tmp_path)
    del env["SECRET_KEY"]
    result = manage(env, "check")
    assert result.returncode != 0
    assert "Set SECRET_KEY (or SECRET_KEY_FILE)" in result.stderr


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("SECURE", "ture", "SECURE='ture' is not a boolean: use 1, true, yes, on or 0, false"),
        ("BCRYPT_ROUNDS", "twelve", "BCRYPT_ROUNDS='twelve' is not a whole number"),
        ("SECRET_KEY_FILE", "/nonexistent/key", "SECRET_KEY_FILE=/nonexistent/key: cannot read"),
    ],
)
def test_a_value_the_settings_cannot_read_stops_the_process(
    tmp_path: Path, variable: str, value: str, message: str
) -> None:
    env = production_env(tmp_path, **{variable: value})
    if variable == "SECRET_KEY_FILE":
        del env["SECRET_KEY"]
    result = manage(env, "check")
    assert result.returncode != 0
    assert message in result.stderr


def test_gunicorn_stops_on_a_value_it_cannot_read(tmp_path: Path) -> None:
    env = production_env(tmp_path, GUNICORN_THREADS="four", GUNICORN_BIND="127.0.0.1:1")
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "web/gunicorn.conf.py", "--check-config"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "GUNICORN_THREADS='four' is not a whole number" in result.stdout + result.stderr


@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, "-m", "gunicorn", "-c", "web/gunicorn.conf.py"],
        [sys.executable, "-m", "gunicorn", "-c", "web/gunicorn.conf.py", "--preload"],
        [sys.executable, "manage.py", "runserver", "--noreload"],
    ],
    ids=["gunicorn", "gunicorn-preload", "runserver"],
)
@pytest.mark.parametrize("debug", ["0", "1"])
def test_without_the_broker_secret_the_web_process_refuses_to_start(
    tmp_path: Path, command: list[str], debug: str
) -> None:
    """Fail closed (issue 14): Gunicorn runs no system checks, and it used to start and let
    /mqtt/auth/ answer anyone."""
    port = free_port()
    env = production_env(tmp_path, GUNICORN_BIND=f"127.0.0.1:{port}", WEB_CONCURRENCY="1")
    env.update(DEBUG=debug, MQTT_AUTH_SECRET="")
    if "runserver" in command:
        command = [*command, f"127.0.0.1:{port}"]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "MQTT_AUTH_SECRET is not set: /mqtt/auth/ refuses every caller." in (
        result.stdout + result.stderr
    )


def test_importing_the_settings_creates_nothing_and_reads_no_password(tmp_path: Path) -> None:
    env = production_env(tmp_path, LOG_TO_FILE="1", LOG_DIR=str(tmp_path / "log"))
    del env["MONITOR_PASSWORD"]
    code = "import web.settings as s; print(repr(s.MONITOR_PASSWORD))"
    run = [sys.executable, "-c", code]
    result = subprocess.run(run, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "''"
    assert [p.name for p in tmp_path.iterdir()] == []  # no var/, static/ or log/ made
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "monitor_password").write_text("from monitor_account\n")
    result = subprocess.run(run, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "''"  # the monitor reads that file, not the settings


def test_the_monitor_finds_the_password_file_and_warns_without_one(tmp_path: Path) -> None:
    env = production_env(tmp_path)
    del env["MONITOR_PASSWORD"]
    result = manage(env, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode != 0 and "monitor.W001" in result.stderr
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "monitor_password").write_text("from monitor_account\n")
    result = manage(env, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_missing_database_directory_is_a_system_check_error(tmp_path: Path) -> None:
    env = production_env(tmp_path, DATABASE_URL=f"sqlite:///{tmp_path / 'no' / 'db.sqlite3'}")
    result = manage(env, "check")
    assert result.returncode != 0
    assert "web.E001" in result.stderr and "does not exist" in result.stderr


def test_dev_mode_reads_its_secrets_and_says_how_to_make_them(tmp_path: Path) -> None:
    env = production_env(tmp_path, DEV_MODE="1")
    del env["SECRET_KEY"], env["MQTT_AUTH_SECRET"]
    result = manage(env, "check")
    assert result.returncode != 0
    assert f"Run `python -m web.secretfile {tmp_path / 'var'}` once" in result.stderr
    make = [sys.executable, "-m", "web.secretfile", str(tmp_path / "var")]
    subprocess.run(make, cwd=ROOT, check=True)
    values = settings_values(env, "SECRET_KEY", "MQTT_AUTH_SECRET", "DEBUG")
    assert values["SECRET_KEY"] == (tmp_path / "var" / "secret_key").read_text()
    assert values["MQTT_AUTH_SECRET"] == (tmp_path / "var" / "mqtt_auth_secret").read_text()
    assert values["DEBUG"] is True


def test_secret_key_file_is_read(tmp_path: Path) -> None:
    key = secrets.token_urlsafe(50)
    key_file = tmp_path / "secret_key"
    key_file.write_text(key + "\n")
    env = production_env(tmp_path, SECRET_KEY_FILE=str(key_file))
    del env["SECRET_KEY"]
    assert settings_values(env, "SECRET_KEY") == {"SECRET_KEY": key}
    result = manage(env, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr


def get(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers={"Host": "localhost", **headers})
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


Gunicorn = tuple[str, Path, Path]  # base URL, tmp_path, log file


@pytest.fixture(scope="module")
def gunicorn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gunicorn]:
    """Gunicorn with web/gunicorn.conf.py in production mode, after collectstatic."""
    tmp_path = tmp_path_factory.mktemp("gunicorn")
    port = free_port()
    env = production_env(
        tmp_path, GUNICORN_BIND=f"127.0.0.1:{port}", WEB_CONCURRENCY="1", GUNICORN_THREADS="2"
    )
    result = manage(env, "collectstatic", "--noinput", "--verbosity", "0")
    assert result.returncode == 0, result.stderr
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "web/gunicorn.conf.py"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"

    def answering() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited: {log.read_text()}")
        try:
            get(base + "/static/none")
            return True
        except OSError:
            return False

    try:
        wait_for(answering, timeout=30, what="gunicorn")
        yield base, tmp_path, log
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_gunicorn_serves_hashed_static_files_through_whitenoise(gunicorn: Gunicorn) -> None:
    base, tmp_path, _log = gunicorn
    manifest = json.loads((tmp_path / "static" / "staticfiles.json").read_text())
    hashed = manifest["paths"]["admin/css/base.css"]
    status, headers, body = get(f"{base}/static/{hashed}", **{"X-Forwarded-Proto": "https"})
    assert status == 200 and body
    assert "max-age=315360000" in headers.get("Cache-Control", "")


def test_gunicorn_redirects_the_ui_to_https_but_never_the_broker(gunicorn: Gunicorn) -> None:
    base, _tmp_path, _log = gunicorn
    status, headers, _ = get(f"{base}/admin/login/")
    assert status == 301 and headers["Location"].startswith("https://")
    # The broker calls over plain HTTP inside the network: an answer, never a redirect.
    status, _, _ = get(f"{base}/mqtt/auth/user")
    assert status not in (301, 302, 307, 308)


def test_gunicorn_logs_access_lines_in_djangos_format(gunicorn: Gunicorn) -> None:
    base, _tmp_path, log = gunicorn
    get(f"{base}/admin/login/", **{"User-Agent": "probe-agent"})

    def access_line() -> str | None:
        lines = [line for line in log.read_text().splitlines() if "probe-agent" in line]
        return lines[0] if lines else None

    line = wait_for(access_line, timeout=5, what="an access log line")
    # LOG_FORMAT: "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s"
    date, clock, level, name, pid, *_ = line.split()
    time.strptime(f"{date} {clock.split(',')[0]}", "%Y-%m-%d %H:%M:%S")
    assert (level, name) == ("INFO", "gunicorn.access") and pid.isdigit()
    assert '"GET /admin/login/ HTTP/1.1" 301' in line
