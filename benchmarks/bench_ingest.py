"""Time DICOM ingest through the API, upload-to-prediction latency, and queue throughput.

Usage: DATABASE_URL=postgres://... python benchmarks/bench_ingest.py [--runs N]
       [--models DIR] [--port 8765] [--ingest-only]
       python benchmarks/bench_ingest.py --deid-only [--runs N]

The database in DATABASE_URL is migrated and receives benchmark users and cases; use a
throwaway one. The script starts gunicorn (2 workers) on 127.0.0.1 and ``db_worker`` processes,
and measures:

1. ingest: POST of a 200-slice 512 x 512 study (one multipart request, built before the timer
   starts) to the upload API, against copying the same files on disk, alternating, ``--runs``
   times each (median), and the peak resident memory of each gunicorn worker after them;
2. latency: from the upload response of a 40-slice 512 x 512 study to its job "succeeded",
   with one warm worker;
3. throughput: 20 studies of 12 slices at 64 x 64 queued, then two workers started; the time
   from the first job's start to the last job's end.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.request import Request, urlopen

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def write_series(folder: Path, n_slices: int, size: int) -> list[Path]:
    """Write an axial head series (5 mm slices) with one 75 HU block on a few central slices."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    y, x = np.mgrid[0:size, 0:size]
    head = ((y - size / 2) / (size * 0.42)) ** 2 + ((x - size / 2) / (size * 0.36)) ** 2 <= 1
    lesion = (abs(y - size / 2) < size / 16) & (abs(x - size / 3) < size / 16)
    paths = []
    for index in range(n_slices):
        hu = np.where(head, 35, -1000) + rng.integers(-5, 6, (size, size))
        if abs(index - n_slices // 2) <= 2:
            hu = np.where(lesion, 75, hu)
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = uid = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, uid
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality, ds.ImageType = "CT", ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.PatientName, ds.PatientID = "BENCH^PATIENT", "BENCH-1"
        ds.SeriesNumber, ds.InstanceNumber, ds.SeriesDescription = 2, index + 1, "BENCH 5mm"
        ds.ImagePositionPatient = [-115.0, -115.0, 5.0 * index]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [230.0 / size, 230.0 / size]
        ds.SliceThickness = "5"
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = "1", "-1024"
        ds.PixelData = (hu + 1024).astype(np.uint16).tobytes()
        path = folder / f"IM{index + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def register_small_model(model_dir: Path) -> None:
    """Register a logistic regression on lesion count and volume, fitted on random data."""
    from sklearn.linear_model import LogisticRegression

    from inference.models.registry import ModelRegistry

    rng = np.random.default_rng(0)
    features = np.column_stack([rng.integers(0, 4, 60), rng.uniform(0, 5, 60)])
    labels = np.repeat(["HT", "CE", "HT+CE"], 20)
    ModelRegistry(model_dir).register_sklearn(
        LogisticRegression(random_state=0).fit(features, labels),
        name="lr",
        kind="lr",
        version="bench",
        params={},
        training_cohort_id="random-benchmark-data",
        seed=0,
        synthetic_training_data=True,
        extra={"feature_names": ["n_lesions", "total_volume_ml"]},
    )


def multipart_body(paths: list[Path], fields: dict[str, str]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    chunks: list[bytes] = []
    for name, value in fields.items():
        chunks.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        )
    for path in paths:
        chunks.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; '
            f'filename="{path.name}"\r\nContent-Type: application/dicom\r\n\r\n'.encode()
        )
        chunks.append(path.read_bytes() + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


def study_request(base_url: str, token: str, code: str, paths: list[Path]) -> Request:
    """Return the upload request of ``paths`` as a new baseline study of case ``code``."""
    body, content_type = multipart_body(
        paths, {"role": "baseline", "hours_after_mt": "2", "create_case": "true"}
    )
    return Request(
        f"{base_url}/api/v1/cases/{code}/studies/",
        data=body,
        headers={"Content-Type": content_type, "Authorization": f"Token {token}"},
        method="POST",
    )


def send(request: Request) -> dict[str, Any]:
    """Send ``request`` and return the upload report."""
    import json

    with urlopen(request, timeout=600) as response:  # noqa: S310 - loopback only
        return dict(json.loads(response.read()))


def post_study(base_url: str, token: str, code: str, paths: list[Path]) -> dict[str, Any]:
    return send(study_request(base_url, token, code, paths))


def worker_peak_rss_mib(master_pid: int) -> list[float]:
    """Return the peak resident memory (VmHWM, MiB) of each child of ``master_pid`` (Linux only)."""
    try:
        children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    except OSError:
        return []
    peaks = []
    for child in children:
        try:
            status = Path(f"/proc/{child}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peaks.append(int(line.split()[1]) / 1024)
    return sorted(peaks)


def wait_for_server(base_url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urlopen(f"{base_url}/healthz", timeout=2):  # noqa: S310 - loopback only
                return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"the server at {base_url} did not respond to /healthz within {timeout_s} s")


def start_worker(env: dict[str, str], worker_id: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "db_worker",
            "--no-startup-delay",
            "--no-reload",
            "--interval",
            "0.1",
            "--queue-name",
            "inference",
            "--worker-id",
            worker_id,
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


def prepare_django(media: Path, username: str, **extra_env: str) -> tuple[dict[str, str], str]:
    """Migrate the database, set Django up in this process, and create a coordinator.

    Returns the environment for the server and worker processes and the coordinator's API
    token.
    """
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="webapp.settings",
        MEDIA_ROOT=str(media),
        SECURE_SSL_REDIRECT="false",
        ALLOWED_HOSTS="127.0.0.1",
        LOG_LEVEL="WARNING",
        **extra_env,
    )
    os.environ.update(env)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)

    import django

    django.setup()
    from django.contrib.auth.models import Group, User
    from rest_framework.authtoken.models import Token

    user, _ = User.objects.get_or_create(username=username)
    user.groups.add(Group.objects.get_or_create(name="coordinator")[0])
    return env, Token.objects.get_or_create(user=user)[0].key


def time_deidentification(runs: int) -> None:
    """Print the medians of de-identifying the 200-slice study by the full path and by templates.

    Each run uses new objects, so every run pays for learning the series template once.
    """
    from webapp.ingest.deid import Deidentifier
    from webapp.ingest.deid_template import SeriesDeidentifier

    scratch = Path(tempfile.mkdtemp(prefix="ceht-bench-deid-"))
    try:
        files = [path.read_bytes() for path in write_series(scratch / "s200", 200, 512)]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    seed = "b" * 64
    full_s, template_s = [], []
    for _ in range(runs):
        full = Deidentifier(seed, "BENCH-1")
        started = time.perf_counter()
        expected = [full.deidentify_bytes(data).data for data in files]
        full_s.append(time.perf_counter() - started)
        templates = SeriesDeidentifier(Deidentifier(seed, "BENCH-1"))
        started = time.perf_counter()
        results = [templates.deidentify_bytes(data) for data in files]
        template_s.append(time.perf_counter() - started)
        assert [result.data for result in results] == expected, "the two paths differ"
        assert templates.templated == len(files) - 1, templates.fallbacks
    full_median, template_median = statistics.median(full_s), statistics.median(template_s)
    print(f"de-identification of 200 files, {runs} runs, bytes identical in every run")
    print(f"full path:  median {full_median:.3f} s ({min(full_s):.3f}-{max(full_s):.3f})")
    print(
        f"templates:  median {template_median:.3f} s ({min(template_s):.3f}-{max(template_s):.3f})"
    )
    print(f"ratio full/templates (medians): {full_median / template_median:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs of the ingest (default 5)")
    parser.add_argument(
        "--models",
        default="",
        help="model registry folder (default: a logistic regression on two case features, "
        "registered in a temporary folder, so the figures do not depend on trained models)",
    )
    parser.add_argument("--port", type=int, default=8765, help="loopback port for gunicorn")
    parser.add_argument(
        "--deid-only",
        action="store_true",
        help="time only the de-identification of the 200 files in this process: file by file "
        "(the full path) against per-series templates; needs no database or server",
    )
    parser.add_argument(
        "--ingest-only",
        action="store_true",
        help="measure the ingest against the copy only, without the latency and throughput runs",
    )
    args = parser.parse_args()
    if args.deid_only:
        time_deidentification(args.runs)
        return
    if not os.environ.get("DATABASE_URL"):
        raise SystemExit("set DATABASE_URL to a throwaway PostgreSQL database")

    scratch = Path(tempfile.mkdtemp(prefix="ceht-bench-ingest-"))
    media = scratch / "media"
    if not args.models:
        args.models = str(scratch / "models")
        register_small_model(Path(args.models))
    env, token = prepare_django(
        media, "bench_coordinator", INFERENCE_MODEL_DIR=str(Path(args.models).resolve())
    )
    from webapp.jobs.models import InferenceJob

    run_tag = uuid.uuid4().hex[:8]

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
            "--timeout",
            "600",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_server(base_url)
        study_200 = write_series(scratch / "s200", 200, 512)
        size_mb = sum(path.stat().st_size for path in study_200) / 2**20
        copy_s, ingest_s = [], []
        # Two warm-up requests, one per gunicorn worker (each imports the upload code once).
        for worker_index in range(2):
            post_study(base_url, token, f"BENCH-{run_tag}-warm{worker_index}", study_200[:20])
        for run in range(args.runs):
            target = scratch / f"copy{run}"
            target.mkdir()
            started = time.perf_counter()
            for path in study_200:
                shutil.copyfile(path, target / path.name)
            copy_s.append(time.perf_counter() - started)
            shutil.rmtree(target)
            # The client reads the files and builds the multipart body before the timer starts:
            # the ingest time is sending the body, the server's work, and the response.
            request = study_request(base_url, token, f"BENCH-{run_tag}-{run}", study_200)
            started = time.perf_counter()
            report = send(request)
            ingest_s.append(time.perf_counter() - started)
            assert report["instances_stored"] == 200, report
        copy_median = statistics.median(copy_s)
        ingest_median = statistics.median(ingest_s)
        print(f"study: 200 slices 512x512, {size_mb:.0f} MiB")
        print(f"copy files:  median {copy_median:.2f} s ({min(copy_s):.2f}-{max(copy_s):.2f})")
        print(
            f"API ingest:  median {ingest_median:.2f} s ({min(ingest_s):.2f}-{max(ingest_s):.2f})"
        )
        print(f"ratio ingest/copy (medians): {ingest_median / copy_median:.1f}")
        peaks = worker_peak_rss_mib(server.pid)
        if peaks:
            print(
                f"server workers' peak resident memory: {', '.join(f'{m:.0f}' for m in peaks)} MiB"
            )
        if args.ingest_only:
            return

        worker = start_worker(env, "bench-latency")
        try:
            study_40 = write_series(scratch / "s40", 40, 512)
            # The warm-up job runs once the worker has started and imported the pipeline; the
            # timed runs start only after it has finished.
            warm = post_study(
                base_url, token, f"BENCH-{run_tag}-lat-warm", write_series(scratch / "w", 40, 512)
            )
            while InferenceJob.objects.get(pk=warm["jobs"][0]["job_id"]).status in (
                "queued",
                "running",
            ):
                time.sleep(0.1)
            latencies = []
            for run in range(5):
                code = f"BENCH-{run_tag}-lat{run}"
                report = post_study(base_url, token, code, study_40)
                done = time.perf_counter()
                job_id = report["jobs"][0]["job_id"]
                while InferenceJob.objects.get(pk=job_id).status in ("queued", "running"):
                    time.sleep(0.05)
                latencies.append(time.perf_counter() - done)
                job = InferenceJob.objects.get(pk=job_id)
                assert job.status == "succeeded", job.error_message
            print(
                f"upload complete -> predictions stored (40 slices, 1 worker): median "
                f"{statistics.median(latencies):.2f} s over 5 ({min(latencies):.2f}-{max(latencies):.2f}); "
                f"steps of the last run {job.step_timings_s}"
            )
        finally:
            stop(worker)

        job_ids = []
        for index in range(20):
            report = post_study(
                base_url,
                token,
                f"BENCH-{run_tag}-q{index}",
                write_series(scratch / f"q{index}", 12, 64),
            )
            job_ids.append(report["jobs"][0]["job_id"])
        workers = [start_worker(env, f"bench-pair-{n}") for n in (1, 2)]
        try:
            while InferenceJob.objects.filter(
                pk__in=job_ids, status__in=("queued", "running")
            ).exists():
                time.sleep(0.2)
        finally:
            for process in workers:
                stop(process)
        jobs = InferenceJob.objects.filter(pk__in=job_ids)
        # Every job has finished here, so both times are set.
        first = min(job.started_at for job in jobs if job.started_at is not None)
        last = max(job.finished_at for job in jobs if job.finished_at is not None)
        span_s = (last - first).total_seconds()
        by_worker = {w: jobs.filter(worker_id=w).count() for w in ("bench-pair-1", "bench-pair-2")}
        print(
            f"throughput: 20 jobs in {span_s:.1f} s with 2 workers ({20 / span_s:.2f} jobs/s), "
            f"jobs per worker {by_worker}, statuses {sorted(set(jobs.values_list('status', flat=True)))}"
        )
    finally:
        stop(server)
        shutil.rmtree(scratch, ignore_errors=True)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )


if __name__ == "__main__":
    main()
