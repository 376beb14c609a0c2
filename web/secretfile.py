"""Files that hold a secret: mode 0600 from the moment they exist, never readable by others.

The one writer of such files: the monitor's password (`manage.py monitor_account`), the demo
devices' password (monitor/demo.py), DEV_MODE's generated secrets, and the rendered broker
config, which holds the broker's HTTP secret (mosquitto/render.py). Standard library only:
Ansible runs mosquitto/render.py with the system's python3. Like web/env.py it belongs to the
project package, beside the settings, not to the UI: the apps may import it as they read the
settings, and it imports none of them.

    python -m web.secretfile VAR_DIR     creates DEV_MODE's secrets there, once (bin/run, bin/test)
"""

from __future__ import annotations

import os
import secrets
import stat
import sys
from pathlib import Path

# What DEV_MODE reads from VAR_DIR when SECRET_KEY / MQTT_AUTH_SECRET are not given.
DEV_SECRETS = ("secret_key", "mqtt_auth_secret")


def write(path: Path, text: str) -> None:
    """Replace the file's content with `text` (creating it and its directory if need be)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        # An existing file keeps its mode on open: narrow it before the secret is in it. Not
        # for /dev/stdout and the like (a pipe), which Ansible hands mosquitto/render.py.
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.fchmod(fd, 0o600)
        out.write(text)


def create(path: Path, text: str) -> bool:
    """Write `text` only if the file does not exist yet (O_EXCL: of racing processes, one
    wins); False when it already existed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as out:
        out.write(text)
    return True


def create_dev_secrets(var_dir: Path) -> None:
    """DEV_MODE's SECRET_KEY and MQTT_AUTH_SECRET under VAR_DIR: generated once, then kept."""
    for name in DEV_SECRETS:
        create(var_dir / name, secrets.token_urlsafe(48))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m web.secretfile VAR_DIR")
    create_dev_secrets(Path(sys.argv[1]))
