"""Settings of Django MQTT Service, driven by the environment.

Every variable is listed in the README's configuration table. A variable NAME can also be
given as NAME_FILE, the path of a file holding the value (Docker and Ansible secrets); the
helpers (web/env.py) refuse a value they cannot read, naming the variable.
Production fails closed: no default SECRET_KEY and DEBUG off unless DEV_MODE is set.

Importing this module reads the environment and the files it names, nothing else: it creates
no directory and no file. VAR_DIR is made by whoever puts files there (bin/run, bin/test,
the deployments), the log directory by the log handler, the monitor's password is read by
the monitor (monitor/account.py), and system checks report what is missing (web.E001).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import dj_database_url

from web.env import (
    LOG_FORMAT,
    ConfigError,
    env,
    env_bool,
    env_float,
    env_int,
    env_list,
    env_map,
    log_handlers,
    read_file,
)

BASE_DIR = Path(__file__).resolve().parent.parent


VAR_DIR = Path(env("VAR_DIR", str(BASE_DIR / "var")))


def dev_secret(name: str) -> str:
    """A development secret from VAR_DIR, where `python -m web.secretfile VAR_DIR` generated
    it (bin/run and bin/test do, before anything loads the settings)."""
    try:
        return read_file(f"DEV_MODE's {name}", VAR_DIR / name)
    except ConfigError as exc:
        raise ConfigError(
            f"{exc} Run `python -m web.secretfile {VAR_DIR}` once (bin/run and bin/test do), "
            f"or set {name.upper()}."
        ) from None


# Local development: generated secrets, DEBUG on unless asked otherwise.
DEV_MODE = env_bool("DEV_MODE")
DEBUG = env_bool("DEBUG", default=DEV_MODE)
SECRET_KEY = env("SECRET_KEY") or (dev_secret("secret_key") if DEV_MODE else "")
# Shared secret that the broker's auth plugin sends as HTTP Basic auth.
MQTT_AUTH_SECRET = env("MQTT_AUTH_SECRET") or (dev_secret("mqtt_auth_secret") if DEV_MODE else "")
if not SECRET_KEY:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured("Set SECRET_KEY (or SECRET_KEY_FILE), or DEV_MODE=1 locally.")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "brokerauth",
    "monitor",
    "web",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # No page loads anything from another origin (the browser refuses it).
    "web.contentpolicy.ContentSecurityPolicy",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # A NUL in a query parameter or a form field is a 400 here, never a 500 in PostgreSQL.
    "web.badinput.RejectUnstorableInput",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "web.urls"
WSGI_APPLICATION = "web.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # web/templates first: it overrides DRF's browsable API page (rest_framework/api.html).
        "DIRS": [BASE_DIR / "web" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "web.views.live_settings",
            ],
        },
    },
]

# Database: SQLite under var/ by default (WAL, so readers never wait for the writer);
# PostgreSQL through psycopg 3 with DATABASE_URL=postgres://...
DATABASE_URL = env("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}")
DATABASES = {
    "default": dj_database_url.parse(DATABASE_URL, conn_max_age=60, conn_health_checks=True)
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
    # A file, not memory, so tests see the database as the services do (WAL, other threads).
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-db.sqlite3")}
else:
    DATABASES["default"].setdefault("OPTIONS", {})
    DATABASES["default"]["OPTIONS"]["application_name"] = env(
        "DB_APPLICATION_NAME", "mqtt-service-web"
    )
    DATABASES["default"]["OPTIONS"].setdefault("connect_timeout", env_int("DB_CONNECT_TIMEOUT", 5))

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env("STATIC_ROOT", str(VAR_DIR / "static")))
STATICFILES_DIRS = [BASE_DIR / "web" / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = DEBUG

LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

# HTTPS: on unless DEBUG; behind a TLS-terminating proxy that sets X-Forwarded-Proto.
SECURE = env_bool("SECURE", default=not DEBUG)
if SECURE:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", default=True)
    # The broker's plain-HTTP calls to /mqtt/auth/ never pass the proxy: no redirect there.
    SECURE_REDIRECT_EXEMPT = [r"^mqtt/auth/", r"^status/$", r"^metrics$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", default=True)
SECURE_CONTENT_TYPE_NOSNIFF = True
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"

# --- brokerauth: the broker-facing endpoints -------------------------------------------------
# Basic-auth user name the plugin sends (go-auth: http_host user:secret@host).
MQTT_AUTH_USERNAME = env("MQTT_AUTH_USERNAME", "broker")
# Source addresses allowed to call /mqtt/auth/ (CIDRs).
MQTT_AUTH_ALLOWED_NETS = env_list("MQTT_AUTH_ALLOWED_NETS", "127.0.0.0/8,::1/128")
# status | json answer 200/403 with {"ok", "error"}; text answers "ok" / the reason.
MQTT_AUTH_RESPONSE_MODE = env("MQTT_AUTH_RESPONSE_MODE", "status")
MQTT_AUTH_MAX_BODY = env_int("MQTT_AUTH_MAX_BODY", 65536 + 1024)
# RabbitMQ (brokerauth/rabbitmq.py): the virtual host of its MQTT plugin (mqtt.vhost).
RABBITMQ_VHOST = env("RABBITMQ_VHOST", "/")
# Every cold login (first after a web restart, or after LOGIN_REMEMBER_SECONDS) holds the
# broker's single event loop for one bcrypt verification: ~70 ms at 10 here, ~280 ms at 12.
BCRYPT_ROUNDS = env_int("BCRYPT_ROUNDS", 10)
# A successful bcrypt verification is remembered this long (0 = never).
LOGIN_REMEMBER_SECONDS = env_int("LOGIN_REMEMBER_SECONDS", 300)
# Lockout of chosen passwords, per (account, client address) when the broker sends it: after
# THRESHOLD failures in a row, refuse for BASE * 2**extra seconds, up to MAX; a failure more
# than WINDOW seconds after the previous one starts the count again. Generated secrets are
# never locked.
LOGIN_LOCKOUT_THRESHOLD = env_int("LOGIN_LOCKOUT_THRESHOLD", 5)
LOGIN_LOCKOUT_BASE_SECONDS = env_int("LOGIN_LOCKOUT_BASE_SECONDS", 30)
LOGIN_LOCKOUT_MAX_SECONDS = env_int("LOGIN_LOCKOUT_MAX_SECONDS", 3600)
LOGIN_LOCKOUT_WINDOW_SECONDS = env_int("LOGIN_LOCKOUT_WINDOW_SECONDS", 900)
# Client ids the broker makes up for clients that send none (Mosquitto's auto_id_prefix):
# random per connection, so nobody owns them (brokerauth/clientids.py).
MQTT_AUTO_ID_PREFIX = env("MQTT_AUTO_ID_PREFIX", "auto-")
# How often each process checks whether accounts or rules changed (seconds).
POLICY_REFRESH_SECONDS = env_float("POLICY_REFRESH_SECONDS", 1.0)
AUDIT_RETENTION_DAYS = env_int("AUDIT_RETENTION_DAYS", 30)
# The change feed the project's plugin follows (GET /mqtt/auth/changes, brokerauth/feed.py):
# the longest a long poll may be held, how often a held poll looks for news, and how long
# notes are kept (a follower further behind drops its whole cache once).
CHANGE_FEED_MAX_WAIT = env_float("CHANGE_FEED_MAX_WAIT", 30.0)
CHANGE_FEED_POLL_SECONDS = env_float("CHANGE_FEED_POLL_SECONDS", 0.2)
CHANGE_FEED_RETENTION_SECONDS = env_int("CHANGE_FEED_RETENTION_SECONDS", 86400)

# --- logging ---------------------------------------------------------------------------------
LOG_LEVEL = env("LOG_LEVEL", "INFO")
LOG_DIR = Path(env("LOG_DIR", str(VAR_DIR / "log")))
LOG_TO_FILE = env_bool("LOG_TO_FILE", default=True)
_handlers = log_handlers(
    LOG_DIR if LOG_TO_FILE else None,
    max_bytes=env_int("LOG_FILE_MAX_BYTES", 10 * 1024 * 1024),
    backups=env_int("LOG_FILE_BACKUPS", 5),
)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": LOG_FORMAT}},
    "handlers": _handlers,
    "root": {"handlers": list(_handlers), "level": LOG_LEVEL},
    "loggers": {
        # brokerauth.decision logs one line per login and per ACL denial (allows at DEBUG).
        "brokerauth": {"level": env("BROKERAUTH_LOG_LEVEL", LOG_LEVEL)},
        "django.db.backends": {"level": "INFO"},
        # pika logs every failed connection attempt as several ERRORs with a traceback;
        # monitor.amqp logs one line with the reason and retries.
        "pika": {"level": "CRITICAL"},
    },
}

# --- web UI / API ----------------------------------------------------------------------------
INSTALLED_APPS += ["django_filters", "axes"]
# The operator login (UI and admin) is throttled by django-axes, attempts kept in the database
# (so every worker and host agrees): after OPERATOR_LOGIN_FAILURES failures of one user name
# from one address, that pair is refused (429) for OPERATOR_LOGIN_COOLOFF_SECONDS; a good
# login forgets its failures. The address is REMOTE_ADDR: behind a proxy, every operator
# shares the proxy's, and the limit is then per user name.
MIDDLEWARE += ["axes.middleware.AxesMiddleware"]
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("OPERATOR_LOGIN_FAILURES", 5)
AXES_COOLOFF_TIME = timedelta(seconds=env_int("OPERATOR_LOGIN_COOLOFF_SECONDS", 900))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_IPWARE_META_PRECEDENCE_ORDER = ["REMOTE_ADDR"]  # never a header a client can set
# REST API rate limits (web/api/throttles.py), per process; a number per second, minute,
# hour or day ("600/min"); empty turns one off.
API_THROTTLE_RATES = {
    "user": env("API_THROTTLE_USER", "1200/min") or None,
    "failed_auth": env("API_THROTTLE_FAILED_AUTH", "20/min") or None,
}
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "web.api.throttles.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["web.api.permissions.StaffWritesOthersRead"],
    "DEFAULT_THROTTLE_CLASSES": ["web.api.throttles.UserThrottle"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.SearchFilter",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_PARSER_CLASSES": [
        "web.api.parsers.StorableJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "web.api.errors.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Django MQTT Service API",
    "DESCRIPTION": "MQTT accounts, groups and ACL rules; clients, sessions, telemetry, broker "
    "statistics, the audit of auth decisions and the test-service round trip.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # The error answers (400, 401, 403, 404, 429) each operation really gives.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "web.api.schema.declare_errors",
    ],
}
# Bearer token /metrics asks for (empty: open; it carries counts, no names).
METRICS_TOKEN = env("METRICS_TOKEN")
# The Test service (monitor/testservice.py): where its round trip reaches the auth endpoints
# over HTTP (empty: that step is skipped), and the topic of its probe ({username} and
# {client_id} are filled in).
TEST_SERVICE_AUTH_URL = env("TEST_SERVICE_AUTH_URL", "http://127.0.0.1:8000")
TEST_SERVICE_TOPIC = env("TEST_SERVICE_TOPIC", "probe/{client_id}")
# Monitor data older than this is shown as stale (seconds).
WEB_STALE_SECONDS = env_int("WEB_STALE_SECONDS", 120)
# Seconds between two refreshes of the live pages (dashboard, clients, client); 0 turns the
# refresh off. A hidden browser tab does not poll (web/static/web/live.js).
WEB_LIVE_SECONDS = env_float("WEB_LIVE_SECONDS", 5.0)
# Units of telemetry metrics on charts and tables, `metric=unit` pairs; metrics not named
# here take the unit their name ends in, if any (`temp_c`, `humidity_pct`: web/units.py).
TELEMETRY_UNITS = env_map("TELEMETRY_UNITS")

# --- Monitor (manage.py monitor, simulate_devices, prune_telemetry) --------------------------
# The broker the monitor and the simulator connect to: MQTT 5 over TLS.
MQTT_HOST = env("MQTT_HOST", "127.0.0.1")
MQTT_PORT = env_int("MQTT_PORT", 8883)
MQTT_CA_FILE = env("MQTT_CA_FILE", str(VAR_DIR / "certs" / "ca.crt"))
# The monitor's own MQTT account, made and rotated by `manage.py monitor_account`, which
# writes the password to VAR_DIR/monitor_password (0600) unless it is given here.
MONITOR_USERNAME = env("MONITOR_USERNAME", "mqtt-monitor")
# The monitor reads the file when it needs the password (monitor.account.password()).
MONITOR_PASSWORD_PATH = VAR_DIR / "monitor_password"
MONITOR_PASSWORD = env("MONITOR_PASSWORD")
MONITOR_CLIENT_ID = env("MONITOR_CLIENT_ID", "mqtt-service-monitor")
# How long the broker keeps the monitor's session (and its queued QoS 1 telemetry) while away.
MONITOR_SESSION_EXPIRY = env_int("MONITOR_SESSION_EXPIRY", 7 * 24 * 3600)
# Telemetry filters, subscribed at QoS 1; <prefix>/<client id>/telemetry[/<metric>].
TELEMETRY_TOPICS = env_list("TELEMETRY_TOPICS", "devices/+/telemetry,devices/+/telemetry/+")
# Set on every instance to share telemetry through $share/<group>/ (scale-out).
TELEMETRY_SHARE_GROUP = env("TELEMETRY_SHARE_GROUP")
# Off on extra scale-out instances: $SYS statistics and presence stay with one monitor.
MONITOR_PRESENCE = env_bool("MONITOR_PRESENCE", default=True)
# How long the broker's client count may disagree with the clients believed online before the
# dashboard warns and those clients turn uncertain (counts come every sys_interval).
MONITOR_PRESENCE_BOUND_SECONDS = env_int("MONITOR_PRESENCE_BOUND_SECONDS", 30)
TELEMETRY_MAX_BYTES = env_int("TELEMETRY_MAX_BYTES", 65536)
TELEMETRY_RETENTION_DAYS = env_int("TELEMETRY_RETENTION_DAYS", 30)
BROKER_STATS_RETENTION_DAYS = env_int("BROKER_STATS_RETENTION_DAYS", 7)
# A batch is written when it holds this many readings or is this old, whichever comes first.
MONITOR_BATCH_SIZE = env_int("MONITOR_BATCH_SIZE", 5000)
MONITOR_FLUSH_SECONDS = env_float("MONITOR_FLUSH_SECONDS", 0.5)
MONITOR_RECONNECT_MAX_SECONDS = env_int("MONITOR_RECONNECT_MAX_SECONDS", 30)
# Which broker the monitor reads: "mosquitto" (MQTT, above) or "rabbitmq" (AMQP: a quorum
# queue for telemetry, the event exchange and the management API for presence).
MONITOR_BROKER = env("MONITOR_BROKER", "mosquitto")
# RabbitMQ nodes, tried in order: the monitor's AMQP connection and the management API.
MONITOR_AMQP_URLS = env_list("MONITOR_AMQP_URLS", "amqp://127.0.0.1:5672/%2F")
MONITOR_RABBITMQ_MANAGEMENT_URLS = env_list(
    "MONITOR_RABBITMQ_MANAGEMENT_URLS", "http://127.0.0.1:15672"
)
# PostgreSQL application_name of the monitor process (DB_APPLICATION_NAME is the web's).
MONITOR_DB_APPLICATION_NAME = env("MONITOR_DB_APPLICATION_NAME", "mqtt-service-monitor")
# --- end of Monitor --------------------------------------------------------------------------
