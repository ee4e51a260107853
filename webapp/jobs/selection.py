"""Which registered model versions an inference job runs: promotion decides.

For each model name in the registry, a job runs the most recently registered version that is
promoted in the database. A name with no promoted version runs its newest version, except
versions trained from the app, whose registry cohort id starts with ``APP_TRAINED_PREFIX``.
Those run only once promoted, so nothing a researcher trains reaches new cases silently. This
applies even for a version left on disk by a run that failed before it reached the database.
"""

from __future__ import annotations

import logging

from inference.models.registry import ModelRegistry
from inference.models.registry import ModelVersion as RegistryVersion
from webapp.jobs.models import ModelVersion

logger = logging.getLogger(__name__)

# Registry ``training_cohort_id`` prefix of versions registered by a retraining run.
APP_TRAINED_PREFIX = "ceht-review-training-run-"


def registry_model_id(row: ModelVersion) -> str:
    """Return the registry id (``name:version``) of a database row."""
    return str((row.params or {}).get("model_id") or f"{row.kind}:{row.version}")


def _newest(records: list[RegistryVersion]) -> RegistryVersion | None:
    return max(records, key=lambda record: (record.created_utc, record.version), default=None)


def select_model_records(registry: ModelRegistry) -> dict[str, RegistryVersion]:
    """Return the version to run for each model name, as ``ModelSet.records`` expects."""
    promoted = {
        registry_model_id(row)
        for row in ModelVersion.objects.filter(is_promoted=True).only("kind", "version", "params")
    }
    by_name: dict[str, list[RegistryVersion]] = {}
    for record in registry.list_versions():
        by_name.setdefault(record.name, []).append(record)
    selected: dict[str, RegistryVersion] = {}
    for name, records in by_name.items():
        choice = _newest([r for r in records if r.model_id in promoted]) or _newest(
            [r for r in records if not r.training_cohort_id.startswith(APP_TRAINED_PREFIX)]
        )
        if choice is not None:
            selected[name] = choice
    logger.info(
        "Models selected for inference: %s",
        ", ".join(sorted(record.model_id for record in selected.values())) or "none",
    )
    return selected
