"""Gunicorn settings of the web service, driven by the environment like web/settings.py.

    gunicorn -c web/gunicorn.conf.py

The variables and their defaults: docs/deploy.md, "Gunicorn settings". Gunicorn's error and
access logs use Django's LOG_FORMAT and go where Django's do: stdout, plus LOG_DIR/service.log
unless LOG_TO_FILE=0 (containers).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Same string as LOG_FORMAT in web/settings.py (tests/test_deploy.py keeps them equal). Not
# imported: loading the settings here would need SECRET_KEY in the master before the app loads.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s"

BASE_DIR = Path(__file__).resolve().parent.parent


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _env_bool(name: str, default: bool) -> bool:
    return _env(name, "1" if default else "0").strip().lower() in ("1", "true", "yes", "on")


wsgi_app = "web.wsgi:application"
bind = [address.strip() for address in _env("GUNICORN_BIND", "127.0.0.1:8000").split(",")]
workers = int(_env("WEB_CONCURRENCY", str(min(2 * multiprocessing.cpu_count() + 1, 8))))
# Threads keep a worker answering the broker while another request waits on the database;
# every ACL check is short, so threads are cheaper than more processes.
worker_class = "gthread"
threads = int(_env("GUNICORN_THREADS", "4"))
# The broker's plugin gives up after 5 s (auth_opt_http_timeout): a request still running at
# 30 s is stuck, not slow.
timeout = int(_env("GUNICORN_TIMEOUT", "30"))
# On SIGTERM, workers finish the requests in flight for this long before being killed.
graceful_timeout = int(_env("GUNICORN_GRACEFUL_TIMEOUT", "20"))
keepalive = int(_env("GUNICORN_KEEPALIVE", "5"))
# Recycle workers now and then so that a slow leak never grows without bound; not often, since
# a new worker has forgotten the logins it remembered and the ACL subjects it compiled.
max_requests = int(_env("GUNICORN_MAX_REQUESTS", "200000"))
max_requests_jitter = max_requests // 10
# The proxy sets X-Forwarded-Proto; Django trusts it through SECURE_PROXY_SSL_HEADER.
forwarded_allow_ips = _env("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
# Heartbeat files in memory, not on a possibly slow or read-only disk.
worker_tmp_dir = "/dev/shm" if Path("/dev/shm").is_dir() else None
# No control socket: it would be created under $HOME, which is read-only in the container and
# under systemd's ProtectHome.
control_socket_disable = True
proc_name = "mqtt-service-web"

# Access lines as "<ip> <method path proto> <status> <bytes> <ms> <agent>"; asctime, level and
# pid come from LOG_FORMAT. The user agent tells the broker's calls (mosquitto-2.0.x) apart.
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms "%(a)s" fwd=%({x-forwarded-for}i)s'


def _not_a_broker_call(record: logging.LogRecord) -> bool:
    path = record.args.get("U", "") if isinstance(record.args, Mapping) else ""
    return record.name != "gunicorn.access" or not str(path).startswith("/mqtt/auth/")


def post_worker_init(worker: Any) -> None:
    """Keep the access lines of /mqtt/auth/ (one per broker login and ACL check: 96 % of a
    local run's console) off the console when a log file keeps them, unless LOG_LEVEL=DEBUG.
    Without a file (containers) the console is the only log and they stay."""
    # Here, after the app loaded: Django's LOGGING has replaced the handlers set up below.
    root = logging.getLogger()
    files = [handler for handler in root.handlers if hasattr(handler, "baseFilename")]
    if files and root.getEffectiveLevel() > logging.DEBUG:
        for handler in root.handlers:
            if handler not in files:
                handler.addFilter(_not_a_broker_call)


_log_level = _env("LOG_LEVEL", "INFO").upper()
_log_to_file = _env_bool("LOG_TO_FILE", True)
_log_dir = Path(_env("LOG_DIR", str(Path(_env("VAR_DIR", str(BASE_DIR / "var"))) / "log")))
_handlers: dict[str, dict[str, object]] = {
    "console": {
        "class": "logging.StreamHandler",
        "formatter": "plain",
        "stream": "ext://sys.stdout",
    },
}
if _log_to_file:
    _log_dir.mkdir(parents=True, exist_ok=True)
    _handlers["file"] = {
        "class": "concurrent_log_handler.ConcurrentRotatingFileHandler",
        "filename": str(_log_dir / "service.log"),
        "maxBytes": int(_env("LOG_FILE_MAX_BYTES", str(10 * 1024 * 1024))),
        "backupCount": int(_env("LOG_FILE_BACKUPS", "5")),
        "formatter": "plain",
    }
# gunicorn.error and gunicorn.access propagate to the root logger, whose handlers Django
# configures the same way in each worker: one format, one file.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": LOG_FORMAT}},
    "handlers": _handlers,
    "root": {"handlers": list(_handlers), "level": _log_level},
    "loggers": {
        "gunicorn.error": {"level": _log_level, "handlers": [], "propagate": True},
        "gunicorn.access": {"level": "INFO", "handlers": [], "propagate": True},
    },
}
