"""A real ``db_worker`` process takes a task from the database queue and stores its result."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from django.db import connection

from webapp.jobs.tasks import ping

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def worker_database_url() -> str:
    """Return a DATABASE_URL for the test database that this process uses."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{Path(db['NAME']).resolve()}"
    credentials = quote(db["USER"] or "", safe="")
    if db["PASSWORD"]:
        credentials += ":" + quote(db["PASSWORD"], safe="")
    host = db["HOST"] or "localhost"
    port = f":{db['PORT']}" if db["PORT"] else ""
    return f"postgres://{credentials}@{host}{port}/{db['NAME']}"


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_db_worker_runs_ping_task() -> None:
    result = ping.enqueue("hello worker")
    assert result.status == "READY"

    env = dict(
        os.environ, DATABASE_URL=worker_database_url(), DJANGO_SETTINGS_MODULE="webapp.settings"
    )
    worker = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "db_worker",
            "--batch",
            "--no-startup-delay",
            "--no-reload",
            "--queue-name",
            "*",
            "--worker-id",
            "pytest-worker-1",
        ],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert worker.returncode == 0, worker.stderr

    result.refresh()
    assert result.status == "SUCCESSFUL"
    assert result.return_value == "pong: hello worker"
    assert result.worker_ids == ["pytest-worker-1"]
