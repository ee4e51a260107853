"""Versioned pyradiomics settings shipped with the package.

A settings file is JSON with a ``name``, a ``version``, the ``pyradiomics`` parameter block
(``setting``, ``imageType``, ``featureClass``, as pyradiomics' own parameter files),
``minimum_voxels`` per feature class after resampling, and ``optional_image_types`` (LoG,
wavelet) that stay off unless requested. The sha256 of the file's canonical JSON and the
enabled optional filters is stored with every extraction and every model, and the pipeline
rejects a model whose hash differs, so features computed under different settings are not
mixed.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inference.errors import InferenceError

SETTINGS_DIR = Path(__file__).resolve().parent / "settings"
DEFAULT_SETTINGS_NAME = "ct-hyperdensity-v1"


@dataclass(frozen=True)
class RadiomicsSettings:
    """One parsed settings file with its identity."""

    name: str
    version: str
    sha256: str
    bbox_margin_voxels: int
    minimum_voxels: dict[str, int]
    pyradiomics: dict[str, Any]
    optional_image_types: dict[str, dict[str, Any]]
    enabled_optional: tuple[str, ...] = ()

    @property
    def settings_id(self) -> str:
        return f"{self.name}-v{self.version}"

    def extractor_params(self, *, resample: bool = True) -> dict[str, Any]:
        """Return the pyradiomics parameter dictionary.

        With ``resample=False`` the interpolation settings are dropped, for images that were
        already resampled onto pyradiomics' grid by the bounding-box path.
        """
        params = copy.deepcopy(self.pyradiomics)
        for name in self.enabled_optional:
            params["imageType"][name] = copy.deepcopy(self.optional_image_types[name])
        if not resample:
            params["setting"].pop("resampledPixelSpacing", None)
            params["setting"].pop("interpolator", None)
        return params

    @property
    def resampled_spacing_xyz_mm(self) -> tuple[float, float, float] | None:
        spacing = self.pyradiomics["setting"].get("resampledPixelSpacing")
        return (
            None if spacing is None else (float(spacing[0]), float(spacing[1]), float(spacing[2]))
        )

    def provenance(self) -> dict[str, Any]:
        return {
            "settings_id": self.settings_id,
            "settings_sha256": self.sha256,
            "optional_image_types": list(self.enabled_optional),
        }


def load_settings(
    name_or_path: str | Path = DEFAULT_SETTINGS_NAME, enable_optional: tuple[str, ...] = ()
) -> RadiomicsSettings:
    """Read a shipped settings file by name, or any settings file by path.

    ``enable_optional`` turns on optional image types such as ``("LoG", "Wavelet")``.
    """
    path = Path(name_or_path)
    if not path.suffix:
        path = SETTINGS_DIR / f"{name_or_path}.json"
    if not path.is_file():
        shipped = sorted(item.stem for item in SETTINGS_DIR.glob("*.json"))
        raise InferenceError(
            f"radiomics settings {name_or_path!r} not found; shipped settings are {shipped}",
            path=str(path),
            code="radiomics_settings_not_found",
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise InferenceError(
            f"radiomics settings {path} is not valid JSON: {error}",
            path=str(path),
            code="radiomics_settings_invalid",
        ) from error
    for key in ("name", "version", "pyradiomics"):
        if key not in data:
            raise InferenceError(
                f"radiomics settings {path} lacks the {key!r} field",
                path=str(path),
                code="radiomics_settings_invalid",
            )
    optional = data.get("optional_image_types", {})
    unknown = sorted(set(enable_optional) - set(optional))
    if unknown:
        raise InferenceError(
            f"optional image types {unknown} are not defined in {path}; "
            f"available: {sorted(optional)}",
            path=str(path),
            code="radiomics_settings_invalid",
        )
    # Enabled optional filters change the feature set, so they are part of the identity.
    # Without them the hash is that of the file alone.
    identity: dict[str, Any] = (
        {"file": data, "enabled_optional": sorted(enable_optional)} if enable_optional else data
    )
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return RadiomicsSettings(
        name=str(data["name"]),
        version=str(data["version"]),
        sha256=hashlib.sha256(canonical).hexdigest(),
        bbox_margin_voxels=int(data.get("bbox_margin_voxels", 16)),
        minimum_voxels={
            str(key): int(value) for key, value in data.get("minimum_voxels", {}).items()
        },
        pyradiomics=data["pyradiomics"],
        optional_image_types=optional,
        enabled_optional=tuple(enable_optional),
    )
