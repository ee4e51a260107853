"""One place that seeds every random number generator a training run uses."""

from __future__ import annotations

import logging
import os
import random

import numpy as np
import torch

logger = logging.getLogger(__name__)

# Largest seed that NumPy's legacy global generator accepts. PyTorch accepts larger seeds, but
# one range for all three keeps a stored seed reusable everywhere.
MAX_SEED = 2**32 - 1


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch, and make PyTorch use deterministic algorithms only.

    With this call at the start of a run, the same code, seed, library versions, hardware and
    thread count give bit-identical weights. Deterministic mode makes PyTorch raise
    ``RuntimeError`` on an operation that has no deterministic implementation, instead of
    silently returning results that vary between runs. The mode stays on for the rest of the
    process.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}; pass an integer seed")
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed {seed} is outside 0..{MAX_SEED}; pass a seed in that range")

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    # cuBLAS is deterministic only with a fixed workspace size. CUDA reads this variable when it
    # initialises, so setting it has no effect once CUDA is in use in this process.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True)
    logger.debug("Seeded Python, NumPy and PyTorch with %d, deterministic algorithms on", seed)
