"""Find DICOM images among arbitrary files, group them into studies and series, choose one.

Only headers are read here. Unusable files do not raise an error. Instead, each is listed in
``ScanResult.skipped`` with a reason code.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

from ..errors import InferenceError
from ..volume import Note, NoteLevel
from .archive import ExtractionBudget, archive_folder_name, extract_zip
from .classify import (
    ELIGIBLE_KINDS,
    MIN_SLICES,
    TARGET_SLICE_THICKNESS_MM,
    classify_instance,
    classify_kernel,
    rank_key,
    slice_normal,
)
from .headers import HeaderSkip, InstanceInfo, WindowPreset, read_header, read_header_bytes

logger = logging.getLogger(__name__)

MAX_ARCHIVE_DEPTH = 2


@dataclass(frozen=True)
class SkippedFile:
    """A file, or an image inside a series, that is not used, with a reason code."""

    path: str
    reason: str
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason, "detail": self.detail}


@dataclass
class SeriesInfo:
    """One DICOM series: its classification, the images it contains, and the choice made."""

    series_instance_uid: str
    study_instance_uid: str
    modality: str
    description: str
    series_number: int | None
    kind: str
    kernel: str
    kernel_class: str
    slice_thickness_mm: float | None
    image_type: tuple[str, ...]
    instances: list[InstanceInfo] = field(default_factory=list)
    excluded: list[SkippedFile] = field(default_factory=list)
    burned_in_annotation: bool = False
    window_presets: list[WindowPreset] = field(default_factory=list)
    transfer_syntaxes: list[str] = field(default_factory=list)
    chosen: bool = False
    reason: str = ""
    notes: list[Note] = field(default_factory=list)

    @property
    def n_instances(self) -> int:
        """Number of images (frames for a multi-frame file) kept for this series."""
        return len(self.instances)

    @property
    def paths(self) -> list[str]:
        """The distinct files of the kept images, in scan order."""
        return list(dict.fromkeys(info.path for info in self.instances))

    @property
    def eligible(self) -> bool:
        return self.kind in ELIGIBLE_KINDS and self.n_instances >= MIN_SLICES

    @property
    def default_window(self) -> WindowPreset | None:
        return self.window_presets[0] if self.window_presets else None

    @property
    def is_derived(self) -> bool:
        return self.image_type[:1] == ("DERIVED",)

    @property
    def label(self) -> str:
        number = f"series {self.series_number}" if self.series_number is not None else "series"
        return f"{number} '{self.description}'" if self.description else number

    def add_note(self, level: NoteLevel, code: str, message: str) -> None:
        self.notes.append(Note(level, code, message))

    def to_dict(self, display_path: Callable[[str], str] = str) -> dict[str, Any]:
        return {
            "series_instance_uid": self.series_instance_uid,
            "study_instance_uid": self.study_instance_uid,
            "series_number": self.series_number,
            "modality": self.modality,
            "description": self.description,
            "kind": self.kind,
            "kernel": self.kernel,
            "kernel_class": self.kernel_class,
            "slice_thickness_mm": self.slice_thickness_mm,
            "image_type": list(self.image_type),
            "n_instances": self.n_instances,
            "n_files": len(self.paths),
            "paths": [display_path(path) for path in self.paths],
            "excluded": [
                {**item.to_dict(), "path": display_path(item.path)} for item in self.excluded
            ],
            "burned_in_annotation": self.burned_in_annotation,
            "default_window": self.default_window.to_dict() if self.default_window else None,
            "window_presets": [preset.to_dict() for preset in self.window_presets],
            "transfer_syntaxes": self.transfer_syntaxes,
            "chosen": self.chosen,
            "reason": self.reason,
            "notes": [note.to_dict() for note in self.notes],
        }


@dataclass
class StudyInfo:
    """One DICOM study and the UIDs of its series."""

    study_instance_uid: str
    description: str
    series_instance_uids: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "study_instance_uid": self.study_instance_uid,
            "description": self.description,
            "series_instance_uids": self.series_instance_uids,
        }


@dataclass
class ScanResult:
    """Everything found under the scanned paths."""

    studies: list[StudyInfo] = field(default_factory=list)
    series: list[SeriesInfo] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    n_files: int = 0
    archive_roots: dict[str, str] = field(default_factory=dict)

    def display_path(self, path: str) -> str:
        """Return ``path``, with extraction folders replaced by their zip archives' paths."""
        # Nested archives are extracted later than their parent, so the newest root is tried
        # first and the parent's root is then replaced in the result.
        for root, archive in reversed(self.archive_roots.items()):
            if path.startswith(root + os.sep):
                path = archive + "/" + path[len(root) + 1 :].replace(os.sep, "/")
        return path

    @property
    def chosen(self) -> SeriesInfo | None:
        for series in self.series:
            if series.chosen:
                return series
        return None

    def skipped_by_reason(self) -> dict[str, int]:
        return dict(Counter(item.reason for item in self.skipped))

    def to_dict(self) -> dict[str, Any]:
        chosen = self.chosen
        return {
            "n_files": self.n_files,
            "studies": [study.to_dict() for study in self.studies],
            "series": [series.to_dict(self.display_path) for series in self.series],
            "chosen_series_instance_uid": chosen.series_instance_uid if chosen else None,
            "skipped": [
                {**item.to_dict(), "path": self.display_path(item.path)} for item in self.skipped
            ],
            "skipped_by_reason": self.skipped_by_reason(),
            "notes": [note.to_dict() for note in self.notes],
        }


def iter_files(paths: Sequence[str | Path]) -> Iterator[str]:
    """Yield every regular file under ``paths`` in a stable (sorted) order."""
    for raw in paths:
        path = os.fspath(raw)
        if os.path.isdir(path):
            for root, dirs, files in os.walk(path):
                dirs.sort()
                # Shorter names first, so that an original sorts before its "name (1).dcm" copy
                # and the copy is the one reported as the duplicate.
                for name in sorted(files, key=lambda n: (len(n), n)):
                    yield os.path.join(root, name)
        else:
            yield path


def _file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def scan_paths(
    paths: Sequence[str | Path] | str | Path,
    *,
    target_thickness_mm: float = TARGET_SLICE_THICKNESS_MM,
    archive_dir: str | os.PathLike[str] | None = None,
) -> ScanResult:
    """Read the headers of every file under ``paths``, group and classify series, choose one.

    Unusable files do not raise an error but are listed in ``ScanResult.skipped``. Zip
    archives are skipped (reason ``archive``) unless ``archive_dir`` is given: they are then
    extracted below it and their files scanned. The caller owns ``archive_dir`` and must keep
    it until the chosen series is loaded; ``to_dict`` shows such files as ``archive.zip/name``.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    return _scan(paths, {}, target_thickness_mm, archive_dir)


def scan_buffers(
    paths: Sequence[str | Path],
    buffers: Mapping[str, bytes],
    *,
    target_thickness_mm: float = TARGET_SLICE_THICKNESS_MM,
    archive_dir: str | os.PathLike[str] | None = None,
) -> ScanResult:
    """Scan as :func:`scan_paths` does, reading some files from memory instead of the disk.

    A path in ``paths`` that is a key of ``buffers`` is read from its bytes and need not
    exist. Every other path is a file or folder on disk. Files are scanned in the order of
    ``paths``, and the files of a folder in :func:`iter_files` order. So the same files in
    the same order give the same result as :func:`scan_paths`, and duplicates are found by
    content across memory and disk. With ``archive_dir``, a zip archive is extracted from the
    file at its path, so an archive must be on disk.
    """
    return _scan(paths, buffers, target_thickness_mm, archive_dir)


def _scan(
    paths: Sequence[str | Path],
    buffers: Mapping[str, bytes],
    target_thickness_mm: float,
    archive_dir: str | os.PathLike[str] | None,
) -> ScanResult:
    result = ScanResult()
    instances: list[InstanceInfo] = []
    seen_sop: dict[tuple[str, int | None], str] = {}
    digests: dict[str, str] = {}
    lost_by_series: dict[str, list[SkippedFile]] = defaultdict(list)

    def digest_of(path: str) -> str:
        data = buffers.get(path)
        return _file_digest(path) if data is None else hashlib.sha256(data).hexdigest()

    files = _ScanFiles(paths, archive_dir, result)
    for path in files:
        result.n_files += 1
        data = buffers.get(path)
        if data is None:
            try:
                # One stat call answers both questions that exists() and isfile() would ask.
                mode = os.stat(path).st_mode
            except (OSError, ValueError):
                result.skipped.append(SkippedFile(path, "not_found", "file or folder not found"))
                continue
            if not stat.S_ISREG(mode):
                # Opening a FIFO or device would block or read endlessly.
                result.skipped.append(
                    SkippedFile(path, "unreadable", "not a regular file (a pipe, socket or device)")
                )
                continue
        try:
            if data is None:
                _, infos = read_header(path, archives=archive_dir is not None)
            else:
                _, infos = read_header_bytes(path, data, archives=archive_dir is not None)
        except HeaderSkip as skip:
            if skip.reason == "archive" and archive_dir is not None:
                files.expand(path)
                continue
            result.skipped.append(SkippedFile(path, skip.reason, skip.detail))
            if skip.series_instance_uid:
                lost_by_series[skip.series_instance_uid].append(result.skipped[-1])
            continue
        except Exception as exc:  # noqa: BLE001
            # The scan must list every unusable file instead of failing, and pydicom raises
            # many exception types on malformed data, so anything left is caught here.
            logger.warning("unexpected error reading a header: %s", exc, exc_info=True)
            result.skipped.append(
                SkippedFile(path, "unreadable", f"header could not be read: {exc}")
            )
            continue
        key = (infos[0].sop_instance_uid, infos[0].frame_index)
        earlier = seen_sop.get(key)
        if earlier is not None:
            if earlier not in digests:
                digests[earlier] = digest_of(earlier)
            if digest_of(path) == digests[earlier]:
                result.skipped.append(
                    SkippedFile(
                        path,
                        "duplicate",
                        f"exact copy of {os.path.basename(earlier)} (same SOPInstanceUID and bytes)",
                    )
                )
                continue
            # Same SOPInstanceUID with different bytes: both are kept, and the loader compares
            # their pixels at that position (identical: one dropped; different: a conflict).
        else:
            seen_sop[key] = path
        instances.extend(infos)

    by_series: dict[str, list[InstanceInfo]] = defaultdict(list)
    for info in instances:
        by_series[info.series_instance_uid].append(info)
    for series_uid, members in by_series.items():
        series = _build_series(series_uid, members)
        lost = lost_by_series.get(series_uid, [])
        if lost:
            series.add_note(
                "warning",
                "truncated_in_series",
                f"{len(lost)} file(s) of this series are truncated and were left out, so the "
                "series lacks those slices: "
                + "; ".join(f"{os.path.basename(item.path)}: {item.detail}" for item in lost),
            )
        result.series.append(series)

    studies: dict[str, StudyInfo] = {}
    for series in result.series:
        study = studies.get(series.study_instance_uid)
        if study is None:
            description = next(
                (info.study_description for info in series.instances if info.study_description),
                "",
            )
            study = StudyInfo(series.study_instance_uid, description)
            studies[series.study_instance_uid] = study
        study.series_instance_uids.append(series.series_instance_uid)
    result.studies = list(studies.values())
    result.series.sort(
        key=lambda s: (
            s.study_instance_uid,
            s.series_number if s.series_number is not None else 1 << 30,
            s.series_instance_uid,
        )
    )
    choose_series(result, target_thickness_mm=target_thickness_mm)
    attributed = {id(item) for lost in lost_by_series.values() for item in lost}
    truncated = [
        item for item in result.skipped if item.reason == "truncated" and id(item) not in attributed
    ]
    if truncated and result.chosen is not None:
        # A truncated file's series is often unknown (its header may be cut), so the chosen
        # series may be missing it: the user must hear of it even when the volume loads.
        names = ", ".join(os.path.basename(item.path) for item in truncated[:5])
        more = f" and {len(truncated) - 5} more" if len(truncated) > 5 else ""
        result.notes.append(
            Note(
                "warning",
                "truncated_files",
                f"{len(truncated)} truncated file(s) left out ({names}{more}); if they belong to "
                f"the chosen series, it lacks those slices. Copy them again from their source.",
            )
        )
    logger.info(
        "scanned %d files: %d series in %d studies, %d skipped",
        result.n_files,
        len(result.series),
        len(result.studies),
        len(result.skipped),
    )
    return result


class _ScanFiles:
    """The files to scan, in order, with each zip archive replaced by the files inside it.

    The scan reads every file's first bytes anyway, so it recognises an archive there and
    calls :meth:`expand`; the archive's files then come next, where the archive stood.
    Archives nested more than :data:`MAX_ARCHIVE_DEPTH` deep are listed as skipped, which
    also stops a self-containing zip. All archives of one scan share one budget.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        archive_dir: str | os.PathLike[str] | None,
        result: ScanResult,
    ) -> None:
        self._pending: list[tuple[Iterator[str], int]] = [(iter_files(paths), 0)]
        self._depth = 0
        self._archive_dir = archive_dir
        self._result = result
        self._budget = ExtractionBudget.for_upload()

    def __iter__(self) -> Iterator[str]:
        while self._pending:
            files, self._depth = self._pending[-1]
            path = next(files, None)
            if path is None:
                self._pending.pop()
            else:
                yield path

    def expand(self, path: str) -> None:
        """Scan the files of the zip archive ``path`` (the file just yielded) next.

        The archive itself is not counted in ``n_files`` unless it is listed as skipped.
        """
        result = self._result
        assert self._archive_dir is not None
        if self._depth >= MAX_ARCHIVE_DEPTH:
            result.skipped.append(
                SkippedFile(
                    path,
                    "archive",
                    f"zip archive nested more than {MAX_ARCHIVE_DEPTH} archives deep: not "
                    "extracted. Unzip the upload once and upload the inner archive.",
                )
            )
            return
        result.n_files -= 1
        name = archive_folder_name(path, len(result.archive_roots) + 1)
        folder = Path(self._archive_dir) / name
        try:
            rejected = extract_zip(path, folder, budget=self._budget)
        except InferenceError as exc:
            result.n_files += 1
            result.skipped.append(SkippedFile(path, "archive", exc.message))
            return
        result.archive_roots[str(folder)] = path
        for entry in rejected:
            result.n_files += 1
            result.skipped.append(SkippedFile(f"{path}/{entry.name}", entry.reason, entry.detail))
        self._pending.append((iter_files([folder]), self._depth + 1))


def _build_series(series_uid: str, members: list[InstanceInfo]) -> SeriesInfo:
    classified = [(info, *classify_instance(info)) for info in members]
    kinds = Counter(kind for _, kind, _ in classified)
    stack_kinds = [kind for kind in ("axial", "multiframe") if kinds.get(kind)]
    if stack_kinds:
        kind = stack_kinds[0]
    else:
        kind = kinds.most_common(1)[0][0]
    members_of_kind = [info for info, k, _ in classified if k == kind]
    other_reconstructions: list[list[InstanceInfo]] = []
    if kind in ELIGIBLE_KINDS:
        members_of_kind, other_reconstructions = _split_reconstructions(members_of_kind)
    first = members_of_kind[0]
    kind_reason = next(reason for _, k, reason in classified if k == kind)

    thicknesses = [
        i.slice_thickness_mm for i in members_of_kind if i.slice_thickness_mm is not None
    ]
    series = SeriesInfo(
        series_instance_uid=series_uid,
        study_instance_uid=first.study_instance_uid,
        modality=first.modality,
        description=first.series_description,
        series_number=first.series_number,
        kind=kind,
        kernel=first.kernel,
        kernel_class=classify_kernel(first.kernel, first.series_description),
        slice_thickness_mm=round(float(median(thicknesses)), 4) if thicknesses else None,
        image_type=first.image_type,
        instances=members_of_kind,
        burned_in_annotation=any(i.burned_in_annotation == "YES" for i in members),
        window_presets=list(first.windows),
        transfer_syntaxes=sorted({i.transfer_syntax_uid for i in members_of_kind}),
    )
    series.reason = kind_reason
    if kind == "secondary_capture" and any(i.burned_in_annotation == "" for i in members):
        # A capture without BurnedInAnnotation may show a patient name: treat it as if it did.
        series.burned_in_annotation = True

    excluded_labels: list[str] = []
    for info, other_kind, reason in classified:
        if other_kind != kind:
            if info.frame_index is not None:
                # A frame of a multi-frame file: the file name alone would not say which.
                reason = f"{info.label}: {reason}"
            series.excluded.append(SkippedFile(info.path, other_kind, reason))
            excluded_labels.append(info.label)
    if other_reconstructions:
        _note_other_reconstructions(series, members_of_kind, other_reconstructions)
    if excluded_labels:
        names = ", ".join(sorted(set(excluded_labels)))
        series.add_note(
            "warning",
            "instances_excluded",
            f"{len(excluded_labels)} image(s) of another kind left out of this series: {names}",
        )

    window_warnings = {i.window_warning for i in members_of_kind if i.window_warning}
    for text in sorted(window_warnings):
        series.add_note("warning", "window_count_mismatch", text)
    charset_warnings = {i.charset_warning for i in members if i.charset_warning}
    if charset_warnings:
        series.add_note(
            "warning",
            "charset",
            "text could not be decoded with the declared SpecificCharacterSet; unreadable "
            f"characters were replaced ({sorted(charset_warnings)[0]})",
        )
    return series


def _reconstruction_key(info: InstanceInfo) -> tuple[Any, ...]:
    """Return the attributes that distinguish reconstructions sharing a SeriesInstanceUID."""
    thickness = round(info.slice_thickness_mm, 2) if info.slice_thickness_mm is not None else None
    return (info.series_number, info.kernel.upper(), thickness, info.image_type[:2])


def _ranges_overlap(groups: list[list[InstanceInfo]]) -> bool:
    """Return True when the groups' slice positions interleave or overlap along the normal."""
    ranges = []
    for group in groups:
        along = [
            float(slice_normal(i.orientation) @ i.position_xyz_mm)
            for i in group
            if i.orientation is not None and i.position_xyz_mm is not None
        ]
        if len(along) < len(group):
            return False
        ranges.append((min(along), max(along)))
    ranges.sort()
    return any(later[0] <= earlier[1] for earlier, later in zip(ranges, ranges[1:], strict=False))


def _reconstruction_text(group: list[InstanceInfo]) -> str:
    info = group[0]
    parts = [f"series {info.series_number}" if info.series_number is not None else "series"]
    if info.kernel:
        parts.append(info.kernel)
    parts.append(_thickness_text(info.slice_thickness_mm))
    if info.image_type:
        parts.append("\\".join(info.image_type[:2]))
    return f"{' '.join(parts)} ({len(group)} images)"


def _split_reconstructions(
    members: list[InstanceInfo],
) -> tuple[list[InstanceInfo], list[list[InstanceInfo]]]:
    """Separate the images of different reconstructions that share one SeriesInstanceUID.

    Anonymisers that rewrite UIDs can give two reconstructions (another kernel or thickness)
    one SeriesInstanceUID; stacking them would interleave two images per position. The group
    the choice rule ranks first is kept; the others are returned to be listed as excluded.
    """
    by_kind: dict[tuple[Any, ...], dict[Any, list[InstanceInfo]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for info in members:
        recon = _reconstruction_key(info)
        by_kind[recon[:2] + recon[3:]][recon[2]].append(info)
    groups: list[list[InstanceInfo]] = []
    for by_thickness in by_kind.values():
        if len(by_thickness) > 1 and not _ranges_overlap(list(by_thickness.values())):
            # Thickness that changes along the stack without interleaving is one protocol
            # with two spacings (see geometry._plan_spacing), not two reconstructions.
            groups.append([info for group in by_thickness.values() for info in group])
        else:
            groups.extend(by_thickness.values())
    if len(groups) == 1:
        return members, []

    def key(group: list[InstanceInfo]) -> tuple[int, int, float, int, int, str]:
        info = group[0]
        return rank_key(
            classify_kernel(info.kernel, info.series_description),
            info.image_type[:1] == ("DERIVED",),
            info.slice_thickness_mm,
            len(group),
            info.series_number,
            info.sop_instance_uid,
        )

    ranked = sorted(groups, key=key)
    return ranked[0], ranked[1:]


def _note_other_reconstructions(
    series: SeriesInfo, kept: list[InstanceInfo], others: list[list[InstanceInfo]]
) -> None:
    for group in others:
        reason = (
            f"another reconstruction ({_reconstruction_text(group)}) with the same "
            "SeriesInstanceUID"
        )
        series.excluded.extend(SkippedFile(i.path, "other_reconstruction", reason) for i in group)
    series.add_note(
        "warning",
        "shared_series_uid",
        f"the SeriesInstanceUID is shared by {len(others) + 1} reconstructions (often after "
        "an anonymiser rewrote UIDs); they were not stacked together. Kept "
        f"{_reconstruction_text(kept)}; left out "
        + "; ".join(_reconstruction_text(group) for group in others)
        + ". To analyse another, upload it with its own SeriesInstanceUID.",
    )


def choose_series(
    result: ScanResult, *, target_thickness_mm: float = TARGET_SLICE_THICKNESS_MM
) -> SeriesInfo | None:
    """Mark the series chosen by the rule in :mod:`inference.dicom.classify` and give reasons."""
    for series in result.series:
        series.chosen = False
    candidates = [series for series in result.series if series.eligible]

    def key(series: SeriesInfo) -> tuple[int, int, float, int, int, str]:
        return rank_key(
            series.kernel_class,
            series.is_derived,
            series.slice_thickness_mm,
            series.n_instances,
            series.series_number,
            series.series_instance_uid,
            target_thickness_mm,
        )

    for series in result.series:
        if series.kind in ELIGIBLE_KINDS and series.n_instances < MIN_SLICES:
            series.reason = (
                f"not chosen: only {series.n_instances} image(s); at least {MIN_SLICES} are "
                "needed for a volume"
            )
        elif not series.eligible:
            series.reason = f"not chosen: {series.reason}"
    if not candidates:
        return None

    candidates.sort(key=key)
    best = candidates[0]
    best.chosen = True
    thickness = _thickness_text(best.slice_thickness_mm)
    best.reason = (
        f"chosen: {best.kind} CT, {best.kernel_class.replace('_', '-')} kernel"
        f"{' (' + best.kernel + ')' if best.kernel else ''}, {thickness} slices "
        f"(target {target_thickness_mm:g} mm), {best.n_instances} images"
    )
    best_key = key(best)
    for series in candidates[1:]:
        series.reason = "not chosen: " + _compare(series, key(series), best, best_key)
    studies = {series.study_instance_uid for series in candidates}
    if len(studies) > 1:
        result.notes.append(
            Note(
                "warning",
                "several_studies",
                f"the input contains {len(studies)} studies with usable series; the best series "
                f"of all of them was chosen ({best.label}). Scan one study at a time to choose "
                "within a study.",
            )
        )
    return best


def _thickness_text(thickness_mm: float | None) -> str:
    return f"{thickness_mm:g} mm" if thickness_mm is not None else "unknown-thickness"


def _compare(
    series: SeriesInfo,
    series_key: tuple[int, int, float, int, int, str],
    best: SeriesInfo,
    best_key: tuple[int, int, float, int, int, str],
) -> str:
    """Explain which step of the choice rule ranked ``series`` below ``best``."""
    if series_key[0] != best_key[0]:
        kernel = f" ({series.kernel})" if series.kernel else ""
        return (
            f"{series.kernel_class.replace('_', '-')} kernel{kernel}; {best.label} has a "
            f"{best.kernel_class.replace('_', '-')} kernel"
        )
    if series_key[1] != best_key[1]:
        return f"derived (reformatted) images; {best.label} has original images"
    if series_key[2] != best_key[2]:
        return (
            f"{_thickness_text(series.slice_thickness_mm)} slices; {best.label} at "
            f"{_thickness_text(best.slice_thickness_mm)} is closer to the target thickness"
        )
    if series_key[3] != best_key[3]:
        return f"{series.n_instances} images; {best.label} is more complete ({best.n_instances})"
    return f"equivalent to {best.label}, which comes first by series number and UID"
