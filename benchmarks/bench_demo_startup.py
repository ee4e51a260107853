"""Time ./scripts/demo.sh from its start until every demo case has a prediction.

Usage, on a fresh clone whose .venv is already installed (installation is not timed):

    git clone <repository> /tmp/demo/ceht-review && cd /tmp/demo/ceht-review
    bash -c 'source scripts/_common.sh && ensure_venv requirements.txt'
    python3 benchmarks/bench_demo_startup.py [--port 8791] [--cases 12]

The script starts ``scripts/demo.sh`` in the clone this file belongs to, polls the demo's SQLite
database (``data/db.sqlite3``, read-only) and ``/healthz`` once a second, and prints seconds
since the start at four points: all cases loaded, the web server responding, the first baseline
prediction, and a baseline prediction on every case (what the worklist's Prediction column
shows). Then it stops the demo with SIGTERM. It needs only the standard library. Run it once
on a clean clone: a second run finds the cases already loaded and measures less.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATABASE = PROJECT_ROOT / "data" / "db.sqlite3"
PREDICTED_CASES_SQL = """
SELECT COUNT(DISTINCT study.case_id)
FROM jobs_prediction AS prediction
JOIN jobs_inferencejob AS job ON prediction.job_id = job.id
JOIN core_study AS study ON job.study_id = study.id
WHERE study.role = 'baseline'
"""


def database_counts() -> tuple[int, int, dict[str, int]]:
    """Return (cases, cases with a baseline prediction, jobs by status); zeros before migration."""
    if not DATABASE.exists():
        return 0, 0, {}
    try:
        with sqlite3.connect(f"file:{DATABASE}?mode=ro", uri=True, timeout=1) as database:
            cases = database.execute("SELECT COUNT(*) FROM core_case").fetchone()[0]
            predicted = database.execute(PREDICTED_CASES_SQL).fetchone()[0]
            jobs = dict(
                database.execute("SELECT status, COUNT(*) FROM jobs_inferencejob GROUP BY status")
            )
    except sqlite3.Error:
        # The tables do not exist yet, or the database is locked by a migration.
        return 0, 0, {}
    return cases, predicted, jobs


def server_answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8791, help="demo web server port")
    parser.add_argument("--cases", type=int, default=12, help="DEMO_CASES for the demo")
    parser.add_argument("--timeout-s", type=float, default=900, help="give up after seconds")
    args = parser.parse_args()
    if DATABASE.exists():
        print(f"{DATABASE} exists; run this on a fresh clone", file=sys.stderr)
        return 2

    environment = dict(
        os.environ, DEMO_ADDRESS=f"127.0.0.1:{args.port}", DEMO_CASES=str(args.cases)
    )
    log_path = PROJECT_ROOT / "data" / "bench-demo-startup.log"
    log_path.parent.mkdir(exist_ok=True)
    started_at = datetime.now(UTC)
    start = time.monotonic()
    with open(log_path, "wb") as log:
        demo = subprocess.Popen(
            ["./scripts/demo.sh"],
            cwd=PROJECT_ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    marks: dict[str, float] = {}
    jobs: dict[str, int] = {}
    status = 1
    try:
        while time.monotonic() - start < args.timeout_s:
            elapsed = round(time.monotonic() - start, 1)
            if demo.poll() is not None:
                print(f"demo.sh exited early with status {demo.returncode}; see {log_path}")
                break
            if "server_answers" not in marks and server_answers(args.port):
                marks["server_answers"] = elapsed
            cases, predicted, jobs = database_counts()
            if cases >= args.cases:
                marks.setdefault("cases_loaded", elapsed)
            if predicted:
                marks.setdefault("first_prediction", elapsed)
            if cases == args.cases and predicted == args.cases:
                marks["every_case_predicted"] = elapsed
                status = 0
                break
            time.sleep(1)
        else:
            print(f"timed out after {args.timeout_s:g} s: {database_counts()}")
    finally:
        os.killpg(demo.pid, signal.SIGTERM)
        try:
            demo.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
    report = {
        "started_utc": started_at.isoformat(timespec="seconds"),
        "cases": args.cases,
        "seconds_since_start": marks,
        "jobs_by_status_at_end": jobs,
        "cpu_count": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        "python": platform.python_version(),
    }
    print(json.dumps(report, indent=1))
    return status


if __name__ == "__main__":
    sys.exit(main())
