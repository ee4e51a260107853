"""Settings in separate processes: malformed variables stop start-up, production passes the
deployment checks, and collectstatic works with the compressed manifest storage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Variables the settings read; cleared so the developer's own environment cannot leak in.
SETTINGS_VARIABLES = (
    "DATABASE_URL",
    "DEBUG",
    "SECRET_KEY",
    "SECRET_KEY_FILE",
    "ALLOWED_HOSTS",
    "MEDIA_ROOT",
    "STATIC_ROOT",
    "STATIC_MANIFEST",
    "DATA_DIR",
    "SECURE_SSL_REDIRECT",
    "LOG_LEVEL",
    "STORAGE_BACKEND",
)
PRODUCTION_SECRET_KEY = "x7Kq2mR9vT4wY8zB3nC6pD1fG5hJ0kL_aSeUiOoPlMnBvCxZqWeRtY"


def run_django(
    tmp_path: Path, code_or_args: list[str], **variables: str
) -> subprocess.CompletedProcess[str]:
    """Run ``python <args>`` in the project root with only ``variables`` set for the settings."""
    env = {key: value for key, value in os.environ.items() if key not in SETTINGS_VARIABLES}
    env["DJANGO_SETTINGS_MODULE"] = "webapp.settings"
    # Keep the developer's data folder (and its secret key file) out of these runs.
    env["DATA_DIR"] = str(tmp_path / "data")
    env.update(variables)
    return subprocess.run(
        [sys.executable, *code_or_args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


SETUP = ["-c", "import django; django.setup()"]


def production_variables(tmp_path: Path) -> dict[str, str]:
    return {
        "DEBUG": "false",
        "SECRET_KEY": PRODUCTION_SECRET_KEY,
        "ALLOWED_HOSTS": "ceht.example.org",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'production.sqlite3'}",
        "STATIC_ROOT": str(tmp_path / "staticfiles"),
    }


def test_bogus_database_url_stops_startup(tmp_path: Path) -> None:
    result = run_django(tmp_path, SETUP, DEBUG="true", DATABASE_URL="bogus")
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert "DATABASE_URL has an unsupported scheme" in result.stderr


def test_unknown_storage_backend_stops_startup(tmp_path: Path) -> None:
    result = run_django(tmp_path, SETUP, DEBUG="true", STORAGE_BACKEND="no.such.Storage")
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert "STORAGE_BACKEND='no.such.Storage' names no importable storage class" in result.stderr


def test_debug_maybe_stops_startup(tmp_path: Path) -> None:
    result = run_django(tmp_path, SETUP, DEBUG="maybe")
    assert result.returncode != 0
    assert "DEBUG='maybe' is not a boolean" in result.stderr


def test_missing_secret_key_stops_production_startup(tmp_path: Path) -> None:
    result = run_django(tmp_path, SETUP, DEBUG="false")
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr
    assert str(tmp_path / "data" / ".secret_key") in result.stderr


def test_secret_key_file_is_read(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(PRODUCTION_SECRET_KEY + "\n", encoding="utf-8")
    code = "import django; django.setup(); from django.conf import settings; print(settings.SECRET_KEY)"
    result = run_django(tmp_path, ["-c", code], DEBUG="false", SECRET_KEY_FILE=str(key_file))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == PRODUCTION_SECRET_KEY


def test_malformed_integer_variable_stops_startup(tmp_path: Path) -> None:
    result = run_django(tmp_path, SETUP, DEBUG="true", LOGIN_THROTTLE_MAX_FAILURES="many")
    assert result.returncode != 0
    assert "LOGIN_THROTTLE_MAX_FAILURES='many' is not an integer" in result.stderr


def test_production_settings_pass_deploy_check(tmp_path: Path) -> None:
    result = run_django(
        tmp_path,
        ["manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        **production_variables(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout
    assert "WARNING" not in result.stderr


def test_deploy_check_warns_when_https_is_off(tmp_path: Path) -> None:
    variables = production_variables(tmp_path) | {"SECURE_SSL_REDIRECT": "false"}
    result = run_django(
        tmp_path, ["manage.py", "check", "--deploy", "--fail-level", "WARNING"], **variables
    )
    assert result.returncode != 0
    assert "security.W008" in result.stderr


def test_collectstatic_with_manifest_storage_serves_hashed_css(tmp_path: Path) -> None:
    variables = production_variables(tmp_path)
    collected = run_django(tmp_path, ["manage.py", "collectstatic", "--noinput"], **variables)
    assert collected.returncode == 0, collected.stderr

    manifest = json.loads(
        (tmp_path / "staticfiles" / "staticfiles.json").read_text(encoding="utf-8")
    )
    hashed_css = manifest["paths"]["css/app.css"]
    assert hashed_css.startswith("css/app.")
    assert hashed_css != "css/app.css"
    assert (tmp_path / "staticfiles" / (hashed_css + ".gz")).is_file()

    # The login page, rendered with production settings, links the hashed file.
    render = (
        "import django; django.setup()\n"
        "from django.test import Client\n"
        "response = Client().get('/accounts/login/', secure=True, HTTP_HOST='ceht.example.org')\n"
        "print(response.status_code)\n"
        "print(response.content.decode())\n"
    )
    rendered = run_django(tmp_path, ["-c", render], **variables)
    assert rendered.returncode == 0, rendered.stderr
    assert rendered.stdout.startswith("200")
    assert f"/static/{hashed_css}" in rendered.stdout


@pytest.mark.django_db
def test_migrations_are_complete() -> None:
    from django.core.management import call_command

    # Raises SystemExit(1) when a model change has no migration.
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


def test_production_redirects_http_except_healthz(tmp_path: Path) -> None:
    probe = (
        "import django; django.setup()\n"
        "from django.test import Client\n"
        "client = Client(HTTP_HOST='ceht.example.org')\n"
        "login = client.get('/accounts/login/')\n"
        "print(login.status_code, login['Location'])\n"
        "print(client.get('/healthz').status_code)\n"
    )
    result = run_django(tmp_path, ["-c", probe], **production_variables(tmp_path))
    assert result.returncode == 0, result.stderr
    login_line, healthz_line = result.stdout.splitlines()[-2:]
    assert login_line == "301 https://ceht.example.org/accounts/login/"
    # The database in this subprocess is not migrated, so the probe returns 503, but over
    # plain HTTP rather than with a redirect.
    assert healthz_line == "503"
