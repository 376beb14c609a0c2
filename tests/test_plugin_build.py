"""The broker's own pieces without Django: the C plugin builds, configs render, certs script."""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_DIR = ROOT / "mosquitto" / "plugin"
RENDER = ROOT / "mosquitto" / "render.py"
MAKE_CERTS = ROOT / "certs" / "make-certs.sh"

needs_make = pytest.mark.skipif(
    shutil.which("make") is None or shutil.which("cc") is None, reason="no C toolchain"
)
needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl")


def run_render(template: Path, out: Path, *sets: str) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, str(RENDER), str(template), str(out), *[f"--set={s}" for s in sets]]
    return subprocess.run(args, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})


def make_certs(outdir: Path, *extra: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MAKE_CERTS), *extra, str(outdir)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **env},
    )


@needs_make
def test_plugin_builds_with_warnings_as_errors_and_exports_the_v5_api() -> None:
    subprocess.run(["make", "-s", "-C", str(PLUGIN_DIR)], check=True)
    symbols = subprocess.run(
        ["nm", "-D", "--defined-only", str(PLUGIN_DIR / "auth_http.so")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for name in ("mosquitto_plugin_version", "mosquitto_plugin_init", "mosquitto_plugin_cleanup"):
        assert name in symbols


def test_render_names_every_missing_placeholder(tmp_path: Path) -> None:
    result = run_render(ROOT / "mosquitto" / "mosquitto.conf.template", tmp_path / "m.conf")

    assert result.returncode == 2
    assert "MQTT_AUTH_SECRET" in result.stderr
    assert "TLS_KEY_FILE" in result.stderr
    assert not (tmp_path / "m.conf").exists()


def test_render_uses_template_defaults_and_keeps_the_secret_private(tmp_path: Path) -> None:
    out = tmp_path / "go-auth.conf"
    result = run_render(ROOT / "mosquitto" / "go-auth.conf.template", out, "MQTT_AUTH_SECRET=s3")

    assert result.returncode == 0, result.stderr
    text = out.read_text()
    assert "auth_opt_http_host broker:s3@web\n" in text
    assert "listener 8883\n" in text
    assert "${" not in text
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_both_templates_configure_the_same_http_options() -> None:
    def http_options(name: str, prefix: str) -> set[str]:
        lines = (ROOT / "mosquitto" / name).read_text().splitlines()
        return {line[len(prefix) :] for line in lines if line.startswith(prefix + "http_")}

    assert http_options("mosquitto.conf.template", "plugin_opt_") == http_options(
        "go-auth.conf.template", "auth_opt_"
    )


@needs_openssl
def test_make_certs_makes_private_keys_and_a_server_cert_for_localhost(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    result = make_certs(out, CERT_HOSTNAME="broker,10.0.0.5", CERT_CLIENTS="dev-1")

    assert result.returncode == 0, result.stderr
    for key in ("ca.key", "server.key", "client-dev-1.key"):
        assert stat.S_IMODE((out / key).stat().st_mode) == 0o600
    sans = subprocess.run(
        ["openssl", "x509", "-in", str(out / "server.crt"), "-noout", "-ext", "subjectAltName"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for name in ("DNS:localhost", "IP Address:127.0.0.1", "DNS:broker", "IP Address:10.0.0.5"):
        assert name in sans
    subprocess.run(
        ["openssl", "verify", "-CAfile", str(out / "ca.crt"), str(out / "server.crt")],
        check=True,
        capture_output=True,
    )


@needs_openssl
def test_make_certs_reuses_valid_certificates_and_check_passes(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    make_certs(out)
    before = (out / "server.crt").read_bytes()

    again = make_certs(out)

    assert "server.crt: reusing" in again.stdout
    assert (out / "server.crt").read_bytes() == before
    assert make_certs(out, "--check").returncode == 0


@needs_openssl
def test_make_certs_renews_a_certificate_close_to_expiry(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    make_certs(out)
    subprocess.run(
        ["openssl", "req", "-new", "-x509", "-key", str(out / "server.key"), "-days", "10"]
        + ["-subj", "/CN=localhost", "-out", str(out / "server.crt")],
        check=True,
        capture_output=True,
    )
    assert make_certs(out, "--check").returncode == 1

    renewed = make_certs(out)

    assert "server.crt: expires" in renewed.stdout and "renewing" in renewed.stdout
    assert make_certs(out, "--check").returncode == 0
