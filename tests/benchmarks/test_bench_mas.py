"""Cost of Mask as Supervision (S003): a step of its last cascade stage on 4-view groups and
on single images, against a source-only step of the same network on as many images, and
the one-off cost of its geodesic artifact per 1,000 masks.

One stage-updater step (forward, losses, backward, Adam step) at 64 px with the quickstart's
network (regnetx_002 cut at stride 16, volumetric head, GroupNorm): 8 groups of 4 views or
32 single images — 32 images either way, plus their affinely warped copies for the
equivariance loss — with triangulation, re-projection, skeleton masks at 64², ψ and the
geodesic weights included. Group "mas-step-cost"; the artifact is group "mas-geodesic".

Run with ``pytest tests/benchmarks/test_bench_mas.py --benchmark-enable``; under the default
``--benchmark-disable`` each case runs once as a test.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.data.joints import get_joint_set
from bench.data.shards import ShardDataset
from bench.losses.geodesic import geodesic_weights_batch
from bench.methods.base import build_method
from bench.methods.cards import resolve_method
from bench.models.pose_net import ModelConfig
from bench.trainer import StageContext, TrainConfig, Trainer
from benchmarks.steps import time_stage_step

IMAGES = 32
MODEL = {"backbone": "regnetx_002", "feature_stride": 16, "head_channels": 64, "img_size": 64}
TINY_PSI = {"psi_channels": [16, 32, 64]}


@pytest.fixture(scope="module")
def pair(body_pair):
    return body_pair(n_train=128, n_test=32, size=64)


def _trainer(entry: str, hparams: dict, pair, batch: int, workdir, model=MODEL) -> Trainer:
    torch.manual_seed(0)
    resolved = resolve_method(entry, hparams or None)
    cfg = ModelConfig(**{"head": "volumetric", **model, **resolved.card.model})
    jset = get_joint_set(pair.joint_set)
    method = build_method(resolved.spec, resolved.hparams, cfg, jset.num_joints, pair.root, jset)
    config = TrainConfig(batch_size=batch, grad_clip=0.0, amp="none")
    return Trainer(method, pair, config, seed=0, workdir=workdir, progress=False)


def _bench(benchmark, trainer: Trainer, stage_name: str, artifacts: dict) -> None:
    for s in trainer.stages:
        trainer.method.on_stage_start(s, StageContext(artifacts))
        if s.name == stage_name:
            break
    trainer.artifacts = artifacts
    time_stage_step(benchmark, trainer, stage_name)


@pytest.mark.benchmark(group="mas-step-cost")
def test_source_only_step(benchmark, pair, tmp_path):
    trainer = _trainer("source-only", {}, pair, IMAGES, tmp_path)
    _bench(benchmark, trainer, "train", {})


@pytest.mark.slow
@pytest.mark.benchmark(group="mas-step-cost")
@pytest.mark.parametrize("training", ["multi-view", "single-view"])
def test_mask_supervision_stage3_step(benchmark, pair, training, tmp_path):
    hp = {**TINY_PSI, "training": training}
    batch = IMAGES // 4 if training == "multi-view" else IMAGES
    trainer = _trainer("mask-as-supervision", hp, pair, batch, tmp_path / "run")
    (tmp_path / "geodesic").mkdir()
    trainer.method.export_artifact("geodesic", tmp_path / "geodesic", pair)
    _bench(benchmark, trainer, "stage3", {"geodesic": tmp_path / "geodesic"})


@pytest.mark.benchmark(group="mas-geodesic")
def test_geodesic_weights_per_1000_masks(benchmark, pair):
    masks = np.stack([r["masks"].numpy() for r in ShardDataset(pair.target_train, ("masks",))])
    thousand = np.resize(masks, (1000 if not benchmark.disabled else 50, *masks.shape[1:]))
    weights = benchmark.pedantic(
        lambda: geodesic_weights_batch(thousand),
        rounds=3 if not benchmark.disabled else 1,
        warmup_rounds=0,
    )
    assert weights.shape == thousand.shape and np.isfinite(weights).all()
