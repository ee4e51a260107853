"""A synthetic post-thrombectomy cohort on disk: DICOM studies, true masks and cohort.json.

The default cohort copies the class sizes and split of the source study (J Neuroradiol
2026;53(2):101530): 111 patients with hyperdensities, HT 41, CE 34, HT+CE 36, 72 for training
and 39 for testing, stratified by class. A few normal studies (label "none") are added.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from inference.synthetic.case import CASE_LABELS, generate_case_volume
from inference.synthetic.lesions import HARD_REASONS, CaseLabel
from inference.synthetic.writer import SeriesInfo, write_masks, write_series

logger = logging.getLogger(__name__)

GENERATOR_VERSION = "1.0"
DEFAULT_SEED = 20260101
SOURCE_CLASS_COUNTS: dict[str, int] = {"HT": 41, "CE": 34, "HT+CE": 36}
SOURCE_TEST_FRACTION = 39 / 111
MANIFEST_NAME = "cohort.json"

# Hard reasons that make sense for each class.
_HARD_REASONS_BY_LABEL: dict[str, tuple[str, ...]] = {
    "HT": ("dense_ht", "small_lesion"),
    "CE": ("faint_ce", "small_lesion", "near_skull"),
    "HT+CE": ("dense_ht", "faint_ce", "small_lesion"),
}
# Invented date of the first thrombectomy. Later cases follow every 1.5 days.
_FIRST_PROCEDURE = datetime(2025, 1, 6, 8, 30)


@dataclass
class CohortCase:
    """One case of a cohort on disk, with absolute paths."""

    code: str
    label: CaseLabel
    split: str
    hard: bool
    hard_reason: str | None
    baseline_hours: float
    follow_up_hours: float
    baseline_dir: Path
    follow_up_dir: Path
    masks_nifti: Path
    masks_npz: Path
    lesions: list[dict[str, Any]]
    side: str
    midline_shift_mm: float

    def true_labels(self) -> np.ndarray:
        """Load the true lesion labels (int16, (z, y, x) on the baseline grid)."""
        with np.load(self.masks_npz, allow_pickle=False) as data:
            labels: np.ndarray = data["labels"]
        return labels

    def component_types(self) -> list[str]:
        """HT or CE for each label value 1..n, in order."""
        return [str(lesion["component_type"]) for lesion in self.lesions]

    def to_dict(self, root: Path) -> dict[str, Any]:
        return {
            "code": self.code,
            "label": self.label,
            "split": self.split,
            "hard": self.hard,
            "hard_reason": self.hard_reason,
            "baseline_hours_after_thrombectomy": self.baseline_hours,
            "follow_up_hours_after_thrombectomy": self.follow_up_hours,
            "baseline_dir": self.baseline_dir.relative_to(root).as_posix(),
            "follow_up_dir": self.follow_up_dir.relative_to(root).as_posix(),
            "masks_nifti": self.masks_nifti.relative_to(root).as_posix(),
            "masks_npz": self.masks_npz.relative_to(root).as_posix(),
            "infarct_side": self.side,
            "midline_shift_mm": self.midline_shift_mm,
            "lesions": self.lesions,
        }


@dataclass
class CohortManifest:
    """Contents of ``cohort.json`` with the cohort's root folder."""

    root: Path
    cohort_id: str
    seed: int
    generator_version: str
    matrix: int
    cases: list[CohortCase] = field(default_factory=list)

    def split(self, name: str) -> list[CohortCase]:
        return [case for case in self.cases if case.split == name]

    def class_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for case in self.cases:
            counts[case.label] = counts.get(case.label, 0) + 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        return {
            "cohort_id": self.cohort_id,
            "synthetic": True,
            "seed": self.seed,
            "generator_version": self.generator_version,
            "matrix": self.matrix,
            "n_cases": len(self.cases),
            "class_counts": self.class_counts(),
            "cases": [case.to_dict(self.root) for case in self.cases],
        }


def make_cohort(
    out_dir: str | Path,
    *,
    n_cases: int = 111,
    seed: int = DEFAULT_SEED,
    matrix: int = 256,
    class_counts: dict[str, int] | None = None,
    n_normal: int = 4,
    n_hard: int | None = None,
    test_fraction: float = SOURCE_TEST_FRACTION,
    overwrite: bool = False,
) -> CohortManifest:
    """Generate a cohort under ``out_dir`` and write ``out_dir/cohort.json``.

    ``n_cases`` counts the cases with a hyperdensity; ``n_normal`` cases without one are
    added. Without ``class_counts`` the classes keep the source study's proportions (HT 41,
    CE 34, HT+CE 36 for 111). ``n_hard`` cases (by default about 8%) get a misleading cue
    and ``hard: true``. Each class is split train/test with ``test_fraction`` in test.
    Raises ``FileExistsError`` when ``out_dir`` already contains a cohort and ``overwrite`` is
    False, and ``ValueError`` on inconsistent counts.
    """
    root = Path(out_dir).resolve()
    counts = _class_counts(n_cases, class_counts)
    if n_normal < 0:
        raise ValueError(f"n_normal {n_normal} is negative; pass 0 or more")
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"test_fraction {test_fraction} is outside 0..1")
    if matrix not in (256, 512):
        raise ValueError(f"matrix {matrix} is not supported; use 256 or 512")
    manifest_path = root / MANIFEST_NAME
    if manifest_path.exists() and not overwrite:
        raise FileExistsError(
            f"{manifest_path} already exists; choose an empty folder or pass overwrite=True"
        )
    root.mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
    plan = _plan_cases(rng, counts, n_normal, n_hard, test_fraction)
    cohort_id = _cohort_id(seed, matrix, counts, n_normal, plan)
    manifest = CohortManifest(root, cohort_id, seed, GENERATOR_VERSION, matrix)
    started = time.perf_counter()
    for index, (label, split, hard_reason) in enumerate(plan, start=1):
        manifest.cases.append(
            _write_case(root, seed, index, label, split, hard_reason, matrix, rng, overwrite)
        )
        if index % 10 == 0:
            logger.info("Generated %d of %d synthetic cases", index, len(plan))
    text = json.dumps(manifest.to_dict(), indent=2, sort_keys=True) + "\n"
    manifest_path.write_text(text, encoding="utf-8")
    logger.info(
        "Wrote synthetic cohort %s: %d cases in %.1f s",
        cohort_id,
        len(plan),
        time.perf_counter() - started,
    )
    return manifest


def load_cohort(directory: str | Path) -> CohortManifest:
    """Read ``directory/cohort.json``; raises ``FileNotFoundError`` or ``ValueError``."""
    root = Path(directory).resolve()
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; run make-cohort on that folder first")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        manifest = CohortManifest(
            root=root,
            cohort_id=str(data["cohort_id"]),
            seed=int(data["seed"]),
            generator_version=str(data["generator_version"]),
            matrix=int(data["matrix"]),
        )
        for item in data["cases"]:
            manifest.cases.append(
                CohortCase(
                    code=item["code"],
                    label=item["label"],
                    split=item["split"],
                    hard=bool(item["hard"]),
                    hard_reason=item["hard_reason"],
                    baseline_hours=float(item["baseline_hours_after_thrombectomy"]),
                    follow_up_hours=float(item["follow_up_hours_after_thrombectomy"]),
                    baseline_dir=root / item["baseline_dir"],
                    follow_up_dir=root / item["follow_up_dir"],
                    masks_nifti=root / item["masks_nifti"],
                    masks_npz=root / item["masks_npz"],
                    lesions=list(item["lesions"]),
                    side=item["infarct_side"],
                    midline_shift_mm=float(item["midline_shift_mm"]),
                )
            )
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(
            f"{path} is not a valid cohort manifest ({error!r}); regenerate it with make-cohort"
        ) from error
    return manifest


def _class_counts(n_cases: int, class_counts: dict[str, int] | None) -> dict[str, int]:
    if class_counts is not None:
        unknown = sorted(set(class_counts) - set(SOURCE_CLASS_COUNTS))
        if unknown:
            raise ValueError(f"class_counts has unknown labels {unknown}; use HT, CE, HT+CE")
        if any(count < 0 for count in class_counts.values()):
            raise ValueError(f"class_counts {class_counts} has a negative count")
        if sum(class_counts.values()) != n_cases:
            raise ValueError(
                f"class_counts {class_counts} add up to {sum(class_counts.values())}, but "
                f"n_cases is {n_cases}; make them agree"
            )
        return {label: int(class_counts.get(label, 0)) for label in SOURCE_CLASS_COUNTS}
    if n_cases < 0:
        raise ValueError(f"n_cases {n_cases} is negative")
    return _largest_remainder(SOURCE_CLASS_COUNTS, n_cases)


def _largest_remainder(weights: dict[str, int] | dict[str, float], total: int) -> dict[str, int]:
    """Split ``total`` in proportion to ``weights``, rounding by largest remainder."""
    weight_sum = float(sum(weights.values()))
    exact = {
        key: total * value / weight_sum if weight_sum else 0.0 for key, value in weights.items()
    }
    result = {key: int(np.floor(value)) for key, value in exact.items()}
    leftover = total - sum(result.values())
    # Ties go to the first label in order, so the split does not depend on dict hashing.
    order = sorted(exact, key=lambda key: (-(exact[key] - result[key]), list(weights).index(key)))
    for key in order[:leftover]:
        result[key] += 1
    return result


def _plan_cases(
    rng: np.random.Generator,
    counts: dict[str, int],
    n_normal: int,
    n_hard: int | None,
    test_fraction: float,
) -> list[tuple[CaseLabel, str, str | None]]:
    """Decide each case's label, split and hard reason, in a shuffled order."""
    all_counts: dict[str, int] = {**counts, "none": n_normal}
    n_lesion_cases = sum(counts.values())
    total_cases = n_lesion_cases + n_normal
    n_test = _largest_remainder(all_counts, int(round(total_cases * test_fraction)))
    for label, count in all_counts.items():
        n_test[label] = min(n_test[label], count)

    entries: list[tuple[CaseLabel, str, str | None]] = []
    for label in ("HT", "CE", "HT+CE", "none"):
        count = all_counts[label]
        test_flags = np.zeros(count, dtype=bool)
        test_flags[rng.permutation(count)[: n_test[label]]] = True
        for is_test in test_flags:
            entries.append((label, "test" if is_test else "train", None))  # type: ignore[arg-type]

    if n_hard is None:
        n_hard = int(round(0.08 * n_lesion_cases))
    candidates = [i for i, entry in enumerate(entries) if entry[0] != "none"]
    n_hard = min(n_hard, len(candidates))
    for i in rng.permutation(candidates)[:n_hard]:
        label, split, _ = entries[int(i)]
        reasons = _HARD_REASONS_BY_LABEL[label]
        entries[int(i)] = (label, split, reasons[int(rng.integers(len(reasons)))])

    order = rng.permutation(len(entries))
    return [entries[int(i)] for i in order]


def _cohort_id(
    seed: int,
    matrix: int,
    counts: dict[str, int],
    n_normal: int,
    plan: list[tuple[CaseLabel, str, str | None]],
) -> str:
    text = json.dumps([GENERATOR_VERSION, seed, matrix, counts, n_normal, plan], sort_keys=True)
    return f"SYN-{seed}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"


def _write_case(
    root: Path,
    seed: int,
    index: int,
    label: CaseLabel,
    split: str,
    hard_reason: str | None,
    matrix: int,
    rng: np.random.Generator,
    overwrite: bool,
) -> CohortCase:
    code = f"SYN-{index:04d}"
    case_dir = root / code
    if case_dir.exists():
        if not overwrite:
            raise FileExistsError(f"{case_dir} already exists; choose an empty folder")
        shutil.rmtree(case_dir)
    case = generate_case_volume(label, seed=(seed, index), matrix=matrix, hard_reason=hard_reason)
    procedure = _FIRST_PROCEDURE + timedelta(days=1.5 * (index - 1))
    sex = "F" if rng.random() < 0.5 else "M"
    age = int(rng.integers(45, 90))

    for role, hu, hours, number in (
        ("baseline", case.baseline_hu, case.baseline_hours, 2),
        ("follow_up", case.follow_up_hu, case.follow_up_hours, 3),
    ):
        info = SeriesInfo(
            cohort_seed=seed,
            code=code,
            role=role,
            acquired_at=procedure + timedelta(hours=hours),
            series_number=number,
            generator_version=f"ceht-review synthetic {GENERATOR_VERSION}",
            patient_sex=sex,
            patient_age_years=age,
        )
        write_series(hu, case.grid, case_dir / role, info)

    nifti_path, npz_path = write_masks(
        case.true_labels,
        case.grid,
        case_dir / "masks",
        [lesion.component_type for lesion in case.lesions],
    )
    return CohortCase(
        code=code,
        label=label,
        split=split,
        hard=hard_reason is not None,
        hard_reason=hard_reason,
        baseline_hours=case.baseline_hours,
        follow_up_hours=case.follow_up_hours,
        baseline_dir=case_dir / "baseline",
        follow_up_dir=case_dir / "follow_up",
        masks_nifti=nifti_path,
        masks_npz=npz_path,
        lesions=[lesion.to_dict() for lesion in case.lesions],
        side=case.side,
        midline_shift_mm=case.midline_shift_mm,
    )


__all__ = [
    "CASE_LABELS",
    "DEFAULT_SEED",
    "GENERATOR_VERSION",
    "HARD_REASONS",
    "CohortCase",
    "CohortManifest",
    "load_cohort",
    "make_cohort",
]
