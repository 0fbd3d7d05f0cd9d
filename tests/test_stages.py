"""The training floor on a two-stage method written the way the seed methods are: a
pre-training stage stored as an artifact (shared by variants that agree on what it reads),
then a fine-tuning stage with two named optimisers, per-role batch sizes, a frozen EMA
teacher made at the stage's start and updated after each optimiser step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from timm.utils import ModelEmaV3
from torch import nn

from bench.config import TrainConfig
from bench.data.views import Images, Joined, Labelled, MultiView
from bench.errors import DabenchError
from bench.grid import load_grid
from bench.methods.base import Method, build_method
from bench.methods.cards import resolve_method
from bench.methods.spec import (
    Epochs,
    Hparams,
    MethodSpec,
    Optim,
    Share,
    Stage,
    Steps,
    register_method,
)
from bench.models.pose_net import ModelConfig
from bench.report.tables import reuse_text
from bench.runner import run_grid
from bench.store import frame, stage_steps_text
from bench.trainer import StageContext, StageUpdater, StepContext, Trainer, stage_lengths


@dataclass(frozen=True)
class ToyHparams(Hparams):
    pre_weight: float = 1.0  # read by the pre-training stage
    fine_weight: float = 1.0  # read by the fine-tuning stage only
    ema: float = 0.5


class ToySpec(MethodSpec):
    Hparams = ToyHparams

    @classmethod
    def stages(cls, hp: Any) -> list[Stage]:
        return [
            Stage(
                "pretrain",
                views={"target": Images("target")},
                length=Steps(3),
                batch_sizes={"target": 4},
                evaluate=False,
                reads=("pre_weight",),
            ),
            Stage(
                "finetune",
                views={"source": Labelled("source"), "target": Images("target")},
                length=Share(1.0),
                batch_sizes={"target": 2},
                optimizers={
                    "head": Optim(params=("net.head",), losses=("pose",), lr_scale=2.0),
                    "rest": Optim(losses=("consistency",), factory="sgd", lr=0.01),
                },
            ),
        ]

    @classmethod
    def losses(cls, hp: Any, stage: str) -> tuple[str, ...]:
        return ("recon",) if stage == "pretrain" else ("pose", "consistency")


class Toy(Method):
    spec = ToySpec

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.decoder = nn.Linear(self.net.feature_channels, 3)
        self.teacher: ModelEmaV3 | None = None
        self.starts: list[tuple[str, bool]] = []
        self.updates: list[tuple[str, str]] = []
        self.batch_shapes: dict[str, tuple] = {}

    def on_stage_start(self, stage, ctx) -> None:
        self.starts.append((stage.name, ctx.resuming))
        if stage.name == "finetune":
            self.teacher = ModelEmaV3(
                self.net.backbone, decay=self.hparams.ema, exclude_buffers=True
            )
            self.freeze(self.teacher)

    def training_step(self, stage, batch, ctx):
        hp = self.hparams
        self.batch_shapes |= {role: tuple(b["images"].shape) for role, b in batch.items()}
        if stage == "pretrain":
            images = batch["target"]["images"]
            colour = images.float().mean(dim=(1, 2)) / 255
            pooled = self.net.pool(self.net.features(images))
            return {"recon": hp.pre_weight * F.mse_loss(self.decoder(pooled), colour)}
        src = batch["source"]
        out = self.net(src["images"])
        tgt = self.net._input(batch["target"]["images"])
        student = self.net.backbone.pool(self.net.backbone(tgt))
        with torch.no_grad():
            teacher = self.net.backbone.pool(self.teacher.module(tgt))
        return {
            "pose": hp.fine_weight * self.supervised_loss(src, out),
            "consistency": F.mse_loss(student, teacher),
        }

    def after_optimizer_step(self, stage, optimizer, ctx) -> None:
        self.updates.append((stage, optimizer))
        if optimizer == "rest":
            self.teacher.update(self.net.backbone)


ToySpec.adapter = Toy
register_method("test-toy-two-stage")(ToySpec)

MODEL = ModelConfig(img_size=32, head_channels=16, backbone="resnet10t")


@pytest.fixture(scope="module")
def pair(hand_pair):
    return hand_pair(n_train=48, n_test=16, size=32)


def toy(**hp) -> Toy:
    torch.manual_seed(0)
    return build_method(ToySpec, ToyHparams(**hp), MODEL, 21, 0)


def test_stages_with_their_own_data_optimisers_hooks_and_a_frozen_teacher(pair, tmp_path):
    method = toy()
    config = TrainConfig(steps=4, batch_size=8, eval_every=2, warmup_steps=0, log_every=1)
    trainer = Trainer(method, pair, config, seed=0, workdir=tmp_path, progress=False)
    assert trainer.lengths == {"pretrain": 3, "finetune": 4}
    result = trainer.fit()
    assert result.status == "ok"
    assert method.starts == [("pretrain", False), ("finetune", False)]
    # per-role batch sizes: the stage's own, or the grid's
    assert method.batch_shapes["target"][0] == 2 and method.batch_shapes["source"][0] == 8
    # one update per optimiser and step, in declared order, pre-training first
    assert (
        method.updates
        == [("pretrain", "main")] * 3 + [("finetune", "head"), ("finetune", "rest")] * 4
    )
    # evaluations only in the evaluated stage: pre-training is never selectable
    assert [(e.step, e.stage) for e in result.evaluations] == [
        (4, "finetune"),
        (6, "finetune"),
        (7, "finetune"),
    ]
    assert {e["stage"] for e in result.losses} == {"pretrain", "finetune"}
    assert {"lr_head", "lr_rest"} <= set(result.losses[-1])
    # the teacher: frozen, in eval mode, an EMA of the student's parameters
    assert not method.teacher.training and not any(
        p.requires_grad for p in method.teacher.parameters()
    )
    student = dict(method.net.backbone.named_parameters())
    moved = [
        n for n, p in method.teacher.module.named_parameters() if not torch.equal(p, student[n])
    ]
    assert moved  # lags behind the student


def test_each_optimiser_owns_its_parameters_and_losses(pair, tmp_path):
    method = toy()
    config = TrainConfig(steps=2, batch_size=8, eval_every=2, warmup_steps=0, lr=0.004)
    trainer = Trainer(method, pair, config, seed=0, workdir=tmp_path, progress=False)
    finetune = trainer.stages[1]
    method.on_stage_start(finetune, StageContext({}))
    update = trainer.updater(finetune)
    head = {id(p) for p in method.net.head.parameters()}
    assert {id(p) for p in update.params["head"]} == head
    assert not head & {id(p) for p in update.params["rest"]}
    assert not {id(p) for p in method.teacher.parameters()} & {
        id(p) for ps in update.params.values() for p in ps
    }  # frozen: in no optimiser
    assert type(update.optimizers["rest"]) is torch.optim.SGD
    assert update.optimizers["head"].param_groups[0]["lr"] == pytest.approx(0.008)
    assert update.optimizers["rest"].param_groups[0]["lr"] == pytest.approx(0.01)


@pytest.fixture
def toy_cards(tmp_path, monkeypatch):
    cards = tmp_path / "cards"
    cards.mkdir()
    (cards / "toy.yaml").write_text(
        "name: toy\nadapter: test-toy-two-stage\ncategory: domain-adaptation\ntitle: Toy\n"
        "description: a two-stage test method\nfidelity: faithful\n"
        "variants:\n  fine2: {fine_weight: 2.0}\n  pre2: {pre_weight: 2.0}\n"
    )
    monkeypatch.setenv("DABENCH_METHOD_CARDS", str(cards))
    return cards


def test_variants_that_differ_only_later_share_the_first_stage(
    tmp_path, toy_cards, tiny_grid, monkeypatch
):
    from bench import trial

    grid = load_grid(
        tiny_grid(
            methods=["toy", "toy/fine2", "toy/pre2"],
            model={"backbone": "resnet10t", "head_channels": 16},
            data={"n_train": 48, "n_test": 16, "size": 32},
        )
    )
    assert len(grid.trials) == 3 and len(grid.stage_runs) == 2
    by = {t.label: t for t in grid.trials}
    assert by["toy"].start.key == by["toy/fine2"].start.key != by["toy/pre2"].start.key
    assert by["toy"].stages == ("finetune",)
    computed = []
    real = trial.run_stage_run
    monkeypatch.setattr(
        trial,
        "run_stage_run",
        lambda spec, *a, **k: computed.append(spec.key) or real(spec, *a, **k),
    )
    results = tmp_path / "results"
    summary = run_grid(
        grid,
        results,
        executor="local",
        data_root=tmp_path / "data",
        progress=False,
        log=lambda m: None,
    )
    assert not summary.failed, [r["error"] for r in summary.failed]
    assert sorted(computed) == sorted(s.key for s in grid.stage_runs)  # each once
    assert summary.stage_runs == 2
    for record in summary.records:
        (used,) = record["artifacts"]
        assert used["stage"] == "pretrain" and used["computed"] is True
        assert used["steps"] == 3 and used["seconds"] > 0  # how the shared stage was made
        assert record["stages"] == {"finetune": 4}
        assert stage_steps_text(record) == "pretrain 3, finetune 4"
    # the report says what sharing the pre-training saved: 2 made, used by 3 trials
    trials = frame(summary.records)
    made = {k: s for arts in trials["own_artifacts"] for k, s in arts}
    assert len(made) == 2 and sum(map(bool, trials["own_artifacts"])) == 3
    text = reuse_text(trials)
    shared = made[by["toy"].start.key]
    assert text.startswith("Stage artifacts: 2 earlier stages of the methods' own plans")
    scratch = sum(s for arts in trials["own_artifacts"] for _, s in arts)
    saved = scratch - sum(made.values())
    assert saved == pytest.approx(shared)  # the shared pre-training, once more
    assert f"so reusing them saved {saved:,.0f} s" in text  # (rounded as the text rounds)
    # a finished grid computes nothing
    computed.clear()
    again = run_grid(
        grid,
        results,
        executor="local",
        data_root=tmp_path / "data",
        progress=False,
        log=lambda m: None,
    )
    assert (again.ran, again.stage_runs, computed) == (0, 0, [])


def test_a_method_that_does_not_opt_in_is_never_warm_started(tmp_path, toy_cards, tiny_grid):
    # the toy is a domain-adaptation method, but it declares no warm-start stage
    import shutil

    from bench.paths import REPO_ROOT

    shutil.copy(REPO_ROOT / "methods" / "source-only.yaml", toy_cards)
    shutil.copy(REPO_ROOT / "methods" / "ddc.yaml", toy_cards)
    grid = load_grid(
        tiny_grid(
            methods=["source-only", "toy", "ddc"],
            warm_start="source-only",
            train={"adapt_steps": 2},
        )
    )
    by = {t.label: t for t in grid.trials}
    assert by["toy"].start.method == "toy" and by["toy"].train["steps"] == 4
    assert by["ddc"].start.method == "source-only" and by["ddc"].train["steps"] == 2
    assert resolve_method("toy").card.category == "domain-adaptation"


def test_stage_lengths_in_steps_epochs_and_shares():
    views = {"target": Images("target")}

    def stage(name, length):
        return Stage(name, views=views, length=length)

    shares = [stage("a", Share(0.1)), stage("b", Share(0.9))]
    assert stage_lengths(shares, 15, lambda s: 0) == {"a": 1, "b": 14}  # sums to the budget
    mixed = [stage("pre", Epochs(2.5)), stage("fix", Steps(7)), stage("rest", Share(0.5))]
    # an epoch of the stage's view is 10 batches here
    assert stage_lengths(mixed, 100, lambda s: 10.0) == {"pre": 25, "fix": 7, "rest": 50}
    with pytest.raises(DabenchError, match="epochs of 'source', not one of its views"):
        Stage("x", views=views, length=Epochs(1, role="source"))


def test_epochs_follow_the_views_units(pair, tmp_path):
    class EpochSpec(ToySpec):
        @classmethod
        def stages(cls, hp):
            first, second = ToySpec.stages(hp)
            return [
                Stage(
                    "pretrain",
                    views=first.views,
                    length=Epochs(1),
                    evaluate=False,
                    batch_sizes={"target": 16},
                ),
                second,
            ]

    class EpochToy(Toy):
        spec = EpochSpec

    EpochSpec.adapter = EpochToy
    method = build_method(EpochSpec, ToyHparams(), MODEL, 21, 0)
    config = TrainConfig(steps=2, batch_size=8, eval_every=2)
    trainer = Trainer(method, pair, config, seed=0, workdir=tmp_path, progress=False)
    # 48 target training images in batches of 16: one epoch is 3 steps
    assert trainer.lengths["pretrain"] == 3


def test_declared_losses_are_checked_every_step(pair):
    method = toy()
    stage = method.stages()[0]
    update = StageUpdater(method, stage, TrainConfig(), steps=1)
    batch = {"target": {"images": torch.zeros(2, 32, 32, 3, dtype=torch.uint8)}}
    method.training_step = lambda stage, batch, ctx: {"recon": torch.zeros(()), "extra": 0}
    with pytest.raises(DabenchError, match=r"returned losses \['extra', 'recon'\].*declares"):
        update.step(batch, StepContext(update))


def test_loss_scaling_with_two_optimisers_and_one_no_loss_reached(pair, tmp_path):
    """fp16's GradScaler in a stage of two optimisers: with a power-of-two scale the scaled
    updates equal unscaled ones; an optimiser whose losses carry no gradient this iteration
    is not stepped (the scaler would refuse it), and its after-step hook still runs."""

    def finetune_step(scaler, constant_consistency: bool):
        method = toy()
        config = TrainConfig(steps=2, batch_size=8, eval_every=2, warmup_steps=0)
        trainer = Trainer(method, pair, config, seed=0, workdir=tmp_path, progress=False)
        stage = trainer.stages[1]
        method.on_stage_start(stage, StageContext({}))
        trainer.streams = trainer.open_streams(stage)
        if constant_consistency:
            real = method.training_step
            method.training_step = lambda *a: real(*a) | {"consistency": torch.zeros(())}
        update = StageUpdater(method, stage, config, steps=2, scaler=scaler)
        before = {k: v.detach().clone() for k, v in method.named_parameters()}
        for _ in range(2):  # the scaler must be ready again for the second iteration
            update.step(trainer.next_batch(), StepContext(update))
        return method, before

    plain, _ = finetune_step(None, False)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    scaled, _ = finetune_step(scaler, False)
    for name, value in plain.state_dict().items():
        torch.testing.assert_close(scaled.state_dict()[name], value, rtol=1e-5, atol=1e-7)
    method, before = finetune_step(scaler, True)
    assert method.updates == [("finetune", "head"), ("finetune", "rest")] * 2
    after = dict(method.named_parameters())
    head = [k for k in after if k.startswith("net.head.")]
    assert head and any(not torch.equal(after[k], before[k]) for k in head)
    rest = [k for k in after if k.startswith("net.backbone.")]
    assert rest and all(torch.equal(after[k], before[k]) for k in rest)
    assert scaler.get_scale() == 2.0**12


# -- a stage that only exports an artifact ---------------------------------------------------


class ArtifactSpec(MethodSpec):
    """A first stage of Steps(0) without an optimiser that exports one row per target
    training row (as Mask as Supervision's geodesic weights), read by the next stage
    through a Joined multi-view view."""

    Hparams = ToyHparams

    @classmethod
    def stages(cls, hp: Any) -> list[Stage]:
        return [
            Stage(
                "weights",
                views={"target": Images("target")},
                length=Steps(0),
                optimizers={},
                evaluate=False,
                reads=("pre_weight",),
            ),
            Stage(
                "train",
                views={"target": Joined(MultiView("target", 2), "weights", "w.h5", ("weights",))},
                length=Share(1.0),
                batch_sizes={"target": 4},
            ),
        ]

    @classmethod
    def losses(cls, hp: Any, stage: str) -> tuple[str, ...]:
        return () if stage == "weights" else ("fit",)


class ArtifactToy(Method):
    spec = ArtifactSpec

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.exported: list[str] = []
        self.seen: list[torch.Tensor] = []

    def export_artifact(self, stage, directory, pair) -> None:
        import h5py

        self.exported.append(stage)
        n = pair.info("target_train").num_samples
        with h5py.File(directory / "w.h5", "w") as f:
            f["weights"] = np.arange(n, dtype=np.float32) * self.hparams.pre_weight

    def training_step(self, stage, batch, ctx):
        tgt = batch["target"]
        assert tgt["images"].shape[:2] == (4, 2)
        self.seen.append(tgt["weights"] / self.hparams.pre_weight)  # the rows read
        out = self.net(tgt["images"].flatten(0, 1))
        return {"fit": out["coords"].float().pow(2).mean()}


ArtifactSpec.adapter = ArtifactToy
register_method("test-toy-artifact-stage")(ArtifactSpec)


def test_a_stage_of_zero_steps_without_optimiser_exports_what_the_next_reads(pair, tmp_path):
    with pytest.raises(DabenchError, match="only a stage of Steps\\(0\\)"):
        Stage("x", views={"target": Images("target")}, length=Steps(1), optimizers={})
    torch.manual_seed(0)
    method = build_method(ArtifactSpec, ToyHparams(pre_weight=2.0), MODEL, 21, 0)
    config = TrainConfig(steps=3, batch_size=8, eval_every=3, warmup_steps=0)
    trainer = Trainer(method, pair, config, seed=0, workdir=tmp_path, progress=False)
    assert trainer.lengths == {"weights": 0, "train": 3}
    assert trainer.fit().status == "ok"
    assert method.exported == ["weights"]
    # every row of every group got its own artifact row: distinct rows of the shard
    assert len(method.seen) == 3
    for rows in method.seen:
        assert rows.shape == (4, 2) and torch.equal(rows, rows.round())
        assert bool((rows[:, 0] != rows[:, 1]).all())
