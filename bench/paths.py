"""Where dabench finds its cards and keeps its data, overridable by environment variables.

Cards (``datasets/``, ``methods/``) and named grids live in the checkout next to the
``bench`` package: dabench is used from a clone (``pip install -e .``), as research code
usually is, and a Ray cluster receives the same tree through ``--working-dir``.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def dataset_cards_dir() -> Path:
    return Path(os.environ.get("DABENCH_DATASET_CARDS", REPO_ROOT / "datasets"))


def method_cards_dir() -> Path:
    return Path(os.environ.get("DABENCH_METHOD_CARDS", REPO_ROOT / "methods"))


def shard_root() -> Path:
    """Default root of converted/generated shards: ``$DABENCH_DATA`` or ``datasets/cache``."""
    return Path(os.environ.get("DABENCH_DATA", REPO_ROOT / "datasets" / "cache"))


def results_root() -> Path:
    return Path(os.environ.get("DABENCH_RESULTS", REPO_ROOT / "results"))
