"""Where the U-Net runs: the INFERENCE_DEVICE choices and their errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from inference.errors import ModelArtifactError
from inference.models.registry import ModelRegistry
from inference.models.unet import predict_unet, resolve_device
from inference.pipeline import ModelSet, analyse_volume, predict_volume
from inference.radiomics import load_settings
from inference.synthetic import generate_case_volume

DEMO_MODELS = Path(__file__).resolve().parents[2] / "models" / "demo"
NO_CUDA = not torch.cuda.is_available()


def test_cpu_is_the_cpu() -> None:
    assert resolve_device("cpu") == torch.device("cpu")


def test_auto_takes_cuda_only_when_visible() -> None:
    expected = "cpu" if NO_CUDA else "cuda"
    assert resolve_device("auto").type == expected


@pytest.mark.skipif(not NO_CUDA, reason="a CUDA device is visible here")
def test_cuda_without_a_device_names_the_setting() -> None:
    with pytest.raises(ModelArtifactError) as raised:
        resolve_device("cuda")
    assert raised.value.code == "device_unavailable"
    assert "sees no CUDA device" in raised.value.message
    assert "set INFERENCE_DEVICE to cpu or auto" in raised.value.message


def test_unknown_device_is_rejected() -> None:
    with pytest.raises(ModelArtifactError, match="unknown inference device 'tpu'"):
        resolve_device("tpu")


@pytest.fixture(scope="module")
def demo_models() -> ModelSet:
    if not DEMO_MODELS.is_dir():
        pytest.skip(f"no bundled demo models at {DEMO_MODELS}")
    return ModelSet(ModelRegistry(DEMO_MODELS), load_settings())


def test_auto_gives_the_cpu_result_here(demo_models: ModelSet) -> None:
    if not NO_CUDA:
        pytest.skip("auto would run on the GPU here")
    volume = generate_case_volume("CE", seed=(7,), matrix=256).baseline_volume()
    unet = demo_models.estimator(demo_models.records["unet"])
    on_cpu = predict_unet(volume, unet, "cpu")
    on_auto = predict_unet(volume, unet, "auto")
    assert on_auto.probabilities == on_cpu.probabilities
    assert np.array_equal(on_auto.mask, on_cpu.mask)


@pytest.mark.skipif(not NO_CUDA, reason="a CUDA device is visible here")
def test_missing_gpu_fails_only_the_unet_row(demo_models: ModelSet) -> None:
    demo_models.device = "cuda"
    try:
        analysis = analyse_volume(
            generate_case_volume("HT", seed=(31,), matrix=256).baseline_volume()
        )
        outputs = {output.kind: output for output in predict_volume(analysis, demo_models)}
    finally:
        demo_models.device = "cpu"
    assert outputs["unet"].error is not None
    assert outputs["unet"].error["code"] == "device_unavailable"
    # The hybrid stacks only the radiomics models, so it and they still predict.
    for name in ("lr", "rf", "svm", "hybrid"):
        assert outputs[name].error is None, outputs[name].error
