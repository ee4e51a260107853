"""Time the review page: first image on screen, scrolling after prefetch, server time and queries.

Usage: DATABASE_URL=postgres://... python benchmarks/bench_viewer.py [--runs N] [--port 8766]

The database in DATABASE_URL is migrated and receives a benchmark admin and one case; use a
throwaway one. The case has a baseline and a follow-up study of 40 slices at 512 x 512 and one
finished job with a prediction and a lesion, so the page renders every panel. The script starts
gunicorn (2 workers, DEBUG on so WhiteNoise serves the static files without collectstatic) on
127.0.0.1 and drives Debian's Chromium through Playwright. It measures:

1. first image: from navigation start to the first slice of both viewports on screen, with the
   browser cache cleared before each run;
2. scrolling: slices shown per second while stepping through all 40 slices of the baseline after
   prefetch, waiting for the next animation frame after each;
3. server: the review page's response time and query count through Django's test client, in
   this process, with 2 and with 8 stored adjudication versions (the query count must not grow).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_ingest import wait_for_server, write_series  # noqa: E402

CHROMIUM = os.environ.get("CEHT_CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "bench viewer password 42"
SCROLL_SCRIPT = """async () => {
    const viewport = window.cehtViewer.byRole("baseline");
    const frame = () => new Promise((resolve) => requestAnimationFrame(resolve));
    const started = performance.now();
    for (let index = 0; index < viewport.imageIds.length; index += 1) {
        await viewport.show(index);
        await frame();
    }
    return viewport.imageIds.length / ((performance.now() - started) / 1000);
}"""


def median_range(values: list[float], unit: str, digits: int = 0) -> str:
    return (
        f"{statistics.median(values):.{digits}f} {unit} "
        f"({min(values):.{digits}f}-{max(values):.{digits}f})"
    )


def create_case(scratch: Path, code: str) -> Any:
    from django.contrib.auth.models import Group, User
    from django.core.files import File

    from webapp.core.models import Case, Study
    from webapp.ingest.services import NamedFile, ingest_files
    from webapp.jobs.models import InferenceJob, Lesion, ModelVersion, Prediction

    admin, _ = User.objects.get_or_create(username="bench_admin", defaults={"is_staff": True})
    admin.set_password(PASSWORD)
    admin.is_superuser = True
    admin.save()
    for role in ("admin", "coordinator"):
        admin.groups.add(Group.objects.get_or_create(name=role)[0])
    case = Case.objects.create(code=code, is_synthetic=True)
    for role, hours in (("baseline", "3"), ("follow_up", "30")):
        paths = write_series(scratch / role, 40, 512)
        files = [NamedFile(path.name, File(path.open("rb"), name=path.name)) for path in paths]
        ingest_files(case, role, hours, files, admin)
    baseline = case.studies.get(role=Study.Role.BASELINE)
    job = InferenceJob.objects.create(
        study=baseline, pipeline_version="bench", status="succeeded", run_count=1
    )
    model, _ = ModelVersion.objects.get_or_create(
        kind="lr", version="bench", defaults={"sha256": "0" * 64}
    )
    Prediction.objects.create(
        job=job,
        model_version=model,
        probabilities={"HT": 0.6, "CE": 0.3, "HT+CE": 0.1},
        predicted_label="HT",
    )
    Lesion.objects.create(job=job, label_index=1, volume_ml=1.0, mean_hu=70.0, max_hu=80.0)
    return admin, case


def measure_server(admin: Any, case: Any, runs: int) -> dict[str, Any]:
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext, setup_test_environment

    from webapp.core.models import Adjudication

    setup_test_environment()
    client = Client()
    client.force_login(admin)
    url = f"/cases/{case.code}/review/"
    results: dict[str, Any] = {}
    for versions in (2, 8):
        existing = Adjudication.objects.filter(case=case, reader=admin).count()
        for version in range(existing + 1, versions + 1):
            Adjudication.objects.create(
                case=case, reader=admin, version=version, label="HT", confidence=3
            )
        client.get(url)
        times_ms = []
        for _ in range(runs):
            with CaptureQueriesContext(connection) as queries:
                started = time.perf_counter()
                response = client.get(url)
                times_ms.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, response.status_code
        results[versions] = (times_ms, len(queries.captured_queries))
    return results


def measure_browser(base_url: str, code: str, runs: int) -> tuple[list[float], list[float]]:
    from playwright.sync_api import sync_playwright

    first_ms: list[float] = []
    fps: list[float] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{base_url}/accounts/login/")
        page.get_by_label("Username").fill("bench_admin")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(f"{base_url}/")
        cdp = page.context.new_cdp_session(page)
        for _ in range(runs + 1):
            cdp.send("Network.clearBrowserCache")
            page.goto(f"{base_url}/cases/{code}/review/")
            page.wait_for_selector("#viewer[data-first-image=shown]", timeout=60_000)
            first_ms.append(page.evaluate("() => window.cehtViewer.firstImageMs"))
            failures = page.locator(".viewport-state[data-kind=error]")
            if failures.count():
                raise SystemExit(f"an image failed to decode: {failures.first.inner_text()}")
            page.wait_for_selector("#viewer[data-prefetched=done]", timeout=120_000)
            fps.append(page.evaluate(SCROLL_SCRIPT))
        browser.close()
    # The first run also warms gunicorn's workers and Chromium's compiled scripts.
    return first_ms[1:], fps[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each measurement")
    parser.add_argument("--port", type=int, default=8766, help="loopback port for gunicorn")
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL"):
        raise SystemExit("set DATABASE_URL to a throwaway PostgreSQL database")

    scratch = Path(tempfile.mkdtemp(prefix="ceht-bench-viewer-"))
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="webapp.settings",
        DEBUG="true",
        MEDIA_ROOT=str(scratch / "media"),
        ALLOWED_HOSTS="127.0.0.1,testserver",
        LOG_LEVEL="WARNING",
    )
    os.environ.update(env)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)

    import django

    django.setup()
    code = f"BENCH-VIEW-{int(time.time())}"
    admin, case = create_case(scratch, code)
    base_url = f"http://127.0.0.1:{args.port}"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "webapp.wsgi",
            "-w",
            "2",
            "-b",
            f"127.0.0.1:{args.port}",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_server(base_url)
        first_ms, fps = measure_browser(base_url, code, args.runs)
    finally:
        server.terminate()
        server.wait(timeout=30)
    server_results = measure_server(admin, case, args.runs * 4)

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    print(
        f"first image on screen (both viewports), {args.runs} runs: {median_range(first_ms, 'ms')}"
    )
    print(f"scroll through 40 slices after prefetch: {median_range(fps, 'frames/s', 1)}")
    for versions, (times_ms, queries) in server_results.items():
        print(
            f"review page server time, {versions} adjudication versions: "
            f"{median_range(times_ms, 'ms', 1)}, {queries} queries"
        )


if __name__ == "__main__":
    main()
