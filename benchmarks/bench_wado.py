"""Time WADO-RS Retrieve Study over HTTP and record the server's peak memory while it streams.

Usage: DATABASE_URL=postgres://... python benchmarks/bench_wado.py [--runs N] [--port 8767]

The database in DATABASE_URL is migrated and receives a benchmark user and cases; use a
throwaway one. The script starts gunicorn with one sync worker on 127.0.0.1, uploads a
200-slice 512 x 512 study (about 100 MiB) and a 20-slice one through the upload API, then
alternates, ``--runs`` times each (median):

1. read: reading the stored files of the 200-slice study from disk, one after another;
2. retrieve: ``GET /dicomweb/studies/<uid>`` with a token, reading the multipart body in
   1 MiB pieces, and checking that it has 200 parts and every stored byte;
3. metadata: ``GET /dicomweb/studies/<uid>/metadata`` (200 headers as DICOM JSON).

The worker's peak resident memory (VmHWM from /proc, Linux only) is read after retrieving the
20-slice study and again after the 200-slice runs: a body built in memory would raise it by
about the size of the study.
"""

from __future__ import annotations

import argparse
import json
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
from urllib.request import Request, urlopen

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_ingest import (  # noqa: E402
    post_study,
    prepare_django,
    wait_for_server,
    write_series,
)

PIECE_BYTES = 1024 * 1024


def peak_rss_mib(pid: int) -> float:
    """Return the process's peak resident set size (VmHWM) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"no VmHWM in /proc/{pid}/status")


def worker_pid(master_pid: int) -> int:
    """Return the pid of the single gunicorn worker forked by ``master_pid``."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.2)
    raise SystemExit(f"gunicorn master {master_pid} started no worker within 30 s")


def fetch(url: str, token: str, accept: str) -> tuple[int, bytes]:
    """GET ``url``; return the byte count and the first 200 bytes, reading in 1 MiB pieces."""
    request = Request(url, headers={"Authorization": f"Token {token}", "Accept": accept})
    total, head = 0, b""
    with urlopen(request, timeout=600) as response:  # noqa: S310 - loopback only
        if response.status != 200:
            raise SystemExit(f"GET {url} returned {response.status}")
        while piece := response.read(PIECE_BYTES):
            if not head:
                head = piece[:200]
            total += len(piece)
    return total, head


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each measurement")
    parser.add_argument("--port", type=int, default=8767, help="loopback port for gunicorn")
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL"):
        raise SystemExit("set DATABASE_URL to a throwaway PostgreSQL database")

    scratch = Path(tempfile.mkdtemp(prefix="ceht-bench-wado-"))
    env, token = prepare_django(scratch / "media", "bench_wado_coordinator")
    from webapp.core.models import Instance, Study

    run_tag = uuid.uuid4().hex[:8]
    base_url = f"http://127.0.0.1:{args.port}"

    def start_server() -> subprocess.Popen[bytes]:
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "webapp.wsgi", "-w", "1"]
            + ["-b", f"127.0.0.1:{args.port}", "--timeout", "600"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_server(base_url)
        return server

    # The uploads run on their own server, so the measured worker's peak memory is only that
    # of retrieval.
    server = start_server()
    studies = {}
    try:
        for slices in (20, 200):
            code = f"BENCH-WADO-{run_tag}-{slices}"
            paths = write_series(scratch / f"s{slices}", slices, 512)
            report = post_study(base_url, token, code, paths)
            assert report["instances_stored"] == slices, report
            studies[slices] = Study.objects.get(case__code=code)
    finally:
        server.terminate()
        server.wait(timeout=30)
    server = start_server()
    try:
        worker = worker_pid(server.pid)
        peak_start = peak_rss_mib(worker)
        large = studies[200]
        stored = [Path(i.file.path) for i in Instance.objects.filter(series__study=large)]
        stored_bytes = sum(path.stat().st_size for path in stored)
        study_url = f"{base_url}/dicomweb/studies/{large.study_instance_uid}"
        dicom = 'multipart/related; type="application/dicom"'

        fetch(f"{base_url}/dicomweb/studies/{studies[20].study_instance_uid}", token, dicom)
        peak_small = peak_rss_mib(worker)
        read_s, retrieve_s, metadata_s = [], [], []
        for _ in range(args.runs):
            started = time.perf_counter()
            for path in stored:
                path.read_bytes()
            read_s.append(time.perf_counter() - started)

            started = time.perf_counter()
            total, head = fetch(study_url, token, dicom)
            retrieve_s.append(time.perf_counter() - started)
            boundary_line = head.split(b"\r\n", 1)[0]
            # Each part adds its delimiter line, Content-Type line, blank line and CRLF.
            part_overhead = (
                len(boundary_line) + 2 + len(b"Content-Type: application/dicom\r\n\r\n") + 2
            )
            assert total == stored_bytes + 200 * part_overhead + len(boundary_line) + 4, total

            started = time.perf_counter()
            _, _ = fetch(f"{study_url}/metadata", token, "application/dicom+json")
            metadata_s.append(time.perf_counter() - started)
        peak_large = peak_rss_mib(worker)
        check = json.loads(
            urlopen(  # noqa: S310 - loopback only
                Request(f"{study_url}/metadata", headers={"Authorization": f"Token {token}"}),
                timeout=600,
            ).read()
        )
        assert len(check) == 200

        def summary(values: list[float]) -> str:
            return f"median {statistics.median(values):.2f} s ({min(values):.2f}-{max(values):.2f})"

        print(
            f"{time.strftime('%Y-%m-%d')} {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}"
        )
        print(f"study: 200 slices 512x512, {stored_bytes / 2**20:.0f} MiB stored")
        print(f"read stored files: {summary(read_s)}")
        print(f"WADO-RS study:     {summary(retrieve_s)}")
        print(
            f"ratio retrieve/read (medians): {statistics.median(retrieve_s) / statistics.median(read_s):.1f}"
        )
        print(f"WADO-RS metadata:  {summary(metadata_s)}")
        print(
            f"worker peak RSS: {peak_start:.0f} MiB after start, {peak_small:.0f} MiB after the "
            f"20-slice study, {peak_large:.0f} MiB after the 200-slice runs"
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
