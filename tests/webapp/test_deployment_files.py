"""Static checks of the Docker image and compose file, which cannot be built in the test run."""

from __future__ import annotations

from pathlib import Path

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
