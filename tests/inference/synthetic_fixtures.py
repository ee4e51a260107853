"""Session fixtures for the synthetic-cohort and segmentation tests.

Test modules load this file as a plugin (``pytest_plugins = ["tests.inference.synthetic_fixtures"]``),
so that each session fixture is built once for all of them.
"""

from __future__ import annotations

import pytest

from inference.synthetic import CohortManifest, SyntheticCase, generate_case_volume, make_cohort

SMALL_COHORT_SEED = 31
# Two cases per class and one normal study, written as DICOM: a few seconds on two cores.
SMALL_CLASS_COUNTS = {"HT": 2, "CE": 2, "HT+CE": 2}


@pytest.fixture(scope="session")
def small_cohort(tmp_path_factory: pytest.TempPathFactory) -> CohortManifest:
    out_dir = tmp_path_factory.mktemp("synthetic") / "cohort"
    return make_cohort(
        out_dir,
        n_cases=6,
        seed=SMALL_COHORT_SEED,
        class_counts=SMALL_CLASS_COUNTS,
        n_normal=1,
        n_hard=1,
    )


@pytest.fixture(scope="session")
def cases_by_label() -> dict[str, list[SyntheticCase]]:
    """Four in-memory cases per class (seeds 0-3) and two normal heads, not written."""
    cases: dict[str, list[SyntheticCase]] = {}
    for label in ("HT", "CE", "HT+CE"):
        cases[label] = [generate_case_volume(label, seed=seed) for seed in range(4)]
    cases["none"] = [generate_case_volume("none", seed=seed) for seed in range(2)]
    return cases
