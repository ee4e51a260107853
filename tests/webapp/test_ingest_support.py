"""Helpers and fixtures shared by the ingest and jobs tests (this module contains no tests).

Synthetic series are small (64 x 64 pixels, 12 slices) and contain one 75 HU block, so the
pipeline finds one lesion in about a quarter of a second.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from sklearn.linear_model import LogisticRegression

from inference.models.registry import ModelRegistry
from tests.inference.conftest import phantom_slice_hu, write_ct_series

PROJECT_ROOT = Path(__file__).resolve().parents[2]
LESION_HU = 75
MODEL_FEATURES = ["n_lesions", "total_volume_ml"]

T = TypeVar("T")


def lesion_slice_hu(index: int) -> np.ndarray:
    """Return the phantom slice with a 75 HU block (8 x 8 pixels) on slices 2 to 8."""
    image = phantom_slice_hu(index, 64, 64)
    if 2 <= index <= 8:
        image[28:36, 24:32] = LESION_HU
    return image


def write_study(folder: Path, n_slices: int = 12, **options: Any) -> list[Path]:
    """Write a synthetic axial head CT series (2 mm slices, 1 mm pixels) into ``folder``."""
    options.setdefault("spacing_mm", 2.0)
    options.setdefault("pixel_spacing_mm", 1.0)
    options.setdefault("hu_of", lesion_slice_hu)
    return write_ct_series(folder, n_slices, **options)


def as_uploads(paths: list[Path], root: Path | None = None) -> list[SimpleUploadedFile]:
    """Return the files as Django uploads named by their path relative to ``root``."""
    uploads = []
    for path in paths:
        name = path.relative_to(root).as_posix() if root else path.name
        uploads.append(SimpleUploadedFile(name, path.read_bytes()))
    return uploads


def named_files(paths: list[Path]) -> list[Any]:
    """Return the files as ``NamedFile`` uploads for calling the ingest service directly."""
    from webapp.ingest.services import NamedFile

    return [
        NamedFile(path.name, SimpleUploadedFile(path.name, path.read_bytes())) for path in paths
    ]


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def register_test_model(model_dir: Path, version: str = "1.0.0") -> None:
    """Register a logistic regression on two case features; enough to exercise the jobs."""
    rng = np.random.default_rng(0)
    features = np.column_stack([rng.integers(0, 4, 60), rng.uniform(0, 5, 60)])
    labels = np.repeat(["HT", "CE", "HT+CE"], 20)
    estimator = LogisticRegression(random_state=0).fit(features, labels)
    ModelRegistry(model_dir).register_sklearn(
        estimator,
        name="lr",
        kind="lr",
        version=version,
        params={"C": 1.0},
        training_cohort_id="random-test-data",
        seed=0,
        synthetic_training_data=True,
        extra={"feature_names": MODEL_FEATURES},
    )


@pytest.fixture(scope="session")
def test_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model_dir = tmp_path_factory.mktemp("models")
    register_test_model(model_dir)
    return model_dir


def run_in_threads(
    action: Callable[[], T], count: int = 3, timeout_s: float = 120
) -> tuple[list[T], list[BaseException]]:
    """Run ``action`` in ``count`` threads released together; return its results and errors.

    Each thread closes its own database connection, so the test database can be dropped.
    """
    start = threading.Barrier(count, timeout=60)
    results: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            start.wait()
            results.append(action())
        except BaseException as error:  # noqa: BLE001 - returned to the test, which asserts on it
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout_s)
    return results, errors


@pytest.fixture
def ingest_settings(settings: Any, tmp_path: Path, test_model_dir: Path) -> Any:
    """Media under tmp_path, the test model registry, and a fast lease for job tests."""
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.INFERENCE = {
        **settings.INFERENCE,
        "MODEL_DIR": str(test_model_dir),
        "RETRY_BACKOFF_S": 0.0,
    }
    return settings


def worker_database_url() -> str:
    """Return a DATABASE_URL that points a subprocess at this test run's database."""
    from django.db import connection

    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{Path(db['NAME']).resolve()}"
    credentials = quote(db["USER"] or "", safe="")
    if db["PASSWORD"]:
        credentials += ":" + quote(db["PASSWORD"], safe="")
    host = db["HOST"] or "localhost"
    port = f":{db['PORT']}" if db["PORT"] else ""
    return f"postgres://{credentials}@{host}{port}/{db['NAME']}"


class WorkerProcess:
    """A real ``manage.py db_worker`` process on the inference queue."""

    def __init__(self, worker_id: str, media_root: str, model_dir: str, **env: str) -> None:
        self.worker_id = worker_id
        self.log_path = Path(media_root).parent / f"{worker_id}.log"
        environment = dict(
            os.environ,
            DATABASE_URL=worker_database_url(),
            DJANGO_SETTINGS_MODULE="webapp.settings",
            MEDIA_ROOT=media_root,
            INFERENCE_MODEL_DIR=model_dir,
            INFERENCE_LEASE_S="10",
            INFERENCE_HEARTBEAT_S="1",
            **env,
        )
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "manage.py",
                "db_worker",
                "--no-startup-delay",
                "--no-reload",
                "--interval",
                "0.2",
                "--queue-name",
                "inference",
                "--worker-id",
                worker_id,
            ],
            cwd=PROJECT_ROOT,
            env=environment,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def start_worker(ingest_settings: Any) -> Iterator[Any]:
    """Start db_worker processes; every one still running is stopped after the test."""
    workers: list[WorkerProcess] = []

    def start(worker_id: str, **env: str) -> WorkerProcess:
        worker = WorkerProcess(
            worker_id,
            ingest_settings.MEDIA_ROOT,
            ingest_settings.INFERENCE["MODEL_DIR"],
            **env,
        )
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


def wait_for(condition: Any, timeout_s: float, description: str, interval_s: float = 0.2) -> None:
    """Poll ``condition`` until it returns true; fail naming ``description`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval_s)
    pytest.fail(f"timed out after {timeout_s:g} s waiting for {description}")
