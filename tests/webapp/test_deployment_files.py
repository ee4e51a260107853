"""Static checks of the Docker image and compose file, which cannot be built in the test run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_dockerfile_uses_cpu_torch_non_root() -> None:
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "FROM python:3.11-slim" in dockerfile
    assert "--index-url https://download.pytorch.org/whl/cpu torch==2.13.0" in dockerfile
    assert "USER ceht" in dockerfile
    assert "collectstatic --no-input" in dockerfile
    assert 'CMD ["gunicorn", "webapp.wsgi"' in dockerfile


def test_compose_runs_database_migration_web_and_worker() -> None:
    compose = yaml.safe_load((PROJECT_ROOT / "compose.yaml").read_text(encoding="utf-8"))
    services = compose["services"]
    assert sorted(services) == ["db", "migrate", "web", "worker"]
    assert services["worker"]["command"][:3] == ["python", "manage.py", "db_worker"]
    assert services["migrate"]["command"] == ["python", "manage.py", "migrate", "--no-input"]
    assert services["web"]["environment"]["DATABASE_URL"].startswith("postgres://")
    assert services["web"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_requirements_pin_torch_exactly() -> None:
    lines = (PROJECT_ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
    torch_lines = [line for line in lines if line.startswith("torch")]
    assert torch_lines == ["torch==2.13.0"]


def test_dockerfile_health_check_uses_the_script() -> None:
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "CMD python scripts/healthcheck.py" in dockerfile


@pytest.mark.parametrize(
    ("allowed", "expected"),
    [
        ("ceht.example.org, localhost", "ceht.example.org"),
        (".example.org", "example.org"),
        ("*", "localhost"),
        ("", "localhost"),
    ],
)
def test_health_check_host_header(allowed: str, expected: str) -> None:
    from scripts.healthcheck import host_header

    assert host_header(allowed) == expected


@pytest.mark.django_db(transaction=True)
def test_health_check_public_host_only(live_server: Any, settings: Any) -> None:
    """Check that the script sends the allowed name, because Host 127.0.0.1 gets 400 here."""
    settings.ALLOWED_HOSTS = ["ceht.example.org"]
    environment = {
        **os.environ,
        "ALLOWED_HOSTS": "ceht.example.org",
        "HEALTHCHECK_URL": f"{live_server.url}/healthz",
        # The first request of a new live-server thread can take seconds on a loaded machine.
        "HEALTHCHECK_TIMEOUT_S": "60",
    }
    script = [sys.executable, str(PROJECT_ROOT / "scripts" / "healthcheck.py")]

    passed = subprocess.run(script, env=environment, capture_output=True, text=True, timeout=60)
    environment["ALLOWED_HOSTS"] = "127.0.0.1"
    refused = subprocess.run(script, env=environment, capture_output=True, text=True, timeout=60)

    assert passed.returncode == 0, passed.stderr
    assert refused.returncode == 1
    assert "returned HTTP 400" in refused.stderr
