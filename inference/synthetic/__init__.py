"""Synthetic post-thrombectomy head CT cohort: demo data and test fixtures, no patient data."""

from inference.synthetic.case import SyntheticCase, TrueLesion, generate_case_volume
from inference.synthetic.cohort import (
    DEFAULT_SEED,
    GENERATOR_VERSION,
    CohortCase,
    CohortManifest,
    load_cohort,
    make_cohort,
)

__all__ = [
    "DEFAULT_SEED",
    "GENERATOR_VERSION",
    "CohortCase",
    "CohortManifest",
    "SyntheticCase",
    "TrueLesion",
    "generate_case_volume",
    "load_cohort",
    "make_cohort",
]
