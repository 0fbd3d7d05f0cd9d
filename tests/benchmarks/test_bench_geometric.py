"""Cost of a step of each stage of geometric reconstruction (Lin et al.), against a
source-only step of the same network on the same data.

One stage-updater step (forward, losses, backward, Adam step) at 64 px, batch 32, with the
quickstart's network (regnetx_002 cut at stride 16, 2.5D head of 64 channels) and the CPU
widths the synthetic grids use (VGG-19 layout at a quarter width with seeded weights, W and
G at 16 channels). Fine-tuning reads 32 source images and 32 target frame pairs (64 target
images: the student and the teacher on all of them, W and G on the pairs, the perceptual
loss on the reconstructions), so its ratio to source-only is what the method costs per step;
the reconstruction branch is most of it. All in group "geometric-step-cost".

Run with ``pytest tests/benchmarks/test_bench_geometric.py --benchmark-enable``; under the
default ``--benchmark-disable`` each stage runs one step as a test. Where a GPU is lent,
the paper's configuration (ResNet-101, 256², bf16) is measured too.
"""

from __future__ import annotations

import pytest
import torch

from bench.data.joints import get_joint_set
from bench.methods.base import build_method
from bench.methods.cards import resolve_method
from bench.models.pose_net import ModelConfig
from bench.trainer import StageContext, TrainConfig, Trainer
from benchmarks.steps import time_stage_step

BATCH = 32
CPU_WIDTHS = {
    "features": "random-vgg19",
    "feature_width": 0.25,
    "generator_channels": 16,
    "motion_channels": 16,
    "motion_max_channels": 128,
    "stride": (1, 3),  # the 8-frame synthetic sequences
}
MODEL = {"backbone": "regnetx_002", "feature_stride": 16, "head_channels": 64, "img_size": 64}
STAGES = ("stylenet", "pretrain", "generator", "finetune")


@pytest.fixture(scope="module")
def shared(hand_pair):
    pair = hand_pair(n_train=64, n_test=16, size=64)
    return pair, TrainConfig(batch_size=BATCH, grad_clip=0.0, amp="none")


def _trainer(entry: str, hparams: dict, pair, config, workdir, model: dict) -> Trainer:
    torch.manual_seed(0)
    resolved = resolve_method(entry, hparams or None)
    cfg = ModelConfig(**{**model, **resolved.card.model})
    jset = get_joint_set(pair.joint_set)
    method = build_method(resolved.spec, resolved.hparams, cfg, jset.num_joints, pair.root, jset)
    return Trainer(method, pair, config, seed=0, workdir=workdir, progress=False)


def _bench(benchmark, trainer: Trainer, stage_name: str) -> None:
    for s in trainer.stages:  # the start hooks of the stages up to this one, in order
        trainer.method.on_stage_start(s, StageContext({}))
        if s.name == stage_name:
            break
    if hasattr(trainer.method, "bone_count"):
        trainer.method.bone_sum.fill_(40.0)  # as if pre-training had seen the source
        trainer.method.bone_count.fill_(1.0)
    time_stage_step(benchmark, trainer, stage_name)


@pytest.mark.benchmark(group="geometric-step-cost")
def test_source_only_step(benchmark, shared, tmp_path):
    pair, config = shared
    trainer = _trainer("source-only", {}, pair, config, tmp_path, {**MODEL, "head": "2.5d"})
    _bench(benchmark, trainer, "train")


@pytest.mark.slow
@pytest.mark.benchmark(group="geometric-step-cost")
@pytest.mark.parametrize("stage", STAGES)
def test_geometric_stage_step(benchmark, shared, stage, tmp_path):
    pair, config = shared
    trainer = _trainer("geometric-reconstruction", CPU_WIDTHS, pair, config, tmp_path, MODEL)
    _bench(benchmark, trainer, stage)


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.benchmark(group="geometric-step-gpu")
@pytest.mark.parametrize("stage", ("pretrain", "finetune"))
def test_paper_configuration_step_with_bf16(benchmark, hand_pair, stage, tmp_path):
    """ResNet-101 at 256² with the three-deconvolution head, the paper's widths (VGG-19 at
    full width, W and G at 64 channels), batch 32, bf16 autocast on the device."""
    pair = hand_pair(n_train=64, n_test=16, size=256)
    config = TrainConfig(batch_size=BATCH, grad_clip=0.0, amp="bf16", device="cuda")
    model = {"backbone": "resnet101", "img_size": 256, "head_channels": 256}
    hparams = {"features": "random-vgg19", "stride": (1, 3)}
    trainer = _trainer("geometric-reconstruction", hparams, pair, config, tmp_path, model)
    _bench(benchmark, trainer, stage)
    benchmark.extra_info["device"] = torch.cuda.get_device_name()
