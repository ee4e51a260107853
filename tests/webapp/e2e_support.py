"""Helpers for the end-to-end browser scenarios (this module contains no tests).

The scenarios drive Debian's Chromium through the real pages, with a real ``db_worker``
process running the bundled demo models (trained on synthetic data) in the background.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import shutil
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from inference.models.registry import ModelRegistry
from inference.synthetic import generate_case_volume
from inference.synthetic.writer import SeriesInfo, write_series
from tests.conftest import PERSONA_PASSWORD
from tests.webapp.test_ingest_support import WorkerProcess

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS_DIR = PROJECT_ROOT / "test-artifacts" / "e2e"
DOC_IMAGES_DIR = PROJECT_ROOT / "docs" / "images"
DEMO_MODEL_DIR = PROJECT_ROOT / "models" / "demo"
# Set to 1 to copy the key screenshots into docs/images; CI leaves tracked files alone.
UPDATE_DOC_SCREENSHOTS_ENV = "CEHT_UPDATE_DOC_SCREENSHOTS"
DOC_IMAGE_MAX_BYTES = 300 * 1024
VIEWPORT = {"width": 1280, "height": 800}
# A loaded 2-core machine starts the worker, runs five models and renders pages slowly.
WORKER_TIMEOUT_S = 180
PAGE_TIMEOUT_MS = 30_000

# The synthetic case: 12 slices of 10 mm at 256 x 256 pixels, so the stack reaches from the
# vertex down to the lesion, which sits on slices 3 to 5 (seed 2 of the generator).
SYNTHETIC_LABEL = "HT"
SYNTHETIC_SEED = 2
SYNTHETIC_SLICES = 12
SYNTHETIC_SLICE_MM = 10.0


@dataclass
class SyntheticUpload:
    """A generated case on disk: the baseline as a folder, the follow-up as one zip."""

    baseline_dir: Path
    follow_up_zip: Path
    label: str
    baseline_hours: float
    follow_up_hours: float
    lesion_slices: list[int]


def write_synthetic_upload(root: Path, code: str) -> SyntheticUpload:
    """Generate one synthetic case and write it the way a site would hand it over."""
    case = generate_case_volume(
        SYNTHETIC_LABEL,
        seed=SYNTHETIC_SEED,
        matrix=256,
        n_slices=SYNTHETIC_SLICES,
        slice_mm=SYNTHETIC_SLICE_MM,
    )
    acquired = datetime(2025, 3, 1, 10, 0)
    series = {}
    for role, hu, number in (
        ("baseline", case.baseline_hu, 2),
        ("follow_up", case.follow_up_hu, 3),
    ):
        info = SeriesInfo(
            cohort_seed=SYNTHETIC_SEED,
            code=code,
            role=role,
            acquired_at=acquired,
            series_number=number,
            generator_version="e2e",
            patient_sex="F",
            patient_age_years=71,
        )
        # A nested folder, as a CD export or PACS download has.
        series[role] = write_series(hu, case.grid, root / role / "DICOM" / f"S{number}", info)

    follow_up_zip = root / f"{code}-follow-up.zip"
    with zipfile.ZipFile(follow_up_zip, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in series["follow_up"]:
            archive.write(path, f"follow-up/{path.name}")
    lesion_slices = [int(z) for z in np.flatnonzero((case.true_labels > 0).any(axis=(1, 2)))]
    return SyntheticUpload(
        baseline_dir=root / "baseline",
        follow_up_zip=follow_up_zip,
        label=case.label,
        baseline_hours=2.5,
        follow_up_hours=30.0,
        lesion_slices=lesion_slices,
    )


def demo_model_count() -> int:
    """How many models the worker runs: the latest version of each bundled demo model."""
    return len(ModelRegistry(DEMO_MODEL_DIR).latest())


@pytest.fixture
def demo_worker(ingest_settings: Any) -> Iterator[WorkerProcess]:
    """A real ``db_worker`` on the inference queue with the bundled demo models.

    The web side reads the same model folder; media lives under the test's tmp_path.
    """
    ingest_settings.INFERENCE = {**ingest_settings.INFERENCE, "MODEL_DIR": str(DEMO_MODEL_DIR)}
    worker = WorkerProcess("e2e-worker", ingest_settings.MEDIA_ROOT, str(DEMO_MODEL_DIR))
    try:
        yield worker
    finally:
        worker.stop()


def wait_for_analyses(page: Any, worker: WorkerProcess, expected_jobs: int) -> list[str]:
    """On the case page, wait until every job finished; return each job's status line."""
    items = page.locator(".job-status-list li[data-status]")
    try:
        page.wait_for_function(
            """(expected) => {
                const items = [...document.querySelectorAll('.job-status-list li[data-status]')];
                return items.length === expected
                    && items.every(item => item.dataset.status === 'succeeded'
                                         || item.dataset.status === 'failed');
            }""",
            arg=expected_jobs,
            timeout=WORKER_TIMEOUT_S * 1000,
        )
    except Exception as error:
        pytest.fail(f"analyses did not finish: {error}\nworker log:\n{worker.output()[-4000:]}")
    return [items.nth(i).inner_text() for i in range(items.count())]


class Screenshots:
    """Numbered screenshots of each step under ``test-artifacts/e2e/<scenario>/``.

    With ``CEHT_UPDATE_DOC_SCREENSHOTS=1`` the steps named with ``doc_name`` are also copied
    into ``docs/images/`` (palette PNG when the file exceeds 300 KB).
    """

    def __init__(self, scenario: str) -> None:
        self.folder = ARTIFACTS_DIR / scenario
        if self.folder.exists():
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True)
        self.count = 0
        self.update_docs = os.environ.get(UPDATE_DOC_SCREENSHOTS_ENV) == "1"

    def take(self, page: Any, step: str, doc_name: str | None = None) -> Path:
        self.count += 1
        path = self.folder / f"{self.count:02d}-{step}.png"
        page.screenshot(path=str(path))
        if doc_name and self.update_docs:
            copy_doc_image(path, DOC_IMAGES_DIR / f"{doc_name}.png")
        return path


def copy_doc_image(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    if target.stat().st_size > DOC_IMAGE_MAX_BYTES:
        with Image.open(source) as image:
            reduced = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
            reduced.save(target, optimize=True)
    logger.info("doc screenshot %s written, %d bytes", target.name, target.stat().st_size)


@dataclass
class BrowserSession:
    """One logged-in user's page, with the uncaught script errors its pages raised."""

    page: Any
    errors: list[str]


def log_in(browser: Any, live_server: Any, username: str, next_path: str) -> BrowserSession:
    """Log ``username`` in through the login page in a fresh browser context."""
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{live_server.url}/accounts/login/?next={next_path}")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PERSONA_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{live_server.url}{next_path}")
    return BrowserSession(page, errors)


def upload_through_page(
    page: Any,
    *,
    role_label: str,
    hours: float,
    new_case: str | None = None,
    folder: Path | None = None,
    files: list[Path] | None = None,
) -> None:
    """Fill the upload form, choose a folder or files, submit and wait for the report."""
    form = page.locator("#upload-form")
    if new_case:
        form.get_by_label("New case with code").check()
        form.get_by_label("New case code").fill(new_case)
    else:
        form.locator("input[name=case_mode][value=existing]").check()
    form.get_by_label("Role").select_option(label=role_label)
    form.get_by_label("Hours after thrombectomy").fill(str(hours))
    if folder is not None:
        form.get_by_label("Folder").set_input_files(folder)
    if files is not None:
        form.get_by_label("Files or zip").set_input_files(files)
    page.wait_for_function(
        "() => !document.getElementById('selection-summary').textContent.startsWith('No files')"
    )
    form.get_by_role("button", name="Upload").click()
    page.locator("#progress-text", has_text="Upload complete.").wait_for(timeout=120_000)


def progress_complete(page: Any) -> bool:
    """Whether the upload progress bar reached its maximum."""
    return bool(
        page.evaluate(
            """() => {
                const bar = document.getElementById('upload-progress');
                return bar.max > 1 && bar.value === bar.max;
            }"""
        )
    )


def canvas_red_values(page: Any, role: str) -> list[int]:
    """Return the red channel of every pixel of one viewport's canvas."""
    return page.evaluate(
        """(role) => {
            const canvas = document.querySelector(`.viewport[data-role="${role}"] canvas`);
            const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
            return Array.from(data.filter((_, i) => i % 4 === 0));
        }""",
        role,
    )


def wait_for_pixels_to_change(page: Any, role: str, before: list[int]) -> list[int]:
    """Wait until one viewport's canvas differs from ``before`` and return its red channel.

    Cornerstone redraws on the next animation frame after a window or overlay change, so a
    canvas read straight after the change can still show the old image.
    """
    page.wait_for_function(
        """([role, before]) => {
            const canvas = document.querySelector(`.viewport[data-role="${role}"] canvas`);
            const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
            for (let i = 0; i < data.length; i += 4) {
                if (data[i] !== before[i / 4]) return true;
            }
            return false;
        }""",
        arg=[role, before],
        timeout=5_000,
    )
    return canvas_red_values(page, role)


def viewer_index(page: Any, role: str) -> int:
    return int(page.evaluate("(role) => window.cehtViewer.byRole(role).index", role))


def wait_for_index(page: Any, role: str, index: int) -> None:
    page.wait_for_function(
        "([role, index]) => window.cehtViewer.byRole(role).index === index", arg=[role, index]
    )


def parse_csv(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"))))
