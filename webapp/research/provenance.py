"""Whether a model version was trained on synthetic data, for the note beside its results.

The bundled demo models and versions retrained on the synthetic demo cohort learned from
generated images, not patients, so every page and export that shows their results marks them.
"""

from __future__ import annotations

from webapp.jobs.models import ModelVersion

# Text in ModelVersion.intended_use that marks synthetic training data. The model registry
# writes "Research use only; not a medical device. Trained on synthetic data." for such models.
SYNTHETIC_MARKER = "synthetic"


def trained_on_synthetic_data(version: ModelVersion) -> bool:
    """Return whether the version's training cohort or intended use records synthetic data.

    Retraining in the app stores ``synthetic_training_data`` in the training cohort; versions
    registered by the inference worker carry only the registry's intended-use text.
    """
    cohort = version.training_cohort if isinstance(version.training_cohort, dict) else {}
    if cohort.get("synthetic_training_data") is True:
        return True
    return SYNTHETIC_MARKER in (version.intended_use or "").lower()
