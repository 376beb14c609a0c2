"""The configuration read from the environment, strictly, and the one log format.

Shared by web/settings.py and web/gunicorn.conf.py, so it imports nothing from Django: the
Gunicorn master reads its config before any application (and SECRET_KEY) is loaded.

A variable NAME can also be given as NAME_FILE, the path of a file holding the value (Docker
and Ansible secrets); an empty NAME counts as unset, as compose and systemd env files leave
unset values empty. A value its reader cannot take stops the process with a ConfigError that
names the variable and what it accepts, never a quiet default: `SECURE=ture` must not turn
HTTPS off, and a secret file that cannot be read must not leave the secret empty.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

# One line format for Django, the monitor and Gunicorn: they write the same file.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s"

N = TypeVar("N", int, float)
TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


class ConfigError(Exception):
    """A setting whose value cannot be used: the message says which and what it accepts."""


def env(name: str, default: str = "") -> str:
    """The value of NAME, or of the file named by NAME_FILE, or the default."""
    if os.environ.get(name):
        return os.environ[name]
    path = os.environ.get(f"{name}_FILE")
    if path:
        return read_file(f"{name}_FILE", path)
    return default


def read_file(name: str, path: str | Path) -> str:
    """The stripped text of the file a setting names; ConfigError when it cannot be read."""
    try:
        return Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(
            f"{name}={path}: cannot read it ({reason}); give a readable file holding the value."
        ) from exc


def env_bool(name: str, default: bool = False) -> bool:
    value = env(name).strip().lower()
    if not value:
        return default
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise ConfigError(
        f"{name}={value!r} is not a boolean: use {', '.join(TRUE)} or {', '.join(FALSE)}."
    )


def env_int(name: str, default: int) -> int:
    return _number(name, default, int, "a whole number")


def env_float(name: str, default: float) -> float:
    return _number(name, default, float, "a number")


def _number(name: str, default: N, parse: Callable[[str], N], what: str) -> N:
    value = env(name).strip()
    if not value:
        return default
    try:
        return parse(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not {what} (such as {default:g}).") from None


def env_list(name: str, default: str = "") -> list[str]:
    """Comma-separated items, blanks dropped."""
    return [item.strip() for item in env(name, default).split(",") if item.strip()]


def env_map(name: str, default: str = "") -> dict[str, str]:
    """Comma-separated `key=value` pairs, e.g. `temperature=°C,humidity=%`; blanks dropped."""
    pairs = {}
    for item in env_list(name, default):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{name}: {item!r} is not key=value (such as temperature=°C).")
        pairs[key.strip()] = value.strip()
    return pairs


def log_handlers(
    log_dir: Path | None, *, max_bytes: int, backups: int, stream: str | None = None
) -> dict[str, dict[str, object]]:
    """logging handlers in LOG_FORMAT: the console (stderr unless `stream` names another), and
    when `log_dir` is given the rotating LOG_DIR/service.log that every process shares."""
    console: dict[str, object] = {"class": "logging.StreamHandler", "formatter": "plain"}
    if stream:
        console["stream"] = stream
    handlers = {"console": console}
    if log_dir is not None:
        handlers["file"] = {
            # Gunicorn workers and the monitor share the file: a lock-aware rotating handler.
            # Its lock lives beside the log, as by default; naming that directory makes the
            # handler create it when logging is configured, not when settings are imported.
            "class": "concurrent_log_handler.ConcurrentRotatingFileHandler",
            "filename": str(log_dir / "service.log"),
            "lock_file_directory": str(log_dir),
            "maxBytes": max_bytes,
            "backupCount": backups,
            "formatter": "plain",
        }
    return handlers
