"""Re-uploading a study stored by an earlier version of the de-identification.

The stored headers then differ from what the current code writes for the same originals, so
the hashes differ although the UIDs are the same. The same image is reported as already
stored and the stored file is kept; a different image under the same UID is still a conflict.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest
from rest_framework.test import APIClient

from tests.webapp.test_ingest_support import (  # noqa: F401 - fixtures
    as_uploads,
    ingest_settings,
    test_model_dir,
    write_study,
)
from webapp.core.models import Case, Instance
from webapp.ingest.storage import store_instance_bytes, stored_path

pytestmark = pytest.mark.usefixtures("ingest_settings")


@pytest.fixture
def client_api(coordinator: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(coordinator)
    return client


def post(api: APIClient, code: str, paths: list[Path]) -> dict[str, Any]:
    data = {"role": "baseline", "hours_after_mt": "2", "files": as_uploads(paths)}
    response = api.post(f"/api/v1/cases/{code}/studies/", data, format="multipart")
    assert response.status_code == 201, response.content
    return dict(response.json())


def rewrite_stored(change: Callable[[pydicom.Dataset], None]) -> dict[str, str]:
    """Re-encode every stored instance with ``change`` applied, as older code might have.

    Returns SOPInstanceUID -> the new sha256 of each stored file.
    """
    hashes = {}
    for instance in Instance.objects.all():
        dataset = pydicom.dcmread(stored_path(instance.file.name))
        change(dataset)
        buffer = io.BytesIO()
        dataset.save_as(buffer, enforce_file_format=True)
        name, digest = store_instance_bytes(buffer.getvalue())
        Instance.objects.filter(pk=instance.pk).update(
            file=name, sha256=digest, size_bytes=len(buffer.getvalue())
        )
        hashes[instance.sop_instance_uid] = digest
    return hashes


def older_profile(dataset: pydicom.Dataset) -> None:
    """Header differences of an older de-identification: other method text, a kept element."""
    dataset.DeidentificationMethod = "an earlier profile"
    dataset.ProtocolName = "kept by an earlier profile"
    dataset.file_meta.ImplementationVersionName = "OLDER_0_1"


def test_study_stored_by_older_deidentification_is_already_stored(
    client_api: APIClient, tmp_path: Path
) -> None:
    Case.objects.create(code="RE-001")
    paths = write_study(tmp_path / "in", 4)
    assert post(client_api, "RE-001", paths)["instances_stored"] == 4
    older = rewrite_stored(older_profile)

    report = post(client_api, "RE-001", paths)

    assert report["instances_stored"] == 0
    assert report["instances_already_stored"] == 4
    assert report["skipped"] == []
    # The stored bytes are kept as they were.
    assert dict(Instance.objects.values_list("sop_instance_uid", "sha256")) == older


@pytest.mark.parametrize(
    "change",
    [
        lambda ds: setattr(ds, "ImagePositionPatient", [0.0, 0.0, 999.0]),
        lambda ds: setattr(ds, "RescaleIntercept", "-1000"),
        lambda ds: setattr(ds, "PixelData", bytes(len(ds.PixelData))),
    ],
    ids=["position", "rescale", "pixels"],
)
def test_other_image_under_the_same_uid_is_still_a_conflict(
    client_api: APIClient, tmp_path: Path, change: Callable[[pydicom.Dataset], None]
) -> None:
    Case.objects.create(code="RE-002")
    paths = write_study(tmp_path / "in", 3)
    post(client_api, "RE-002", paths)

    def older_and_other(dataset: pydicom.Dataset) -> None:
        older_profile(dataset)
        change(dataset)

    stored = rewrite_stored(older_and_other)

    report = post(client_api, "RE-002", paths)

    assert report["instances_already_stored"] == 0
    assert {item["reason"] for item in report["skipped"]} == {"conflicting_instance"}
    assert dict(Instance.objects.values_list("sop_instance_uid", "sha256")) == stored
