"""CCGSC settings: everything comes from the environment; the defaults are the embedded mode.

Embedded mode (no variables set): SQLite in WAL mode with IMMEDIATE transactions, the in-memory
channel layer, and Celery tasks run inside the server process. Production sets DATABASE_URL
(PostgreSQL), REDIS_URL (channel layer and Celery broker), SECRET_KEY, DEBUG=false and
ALLOWED_HOSTS. See docs/deployment.md.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dj_database_url

from ccgsc.env import ConfigError, env_bool, env_int, env_list, env_str, env_url

BASE_DIR = Path(__file__).resolve().parent.parent
DEV_SECRET_KEY = "ccgsc-development-only-secret-key-do-not-use-in-production"  # noqa: S105

DEBUG = env_bool("DEBUG", True)
SECRET_KEY = env_str("SECRET_KEY", DEV_SECRET_KEY)
if not DEBUG and SECRET_KEY == DEV_SECRET_KEY:
    raise ConfigError("SECRET_KEY must be set when DEBUG is false (the development key is public)")
if len(SECRET_KEY) < 32:
    raise ConfigError("SECRET_KEY must be at least 32 characters long")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
# The public base URL of the platform, used in embed tags and worker instructions.
SITE_URL = env_str("SITE_URL", "").rstrip("/")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "channels",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "allauth",
    "allauth.account",
    "accounts",
    "campaigns",
    "workers",
    "rewards",
    "csp",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "allauth.account.middleware.AccountMiddleware",
]
# The branded 404 page also in DEBUG for a view's Http404 (another org's address).
MIDDLEWARE += ["ccgsc.error_pages.BrandedNotFoundMiddleware"]

ROOT_URLCONF = "ccgsc.urls"
ASGI_APPLICATION = "ccgsc.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- database -----------------------------------------------------------------------------------
DATABASE_URL = env_url("DATABASE_URL", ("postgres", "postgresql", "sqlite"))
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=600)}
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": env_str("SQLITE_PATH", str(BASE_DIR / "var" / "ccgsc.sqlite3")),
        }
    }
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # SQLite has no SELECT ... FOR UPDATE. Every write transaction takes the write lock up front
    # (IMMEDIATE), so two workers claiming tasks serialize instead of failing to upgrade a read
    # lock; WAL lets readers continue meanwhile; the timeout makes writers queue, not error.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # Tests use a file too (not shared-cache memory), so locking behaves as in production;
    # one per test process, so concurrent runs in one checkout never share it.
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / "var" / f"test-{os.getpid()}.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
IS_POSTGRES = DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"

# --- channels and celery ------------------------------------------------------------------------
REDIS_URL = env_url("REDIS_URL", ("redis", "rediss"))
# Under pytest-xdist each test process gets its own Redis database and channel prefix, so
# parallel test processes never consume each other's Celery tasks or channel messages.
_xdist = os.environ.get("PYTEST_XDIST_WORKER", "")
_redis_db = int(_xdist[2:]) + 1 if _xdist.startswith("gw") and _xdist[2:].isdigit() else None
if REDIS_URL and _redis_db is not None:
    REDIS_URL = urlsplit(REDIS_URL)._replace(path=f"/{_redis_db}").geturl()

if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            # channels_redis's layer, one instance per event loop (see ccgsc/layers.py).
            "BACKEND": "ccgsc.layers.LoopLocalRedisChannelLayer",
            "CONFIG": {
                "hosts": [REDIS_URL],
                "capacity": 1000,
                "expiry": 30,
                "prefix": f"ccgsc{_xdist}",
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
# The cache holds API rate counters: shared by all server processes through Redis when there
# is one, else per process.
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": f"ccgsc{_xdist}",
            # One pool per process, not per request's thread (ccgsc/cache.py).
            "OPTIONS": {"pool_class": "ccgsc.cache.SharedConnectionPool"},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ACKS_LATE = True
# How tasks run without a broker: "thread" (a small in-process pool, the embedded default, so a
# long generator never blocks a web request) or "eager" (synchronously; used by the test suite).
CELERY_EMBEDDED = env_str("CELERY_EMBEDDED", "thread")
if CELERY_EMBEDDED not in ("thread", "eager"):
    raise ConfigError(f"CELERY_EMBEDDED must be thread or eager, got {CELERY_EMBEDDED!r}")
# JOBS_INLINE=true keeps jobs in the web process even with Redis configured (test servers).
USE_CELERY_BROKER = REDIS_URL is not None and not env_bool("JOBS_INLINE", False)

# --- auth ---------------------------------------------------------------------------------------
AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_USER_MODEL_USERNAME_FIELD = None
ACCOUNT_EMAIL_VERIFICATION = env_str("ACCOUNT_EMAIL_VERIFICATION", "optional")
ACCOUNT_LOGOUT_ON_GET = False
LOGIN_REDIRECT_URL = "/dashboard/"
ACCOUNT_LOGOUT_REDIRECT_URL = "/"

EMAIL_HOST = env_str("EMAIL_HOST", "")
if EMAIL_HOST:
    EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    EMAIL_PORT = env_int("EMAIL_PORT", 587, minimum=1, maximum=65535)
    EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
    EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
    EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", True)
else:
    # Embedded mode: mail is kept on this machine, readable at /dev/mailbox/ (accounts.mailbox).
    EMAIL_BACKEND = "accounts.mailbox.MailboxBackend"
    MAILBOX_DIR = BASE_DIR / "var" / "mail"
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "CCGSC <noreply@localhost>")
# Mail subjects name the product (allauth would use the host name: "[localhost:8000] ...").
ACCOUNT_EMAIL_SUBJECT_PREFIX = "[CCGSC] "

# --- REST API -----------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.api_auth.OrganizationTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "ccgsc.api.exception_handler",
    # DRF's defaults, with a JSON parser that answers too deep a nesting with a 400.
    "DEFAULT_PARSER_CLASSES": [
        "ccgsc.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    # Per API token / signed-in user (see ccgsc.throttling); workers' protocol
    # endpoints are not DRF views and are not throttled here.
    "DEFAULT_THROTTLE_CLASSES": ["ccgsc.throttling.ApiRateThrottle"],
}
# Requests per caller, as "N/second|minute|hour|day"; empty: no limit.
API_RATE = env_str("API_RATE", "1200/minute")
if API_RATE and not re.fullmatch(r"[1-9][0-9]*/(second|minute|hour|day)", API_RATE):
    raise ConfigError(f"API_RATE must look like 1200/minute (or empty), got {API_RATE!r}")
SPECTACULAR_SETTINGS = {
    "TITLE": "CCGSC API",
    "DESCRIPTION": "Organizations' kernels, campaigns, tasks and results.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # The docs page's Swagger UI is served from our static files (drf-spectacular-sidecar).
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Adds the error shape to every operation and the status endpoint (a plain Django view).
    "DEFAULT_GENERATOR_CLASS": "campaigns.api.schema.ApiSchemaGenerator",
}

# --- static files and uploads -------------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "var" / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = DEBUG
MEDIA_ROOT = BASE_DIR / "var" / "media"
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("UPLOAD_MAX_BYTES", 64 * 1024 * 1024, minimum=1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = 4 * 1024 * 1024

# --- platform limits ----------------------------------------------------------------------------
CCGSC: dict[str, Any] = {
    # A kernel module, static data and a task file may each be at most this large.
    "KERNEL_MAX_BYTES": env_int("KERNEL_MAX_BYTES", 16 * 1024 * 1024, minimum=1024),
    "STATIC_DATA_MAX_BYTES": env_int("STATIC_DATA_MAX_BYTES", 64 * 1024 * 1024, minimum=0),
    # The largest linear memory a kernel may declare (browsers enforce nothing else).
    "KERNEL_MEMORY_CAP": env_int("KERNEL_MEMORY_CAP", 256 * 1024 * 1024, minimum=65536),
    "TASK_INPUT_MAX_BYTES": env_int("TASK_INPUT_MAX_BYTES", 1024 * 1024, minimum=16),
    "RESULT_MAX_BYTES": env_int("RESULT_MAX_BYTES", 4 * 1024 * 1024, minimum=16),
    "CHECKPOINT_MAX_BYTES": env_int("CHECKPOINT_MAX_BYTES", 4 * 1024 * 1024, minimum=16),
    # Server sandbox (generators, verifiers, reducers).
    "SANDBOX_TIMEOUT_SECONDS": env_int("SANDBOX_TIMEOUT_SECONDS", 300, minimum=1),
    "SANDBOX_OUTPUT_MAX_BYTES": env_int("SANDBOX_OUTPUT_MAX_BYTES", 1024**3, minimum=1024),
    "GENERATOR_BATCH": env_int("GENERATOR_BATCH", 5000, minimum=1),
    "MODULE_CACHE_DIR": env_str("MODULE_CACHE_DIR", str(BASE_DIR / "var" / "modules")),
    # The most disk compiled modules and static data take there (least recently used go).
    "MODULE_CACHE_MAX_BYTES": env_int("MODULE_CACHE_MAX_BYTES", 2 * 1024**3, minimum=64 * 1024**2),
    # New campaigns approved at once (a private or trial server: `make run` sets it), else
    # a platform admin approves each before volunteers' and embedded browsers get its tasks.
    "CAMPAIGN_AUTO_APPROVE": env_bool("CAMPAIGN_AUTO_APPROVE", False),
    # Trusted users' results of replicated campaigns are accepted with spot checks (BOINC's
    # adaptive replication); false always waits for the full quorum.
    "ADAPTIVE_REPLICATION": env_bool("ADAPTIVE_REPLICATION", True),
}

# --- independent volunteers and lease discipline (docs/security.md) -----------------------------
# Replicas of one task go to sessions of distinct users, network origins and browser profiles.
# A network origin is the client address's /24 (IPv4) or /48 (IPv6) prefix. The client address
# is the socket's peer, or, when the peer is one of these proxies (addresses or CIDR networks),
# the last address in X-Forwarded-For that is not itself a trusted proxy.
TRUSTED_PROXY_ADDRESSES = env_list("TRUSTED_PROXY_ADDRESSES", [])
for _proxy in TRUSTED_PROXY_ADDRESSES:
    try:
        ipaddress.ip_network(_proxy, strict=False)
    except ValueError:
        raise ConfigError(
            f"TRUSTED_PROXY_ADDRESSES must list IP addresses or networks, got {_proxy!r}"
        ) from None
CCGSC.update(
    {
        "ORIGIN_PREFIX_V4": env_int("ORIGIN_PREFIX_V4", 24, minimum=8, maximum=32),
        "ORIGIN_PREFIX_V6": env_int("ORIGIN_PREFIX_V6", 48, minimum=16, maximum=128),
        # Loopback clients have no network origin (a trial on one machine; make run sets it).
        "ORIGIN_IGNORES_LOOPBACK": env_bool("ORIGIN_IGNORES_LOOPBACK", False),
        # Open worker sessions, and slots they claim in total, per network origin (0 = no cap:
        # load tests from one machine).
        "MAX_SESSIONS_PER_ORIGIN": env_int("MAX_SESSIONS_PER_ORIGIN", 32, minimum=0),
        "MAX_SLOTS_PER_ORIGIN": env_int("MAX_SLOTS_PER_ORIGIN", 512, minimum=0),
        # Leases of one replicated (quorum >= 2) campaign that all sessions of one network
        # origin may hold together, in sessions' allowances: 1 = as much as one session,
        # however many sockets the network opens (0 = no per-origin share; also off when
        # MAX_SESSIONS_PER_ORIGIN is 0). Raise it for campaigns fed by shared networks.
        "ORIGIN_LEASE_SHARE": env_int("ORIGIN_LEASE_SHARE", 1, minimum=0, maximum=1024),
        # Leases a new session may hold at once, whatever its hello claims; each result returned
        # within the task's timeout (as the server measures it) earns one more.
        "LEASE_ALLOWANCE_START": env_int("LEASE_ALLOWANCE_START", 4, minimum=1, maximum=1024),
        # A session whose leases expired this many times without a result in between gets no
        # more work for LEASE_BENCH_SECONDS (doubling each time).
        "LEASE_EXPIRIES_BEFORE_BENCH": env_int("LEASE_EXPIRIES_BEFORE_BENCH", 2, minimum=1),
        "LEASE_BENCH_SECONDS": env_int("LEASE_BENCH_SECONDS", 600, minimum=1),
    }
)

# --- misc ---------------------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

if not DEBUG:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", True)
    CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
    SECURE_CONTENT_TYPE_NOSNIFF = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.channels.server": {"level": "WARNING"},
        "daphne": {"level": "WARNING"},
        "celery.app.trace": {"level": "WARNING"},
    },
}

# --- API errors ---------------------------------------------------------------------------------
# A CSRF refusal under /api/ answers in the API's JSON error shape (ccgsc/api.py).
CSRF_FAILURE_VIEW = "ccgsc.api.csrf_failure"

# --- operations: health, metrics, notifications (operations/, docs/deployment.md) --------------
INSTALLED_APPS += ["operations"]
# /metrics answers staff sessions, and requests with "Authorization: Bearer <METRICS_TOKEN>"
# when this is set (Prometheus's bearer_token); nobody else.
METRICS_TOKEN = env_str("METRICS_TOKEN", "")
# A running campaign with no finished task for this long is reported to its owners as stalled
# (a campaign may set its own time).
NOTIFY_STALL_MINUTES = env_int("NOTIFY_STALL_MINUTES", 30, minimum=1)
# Webhooks may only reach public addresses (an owner's URL must not probe the platform's own
# network); true allows private ones, e.g. on a private server.
NOTIFY_ALLOW_PRIVATE_WEBHOOKS = env_bool("NOTIFY_ALLOW_PRIVATE_WEBHOOKS", False)
# plain (human-readable lines) or json (one JSON object per line, for log collectors).
LOG_FORMAT = env_str("LOG_FORMAT", "plain")
if LOG_FORMAT not in ("plain", "json"):
    raise ConfigError(f"LOG_FORMAT must be plain or json, got {LOG_FORMAT!r}")
LOGGING["formatters"]["json"] = {"()": "ccgsc.logs.JsonFormatter"}  # type: ignore[index]
LOGGING["handlers"]["console"]["formatter"] = LOG_FORMAT  # type: ignore[index]
# Celery workers replace the root logger's handlers with their own format unless told not to:
# with JSON logs, their lines go through the same formatter as the web processes'.
CELERY_WORKER_HIJACK_ROOT_LOGGER = LOG_FORMAT != "json"

# --- security headers (docs/security.md "Hardened edges") -------------------------------------
# Content-Security-Policy on every response (django-csp). Scripts only from our own static files
# (no inline script, no eval); styles from our files, plus style="" attributes (they cannot run
# script) and <style> blocks that carry the request's nonce; nothing may frame a page. Pages with
# other needs say so where they are served: the contribute page compiles WebAssembly
# ('wasm-unsafe-eval'), the embed frame and the kernels' worker scripts set their own policies
# (workers/browser.py).
from csp.constants import NONCE, NONE, SELF  # noqa: E402

MIDDLEWARE.append("csp.middleware.CSPMiddleware")
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF, NONCE],
        "style-src-attr": ["'unsafe-inline'"],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "worker-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}
# HSTS: Django's SecurityMiddleware sends it on requests that arrived over TLS only (directly, or
# as SECURE_PROXY_SSL_HEADER says), so it is on by default in production (DEBUG=false).
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31536000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
