"""The contract every registered method keeps, checked for every card and every variant
(a method added later is checked by adding its card): it builds, its stages' views accept
tiny shards, one step of each stage returns exactly its declared losses, ``predict`` gives
pixels and millimetres of the right shapes, and a run interrupted after a checkpoint and
resumed ends with the same weights and metrics as an uninterrupted one."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import assert_predicts_with_the_pose_net_only

from bench.config import TrainConfig
from bench.data.joints import get_joint_set
from bench.data.pairs import pair_shards
from bench.data.synthetic.build import synthesize
from bench.data.views import check_views
from bench.errors import DabenchError
from bench.methods.base import build_method
from bench.methods.cards import list_method_cards, resolve_method
from bench.methods.spec import Steps
from bench.models.pose_net import ModelConfig
from bench.trainer import StageContext, StageUpdater, StepContext, Trainer

SIZE = 32
CASES = [
    card.name + (f"/{variant}" if variant else "")
    for card in list_method_cards()
    for variant in (None, *card.variants)
]
# Tiny lengths for methods whose pre-training stages run for epochs (40 training images),
# and tiny networks where a method brings its own.
SHORT = {
    "mim-fcr-ar": {"segment_epochs": 0.1, "pretrain_epochs": 0.1},
    "geometric-reconstruction": {
        "stylenet_epochs": 0.1,
        "pretrain_epochs": 0.1,
        "generator_epochs": 0.1,
        "features": "random-vgg19",
        "feature_width": 0.125,
        "generator_channels": 8,
        "motion_channels": 8,
        "motion_max_channels": 16,
    },
    "mask-as-supervision": {
        "psi_channels": [8, 16],
        "stage1_epochs": 0.25,
        "stage2_epochs": 0.25,
        "init_steps": 1,
        "tie_steps": 1,
        "single_view_card": "synth-body-video",  # mixed-view fine-tuning's other dataset
        "spp_epochs": 0.25,
    },
}
# Methods that read frame pairs run on the long-sequence target (strides up to 50 frames);
# methods that draw human skeletons on calibrated multi-view bodies with masks.
VIDEO = {"geometric-reconstruction"}
BODY = {"mask-as-supervision"}


def _plan(entry: str) -> tuple:
    """What decides the code a checkpoint and its resumption go through: the stages, the
    kinds of views each reads (streams are checkpointed per view) and the update mode. The
    losses are left out: every variant's own losses take a step in
    test_builds_checks_steps_and_predicts."""
    r = resolve_method(entry, SHORT.get(entry.partition("/")[0]))
    stages = tuple(
        (s.name, tuple(sorted((k, type(v).__name__) for k, v in s.views.items())), s.manual)
        for s in r.spec.checked_stages(r.hparams)
    )
    return (r.spec.name, *stages)


# One resume case per distinct plan: variants with the same stages, view kinds and modes
# checkpoint and resume through the same code.
_FIRST: dict[tuple, str] = {}
for _case in CASES:
    _FIRST.setdefault(_plan(_case), _case)
RESUME_CASES = list(_FIRST.values())


# Tiny models: one intra-op thread is faster, and far faster on a loaded machine.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    root = tmp_path_factory.mktemp("contract-shards")
    cards = ["synth-hand-clean", "synth-hand-wild", "synth-hand-video", "synth-backgrounds"]
    synthesize(cards, root, n_train=40, n_test=8, size=SIZE, progress=False)
    bodies = ["synth-body-clean", "synth-body-style"]
    synthesize([*bodies, "synth-body-video"], root, n_train=64, n_test=8, size=SIZE, progress=False)
    return {
        **{
            target: pair_shards("synth-hand-clean", target, root)
            for target in ("synth-hand-wild", "synth-hand-video")
        },
        "synth-body-style": pair_shards(*bodies, root, extras=("synth-body-video",)),
    }


@pytest.fixture
def pair(pairs, request):
    name = request.node.callspec.params.get("entry", "").partition("/")[0]
    if name in BODY:
        return pairs["synth-body-style"]
    return pairs["synth-hand-video" if name in VIDEO else "synth-hand-wild"]


def build(entry: str, pair):
    resolved = resolve_method(entry, SHORT.get(entry.partition("/")[0]))
    tiny = {"backbone": "resnet10t", "img_size": SIZE, "head_channels": 16}
    if resolved.spec.backbones is not None:  # a method that needs a ViT gets the smallest
        tiny |= {"backbone": resolved.spec.backbones[0], "patch_size": 8, "vit_depth": 2}
    model = ModelConfig(**{**tiny, **resolved.card.model})
    torch.manual_seed(0)
    jset = get_joint_set(pair.joint_set)
    method = build_method(resolved.spec, resolved.hparams, model, jset.num_joints, pair.root, jset)
    return resolved, method


def config(**changes) -> TrainConfig:
    settings = dict(
        steps=4,
        batch_size=4,
        eval_every=2,
        warmup_steps=1,
        log_every=1,
        eval_batch_size=8,
        source_val_fraction=0.1,
    )
    return TrainConfig(**{**settings, **changes})


def test_every_method_has_cases():
    names = {c.partition("/")[0] for c in CASES}
    assert {"source-only", "oracle", "ddc", "dan", "dann", "causal-interventions"} <= names
    assert {"mim-fcr-ar", "geometric-reconstruction", "mask-as-supervision"} <= names


@pytest.mark.parametrize("entry", CASES)
def test_builds_checks_steps_and_predicts(entry, pair, tmp_path):
    resolved, method = build(entry, pair)
    stages = method.stages()
    assert [s.name for s in stages] == [s.name for s in resolved.spec.stages(resolved.hparams)]
    for stage in stages:
        check_views(entry, stage.views, pair)

    def one_step(stage, batch):
        update = StageUpdater(method, stage, config(), steps=2)
        before = [p.detach().clone() for p in method.parameters() if p.requires_grad]
        losses = update.step(batch, StepContext(update, 0, 0.0))
        declared = resolved.spec.losses(resolved.hparams, stage.name)
        assert set(losses) == set(declared), stage.name
        for name, value in losses.items():
            assert value.ndim == 0 and math.isfinite(float(value.detach())), (stage.name, name)
        after = [p for p in method.parameters() if p.requires_grad]
        assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True)), stage.name

    _each_stage(method, pair, tmp_path, one_step)
    method.eval()
    images = torch.randint(0, 256, (3, SIZE, SIZE, 3), dtype=torch.uint8)
    pred = method.predict(images)
    k = method.net.num_joints
    assert pred.kp2d.shape == (3, k, 2) and pred.rel_depth.shape == (3, k)
    others = [name for name, _ in method.named_children() if name not in method.predictor_parts]
    assert_predicts_with_the_pose_net_only(method, images, others)


def _each_stage(method, pair, workdir, step) -> None:
    """The method's stages in order as the trainer runs them, one batch each: the start
    hook, ``step(stage, batch)`` where the stage trains, and the artifact exported where a
    later stage's views read it (masks, …)."""
    artifacts = {}
    for k, stage in enumerate(method.stages()):
        method.on_stage_start(stage, StageContext(artifacts))
        method.train()
        if stage.length != Steps(0):  # a zero-step stage only exports what later ones read
            streams = {
                role: view.stream(pair, stage.batch_sizes.get(role, 4), seed=k, artifacts=artifacts)
                for role, view in stage.views.items()
            }
            step(
                stage,
                {r: {f: v for f, v in next(s).items() if f != "index"} for r, s in streams.items()},
            )
        if stage.length == Steps(0) or not stage.evaluate:
            (workdir / stage.name).mkdir()
            method.export_artifact(stage.name, workdir / stage.name, pair)
            artifacts[stage.name] = workdir / stage.name


@pytest.mark.slow
@pytest.mark.parametrize("entry", RESUME_CASES)
def test_loss_scaling_changes_no_update(entry, pair, tmp_path):
    """fp16 on a GPU scales every loss (GradScaler): with a power-of-two scale the updates
    must equal unscaled ones in every stage of every plan — several optimisers stepped
    once each, and manual stages that step one optimiser twice in an iteration (Alg. 1)
    or one that no loss reached. The scaler works on the CPU too, so this runs here."""

    def one_step_per_stage(scaler, workdir):
        _, method = build(entry, pair)

        def step(stage, batch):
            update = StageUpdater(method, stage, config(), steps=2, scaler=scaler)
            update.step(batch, StepContext(update, 0, 0.0))

        workdir.mkdir()
        _each_stage(method, pair, workdir, step)
        return _weights(method)

    plain = one_step_per_stage(None, tmp_path / "plain")
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    scaled = one_step_per_stage(scaler, tmp_path / "scaled")
    assert scaler.get_scale() == 2.0**12  # no step was skipped for an overflow
    _assert_same(plain, scaled, entry)


def _weights(method) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in method.state_dict().items()}


def _assert_same(a, b, what: str) -> None:
    """Bitwise where the CPU's kernels allow it. Two instances of one network can differ in
    the last bits on some CPUs (oneDNN picks kernels by memory alignment), so otherwise
    the runs must agree to rounding error."""
    if all(torch.equal(a[k], b[k]) for k in a):
        return
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=f"{what}: {k}")


@pytest.mark.slow
@pytest.mark.parametrize("entry", RESUME_CASES)
def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(entry, pair, tmp_path):
    def run(workdir, **kwargs):
        _, method = build(entry, pair)
        trainer = Trainer(method, pair, config(), seed=3, workdir=workdir, progress=False, **kwargs)
        return method, trainer.fit()

    whole, result = run(tmp_path / "whole")
    steps = [e.step for e in result.evaluations]  # pre-training stages come first
    assert result.status == "ok" and steps[-1] == result.timings["steps"] and len(steps) >= 2

    real = StageUpdater.step

    def crash_at_third_step(self, batch, ctx):
        if ctx.step == 2:
            raise RuntimeError("node lost")
        return real(self, batch, ctx)

    StageUpdater.step = crash_at_third_step
    try:
        with pytest.raises(RuntimeError, match="node lost"):
            run(tmp_path / "cut", resume=True, run_id="r")
    finally:
        StageUpdater.step = real
    resumed, again = run(tmp_path / "cut", resume=True, run_id="r")
    assert again.timings["resumed"] is True
    _assert_same(_weights(whole), _weights(resumed), entry)
    assert [e.step for e in again.evaluations] == steps
    for ours, theirs in zip(result.evaluations, again.evaluations, strict=True):
        for split, metrics in ours.metrics.items():
            expected = {k: v for k, v in metrics["overall"].items() if v is not None}
            got = {k: theirs.metrics[split]["overall"][k] for k in expected}
            assert got == pytest.approx(expected, rel=1e-4, abs=1e-4), (entry, split)
    assert [e["step"] for e in again.losses] == [e["step"] for e in result.losses]


def _trains_under_autocast(entry: str, pair, workdir, device: str, amp: str) -> None:
    _, method = build(entry, pair)
    dtypes = {name: value.dtype for name, value in method.state_dict().items()}
    settings = config(amp=amp, device=device)
    result = Trainer(method, pair, settings, seed=3, workdir=workdir, progress=False).fit()
    # "ok", not "diverged": every logged loss was finite
    assert result.status == "ok" and result.device.startswith(device), entry
    for name, value in method.state_dict().items():  # autocast casts activations only
        assert dtypes.get(name, value.dtype) == value.dtype, (entry, name, value.dtype)
        assert torch.isfinite(value).all() or not value.is_floating_point(), (entry, name)


@pytest.mark.slow
@pytest.mark.parametrize("entry", RESUME_CASES)
def test_every_plan_trains_under_bf16_autocast(entry, pair, tmp_path):
    """The paper configurations run in bf16 on GPUs: every stage of every distinct plan
    takes its steps under autocast (mixed dtypes reaching an op that refuses them — a
    half-precision artifact concatenated with bf16 activations, say — fail here on the
    CPU), losses stay finite and the weights stay float32."""
    _trains_under_autocast(entry, pair, tmp_path, "cpu", "bf16")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
@pytest.mark.parametrize("entry", [card.name for card in list_method_cards()])
def test_every_method_trains_under_autocast_on_cuda(entry, amp, pair, tmp_path):
    """CUDA's autocast casts other ops than the CPU's, and fp16 (loss-scaled) can
    overflow where bf16 cannot: each method once on the GPU in each."""
    _trains_under_autocast(entry, pair, tmp_path, "cuda", amp)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("entry", [card.name for card in list_method_cards()])
def test_deterministic_cuda_runs_repeat_bit_for_bit(entry, pair, tmp_path):
    """``train.deterministic`` on a GPU: the same trial twice in one process (as a reused
    Ray worker runs them) ends with the same weights bit for bit — or, where the method
    runs an op with no deterministic CUDA kernel, stops with the one error that names it
    (the skip reason lists those methods in the device check's log)."""

    def run(workdir):
        _, method = build(entry, pair)
        settings = config(device="cuda", deterministic=True)
        result = Trainer(method, pair, settings, seed=3, workdir=workdir, progress=False).fit()
        assert result.status == "ok" and result.device.startswith("cuda")
        return _weights(method)

    try:
        try:
            first = run(tmp_path / "first")
        except DabenchError as exc:
            assert "train.deterministic: false" in str(exc)
            pytest.skip(f"not deterministic on CUDA: {exc}")
        second = run(tmp_path / "second")
    finally:
        torch.use_deterministic_algorithms(False)
    differ = [k for k in first if not torch.equal(first[k], second[k])]
    assert not differ, f"{entry}: {len(differ)} tensors differ, first {differ[:3]}"
