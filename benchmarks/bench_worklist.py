"""Time the worklist page (the case-list URL) on 10,000 cases.

Usage: DATABASE_URL=postgres://... python benchmarks/bench_worklist.py [--cases 10000] [--runs 15]

The script creates a throwaway test database (``test_<name>``, dropped at the end), fills it
with ``--cases`` cases in bulk (a baseline study, a finished job and a prediction on 90% of
them, ground truth on 70%, two readers on 50%, a consensus on 10%) and requests the page
in-process through Django's test client. Each request's time is the server time: URL routing,
the queries, template rendering and middleware, without network. It prints medians with
min-max for several filter and sort combinations, and the number of queries per request.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth.models import Group, User  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import (  # noqa: E402
    CaptureQueriesContext,
    override_settings,
    setup_test_environment,
)

QUERIES = ["", "?status=disagreement", "?sort=readers&order=desc", "?q=07", "?page=100"]


def populate(n_cases: int) -> tuple[User, User]:
    from webapp.core.models import Adjudication, Case, GroundTruth, Study
    from webapp.jobs.models import InferenceJob, ModelVersion, Prediction

    reader = User.objects.create_user("bench_reader")
    reader.groups.add(Group.objects.get_or_create(name="reader")[0])
    other = User.objects.create_user("bench_reader_2")
    other.groups.add(Group.objects.get_or_create(name="reader")[0])
    researcher = User.objects.create_user("bench_researcher")
    researcher.groups.add(Group.objects.get_or_create(name="researcher")[0])
    version = ModelVersion.objects.create(kind="svm", version="bench", sha256="0" * 64)
    labels = ["HT", "CE", "HT+CE"]

    cases = Case.objects.bulk_create(
        [Case(code=f"B-{i:05d}", split=["train", "test"][i % 2]) for i in range(n_cases)]
    )
    with_study = [case for i, case in enumerate(cases) if i % 10]
    studies = Study.objects.bulk_create(
        [
            Study(case=case, role="baseline", study_instance_uid=f"2.25.{case.pk}")
            for case in with_study
        ]
    )
    jobs = InferenceJob.objects.bulk_create(
        [
            InferenceJob(study=study, pipeline_version="b", status="succeeded", run_count=1)
            for study in studies
        ]
    )
    Prediction.objects.bulk_create(
        [
            Prediction(
                job=job,
                model_version=version,
                probabilities={"HT": 0.6, "CE": 0.3, "HT+CE": 0.1},
                predicted_label=labels[i % 3],
            )
            for i, job in enumerate(jobs)
        ]
    )
    GroundTruth.objects.bulk_create(
        [
            GroundTruth(case=case, version=1, label=labels[i % 3], entered_by=researcher)
            for i, case in enumerate(cases)
            if i % 10 < 7
        ]
    )
    readings = []
    for i, case in enumerate(cases):
        if i % 2 == 0:
            readings.append(
                Adjudication(case=case, reader=reader, version=1, label="HT", confidence=3)
            )
            readings.append(
                Adjudication(case=case, reader=other, version=1, label=labels[i % 3], confidence=3)
            )
        if i % 10 == 0:
            readings.append(
                Adjudication(
                    case=case, reader=other, version=1, is_consensus=True, label="HT", confidence=4
                )
            )
    Adjudication.objects.bulk_create(readings)
    return reader, researcher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000, help="number of cases to create")
    parser.add_argument("--runs", type=int, default=15, help="timed requests per query")
    args = parser.parse_args()

    setup_test_environment()
    # Plain HTTP and static storage without the collectstatic manifest, as in the test suite.
    storages = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    override_settings(SECURE_SSL_REDIRECT=False, STORAGES=storages).enable()
    old_name = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        started = time.perf_counter()
        reader, researcher = populate(args.cases)
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute("ANALYZE")
        print(f"{args.cases} cases created in {time.perf_counter() - started:.1f} s")
        print(
            f"{platform.node()} {platform.processor() or platform.machine()}, {connection.vendor}"
        )
        print("user        query                          median ms  (min-max)   queries")
        for user in (reader, researcher):
            client = Client()
            client.force_login(user)
            for query in QUERIES:
                client.get(f"/{query}")  # warm-up
                times_ms = []
                for _ in range(args.runs):
                    with CaptureQueriesContext(connection) as captured:
                        start = time.perf_counter()
                        response = client.get(f"/{query}")
                        times_ms.append((time.perf_counter() - start) * 1000)
                    assert response.status_code == 200, response.status_code
                print(
                    f"{user.username[6:]:<11} {query or '(first page)':<30} "
                    f"{statistics.median(times_ms):9.1f}  ({min(times_ms):.0f}-{max(times_ms):.0f})"
                    f"   {len(captured.captured_queries)}"
                )
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


if __name__ == "__main__":
    main()
