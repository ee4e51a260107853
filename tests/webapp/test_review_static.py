"""Vendored viewer libraries: files present, and collectstatic with the production storage."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
VENDOR = PROJECT_ROOT / "static" / "vendor"
BUNDLES = [
    "cornerstone-core/2.6.1/cornerstone.min.js",
    "dicom-parser/1.8.21/dicomParser.min.js",
    "cornerstone-wado-image-loader/4.13.2/cornerstoneWADOImageLoader.bundle.min.js",
    "cornerstone-tools/6.0.10/cornerstoneTools.min.js",
    "cornerstone-math/0.1.10/cornerstoneMath.min.js",
    "hammerjs/2.0.8/hammer.min.js",
]


@pytest.mark.parametrize("bundle", BUNDLES)
def test_vendored_bundle_has_map_and_licence(bundle: str) -> None:
    path = VENDOR / bundle
    tail = path.read_bytes()[-200:].decode()
    map_name = tail.rsplit("sourceMappingURL=", 1)[1].strip()

    assert (path.parent / map_name).is_file()
    assert any(path.parent.glob("LICENSE*"))
    assert bundle.split("/")[0] in (VENDOR / "MANIFEST.md").read_text()


def test_collectstatic_with_manifest_storage(tmp_path: Path) -> None:
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "webapp.settings",
        "DEBUG": "false",
        "SECRET_KEY": "collectstatic-test-key-" + "x" * 40,
        "STATIC_ROOT": str(tmp_path / "static"),
        "STATIC_MANIFEST": "true",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'unused.sqlite3'}",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput"],
        cwd=PROJECT_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=240,
    )

    assert result.returncode == 0, result.stderr[-3000:]
    manifest = (tmp_path / "static" / "staticfiles.json").read_text()
    assert "vendor/cornerstone-core/2.6.1/cornerstone.min.js" in manifest
    assert "js/viewer/main.js" in manifest
    hashed = next((tmp_path / "static" / "vendor" / "hammerjs" / "2.0.8").glob("hammer.min.*.js"))
    assert "sourceMappingURL=hammer.min." in hashed.read_text()
