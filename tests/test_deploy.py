"""compose.yml, the Dockerfile and the Ansible roles, checked against the code they run.

No container engine runs here, so these read the files: every command exists, every variable
handed to a container is read by something, every mount matches what the config expects, and
the broker config is rendered from the project's own template.
"""

from __future__ import annotations

import ipaddress
import os
import re
import runpy
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.conf import settings
from django.core.management import get_commands

from tests.brokers import free_port, wait_for
from web import secretfile

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
APP_SERVICES = ("migrate", "web", "monitor")
# manage.py commands that compose.yml or the Ansible units run before their code has landed.
PENDING_COMMANDS = {"monitor", "monitor_account"}
PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-?][^}]*)?\}")


def read_by(path: Path, pattern: str) -> set[str]:
    return set(re.findall(pattern, path.read_text()))


def settings_variables() -> set[str]:
    """Names web/settings.py reads with env(), env_bool(), env_int(), ... (NAME_FILE too)."""
    names = read_by(ROOT / "web" / "settings.py", r"\benv(?:_\w+)?\(\s*\"([A-Z0-9_]+)\"")
    return names | {f"{name}_FILE" for name in names}


def gunicorn_variables() -> set[str]:
    return read_by(ROOT / "web" / "gunicorn.conf.py", r"\benv(?:_\w+)?\(\s*\"([A-Z0-9_]+)\"")


def template_variables(path: Path) -> set[str]:
    return set(re.findall(r"\$\{([A-Z0-9_]+)\}", path.read_text()))


def environment(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment", {})
    return {str(key): str(value) for key, value in env.items()}


def command(service: str) -> list[str]:
    cmd = SERVICES[service]["command"]
    return cmd if isinstance(cmd, list) else cmd.split()


def volumes(service: str) -> list[tuple[str, str]]:
    """(source, target) of each volume, placeholders replaced by their defaults."""
    result = []
    for volume in SERVICES[service].get("volumes", []):
        source, target = with_defaults(volume).split(":")[:2]
        result.append((source, target))
    return result


def with_defaults(text: str) -> str:
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", text)


def manage_commands(args: list[str]) -> list[str]:
    return re.findall(r"manage\.py (\w+)", " ".join(args))


def test_settings_variables_are_found() -> None:
    # Guards the regex above: if it silently found nothing, every check below would pass.
    assert {"SECRET_KEY", "DATABASE_URL", "MQTT_AUTH_ALLOWED_NETS"} <= settings_variables()
    assert {"GUNICORN_BIND", "WEB_CONCURRENCY", "GUNICORN_THREADS"} <= gunicorn_variables()


@pytest.mark.parametrize("service", APP_SERVICES)
def test_app_services_pass_only_variables_the_code_reads(service: str) -> None:
    known = settings_variables() | gunicorn_variables()
    assert set(environment(service)) - known == set()


@pytest.mark.parametrize("service", APP_SERVICES)
def test_app_services_run_commands_that_exist(service: str) -> None:
    args = command(service)
    names = manage_commands(args)
    if not names:
        assert args[:2] == ["gunicorn", "-c"]
        assert (ROOT / args[2]).is_file()
        return
    pending = [name for name in names if name not in get_commands()]
    if pending and set(pending) <= PENDING_COMMANDS:
        pytest.skip(f"manage.py {', '.join(pending)} not landed yet (PENDING_COMMANDS)")
    assert pending == []


def test_secrets_come_from_files_and_exist_as_settings() -> None:
    for service in APP_SERVICES:
        env = environment(service)
        for name in ("SECRET_KEY", "MQTT_AUTH_SECRET", "DATABASE_URL"):
            assert name not in env, f"{service}: {name} must come from a secret file"
            assert env[f"{name}_FILE"].startswith("/run/secrets/")
            assert env[f"{name}_FILE"].rsplit("/", 1)[1] in SERVICES[service]["secrets"]
    assert set(COMPOSE["secrets"]) >= {"secret_key", "mqtt_auth_secret", "database_url"}
    for secret in COMPOSE["secrets"].values():
        assert secret["file"].startswith("${SECRETS_DIR:-./var/secrets}/")


def test_every_compose_placeholder_is_documented_in_env_example() -> None:
    used = set(PLACEHOLDER.findall((ROOT / "compose.yml").read_text()))
    example = (ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^([A-Z0-9_]+)=", example, re.MULTILINE))
    assert used - documented == set()
    # The example holds settings, never secrets.
    assert not re.search(r"^(SECRET_KEY|MQTT_AUTH_SECRET|\w*PASSWORD)=", example, re.M)


def test_broker_config_is_rendered_from_the_projects_go_auth_template() -> None:
    render = command("broker-config")
    script = " ".join(render)
    match = re.search(
        r"python (mosquitto/render\.py) (mosquitto/[\w.-]+\.conf\.template) (\S+)", script
    )
    assert match, script
    render_py, template, out = match.groups()
    assert (ROOT / render_py).is_file() and (ROOT / template).is_file()
    assert template == "mosquitto/go-auth.conf.template"
    # Every placeholder gets a value: from the compose environment, the secret or a default.
    text = (ROOT / template).read_text()
    defaults = set(re.findall(r"^# default (\w+)=", text, re.M))
    given = set(environment("broker-config")) | {"MQTT_AUTH_SECRET"}
    assert template_variables(ROOT / template) - given - defaults == set()
    assert "MQTT_AUTH_SECRET=" in script and "/run/secrets/mqtt_auth_secret" in script
    # The rendered file lands in the volume the broker reads its config from.
    volume, mount = volumes("broker-config")[0]
    assert out.startswith(mount + "/")
    broker_config_dir = next(target for source, target in volumes("broker") if source == volume)
    assert f"-c {broker_config_dir}/{Path(out).name}" in " ".join(command("broker"))


def auth_options(path: Path, prefix: str) -> dict[str, str]:
    lines = (ROOT / "mosquitto" / path).read_text().splitlines()
    return {
        line.split()[0].removeprefix(prefix): line.split(None, 1)[1]
        for line in lines
        if line.startswith(prefix)
    }


def test_go_auth_template_matches_the_end_to_end_template() -> None:
    """compose's broker and the tests' broker ask Django the same way (go-auth names)."""
    go_auth = auth_options(Path("go-auth.conf.template"), "auth_opt_")
    ours = auth_options(Path("mosquitto.conf.template"), "plugin_opt_")
    for option, value in ours.items():
        assert go_auth.get(option) == value, option
    assert go_auth["backends"] == "http"
    assert go_auth["http_host"] == "broker:${MQTT_AUTH_SECRET}@${AUTH_HTTP_HOST}"
    assert "http_superuser_uri" not in go_auth
    text = (ROOT / "mosquitto" / "go-auth.conf.template").read_text()
    assert "auth_plugin /mosquitto/go-auth.so" in text
    assert "log_dest topic" in text and "persistence true" in text


def test_broker_mounts_what_its_config_names() -> None:
    broker = SERVICES["broker"]
    image, tag = broker["image"].split(":")
    assert image == "iegomez/mosquitto-go-auth" and tag.endswith("-mosquitto_2.0.18")
    assert "latest" not in tag
    mounts = {target for _source, target in volumes("broker")} | set(broker["tmpfs"])
    rendered = (ROOT / "mosquitto" / "go-auth.conf.template").read_text()
    for path in re.findall(r"^(?:cafile|certfile|keyfile) (\S+)$", rendered, re.M):
        assert any(path.startswith(m.rstrip("/") + "/") for m in mounts), path
    for directive in ("pid_file", "persistence_location", "log_dest file"):
        path = re.search(rf"^{directive} (\S+)$", rendered, re.M).group(1)  # type: ignore[union-attr]
        assert any(path.startswith(m.rstrip("/") + "/") for m in mounts), path
        volume = next(
            v.split(":")[0] for v in broker["volumes"] if path.startswith(v.split(":")[1])
        )
        assert volume in COMPOSE["volumes"], f"{path} must be on a named volume"
    listener = re.search(r"^listener (\S+)", rendered, re.M).group(1)  # type: ignore[union-attr]
    assert listener == "${MQTT_PORT}" and environment("broker-config")["MQTT_PORT"] == "8883"
    assert broker["ports"] == ["${MQTT_PUBLIC_PORT:-8883}:8883"]


def test_broker_gets_its_tls_files_as_its_dropped_user_can_read_them() -> None:
    """Mosquitto drops to "mosquitto" before it opens them; the host's 0600 root key,
    mounted as it is, would stop it: each is copied to the tmpfs its config names."""
    broker = SERVICES["broker"]
    rendered = (ROOT / "mosquitto" / "go-auth.conf.template").read_text()
    named = re.findall(r"^(?:cafile|certfile|keyfile) (\S+)$", rendered, re.M)
    assert {str(Path(path).parent) for path in named} == {"/mosquitto/certs"}
    assert broker["tmpfs"] == ["/mosquitto/certs"]
    script = " ".join(command("broker"))
    steps = script.split("&&")
    assert steps[-1].strip().startswith("exec /usr/sbin/mosquitto")
    mounted = {Path(target).name: target for source, target in volumes("broker")}
    for path in named:
        source = mounted[Path(path).name]
        assert source.startswith("/mosquitto/tls/")
        assert source in script.split("exec")[0], f"{source} is never copied"
    key = next(step for step in steps if "server.key" in step)
    assert "-g mosquitto -m 0640" in key and "/mosquitto/certs/" in key


def test_broker_reaches_web_on_its_port_and_is_allowed_in() -> None:
    render_env = environment("broker-config")
    assert render_env["AUTH_HTTP_HOST"] == "web"
    web_env = environment("web")
    assert web_env["GUNICORN_BIND"] == f"0.0.0.0:{render_env['AUTH_HTTP_PORT']}"
    # Without "web" in ALLOWED_HOSTS Django answers 400, which go-auth takes as a denial.
    assert "web" in web_env["ALLOWED_HOSTS"].split(",")
    subnet = COMPOSE["networks"]["backend"]["ipam"]["config"][0]["subnet"]
    allowed = [
        ipaddress.ip_network(net)
        for net in with_defaults(web_env["MQTT_AUTH_ALLOWED_NETS"]).split(",")
    ]
    network = ipaddress.ip_network(with_defaults(subnet))
    assert any(network.subnet_of(net) for net in allowed if net.version == network.version)
    # The same variable, so that changing the subnet in .env moves both.
    assert "${COMPOSE_SUBNET" in subnet and "${COMPOSE_SUBNET" in web_env["MQTT_AUTH_ALLOWED_NETS"]
    for service in ("broker", "web"):
        assert "backend" in SERVICES[service]["networks"]


RABBITMQ_NODES = ("rabbitmq-1", "rabbitmq-2")


def test_rabbitmq_config_is_rendered_from_the_projects_template(tmp_path: Path) -> None:
    script = " ".join(command("rabbitmq-config"))
    match = re.search(r"python (mosquitto/render\.py) (rabbitmq/[\w.-]+\.template) (\S+)", script)
    assert match, script
    render_py, template, out = match.groups()
    assert template == "rabbitmq/rabbitmq.conf.template"
    assert "cp rabbitmq/enabled_plugins /srv/rabbitmq-config/enabled_plugins" in script
    assert "/run/secrets/mqtt_auth_secret" in script
    # Rendered for real with the service's environment: nothing missing, nothing left over.
    env = {**environment("rabbitmq-config"), "MQTT_AUTH_SECRET": "s3cret"}
    result = subprocess.run(
        [sys.executable, str(ROOT / render_py), str(ROOT / template), "-"],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        check=True,
    )
    assert "${" not in result.stdout
    assert "auth_http.user_path = http://broker:s3cret@web:8000/mqtt/auth/rabbitmq/user" in (
        result.stdout
    )
    for node in RABBITMQ_NODES:
        assert f"= rabbit@{node}" in result.stdout
    assert out.startswith(volumes("rabbitmq-config")[0][1] + "/")


@pytest.mark.parametrize("node", RABBITMQ_NODES)
def test_rabbitmq_nodes_install_what_their_config_names(node: str) -> None:
    service = SERVICES[node]
    assert service["image"] == "rabbitmq:3.10.8" and service["hostname"] == node
    assert service["profiles"] == ["rabbitmq"]
    script = " ".join(command(node))
    config_volume = volumes("rabbitmq-config")[0][0]
    mounts = dict((target, source) for source, target in volumes(node))
    assert mounts["/srv/rabbitmq-config"] == config_volume
    env = environment("rabbitmq-config")
    for name in ("TLS_CA_FILE", "TLS_CERT_FILE"):
        assert env[name] in mounts, name
    # The key and the config are copied for the node's user before the entrypoint drops to it.
    assert f"/certs/server.key {env['TLS_KEY_FILE']}" in script
    assert "/srv/rabbitmq-config/rabbitmq.conf /etc/rabbitmq/rabbitmq.conf" in script
    assert "/run/secrets/erlang_cookie /var/lib/rabbitmq/.erlang.cookie" in script
    assert script.endswith("exec docker-entrypoint.sh rabbitmq-server")
    assert environment(node)["RABBITMQ_ENABLED_PLUGINS_FILE"].startswith("/srv/rabbitmq-config/")
    assert mounts["/var/lib/rabbitmq"] in COMPOSE["volumes"]
    assert "backend" in service["networks"] and "erlang_cookie" in service["secrets"]


def test_web_is_published_on_loopback_only_and_checked_on_status() -> None:
    web = SERVICES["web"]
    assert web["ports"] == ["127.0.0.1:${WEB_PORT:-8000}:8000"]
    probe = " ".join(web["healthcheck"]["test"])
    assert "http://127.0.0.1:8000/status/" in probe and "'Host': 'localhost'" in probe
    assert "localhost" in environment("web")["ALLOWED_HOSTS"].split(",")


def test_status_endpoint_exists_for_the_health_checks() -> None:
    from django.urls import resolve

    assert resolve("/status/")


def test_named_volumes_are_declared_and_bind_mounts_come_from_configured_dirs() -> None:
    declared = set(COMPOSE["volumes"])
    for name in SERVICES:
        for source, target in volumes(name):
            if source.startswith("./"):
                assert source.startswith(("./var/certs/", "./var/secrets/")), f"{name}: {source}"
            else:
                assert source in declared, f"{name}: {source}:{target}"


def test_migrate_runs_once_before_web_and_monitor() -> None:
    assert SERVICES["migrate"]["restart"] == "no"
    for service in ("web", "monitor"):
        assert SERVICES[service]["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"
        }
    assert SERVICES["broker"]["depends_on"]["broker-config"] == {
        "condition": "service_completed_successfully"
    }


def test_containers_log_to_stdout_only() -> None:
    for service in APP_SERVICES:
        assert environment(service)["LOG_TO_FILE"] == "0"


# --- Dockerfile ---------------------------------------------------------------------------

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def test_dockerfile_is_multi_stage_on_python_311_slim_and_runs_as_non_root() -> None:
    stages = re.findall(r"^FROM (\S+)", DOCKERFILE, re.M)
    assert len(stages) >= 2 and stages[-1].startswith("python:3.11-slim")
    last_stage = DOCKERFILE.rsplit("\nFROM ", 1)[1]
    user = re.findall(r"^USER (\S+)", last_stage, re.M)
    assert user and user[-1] not in ("root", "0")


def test_dockerfile_installs_the_app_group_and_collects_static_files() -> None:
    groups = tomllib.loads((ROOT / "pyproject.toml").read_text())["dependency-groups"]
    assert "app" in groups
    assert "pip install --group app" in DOCKERFILE
    assert "manage.py collectstatic --noinput" in DOCKERFILE
    assert "SECRET_KEY=" in DOCKERFILE  # a dummy one for the build only
    for source in re.findall(r"^COPY (?!--from)(?:--\S+ )*(.+) \S+$", DOCKERFILE, re.M):
        for path in source.split():
            assert path == "." or (ROOT / path).exists(), path


def test_dockerfile_default_command_is_gunicorn_with_the_project_config() -> None:
    cmd = re.findall(r"^CMD (.+)$", DOCKERFILE, re.M)[-1]
    assert cmd == '["gunicorn", "-c", "web/gunicorn.conf.py"]'
    assert "GUNICORN_BIND=0.0.0.0:8000" in DOCKERFILE


def test_dockerignore_keeps_secrets_and_state_out_of_the_image() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "var", ".env", "**/*.key"} <= ignored


# --- Gunicorn -----------------------------------------------------------------------------


def gunicorn_config(monkeypatch: pytest.MonkeyPatch, **env: str) -> dict[str, Any]:
    for name in gunicorn_variables():
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(ROOT / "web" / "gunicorn.conf.py"))


def test_gunicorn_binds_loopback_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    config = gunicorn_config(monkeypatch, LOG_TO_FILE="0")
    assert config["bind"] == ["127.0.0.1:8000"]
    assert config["workers"] >= 1 and config["threads"] == 4
    assert config["graceful_timeout"] < config["timeout"]


def test_gunicorn_reads_workers_threads_and_bind(monkeypatch: pytest.MonkeyPatch) -> None:
    config = gunicorn_config(
        monkeypatch,
        LOG_TO_FILE="0",
        GUNICORN_BIND="0.0.0.0:9000",
        WEB_CONCURRENCY="5",
        GUNICORN_THREADS="8",
        GUNICORN_GRACEFUL_TIMEOUT="7",
    )
    assert config["bind"] == ["0.0.0.0:9000"]
    assert (config["workers"], config["threads"], config["graceful_timeout"]) == (5, 8, 7)
    assert set(config["logconfig_dict"]["handlers"]) == {"console"}


def test_gunicorn_logs_to_the_shared_file_on_hosts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = gunicorn_config(monkeypatch, LOG_DIR=str(tmp_path))
    handler = config["logconfig_dict"]["handlers"]["file"]
    assert handler["filename"] == str(tmp_path / "service.log")


def test_gunicorn_log_format_is_djangos() -> None:
    config = runpy.run_path(str(ROOT / "web" / "gunicorn.conf.py"))
    assert config["LOG_FORMAT"] == settings.LOG_FORMAT
    assert config["logconfig_dict"]["formatters"]["plain"]["format"] == settings.LOG_FORMAT


def answered(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=5).close()
    except urllib.error.HTTPError:
        pass  # any answer logs an access line
    except OSError:
        return False
    return True


def access_lines(tmp_path: Path, **env: str) -> tuple[str, str]:
    """Run Gunicorn with web/gunicorn.conf.py, ask /status/ and /mqtt/auth/user; return its
    console output and LOG_DIR/service.log ("" without a file)."""
    port = free_port()
    env = {
        "PATH": os.environ["PATH"],
        "DEV_MODE": "1",
        "VAR_DIR": str(tmp_path / "var"),
        "LOG_DIR": str(tmp_path / "log"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": "1",
        **env,
    }
    secretfile.create_dev_secrets(tmp_path / "var")  # as bin/run and bin/test do for DEV_MODE
    console, log = tmp_path / "console.txt", tmp_path / "log" / "service.log"

    def logged() -> str:
        return console.read_text() + (log.read_text() if log.exists() else "")

    with console.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "web/gunicorn.conf.py"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: answered(f"http://127.0.0.1:{port}/status/"), 30, "gunicorn")
        assert answered(f"http://127.0.0.1:{port}/mqtt/auth/user")
        # Both handlers see a record in one call, the console first (settings.LOGGING).
        wait_for(lambda: '"GET /mqtt/auth/user' in logged(), 10, "the broker call's line")
    finally:
        process.terminate()
        process.wait(timeout=30)
    return console.read_text(), log.read_text() if log.exists() else ""


@pytest.mark.parametrize(
    ("env", "on_console"),
    [({}, False), ({"LOG_LEVEL": "DEBUG"}, True), ({"LOG_TO_FILE": "0"}, True)],
    ids=["file", "debug", "no-file"],
)
def test_gunicorn_keeps_broker_calls_off_the_console_when_a_file_has_them(
    tmp_path: Path, env: dict[str, str], on_console: bool
) -> None:
    console, log = access_lines(tmp_path, **env)

    assert ('"GET /mqtt/auth/user' in console) is on_console
    if env.get("LOG_TO_FILE") != "0":
        assert '"GET /mqtt/auth/user' in log and '"GET /status/' in log


# --- Ansible ------------------------------------------------------------------------------

ANSIBLE = ROOT / "deploy" / "ansible"


def test_ansible_files_parse() -> None:
    files = sorted(ANSIBLE.rglob("*.yml"))
    assert len(files) > 10
    for path in files:
        assert yaml.safe_load(path.read_text()) is not None, path


def test_ansible_broker_config_comes_from_the_end_to_end_template() -> None:
    tasks = (ANSIBLE / "roles" / "mosquitto" / "tasks" / "main.yml").read_text()
    assert "/mosquitto/render.py" in tasks
    assert "/mosquitto/mosquitto.conf.template" in tasks
    given = set(re.findall(r"--set=(\w+)=", tasks)) | {"MQTT_AUTH_SECRET"}
    assert template_variables(ROOT / "mosquitto" / "mosquitto.conf.template") <= given


def test_ansible_rabbitmq_config_comes_from_the_projects_template() -> None:
    tasks = (ANSIBLE / "roles" / "rabbitmq" / "tasks" / "main.yml").read_text()
    template = ROOT / "rabbitmq" / "rabbitmq.conf.template"
    assert "/mosquitto/render.py" in tasks and "/rabbitmq/rabbitmq.conf.template" in tasks
    given = set(re.findall(r"--set=(\w+)=", tasks)) | {"MQTT_AUTH_SECRET", "CLUSTER_NODES"}
    defaults = set(re.findall(r"^# default (\w+)=", template.read_text(), re.M))
    assert template_variables(template) - given - defaults == set()
    assert "/rabbitmq/enabled_plugins" in tasks
    site = yaml.safe_load((ANSIBLE / "site.yml").read_text())
    play = next(play for play in site if play["hosts"] == "rabbitmq")
    assert [role["role"] for role in play["roles"]] == ["release", "rabbitmq"]


def test_proxy_never_exposes_the_broker_endpoints() -> None:
    site = (ANSIBLE / "roles" / "proxy" / "templates" / "mqtt-service.nginx.conf.j2").read_text()
    block = re.search(r"location \^~ /mqtt/auth/ \{([^}]*)\}", site)
    assert block and "return 404;" in block.group(1)
    assert "proxy_set_header X-Forwarded-Proto https;" in site


def test_ansible_units_run_the_same_commands_as_compose() -> None:
    templates = ANSIBLE / "roles" / "app" / "templates"
    web = (templates / "mqtt-service-web.service.j2").read_text()
    monitor = (templates / "mqtt-service-monitor.service.j2").read_text()
    assert "/bin/gunicorn -c web/gunicorn.conf.py" in web
    assert "/bin/python manage.py monitor\n" in monitor
    env_names = set(
        re.findall(
            r"^  ([A-Z][A-Z0-9_]+):", (ANSIBLE / "roles/app/defaults/main.yml").read_text(), re.M
        )
    )
    assert (
        env_names - settings_variables() - gunicorn_variables() - {"DJANGO_SETTINGS_MODULE"}
        == set()
    )


def test_ansible_broker_hosts_get_the_headers_bin_setup_builds_the_plugin_with() -> None:
    setup = (ROOT / "bin" / "setup").read_text()
    block = re.search(r"^APT_PACKAGES=\(([^)]*)\)", setup, re.M)
    assert block, "bin/setup's APT_PACKAGES"
    headers = {name for name in block.group(1).split() if name.endswith("-dev")}
    assert {"mosquitto-dev", "libmosquitto-dev", "libssl-dev"} <= headers
    defaults = yaml.safe_load((ANSIBLE / "roles/mosquitto/defaults/main.yml").read_text())
    assert headers <= set(defaults["mosquitto_packages"])


def test_ansible_web_hosts_install_the_ui_packages_before_collectstatic() -> None:
    """The release is `git archive HEAD`, without the git-ignored web/static/vendor/."""
    assert "web/static/vendor/" in (ROOT / ".gitignore").read_text()
    tasks = yaml.safe_load((ANSIBLE / "roles/app/tasks/main.yml").read_text())
    names = [task["name"] for task in tasks]
    frontend = next(t for t in tasks if t.get("ansible.builtin.import_tasks") == "frontend.yml")
    assert names.index(frontend["name"]) < names.index("Static files")
    script = (ANSIBLE / "roles/app/tasks/frontend.yml").read_text()
    assert "npm ci" in script and "npm run -s vendor" in script
    packages = next(task for task in tasks if task["name"] == "Packages")
    assert {"nodejs", "npm"} <= set(packages["ansible.builtin.apt"]["name"])
