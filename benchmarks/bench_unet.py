"""Benchmark the slice U-Net on CPU: inference per slice, training per epoch, malloc tuning.

Usage (from the repository root; --threads sets PyTorch's intra-op threads, default 1):

    python benchmarks/bench_unet.py inference [--sizes 128 256 512] [--base 8 16]
    python benchmarks/bench_unet.py predict       # predict_unet on one 40 x 512 x 512 study
    python benchmarks/bench_unet.py training [--cases 12] [--epochs 3] [--target-cases 72]
    python benchmarks/bench_unet.py malloc [--pairs 5] [--size 512] [--batch 4] [--base 16]
    python benchmarks/bench_unet.py --threads 2 malloc
    python benchmarks/bench_unet.py threads [--mode train infer]
    python benchmarks/bench_unet.py learning [--train-cases 30] [--test-cases 15] [--epochs 40]
    python benchmarks/bench_unet.py all

Every figure is a median over repeats measured inside the process, imports excluded. The
malloc and threads comparisons run each side in its own subprocess, alternating A B A B, because
glibc reads its tuning variables only at process start and a machine's load drifts.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Literal

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from inference.models.unet import (  # noqa: E402
    SegmentClassifyUNet,
    TrainedUNet,
    TrainingCase,
    UNetConfig,
    predict_unet,
    train_unet,
)

logger = logging.getLogger(__name__)

# Tuned glibc malloc settings, each compared with glibc's defaults. By default, blocks above
# the mmap threshold are mapped on allocation and unmapped on free, so every forward pass
# page-faults its large activations in again. The threshold can be fixed at 32 MiB at most on
# 64-bit (mallopt(3)). A high trim threshold keeps freed heap memory for the next batch, and
# two arenas suit two compute threads. "no-mmap" also sets MALLOC_MMAP_MAX_=0, so blocks above
# 32 MiB (activations of a 512 x 512 batch) come from the reusable heap as well.
MALLOC_VARIANTS = {
    "thresholds": {
        "MALLOC_ARENA_MAX": "2",
        "MALLOC_MMAP_THRESHOLD_": str(32 * 1024 * 1024),
        "MALLOC_TRIM_THRESHOLD_": str(1024 * 1024 * 1024),
    },
    "no-mmap": {
        "MALLOC_ARENA_MAX": "2",
        "MALLOC_MMAP_THRESHOLD_": str(32 * 1024 * 1024),
        "MALLOC_TRIM_THRESHOLD_": str(1024 * 1024 * 1024),
        "MALLOC_MMAP_MAX_": "0",
    },
}
MALLOC_VARIABLES = (
    "MALLOC_ARENA_MAX",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_MMAP_MAX_",
    "MALLOC_TOP_PAD_",
)


def base_features(base: int) -> tuple[int, ...]:
    """Encoder widths doubling from ``base`` and a last decoder level of ``base``."""
    return (base, 2 * base, 4 * base, 8 * base, 16 * base, base)


def time_forward(network: SegmentClassifyUNet, batch: torch.Tensor, repeats: int) -> list[float]:
    """Time ``repeats`` forward passes after one warm-up and return the seconds of each."""
    times_s: list[float] = []
    with torch.inference_mode():
        network(batch)
        for _ in range(repeats):
            started = time.perf_counter()
            network(batch)
            times_s.append(time.perf_counter() - started)
    return times_s


def time_training_steps(
    network: SegmentClassifyUNet, batch: torch.Tensor, repeats: int
) -> list[float]:
    """Time ``repeats`` optimiser steps after one warm-up and return the seconds of each."""
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-3)
    targets = (torch.rand((batch.shape[0], 1, *batch.shape[2:])) > 0.95).float()
    classes = torch.zeros(batch.shape[0], dtype=torch.long)
    network.train()
    times_s: list[float] = []
    for step in range(repeats + 1):
        started = time.perf_counter()
        mask_logits, class_logits = network(batch)
        loss = F.binary_cross_entropy_with_logits(mask_logits, targets) + F.cross_entropy(
            class_logits, classes
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step:
            times_s.append(time.perf_counter() - started)
    return times_s


def bench_inference(sizes: list[int], bases: list[int], batch: int, repeats: int) -> list[dict]:
    """Measure the median network time per slice for each input size and base width."""
    rows = []
    for base in bases:
        for size in sizes:
            config = UNetConfig(image_size=size, features=base_features(base))
            torch.manual_seed(0)
            network = SegmentClassifyUNet(config).eval()
            images = torch.rand((batch, config.in_channels, size, size))
            times_s = time_forward(network, images, repeats)
            per_slice_s = statistics.median(times_s) / batch
            rows.append(
                {
                    "base": base,
                    "size": size,
                    "batch": batch,
                    "median_s_per_slice": round(per_slice_s, 4),
                    "min_s_per_slice": round(min(times_s) / batch, 4),
                    "max_s_per_slice": round(max(times_s) / batch, 4),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def synthetic_cases(count: int, matrix: int, seed: int) -> list[TrainingCase]:
    """Generate cases with the project's synthetic generator, taking the classes in turn."""
    from inference.synthetic.case import generate_case_volume

    labels: tuple[Literal["HT", "CE", "HT+CE"], ...] = ("HT", "CE", "HT+CE")
    cases = []
    for index in range(count):
        label = labels[index % len(labels)]
        case = generate_case_volume(label, seed=(seed, index), matrix=matrix)
        cases.append(TrainingCase(case.baseline_volume(), case.true_labels, label))
    return cases


def bench_predict(repeats: int, threads: int) -> dict:
    """Time ``predict_unet`` on one 40-slice 512 x 512 synthetic study with random weights."""
    from inference.synthetic.case import generate_case_volume

    case = generate_case_volume("HT", seed=1, matrix=512, n_slices=40)
    volume = case.baseline_volume()
    config = UNetConfig(num_threads=threads)
    torch.manual_seed(0)
    model = TrainedUNet(network=SegmentClassifyUNet(config).eval(), config=config, seed=0)
    predict_unet(volume, model)
    times_s = []
    for _ in range(repeats):
        started = time.perf_counter()
        predict_unet(volume, model)
        times_s.append(time.perf_counter() - started)
    row = {
        "slices": volume.shape[0],
        "matrix": volume.shape[1],
        "median_s": round(statistics.median(times_s), 3),
        "min_s": round(min(times_s), 3),
        "max_s": round(max(times_s), 3),
    }
    print(json.dumps(row), flush=True)
    return row


def bench_training(
    case_count: int, epochs: int, target_cases: int, matrix: int, threads: int
) -> dict:
    """Train a few epochs on generated cases and scale the epoch time to ``target_cases``.

    The epoch time grows with the number of training slices, so the estimate multiplies the
    measured time per slice by the slices that ``target_cases`` cases of the same kind give.
    """
    cases = synthetic_cases(case_count, matrix, seed=2026)
    config = UNetConfig(max_epochs=epochs, validation_fraction=0.0, num_threads=threads)
    model = train_unet(cases, config, seed=0)
    epoch_s = [row["seconds"] for row in model.history]
    # The first epoch includes one-off allocation and thread start-up.
    steady_s = statistics.median(epoch_s[1:] if len(epoch_s) > 1 else epoch_s)
    lesion_slices = [
        int((np.asarray(case.lesion_labels) > 0).any(axis=(1, 2)).sum()) for case in cases
    ]
    slices_per_case = statistics.mean(
        count + round(config.negative_slices_per_positive * count) for count in lesion_slices
    )
    training_slices = round(slices_per_case * case_count)
    per_slice_s = steady_s / training_slices
    row = {
        "cases": case_count,
        "matrix": matrix,
        "training_slices": training_slices,
        "epoch_s": [round(value, 2) for value in epoch_s],
        "median_epoch_s": round(steady_s, 2),
        "s_per_training_slice": round(per_slice_s, 4),
        "target_cases": target_cases,
        "estimated_epoch_s_at_target": round(per_slice_s * slices_per_case * target_cases, 1),
        "total_training_s": round(model.training_seconds, 1),
        "threads": threads,
    }
    print(json.dumps(row), flush=True)
    return row


def bench_learning(train_count: int, test_count: int, config: UNetConfig, threads: int) -> dict:
    """Train on generated 256 x 256 cases and report accuracy and lesion Dice on others."""
    train_cases = synthetic_cases(train_count, 256, seed=1)
    test_cases = synthetic_cases(test_count, 256, seed=2)
    config = dataclasses.replace(config, num_threads=threads)
    model = train_unet(train_cases, config, seed=0)
    correct = 0
    dice_values = []
    for case in test_cases:
        prediction = predict_unet(case.volume, model)
        truth = np.asarray(case.lesion_labels) > 0
        overlap = 2.0 * float((prediction.mask & truth).sum())
        dice_values.append(overlap / max(int(prediction.mask.sum() + truth.sum()), 1))
        correct += prediction.label == case.label
    row = {
        "train_cases": train_count,
        "test_cases": test_count,
        "learning_rate": config.learning_rate,
        "batch_size": config.batch_size,
        "epochs_run": len(model.history),
        "best_epoch": model.best_epoch,
        "final_train_loss": round(model.history[-1]["train_loss"], 3),
        "test_accuracy": round(correct / test_count, 3),
        "median_test_dice": round(float(np.median(dice_values)), 3),
        "training_s": round(model.training_seconds),
    }
    print(json.dumps(row), flush=True)
    return row


def worker(mode: str, size: int, batch: int, base: int, repeats: int) -> None:
    """Print the median seconds per batch of one mode (run in a subprocess)."""
    config = UNetConfig(image_size=size, features=base_features(base))
    torch.manual_seed(0)
    network = SegmentClassifyUNet(config)
    images = torch.rand((batch, config.in_channels, size, size))
    if mode == "train":
        times_s = time_training_steps(network, images, repeats)
    else:
        times_s = time_forward(network.eval(), images, repeats)
    print(json.dumps({"median_batch_s": statistics.median(times_s)}))


def run_worker(env: dict[str, str], args: list[str]) -> float:
    command = [sys.executable, str(Path(__file__).resolve()), *args]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return float(json.loads(completed.stdout.strip().splitlines()[-1])["median_batch_s"])


def compare(
    name: str,
    a: tuple[dict[str, str], list[str]],
    b: tuple[dict[str, str], list[str]],
    pairs: int,
    details: dict,
) -> dict:
    """Run workers A and B in turn ``pairs`` times and report medians and the A / B ratio."""
    a_s, b_s, ratios = [], [], []
    for _ in range(pairs):
        a_s.append(run_worker(*a))
        b_s.append(run_worker(*b))
        ratios.append(a_s[-1] / b_s[-1])
    row = {
        "comparison": name,
        **details,
        "pairs": pairs,
        "median_a_batch_s": round(statistics.median(a_s), 3),
        "median_b_batch_s": round(statistics.median(b_s), 3),
        "median_ratio_a_over_b": round(statistics.median(ratios), 3),
        "ratio_min": round(min(ratios), 3),
        "ratio_max": round(max(ratios), 3),
    }
    print(json.dumps(row), flush=True)
    return row


def worker_args(mode: str, size: int, batch: int, base: int, repeats: int, threads: int) -> list:
    return [
        "--threads", str(threads), "worker", "--mode", mode, "--size", str(size),
        "--batch", str(batch), "--base", str(base), "--repeats", str(repeats),
    ]  # fmt: skip


def bench_malloc(
    variant: str, size: int, batch: int, base: int, repeats: int, threads: int, pairs: int
) -> dict:
    """Compare glibc's default malloc (A) with a tuned variant (B) on batched inference."""
    default_env = {key: value for key, value in os.environ.items() if key not in MALLOC_VARIABLES}
    tuned_env = {**default_env, **MALLOC_VARIANTS[variant]}
    args = worker_args("infer", size, batch, base, repeats, threads)
    details = {"variant": variant, "size": size, "batch": batch, "base": base, "threads": threads}
    return compare("malloc default / tuned", (default_env, args), (tuned_env, args), pairs, details)


def bench_threads(mode: str, size: int, batch: int, base: int, repeats: int, pairs: int) -> dict:
    """Compare 2 intra-op threads (A) with 1 thread (B); a ratio above 1 favours 1 thread."""
    env = dict(os.environ)
    details = {"mode": mode, "size": size, "batch": batch, "base": base}
    return compare(
        "2 threads / 1 thread",
        (env, worker_args(mode, size, batch, base, repeats, 2)),
        (env, worker_args(mode, size, batch, base, repeats, 1)),
        pairs,
        details,
    )


def machine_line() -> str:
    return (
        f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads, glibc {platform.libc_ver()[1]}, "
        f"numpy {np.__version__}, {time.strftime('%Y-%m-%d', time.gmtime())}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="PyTorch intra-op threads")
    commands = parser.add_subparsers(dest="command", required=True)

    inference = commands.add_parser("inference", help="network time per slice")
    inference.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512])
    inference.add_argument(
        "--base",
        type=int,
        nargs="+",
        default=[8, 16],
        help="widths of the first encoder level to measure",
    )
    inference.add_argument("--batch", type=int, default=8, help="slices per forward pass")
    inference.add_argument("--repeats", type=int, default=7)

    predict = commands.add_parser("predict", help="predict_unet on a 40 x 512 x 512 study")
    predict.add_argument("--repeats", type=int, default=5)

    training = commands.add_parser("training", help="training time per epoch")
    training.add_argument("--cases", type=int, default=12, help="generated cases to train on")
    training.add_argument("--epochs", type=int, default=3)
    training.add_argument("--target-cases", type=int, default=72)
    training.add_argument("--matrix", type=int, default=256, choices=[256, 512])

    malloc = commands.add_parser("malloc", help="default vs tuned glibc malloc, A/B")
    malloc.add_argument("--pairs", type=int, default=5)
    malloc.add_argument("--size", type=int, default=512)
    malloc.add_argument("--batch", type=int, default=4)
    malloc.add_argument("--base", type=int, default=16)
    malloc.add_argument("--repeats", type=int, default=5)
    malloc.add_argument(
        "--variant", choices=sorted(MALLOC_VARIANTS), nargs="+", default=sorted(MALLOC_VARIANTS)
    )

    threads = commands.add_parser("threads", help="2 threads vs 1 thread, A/B")
    threads.add_argument("--pairs", type=int, default=5)
    threads.add_argument(
        "--mode", choices=["train", "infer"], nargs="+", default=["train", "infer"]
    )
    threads.add_argument("--size", type=int, default=128)
    threads.add_argument("--batch", type=int, default=16)
    threads.add_argument("--base", type=int, default=8)
    threads.add_argument("--repeats", type=int, default=5)

    learning = commands.add_parser("learning", help="accuracy and Dice on generated cases")
    learning.add_argument("--train-cases", type=int, default=30)
    learning.add_argument("--test-cases", type=int, default=15)
    learning.add_argument("--epochs", type=int, default=40)
    learning.add_argument("--learning-rate", type=float, default=UNetConfig.learning_rate)
    learning.add_argument("--batch", type=int, default=UNetConfig.batch_size)

    hidden = commands.add_parser("worker", help=argparse.SUPPRESS)
    hidden.add_argument("--mode", choices=["train", "infer"], required=True)
    hidden.add_argument("--size", type=int, required=True)
    hidden.add_argument("--batch", type=int, required=True)
    hidden.add_argument("--base", type=int, required=True)
    hidden.add_argument("--repeats", type=int, required=True)

    commands.add_parser("all", help="every benchmark with its defaults")
    options = parser.parse_args()
    torch.set_num_threads(options.threads)

    if options.command == "worker":
        worker(options.mode, options.size, options.batch, options.base, options.repeats)
        return
    print(machine_line(), flush=True)
    run_all = options.command == "all"
    if options.command == "inference":
        bench_inference(options.sizes, options.base, options.batch, options.repeats)
    elif run_all:
        bench_inference([128, 256, 512], [8, 16], 8, 7)
    if options.command == "predict" or run_all:
        bench_predict(5 if run_all else options.repeats, options.threads)
    if options.command == "training":
        bench_training(
            options.cases, options.epochs, options.target_cases, options.matrix, options.threads
        )
    elif run_all:
        bench_training(12, 3, 72, 256, options.threads)
    if options.command == "malloc":
        for variant in options.variant:
            bench_malloc(
                variant,
                options.size,
                options.batch,
                options.base,
                options.repeats,
                options.threads,
                options.pairs,
            )
    elif run_all:
        for variant in sorted(MALLOC_VARIANTS):
            bench_malloc(variant, 512, 4, 16, 5, options.threads, 5)
            bench_malloc(variant, 128, 32, 8, 5, options.threads, 5)
    if options.command == "threads":
        for mode in options.mode:
            bench_threads(
                mode, options.size, options.batch, options.base, options.repeats, options.pairs
            )
    elif run_all:
        for mode in ("train", "infer"):
            bench_threads(mode, 128, 16, 8, 5, 5)
    if options.command == "learning":
        config = UNetConfig(
            max_epochs=options.epochs,
            learning_rate=options.learning_rate,
            batch_size=options.batch,
        )
        bench_learning(options.train_cases, options.test_cases, config, options.threads)


if __name__ == "__main__":
    main()
