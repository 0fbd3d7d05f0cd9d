"""Cost of one training step per method, against source-only on the same batch.

One stage-updater step (forward, losses, backward, AdamW step; clipping and AMP off) at
64 px with ResNet-18 and batch 32. Source-only runs the 32 source images; the DA methods run
source + target (64 images) in one pass plus their alignment loss (causal interventions
also a VAE and a volumetric head, in its joint stage), so the ratio to
source-only is what a DA method costs per step. All in group "method-step-cost".

Run with ``pytest tests/benchmarks/test_bench_methods.py --benchmark-enable``; under the
default ``--benchmark-disable`` each method runs one step as a test.
"""

from __future__ import annotations

import pytest
import torch

from bench.methods.base import build_method
from bench.methods.cards import resolve_method
from bench.models.pose_net import ModelConfig
from bench.trainer import TrainConfig, Trainer
from benchmarks.steps import time_stage_step

BATCH = 32
METHODS = ("source-only", "ddc", "dan", "dann", "causal-interventions")


@pytest.fixture(scope="module")
def shared(hand_pair):
    pair = hand_pair(n_train=64, n_test=16, size=64)
    return pair, TrainConfig(batch_size=BATCH, grad_clip=0.0, amp="none")


def make_trainer(entry: str, pair, config: TrainConfig, workdir) -> Trainer:
    torch.manual_seed(0)
    resolved = resolve_method(entry)  # card defaults: dan = linear estimator
    # The card's model settings (causal interventions: a volumetric head) apply, as in a grid.
    model = ModelConfig(**resolved.card.model)
    method = build_method(resolved.spec, resolved.hparams, model, 21, pair.root)
    return Trainer(method, pair, config, seed=0, workdir=workdir, progress=False)


@pytest.mark.benchmark(group="method-step-cost")
@pytest.mark.parametrize("entry", METHODS)
def test_method_step(benchmark, shared, entry, tmp_path):
    pair, config = shared
    trainer = make_trainer(entry, pair, config, tmp_path)
    time_stage_step(benchmark, trainer, trainer.stages[-1].name)  # the main (last) stage
