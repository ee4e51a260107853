"""Locations of the shared test data that lives beside the repository, never inside it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED_DIR = Path(os.environ.get("CEHT_SHARED_DIR", PROJECT_ROOT.parent / "shared"))
CASES_DIR = SHARED_DIR / "cases"
PHILIPS_STUDY_DIR = SHARED_DIR / "data" / "head-ct-philips"


def require(path: Path) -> Path:
    """Return ``path``, or skip the calling test when the shared data is absent."""
    if not path.exists():
        pytest.skip(f"shared test data not found at {path}; set CEHT_SHARED_DIR to its folder")
    return path
