"""Slice positions stored for every instance of the chosen series, in one UPDATE."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from rest_framework.test import APIClient

from tests.webapp.test_ingest_support import (  # noqa: F401 - fixtures
    as_uploads,
    ingest_settings,
    test_model_dir,
    write_study,
)
from webapp.core.models import Case, Instance

pytestmark = pytest.mark.usefixtures("ingest_settings")


def test_every_instance_gets_its_position(coordinator: Any, tmp_path: Path) -> None:
    Case.objects.create(code="POS-001")
    other = Case.objects.create(code="POS-002")
    api = APIClient()
    api.force_authenticate(coordinator)
    for code, folder in (("POS-001", "a"), ("POS-002", "b")):
        paths = write_study(tmp_path / folder, 7)
        data = {"role": "baseline", "hours_after_mt": "2", "files": as_uploads(paths)}
        response = api.post(f"/api/v1/cases/{code}/studies/", data, format="multipart")
        assert response.status_code == 201, response.content

    rows = list(
        Instance.objects.filter(series__study__case__code="POS-001")
        .order_by("instance_number")
        .values_list("instance_number", "slice_position_mm")
    )
    # write_study: 2 mm apart from z = 0, instance numbers 1..7 in slice order.
    assert rows == [(number, 2.0 * (number - 1)) for number in range(1, 8)]
    assert not Instance.objects.filter(series__study__case=other, slice_position_mm=None).exists()
