"""Gunicorn settings of the web service, driven by the environment like web/settings.py.

    gunicorn -c web/gunicorn.conf.py

The variables and their defaults: docs/deploy.md, "Gunicorn settings". They are read with
web/env.py, the helpers of web/settings.py (NAME_FILE, strict parsing), without Django: the
settings would need SECRET_KEY in the master before the app loads. Gunicorn's error and access
logs use the same LOG_FORMAT and go where Django's do: stdout, plus LOG_DIR/service.log unless
LOG_TO_FILE=0 (containers).
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from web.env import LOG_FORMAT, env, env_bool, env_int, env_list, log_handlers

BASE_DIR = Path(__file__).resolve().parent.parent

wsgi_app = "web.wsgi:application"
bind = env_list("GUNICORN_BIND", "127.0.0.1:8000")
workers = env_int("WEB_CONCURRENCY", min(2 * multiprocessing.cpu_count() + 1, 8))
# Threads keep a worker answering the broker while another request waits on the database;
# every ACL check is short, so threads are cheaper than more processes. A broker following the
# change feed holds one thread for its long poll (up to 15 s by default; docs/deploy.md,
# "Revocation"), never a whole process: auth calls keep the worker's other threads.
worker_class = "gthread"
threads = env_int("GUNICORN_THREADS", 4)
# The project's plugin gives up after 2 s, go-auth after 5 (http_timeout): a request still
# running at 30 s is stuck, not slow.
timeout = env_int("GUNICORN_TIMEOUT", 30)
# On SIGTERM, workers finish the requests in flight for this long before being killed.
graceful_timeout = env_int("GUNICORN_GRACEFUL_TIMEOUT", 20)
keepalive = env_int("GUNICORN_KEEPALIVE", 5)
# Recycle workers now and then so that a slow leak never grows without bound; not often, since
# a new worker has forgotten the logins it remembered and the ACL subjects it compiled.
max_requests = env_int("GUNICORN_MAX_REQUESTS", 200000)
max_requests_jitter = max_requests // 10
# The proxy sets X-Forwarded-Proto; Django trusts it through SECURE_PROXY_SSL_HEADER.
forwarded_allow_ips = env("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
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


_log_level = env("LOG_LEVEL", "INFO").upper()
_log_dir = Path(env("LOG_DIR", str(Path(env("VAR_DIR", str(BASE_DIR / "var"))) / "log")))
_handlers = log_handlers(
    _log_dir if env_bool("LOG_TO_FILE", True) else None,
    max_bytes=env_int("LOG_FILE_MAX_BYTES", 10 * 1024 * 1024),
    backups=env_int("LOG_FILE_BACKUPS", 5),
    stream="ext://sys.stdout",
)
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
