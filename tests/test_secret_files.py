"""Secret files (web/secretfile.py): 0600 from the moment they exist, one writer for all."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from web import secretfile

ROOT = Path(__file__).resolve().parent.parent


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_secret_file_is_0600_and_an_old_one_is_narrowed(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "monitor_password"
    secretfile.write(path, "first\n")
    assert (path.read_text(), mode(path)) == ("first\n", 0o600)
    old = tmp_path / "old"
    old.write_text("readable by all")
    old.chmod(0o644)
    secretfile.write(old, "second")
    assert (old.read_text(), mode(old)) == ("second", 0o600)


def test_create_writes_only_the_first_time(tmp_path: Path) -> None:
    path = tmp_path / "secret_key"
    assert secretfile.create(path, "one")
    assert not secretfile.create(path, "two")
    assert (path.read_text(), mode(path)) == ("one", 0o600)


def test_dev_secrets_are_generated_once(tmp_path: Path) -> None:
    def run() -> dict[str, str]:
        command = [sys.executable, "-m", "web.secretfile", str(tmp_path)]
        subprocess.run(command, cwd=ROOT, check=True)
        return {name: (tmp_path / name).read_text() for name in secretfile.DEV_SECRETS}

    first = run()
    assert all(len(value) >= 50 for value in first.values())
    assert run() == first
    assert {mode(tmp_path / name) for name in secretfile.DEV_SECRETS} == {0o600}


@pytest.mark.skipif(not Path("/usr/bin/python3").exists(), reason="no system python3")
def test_render_runs_by_path_with_the_system_python_and_writes_0600(tmp_path: Path) -> None:
    """As Ansible runs it: the system's python3, by path, from elsewhere, no virtualenv."""
    template = tmp_path / "t.conf.template"
    template.write_text("# default PORT=1\nport ${PORT}\nsecret ${SECRET}\n")
    out = tmp_path / "conf" / "mosquitto.conf"
    command = ["/usr/bin/python3", "-I", str(ROOT / "mosquitto" / "render.py"), str(template)]
    subprocess.run([*command, str(out), "--set", "SECRET=s"], cwd=tmp_path, check=True)
    assert (out.read_text(), mode(out)) == ("# default PORT=1\nport 1\nsecret s\n", 0o600)
    piped = subprocess.run(
        [*command, "/dev/stdout", "--set", "SECRET=s"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
    )
    assert piped.stdout.endswith("secret s\n")
