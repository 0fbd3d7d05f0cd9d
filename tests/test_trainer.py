"""Trainer behaviour: schedules, parameter groups, AMP paths, clipping, devices, stages,
frozen modules, checkpoints."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from bench.config import TrainConfig
from bench.errors import DabenchError
from bench.methods.base import build_method
from bench.methods.cards import resolve_method
from bench.methods.spec import Optim, Schedule
from bench.models.pose_net import ModelConfig
from bench.optim import build_optimizer, decays, layer_scales, lr_factor, warmup_cosine
from bench.trainer import CHECKPOINT, StageUpdater, StepContext, Trainer, seed_everything


@pytest.fixture(scope="module")
def pair(hand_pair):
    return hand_pair(n_train=48, n_test=16, size=32)


def build(method="source-only", **model):
    resolved = resolve_method(method)
    torch.manual_seed(0)
    config = ModelConfig(img_size=32, head_channels=16, **{**resolved.card.model, **model})
    return build_method(resolved.spec, resolved.hparams, config, 21, 0)


def trainer(pair, tmp_path, method="source-only", **train):
    settings = dict(
        steps=4, batch_size=8, eval_every=4, warmup_steps=1, log_every=2, eval_batch_size=16
    )
    config = TrainConfig(**{**settings, **train})
    return Trainer(build(method), pair, config, seed=0, workdir=tmp_path, progress=False)


# -- schedules ------------------------------------------------------------------------------
def test_warmup_then_cosine_to_zero():
    assert warmup_cosine(0, 100, 10) == pytest.approx(0.1)
    assert warmup_cosine(9, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(10, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(55, 100, 10) == pytest.approx(0.5)
    assert warmup_cosine(100, 100, 10) == pytest.approx(0.0, abs=1e-12)
    values = [warmup_cosine(s, 100, 10) for s in range(10, 100)]
    assert all(a >= b for a, b in itertools.pairwise(values))


def test_schedule_kinds():
    cosine = Schedule()
    # the grid's warm-up, at most a quarter of the stage
    assert lr_factor(cosine, 0, 100, 10) == pytest.approx(0.1)
    assert lr_factor(cosine, 0, 20, 10) == pytest.approx(0.2)
    step = Schedule(kind="multistep", milestones=(0.6, 0.8), gamma=0.1)
    assert [lr_factor(step, i, 25, 10) for i in (0, 14, 15, 19, 20, 24)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01]
    )
    assert lr_factor(Schedule(kind="constant"), 50, 100, 10) == 1.0
    assert lr_factor(Schedule(kind="constant", warmup_steps=4), 1, 100, 10) == 0.5
    with pytest.raises(DabenchError, match="milestones must be increasing fractions"):
        Schedule(kind="multistep", milestones=(0.8, 0.6))


# -- parameter groups -------------------------------------------------------------------------
def test_no_decay_for_norms_biases_embeddings_and_tokens():
    vit = build(backbone="vit_tiny", patch_size=8)
    named = dict(vit.named_parameters())
    model = "net.backbone.model."
    assert not decays(model + "pos_embed", named[model + "pos_embed"])  # 3-D, still exempt
    assert not decays(model + "cls_token", named[model + "cls_token"])
    assert not decays("decoder.mask_token", torch.zeros(1, 1, 8))
    assert not decays(model + "blocks.0.norm1.weight", named[model + "blocks.0.norm1.weight"])
    assert not decays(model + "blocks.0.attn.qkv.bias", named[model + "blocks.0.attn.qkv.bias"])
    assert decays(model + "blocks.0.attn.qkv.weight", named[model + "blocks.0.attn.qkv.weight"])
    opt, _ = build_optimizer(
        Optim(weight_decay=0.05), list(vit.named_parameters()), TrainConfig(), vit
    )
    zero = {id(p) for g in opt.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    assert id(named[model + "pos_embed"]) in zero and id(named[model + "cls_token"]) in zero
    assert id(named[model + "blocks.0.attn.qkv.weight"]) not in zero


def test_layer_wise_lr_decay_follows_the_vit_blocks():
    vit = build(backbone="vit_tiny", patch_size=8)
    names = [n for n, _ in vit.named_parameters()]
    scales = layer_scales(vit, names, 0.5)
    model = "net.backbone.model."
    depth = len(vit.net.backbone.model.blocks)
    assert scales[model + "blocks.0.attn.qkv.weight"] == pytest.approx(0.5**depth)
    assert scales[model + f"blocks.{depth - 1}.attn.qkv.weight"] == pytest.approx(0.5)
    assert scales[model + "pos_embed"] == pytest.approx(0.5 ** (depth + 1))  # the stem
    assert all(scales[n] == 1.0 for n in names if n.startswith("net.head."))
    _, base = build_optimizer(
        Optim(lr=1e-3, layer_decay=0.5), list(vit.named_parameters()), TrainConfig(), vit
    )
    assert max(base) == pytest.approx(1e-3) and min(base) == pytest.approx(
        1e-3 * 0.5 ** (depth + 1)
    )


@pytest.mark.parametrize(("factory", "cls"), [("adam", torch.optim.Adam), ("sgd", torch.optim.SGD)])
def test_optimiser_factories(factory, cls):
    net = nn.Linear(3, 2)
    opt, base = build_optimizer(
        Optim(factory=factory, lr=0.1, betas=(0.5, 0.9)),
        list(net.named_parameters()),
        TrainConfig(),
        net,
    )
    assert type(opt) is cls and base == [0.1, 0.1]
    if factory == "adam":
        assert opt.param_groups[0]["betas"] == (0.5, 0.9)


# -- AMP, devices, clipping -----------------------------------------------------------------------
def test_bf16_autocast_trains_on_the_cpu(pair, tmp_path):
    t = trainer(pair, tmp_path, amp="bf16")
    result = t.fit()
    assert result.status == "ok"
    assert all(math.isfinite(e["pose"]) for e in result.losses)
    assert result.evaluations[-1].metrics["target_test"]["overall"]["mpjpe"] > 0


def test_an_op_without_a_deterministic_kernel_is_one_configuration_error(
    pair, tmp_path, monkeypatch
):
    """Under train.deterministic an op torch cannot run deterministically on the device
    (put_ on the CPU stands in for grid_sample's backward on CUDA) stops the trial with one
    DabenchError — not retried — that names the op, the method and the setting; other
    runtime errors pass through unchanged."""
    real = StageUpdater.step

    def step_with_put(self, batch, ctx):
        torch.zeros(4).put_(torch.tensor([0, 0]), torch.ones(2), accumulate=False)
        return real(self, batch, ctx)

    monkeypatch.setattr(StageUpdater, "step", step_with_put)
    try:
        with pytest.raises(DabenchError) as refused:
            trainer(pair, tmp_path / "on", deterministic=True).fit()
    finally:
        torch.use_deterministic_algorithms(False)
    message = str(refused.value)
    assert "'put_'" in message and "'source-only'" in message and "cpu" in message
    assert "train.deterministic: false" in message
    assert trainer(pair, tmp_path / "off", deterministic=False).fit().status == "ok"

    def crash(self, batch, ctx):
        raise RuntimeError("node lost")

    monkeypatch.setattr(StageUpdater, "step", crash)
    try:
        with pytest.raises(RuntimeError, match="node lost"):
            trainer(pair, tmp_path / "crash", deterministic=True).fit()
    finally:
        torch.use_deterministic_algorithms(False)


def test_fp16_needs_cuda_and_bad_settings_are_named(pair, tmp_path):
    if not torch.cuda.is_available():
        with pytest.raises(DabenchError, match="fp16.*CUDA"):
            trainer(pair, tmp_path, amp="fp16")
        with pytest.raises(DabenchError, match="no CUDA device"):
            trainer(pair, tmp_path, device="cuda")
    with pytest.raises(DabenchError, match="train.amp 'fp8'"):
        TrainConfig(amp="fp8")
    with pytest.raises(DabenchError, match="train.steps must be positive"):
        TrainConfig(steps=0)
    with pytest.raises(DabenchError, match="train.max_failures must be >= 0"):
        TrainConfig(max_failures=-1)


def test_gradient_clipping_bounds_the_update(pair, tmp_path):
    t = trainer(pair, tmp_path, grad_clip=1e-3)
    stage = t.stages[0]
    update = t.updater(stage)
    t.streams = t.open_streams(stage)
    norms = []
    real = torch.nn.utils.clip_grad_norm_

    def spy(params, max_norm):
        params = list(params)
        real(params, max_norm)
        norms.append(torch.sqrt(sum((p.grad**2).sum() for p in params if p.grad is not None)))

    torch.nn.utils.clip_grad_norm_ = spy
    try:
        update.step(t.next_batch(), StepContext(update))
    finally:
        torch.nn.utils.clip_grad_norm_ = real
    assert len(norms) == 1 and norms[0] <= 1e-3 * 1.01


def test_stages_run_in_order_with_their_share_of_the_budget(pair, tmp_path):
    t = trainer(pair, tmp_path, method="causal-interventions", steps=20, eval_every=10)
    result = t.fit()
    assert result.status == "ok" and result.timings["steps"] == 20
    assert result.stage_steps == {"warmup": 2, "joint": 18}
    stages = [e["stage"] for e in result.losses]
    assert stages == sorted(stages, key=["warmup", "joint"].index)
    # two optimisers in the joint stage, each with its own logged learning rate
    assert {"lr_disc", "lr_model"} <= set(result.losses[-1])


# -- frozen modules and checkpoints ---------------------------------------------------------------
def test_frozen_modules_stay_frozen_through_training_and_evaluation(pair, tmp_path):
    t = trainer(pair, tmp_path, method="dann", steps=4, eval_every=2)
    frozen = t.method.discriminator
    t.method.freeze(frozen)
    t.method.train()
    assert not frozen.training and t.method.net.training
    assert all(not p.requires_grad for p in frozen.parameters())
    before = [p.detach().clone() for p in frozen.parameters()]
    modes = []
    frozen.register_forward_pre_hook(lambda m, i: modes.append(m.training))
    result = t.fit()  # evaluations at steps 2 and 4 switch the method to eval and back
    assert result.status == "ok" and modes and not any(modes)
    assert all(torch.equal(a, b) for a, b in zip(before, frozen.parameters(), strict=True))


def test_checkpoints_hold_no_predictions(pair, tmp_path):
    t = trainer(pair, tmp_path, eval_every=2, keep_checkpoint=True)
    t.fit()
    ckpt = torch.load(tmp_path / CHECKPOINT, weights_only=False)
    assert set(ckpt) == {
        "run",
        "state",
        "method",
        "optimizers",
        "scaler",
        "streams",
        "running",
        "rng",
    }
    for entry in ckpt["state"].evaluations:
        assert set(entry) == {"step", "stage", "metrics", "directory"}
        for metrics in entry["metrics"].values():
            assert set(metrics) == {
                "version",
                "joint_set",
                "joints",
                "overall",
                "per_joint",
                "per_group",
            }
    # the predictions are on disk, one file per split and evaluation
    assert (tmp_path / "evaluations" / "step-00000002" / "target_test.npz").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_cuda_amp_paths(pair, tmp_path, amp):
    t = trainer(pair, tmp_path, amp=amp, device="cuda")
    result = t.fit()
    assert result.status == "ok" and result.device.startswith("cuda:")
    assert result.peak_memory_mb > 0


def test_seed_everything_sets_determinism_both_ways():
    """One process runs trial after trial (a reused Ray worker, the local executor): a
    deterministic trial must not leave the next one deterministic."""
    try:
        seed_everything(0, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled()
        seed_everything(0, deterministic=False)
        assert not torch.are_deterministic_algorithms_enabled()
        assert not torch.backends.cudnn.deterministic
    finally:
        torch.use_deterministic_algorithms(False)


def test_checkpoints_between_evaluations_resume_exactly(pair, tmp_path, monkeypatch):
    """With checkpoint_every_s a trial killed between evaluations (here: eval only at the
    end) resumes from its last timed checkpoint, not from step 0, and ends with the same
    weights as an uninterrupted run."""
    reference = trainer(pair, tmp_path / "ref", steps=6, eval_every=6, checkpoint_every_s=0)
    reference.fit()

    steps_run = []
    real_step = Trainer.next_batch

    def dies_at_step_5(self):
        if len(steps_run) == 4:
            raise RuntimeError("worker killed")
        steps_run.append(1)
        return real_step(self)

    # a checkpoint after every step: the clock moves a minute per call
    clock = itertools.count(step=60.0)
    monkeypatch.setattr("bench.trainer.time.perf_counter", lambda: float(next(clock)))
    monkeypatch.setattr(Trainer, "next_batch", dies_at_step_5)
    killed = trainer(pair, tmp_path / "run", steps=6, eval_every=6, checkpoint_every_s=30)
    killed.resume = True
    with pytest.raises(RuntimeError, match="worker killed"):
        killed.fit()
    saved = torch.load(tmp_path / "run" / CHECKPOINT, weights_only=False)
    assert saved["state"].step == 4
    monkeypatch.setattr(Trainer, "next_batch", real_step)
    resumed = trainer(pair, tmp_path / "run", steps=6, eval_every=6, checkpoint_every_s=30)
    resumed.resume = True
    result = resumed.fit()
    assert result.timings["resumed"] is True and result.timings["steps"] == 6
    for a, b in zip(
        reference.method.state_dict().values(), resumed.method.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)

    plain = trainer(pair, tmp_path / "plain", steps=6, eval_every=6, checkpoint_every_s=0)
    monkeypatch.setattr(Trainer, "_checkpoint", lambda *a: steps_run.append("ckpt"))
    steps_run.clear()
    plain.fit()
    assert steps_run.count("ckpt") == 1  # 0: at the evaluation only
