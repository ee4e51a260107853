"""Django settings, read from the environment through the typed helpers in ``webapp.env``.

Defaults suit production: DEBUG is off, so a SECRET_KEY is required and HTTPS settings are on.
``scripts/demo.sh`` turns DEBUG on and writes ``data/.secret_key`` for local use. The README lists
every variable.
"""

from __future__ import annotations

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from webapp.env import (
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_list,
    env_path,
    env_str,
    parse_database_url,
)

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = env_path("DATA_DIR", BASE_DIR / "data", base_dir=BASE_DIR)

DEBUG = env_bool("DEBUG", False)

# SECRET_KEY comes from the environment, else from a file that the demo and test scripts write.
SECRET_KEY_FILE = env_path("SECRET_KEY_FILE", DATA_DIR / ".secret_key", base_dir=BASE_DIR)
_secret_key = env_str("SECRET_KEY")
if _secret_key is None and SECRET_KEY_FILE.is_file():
    _secret_key = SECRET_KEY_FILE.read_text(encoding="utf-8").strip() or None
if _secret_key is None:
    if not DEBUG:
        raise ImproperlyConfigured(
            f"SECRET_KEY is not set and {SECRET_KEY_FILE} does not exist. Set the SECRET_KEY "
            "environment variable (50+ random characters), or run ./scripts/demo.sh or "
            "./scripts/test.sh, which write that file."
        )
    # Only reachable with DEBUG on: a fixed key keeps sessions valid across runserver reloads.
    _secret_key = "insecure-debug-only-key-never-used-when-debug-is-off"
SECRET_KEY = _secret_key

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

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
    "django_tasks",
    "django_tasks_db",
    "webapp.core",
    "webapp.jobs",
    "webapp.api",
    "webapp.ingest",
    "webapp.review",
    "webapp.research",
]

MIDDLEWARE = [
    "webapp.request_id.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "webapp.urls"
WSGI_APPLICATION = "webapp.wsgi.application"

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
                "webapp.core.context_processors.roles",
            ],
        },
    },
]

# Database: SQLite in the data folder by default; PostgreSQL for tests, CI and production.
DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{DATA_DIR / 'db.sqlite3'}")
assert DATABASE_URL is not None
_database = parse_database_url(DATABASE_URL, base_dir=BASE_DIR)
if _database["ENGINE"].endswith("sqlite3"):
    _database["OPTIONS"] = {
        # Web and worker processes share the file: wait for a lock instead of failing at once.
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file (not in-memory) test database, so a db_worker subprocess can open it too; the
    # process id keeps two test runs in one checkout apart.
    _database["TEST"] = {
        "NAME": str(Path(_database["NAME"]).with_name(f"test_db_{os.getpid()}.sqlite3"))
    }
else:
    _database["CONN_MAX_AGE"] = env_int("DB_CONN_MAX_AGE_S", 60, minimum=0)
    _database["CONN_HEALTH_CHECKS"] = True
    # JIT compilation is off for every connection. The worklist's status filter has a high
    # estimated cost, so PostgreSQL JIT-compiled it on each request: 2.3 s of a 2.5 s query at
    # 10,000 cases (benchmarks/bench_worklist.py). Short web queries never gain from JIT.
    _database["OPTIONS"]["options"] = " ".join(
        filter(None, [_database["OPTIONS"].get("options", ""), "-c jit=off"])
    )
DATABASES = {"default": _database}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# The cache stores the login-failure counters; a database cache shares them across gunicorn
# workers and hosts, which a per-process memory cache would not.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.db.DatabaseCache",
        "LOCATION": "ceht_cache",
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 12},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "case-list"
LOGOUT_REDIRECT_URL = "login"

# Failed logins allowed per username and client address within the window; further attempts are rejected.
LOGIN_THROTTLE_MAX_FAILURES = env_int("LOGIN_THROTTLE_MAX_FAILURES", 5, minimum=1)
LOGIN_THROTTLE_WINDOW_S = env_int("LOGIN_THROTTLE_WINDOW_S", 900, minimum=1)

# Readers whose agreeing labels make a case adjudicated on the worklist; readers who disagree
# need a consensus label from an adjudicator.
REQUIRED_READERS = env_int("REQUIRED_READERS", 2, minimum=1)

LANGUAGE_CODE = "en"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

# Static files and uploaded media.
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = env_path("STATIC_ROOT", BASE_DIR / "staticfiles", base_dir=BASE_DIR)
MEDIA_URL = "media/"
MEDIA_ROOT = env_path("MEDIA_ROOT", DATA_DIR / "media", base_dir=BASE_DIR)
# Hashed, compressed static file names need `collectstatic` first, so DEBUG serves plain files.
STATIC_MANIFEST = env_bool("STATIC_MANIFEST", not DEBUG)
STORAGES = {
    "default": {
        "BACKEND": env_str("STORAGE_BACKEND", "django.core.files.storage.FileSystemStorage"),
    },
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if STATIC_MANIFEST
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        ),
    },
}
FILE_UPLOAD_PERMISSIONS = 0o640

# Background tasks: django-tasks with the database queue; run `python manage.py db_worker`.
TASKS = {
    "default": {
        "BACKEND": env_str("TASK_BACKEND", "django_tasks_db.DatabaseBackend"),
        "QUEUES": ["default", "inference"],
    }
}

# Pipeline settings for the background jobs; the jobs app reads only this namespace.
INFERENCE = {
    "PIPELINE_VERSION": env_str("INFERENCE_PIPELINE_VERSION", "0.1.0"),
    "MODEL_DIR": str(
        env_path("INFERENCE_MODEL_DIR", BASE_DIR / "models" / "demo", base_dir=BASE_DIR)
    ),
    # Where the U-Net runs: cpu, cuda (fails the job when no CUDA device is visible) or auto.
    "DEVICE": env_choice("INFERENCE_DEVICE", "cpu", ("cpu", "cuda", "auto")),
    "MAX_ATTEMPTS": env_int("INFERENCE_MAX_ATTEMPTS", 3, minimum=1),
    "LEASE_S": env_int("INFERENCE_LEASE_S", 300, minimum=10),
    "HEARTBEAT_S": env_int("INFERENCE_HEARTBEAT_S", 30, minimum=1),
    # Cases whose top class probability is below this are flagged uncertain.
    "UNCERTAIN_BELOW_PROBABILITY": env_float(
        "INFERENCE_UNCERTAIN_BELOW_PROBABILITY", 0.6, minimum=0.0
    ),
    # First retry delay after a transient failure; each further retry doubles it.
    "RETRY_BACKOFF_S": env_float("INFERENCE_RETRY_BACKOFF_S", 10.0, minimum=0.0),
    # Test-only: seconds to sleep at the start of each pipeline step, so tests can kill a
    # worker mid-job. Keep 0 in production.
    "TEST_STEP_DELAY_S": env_float("INFERENCE_TEST_STEP_DELAY_S", 0.0, minimum=0.0),
}

# DICOM upload: de-identification and limits on zip archives (against zip bombs).
INGEST = {
    "DEIDENTIFY": env_bool("INGEST_DEIDENTIFY", True),
    # Keep each case's original patient name and id in a separate table, readable only by the
    # identity_steward group and admins, every read audited (webapp/ingest/identity.py).
    "KEEP_IDENTITY_MAPPING": env_bool("INGEST_KEEP_IDENTITY_MAPPING", False),
    "ZIP_MAX_ENTRIES": env_int("INGEST_ZIP_MAX_ENTRIES", 20_000, minimum=1),
    "ZIP_MAX_TOTAL_BYTES": env_int("INGEST_ZIP_MAX_TOTAL_BYTES", 4 * 2**30, minimum=1),
    "ZIP_MAX_RATIO": env_float("INGEST_ZIP_MAX_RATIO", 200.0, minimum=1.0),
    # Bytes of uploaded files that one upload API request may hold in memory
    # (webapp/ingest/uploads.py). A file that would exceed it streams to a temporary file.
    "UPLOAD_MEMORY_BYTES": env_int("INGEST_UPLOAD_MEMORY_BYTES", 128 * 2**20, minimum=0),
    # Case that receives STOW-RS studies sent without a ?case= query parameter; empty rejects them.
    "STOW_DEFAULT_CASE": env_str("INGEST_STOW_DEFAULT_CASE", "") or "",
}
# Django's default of 100 files per request is below one CT series. The upload page sends
# batches of 50, but API clients may send a whole series in one request.
DATA_UPLOAD_MAX_NUMBER_FILES = env_int("DATA_UPLOAD_MAX_NUMBER_FILES", 2000, minimum=1)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first: DRF takes the 401 challenge header from the first class, and session
        # authentication has none, so anonymous API requests would get 403 instead of 401.
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["webapp.api.permissions.HasAnyRole"],
    "DEFAULT_SCHEMA_CLASS": "webapp.api.schema.ApiAutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "ceht-review API",
    "DESCRIPTION": "Research use only; not a medical device.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["webapp.api.permissions.HasAnyRole"],
    # The documentation page's Swagger UI comes from the drf-spectacular-sidecar package and is
    # served as local static files: no CDN request.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# Security. Production (DEBUG off) turns every HTTPS protection on; each can be relaxed by name.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
# A load balancer probes the health endpoint over plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31_536_000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", not DEBUG)
if env_bool("TRUST_X_FORWARDED_PROTO", False):
    # Only behind a proxy that overwrites this header; otherwise clients could spoof HTTPS.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_AGE = env_int("SESSION_COOKIE_AGE_S", 8 * 3600, minimum=60)
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"

# Logging: one line per record with the request id; patient identifiers are never passed to
# loggers (ids of database rows and pseudonymous case codes only).
LOG_LEVEL = env_choice("LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR"))
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "webapp.request_id.RequestIdLogFilter"}},
    "formatters": {
        "line": {
            "format": "%(asctime)s %(levelname)s %(name)s [request_id=%(request_id)s] %(message)s",
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "filters": ["request_id"],
            "formatter": "line",
        },
    },
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "webapp": {"level": LOG_LEVEL},
        "inference": {"level": LOG_LEVEL},
        "django": {"level": "INFO"},
        "django_tasks": {"level": "INFO"},
    },
}
