"""pyradiomics features of segmented hyperdensities, from a versioned settings file."""

from inference.radiomics.features import (
    FEATURE_CLASSES,
    CaseFeatures,
    LesionFeatures,
    aggregate_lesions,
    case_feature_names,
    extract_case_features,
    extract_lesion_features,
    pyradiomics_version,
    sha256_array,
)
from inference.radiomics.settings import DEFAULT_SETTINGS_NAME, RadiomicsSettings, load_settings

__all__ = [
    "DEFAULT_SETTINGS_NAME",
    "FEATURE_CLASSES",
    "CaseFeatures",
    "LesionFeatures",
    "RadiomicsSettings",
    "aggregate_lesions",
    "case_feature_names",
    "extract_case_features",
    "extract_lesion_features",
    "load_settings",
    "pyradiomics_version",
    "sha256_array",
]
