"""Generate the synthetic demo cohort and import it as uploads, with its ground truth."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from inference.synthetic import DEFAULT_SEED
from webapp.core.services import ServiceError
from webapp.ingest.demo import DEFAULT_DEMO_CASES, DemoCaseResult, load_demo_cohort


class Command(BaseCommand):
    help = (
        "Generate a synthetic demo cohort (no real patients) unless the same one exists in "
        "--cohort-dir, then create each case, upload its baseline and follow-up studies, "
        "queue inference and record the generator's label as ground truth. Cases that are "
        "already complete are skipped, so running it again adds nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--cases",
            type=int,
            default=DEFAULT_DEMO_CASES,
            help=(
                f"Number of synthetic cases with a hyperdensity (default: {DEFAULT_DEMO_CASES}; "
                "111 gives the full cohort with the source study's class sizes)."
            ),
        )
        parser.add_argument(
            "--seed",
            type=int,
            default=DEFAULT_SEED,
            help=f"Random seed of the generator (default: {DEFAULT_SEED}).",
        )
        parser.add_argument(
            "--cohort-dir",
            type=Path,
            default=None,
            help="Folder of the generated DICOM files (default: DATA_DIR/demo-cohort, data/demo-cohort).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        cohort_dir: Path = options["cohort_dir"] or Path(settings.DATA_DIR) / "demo-cohort"
        started = time.perf_counter()

        def report_case(position: int, total: int, result: DemoCaseResult) -> None:
            if result.changed:
                ingested = ", ".join(result.studies_ingested) or "no studies"
                state = (
                    f"{'created' if result.case_created else 'completed'}; ingested {ingested} "
                    f"({result.instances_stored} images), {result.jobs_queued} jobs queued"
                )
            else:
                state = "already loaded, skipped"
            self.stdout.write(
                f"[{position}/{total}] {result.code} {result.label} ({result.split}): {state}"
            )

        self.stdout.write(f"synthetic demo cohort in {cohort_dir} ({options['cases']} cases)")
        try:
            summary = load_demo_cohort(
                cohort_dir, n_cases=options["cases"], seed=options["seed"], on_case=report_case
            )
        except ServiceError as error:
            raise CommandError(error.message) from error
        except (FileExistsError, ValueError) as error:
            raise CommandError(
                f"Generating the demo cohort in {cohort_dir} failed: {error}"
            ) from error

        generated = "generated" if summary.cohort_generated else "reused"
        self.stdout.write(
            f"cohort {summary.cohort_id} ({generated}): {len(summary.cases)} synthetic cases, "
            f"{summary.cases_created} created, {summary.cases_unchanged} already loaded, "
            f"{summary.studies_ingested} studies ingested, {summary.jobs_queued} inference jobs "
            f"queued, {summary.ground_truths_recorded} ground truths recorded "
            f"in {time.perf_counter() - started:.1f} s"
        )
