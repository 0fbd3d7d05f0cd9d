"""Cost of one training step per method, against source-only on the same batch.

One ``Trainer.train_step`` (forward, losses, backward, AdamW step; clipping and AMP off) at
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

from bench.methods.cards import resolve_method
from bench.models.pose_net import ModelConfig
from bench.trainer import TrainConfig, Trainer

BATCH = 32
METHODS = ("source-only", "ddc", "dan", "dann", "causal-interventions")


@pytest.fixture(scope="module")
def shared(hand_pair, tmp_path_factory):
    pair = hand_pair(n_train=64, n_test=16, size=64)
    config = TrainConfig(batch_size=BATCH, grad_clip=0.0, amp="none")
    # One DA batch for every method (source-only reads its "source" part only).
    probe = make_trainer("ddc", pair, config, tmp_path_factory.mktemp("probe"))
    batch = {role: probe._to_device(next(it)) for role, it in probe._loaders().items()}
    return pair, config, batch


def make_trainer(entry: str, pair, config: TrainConfig, workdir) -> Trainer:
    torch.manual_seed(0)
    resolved = resolve_method(entry)  # card defaults: dan = linear estimator
    # The card's model settings (causal interventions: a volumetric head) apply, as in a grid.
    method = resolved.cls(resolved.hparams, ModelConfig(**resolved.card.model), 21, pair.root)
    trainer = Trainer(method, pair, config, seed=0, workdir=workdir, progress=False)
    trainer.make_optimizer([p for p in method.parameters() if p.requires_grad], 1.0)
    method.train()
    return trainer


@pytest.mark.benchmark(group="method-step-cost")
@pytest.mark.parametrize("entry", METHODS)
def test_method_step(benchmark, shared, entry, tmp_path):
    pair, config, batch = shared
    trainer = make_trainer(entry, pair, config, tmp_path)
    domains = 1 if entry == "source-only" else 2
    benchmark.extra_info["images_per_step"] = domains * len(batch["source"]["images"])
    stage = trainer.method.stages()[-1].name  # the main (last) stage
    loss = benchmark.pedantic(
        lambda: trainer.train_step(stage, batch, 0, 0.5),
        rounds=5 if not benchmark.disabled else 1,
        warmup_rounds=1 if not benchmark.disabled else 0,
    )
    assert torch.isfinite(loss)
