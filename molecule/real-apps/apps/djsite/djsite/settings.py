"""Settings of djsite, all from the environment.

The source tree is read-only where it runs; everything written (the SQLite database, uploaded
media, collected static files) goes under the state directory, $STATE_DIRECTORY.

    DJANGO_SECRET_KEY          required
    DJANGO_ALLOWED_HOSTS       comma-separated host names (e.g. shop.example.test)
    DJANGO_DEBUG               1/true/yes/on to turn debug on; off by default
    DJANGO_STATIC_ROOT         where collectstatic writes; default $STATE_DIRECTORY/static
    DJANGO_CSRF_TRUSTED_ORIGINS  comma-separated origins (https://shop.example.test), optional
    DJANGO_USE_X_FORWARDED_HOST  1 when the proxy sets X-Forwarded-Host; off by default
    DJANGO_SERVE_STATIC        1 to serve STATIC_ROOT from the app itself; off by default
    STATE_DIRECTORY            set by systemd (StateDirectory=); default /var/lib/djsite
"""

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_flag(name: str, default: bool = False) -> bool:
    value = os.environ.get(name, "").strip().lower()
    return value in {"1", "true", "yes", "on"} if value else default


def env_list(name: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]


SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    raise ImproperlyConfigured("DJANGO_SECRET_KEY is not set: djsite needs a secret key")

DEBUG = env_flag("DJANGO_DEBUG")
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

# systemd may list several state directories, separated by colons: the first is ours.
STATE_DIR = Path(os.environ.get("STATE_DIRECTORY", "").split(":")[0] or "/var/lib/djsite")

# Behind nginx: it passes the client's Host header on and sets X-Forwarded-Proto to its own
# scheme (overwriting what a client sent), so a request that reached nginx over HTTPS is secure.
# X-Forwarded-Host is trusted only when asked, for a proxy that sets it (nginx passes a client's
# own X-Forwarded-Host through unless told otherwise).
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
USE_X_FORWARDED_HOST = env_flag("DJANGO_USE_X_FORWARDED_HOST")

INSTALLED_APPS = [
    "django.contrib.staticfiles",
    "notes",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "djsite.urls"
# No trailing-slash redirects: the API's paths (/health, /notes) have none.
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    },
]

ASGI_APPLICATION = "djsite.asgi.application"

# Several workers (processes) write to one SQLite file: WAL lets readers go on during a write,
# IMMEDIATE transactions and a busy timeout make writers wait their turn instead of failing.
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": STATE_DIR / "db.sqlite3",
        "OPTIONS": {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
    }
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = Path(os.environ.get("DJANGO_STATIC_ROOT") or STATE_DIR / "static")
SERVE_STATIC = env_flag("DJANGO_SERVE_STATIC")

MEDIA_URL = "/media/"
MEDIA_ROOT = STATE_DIR / "media"

STORAGES = {
    # PUT /media/NAME replaces NAME rather than saving NAME_<random>.
    "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"allow_overwrite": True},
    },
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# Errors (tracebacks of 500s included) go to stderr, the service's journal, debug or not.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
