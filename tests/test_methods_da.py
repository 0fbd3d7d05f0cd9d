"""The feature-alignment DA methods DDC, DAN and DANN: cards, hyper-parameters, a few training
steps on tiny synthetic shards, gradients of the alignment terms, predictions, and one tiny
grid through the harness."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import StepStub, assert_predicts_with_the_pose_net_only

from bench.data.views import Images, Labelled
from bench.errors import DabenchError
from bench.grid import load_grid
from bench.losses import mmd
from bench.methods.base import build_method
from bench.methods.cards import load_method_card, resolve_method
from bench.methods.specs import dan as dan_spec
from bench.models.pose_net import ModelConfig
from bench.runner import run_grid
from bench.store import read_record, trial_dir

DA_METHODS = ("ddc", "dan", "dann")
ENTRIES = ("ddc", "dan", "dan/quadratic", "dan/backbone-only", "dann")
MODEL = ModelConfig(img_size=32, head_channels=32)
BATCH = 8


@pytest.fixture(scope="module")
def pair(hand_pair):
    return hand_pair()


@pytest.fixture(scope="module")
def data_root(pair):
    return pair.source_train.parents[1]


@pytest.fixture(scope="module")
def batches(pair):
    """Three DA batches {"source": labels, "target": images} from the views the methods
    declare."""
    views = {"source": Labelled("source"), "target": Images("target")}
    streams = {role: v.stream(pair, BATCH, seed=k) for k, (role, v) in enumerate(views.items())}
    return [
        {role: {k: v for k, v in next(s).items() if k != "index"} for role, s in streams.items()}
        for _ in range(3)
    ]


def build(entry: str, root: int, **overrides):
    torch.manual_seed(0)
    resolved = resolve_method(entry, overrides)
    return build_method(resolved.spec, resolved.hparams, MODEL, 21, root)


def backbone_grad_norm(method) -> float:
    return sum(
        float(p.grad.abs().sum()) for p in method.net.backbone.parameters() if p.grad is not None
    )


# ---------------------------------------------------------------- cards and hyper-parameters


@pytest.mark.parametrize("name", DA_METHODS)
def test_card_variants_resolve_and_reported_numbers_are_structured(name):
    card = load_method_card(name)
    assert card.category == "domain-adaptation"
    assert card.paper and len(card.choices) >= 5
    base = resolve_method(name)
    (stage,) = base.spec.checked_stages(base.hparams)
    assert stage.views == {"source": Labelled("source"), "target": Images("target")}
    assert base.spec.warm_start is True  # adapts a source-only network when asked
    assert card.variants
    for variant in card.variants:
        resolved = resolve_method(f"{name}/{variant}")
        assert resolved.hparams != base.hparams, variant
    for group in card.ablation_groups.values():
        for entry in group:
            resolve_method(entry)
    assert len(card.reported) == 5
    metrics = [r["metric"] for r in card.reported]
    assert metrics == ["epe_mm", "mpjpe_mm", "pa_mpjpe_mm", "mpjpe_mm", "pa_mpjpe_mm"]
    for entry in card.reported:
        assert set(entry) == {"paper", "setting", "metric", "values"}
        assert all(isinstance(v, float) and 10 < v < 200 for v in entry["values"].values())
    assert len(card.reported[0]["values"]) == 4 and len(card.reported[1]["values"]) == 3


def test_reported_rows_keep_the_papers_ordering():
    # Every table lists DDC > DAN > DANN (errors fall), so a mixed-up copy shows here.
    rows = {n: load_method_card(n).reported for n in DA_METHODS}
    for i in range(5):
        for key in rows["ddc"][i]["values"]:
            ddc, dan, dann = (rows[n][i]["values"][key] for n in DA_METHODS)
            assert ddc >= dan >= dann, (i, key)
    assert rows["dann"][0]["values"]["FreiHAND→RHD"] == 38.0
    assert rows["ddc"][4]["values"]["SURREAL→HumanEva"] == 86.0


def test_bad_hyper_parameters_are_one_clear_error():
    with pytest.raises(DabenchError, match=r"unknown hyper-parameter\(s\) \['bogus'\]"):
        resolve_method("ddc", {"bogus": 1})
    with pytest.raises(DabenchError, match="unknown estimator 'cubic'.*linear, quadratic"):
        resolve_method("dan", {"estimator": "cubic"})
    with pytest.raises(DabenchError, match="alphas must be positive"):
        resolve_method("dan", {"alphas": [0.5, -1]})
    with pytest.raises(DabenchError, match="alphas must be positive"):
        resolve_method("dan", {"alphas": []})
    with pytest.raises(DabenchError, match="unknown schedule 'cosine'"):
        resolve_method("dann", {"schedule": "cosine"})
    with pytest.raises(DabenchError, match="mmd_weight must be >= 0"):
        resolve_method("ddc", {"mmd_weight": -0.25})
    # the adaptation layer is the model's neck now: a grid that still sets its width hears so
    with pytest.raises(DabenchError, match=r"unknown hyper-parameter\(s\) \['adapt_dim'\]"):
        resolve_method("ddc", {"adapt_dim": 256})
    assert resolve_method("dan", {"alphas": [1, 2]}).hparams.alphas == (1.0, 2.0)
    # the torch-free declaration names the loss module's choices
    assert dan_spec.ESTIMATORS == mmd.ESTIMATORS
    assert dan_spec.DEFAULT_ALPHAS == mmd.DEFAULT_ALPHAS


# ---------------------------------------------------------------- training steps


@pytest.mark.parametrize("entry", ENTRIES)
def test_method_trains_and_predicts(entry, pair, batches):
    method = build(entry, pair.root)
    method.train()
    opt = torch.optim.AdamW(method.parameters(), lr=1e-3)
    expected = {"ddc": {"pose", "mmd"}, "dann": {"pose", "adv"}}.get(
        entry, {"pose", "mmd", "mmd_head"}
    )
    if entry == "dan/backbone-only":
        expected = {"pose", "mmd"}
    for step, batch in enumerate(batches):
        losses = method.training_step("train", batch, StepStub(step, step / len(batches)))
        assert set(losses) == expected
        assert all(torch.isfinite(v) and v.ndim == 0 for v in losses.values()), losses
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()

    # The alignment terms alone reach the backbone (DANN: with λ > 0).
    opt.zero_grad()
    losses = method.training_step("train", batches[0], StepStub(10, 0.5))
    sum(v for k, v in losses.items() if k != "pose").backward()
    assert backbone_grad_norm(method) > 0

    method.eval()
    images = batches[0]["target"]["images"]
    pred = method.predict(images)
    assert pred.kp2d.shape == (BATCH, 21, 2) and pred.rel_depth.shape == (BATCH, 21)
    parts = [name for name in ("discriminator",) if hasattr(method, name)]
    assert_predicts_with_the_pose_net_only(method, images, parts)


def test_forward_pass_is_one_concatenated_batch(pair, batches):
    method = build("ddc", pair.root)
    seen = []
    method.net.backbone.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    method.training_step("train", batches[0], StepStub(0, 0.0))
    assert seen == [2 * BATCH]


def test_unequal_batch_sizes_are_an_error(pair, batches):
    method = build("dan", pair.root)
    batch = {
        "source": batches[0]["source"],
        "target": {"images": batches[0]["target"]["images"][:5]},
    }
    with pytest.raises(DabenchError, match="equal source and target batch sizes, got 8 and 5"):
        method.training_step("train", batch, StepStub(0, 0.0))


def test_dann_schedule_and_metrics(pair, batches):
    method = build("dann", pair.root)
    method.train()
    assert method.grl_lambda(0, 0.0) == 0.0
    assert method.grl_lambda(123, 0.5) == pytest.approx(0.98661, abs=1e-5)
    # λ = 0 at the first step: the adversarial loss sends nothing back to the backbone.
    losses = method.training_step("train", batches[0], StepStub(0, 0.0))
    assert method.grl.coeff == 0.0
    losses["adv"].backward()
    assert backbone_grad_norm(method) == 0.0
    assert any(float(p.grad.abs().sum()) > 0 for p in method.discriminator.parameters())
    method.training_step("train", batches[1], StepStub(1, 0.25))
    metrics = method.scalars()
    assert set(metrics) == {"disc_acc", "grl_lambda"}
    assert metrics["grl_lambda"] == pytest.approx(2 / (1 + math.exp(-2.5)) - 1)
    assert set(method.scalars()) == {"grl_lambda"}  # the window was reset
    # A discriminator that calls everything "source": right on the source half, wrong on
    # the target half — accuracy exactly one half.
    with torch.no_grad():
        last = [m for m in method.discriminator.modules() if isinstance(m, torch.nn.Linear)][-1]
        last.weight.zero_()
        last.bias.fill_(5.0)
    method.training_step("train", batches[2], StepStub(2, 0.5))
    assert method.scalars()["disc_acc"] == 0.5

    # λ depends on the hyper-parameters only: swap them in rather than build two more nets.
    method.hparams = resolve_method("dann/tllib-schedule").hparams
    assert method.grl_lambda(1000, 0.9) == pytest.approx(0.4621, abs=1e-4)
    method.hparams = resolve_method("dann/constant-lambda").hparams
    assert method.grl_lambda(0, 0.0) == 1.0


def test_dan_head_features_are_the_pooled_last_hidden_map(pair, batches):
    method = build("dan", pair.root)
    out = method.net(batches[0]["source"]["images"], with_head_pooled=True)
    assert out["head_pooled"].shape == (BATCH, MODEL.head_channels)
    hidden = method.net.head.net.hidden(out["feat"])
    assert torch.allclose(out["head_pooled"], hidden.mean(dim=(-2, -1)))
    assert "head_pooled" not in method.net(batches[0]["source"]["images"])


# ---------------------------------------------------------------- through the harness


def test_tiny_grid_runs_every_da_method(tmp_path, data_root, tiny_grid):
    grid = load_grid(
        tiny_grid(
            name="tiny-da",
            methods=list(DA_METHODS),
            data={"n_train": 40, "n_test": 8, "size": 32},
            model={"head_channels": 32},
        )
    )
    results = tmp_path / "results"
    summary = run_grid(
        grid, results, executor="local", data_root=data_root, progress=False, log=lambda m: None
    )
    assert (summary.total, summary.ran) == (3, 3)
    for spec in grid.trials:
        record = read_record(trial_dir(results, spec.trial_id) / "record.json")
        assert record["status"] == "ok", record["error"]
        curves = record["curves"]["losses"]
        assert [c["step"] for c in curves] == [2, 4]
        if spec.label == "dann":
            assert all("disc_acc" in c and "grl_lambda" in c for c in curves)
            assert all("adv" in c for c in curves)
        else:
            assert all("mmd" in c for c in curves)


# ---------------------------------------------------------------- what each method aligns


def naive_kernel(a: torch.Tensor, b: torch.Tensor, base: float, alphas) -> float:
    d2 = float(((a - b) ** 2).sum())
    return sum(math.exp(-d2 / (2 * alpha * base)) for alpha in alphas) / len(alphas)


def naive_mk_mmd2(x: torch.Tensor, y: torch.Tensor, estimator: str, alphas) -> float:
    """DAN's MK-MMD² written out term by term (float64), independent of bench.losses."""
    x, y = x.double(), y.double()
    z = torch.cat([x, y])
    base = float(((z[:, None] - z[None]) ** 2).sum(-1).mean())
    n = len(x)
    if estimator == "linear":
        terms = [
            naive_kernel(x[2 * i], x[2 * i + 1], base, alphas)
            + naive_kernel(y[2 * i], y[2 * i + 1], base, alphas)
            - naive_kernel(x[2 * i], y[2 * i + 1], base, alphas)
            - naive_kernel(x[2 * i + 1], y[2 * i], base, alphas)
            for i in range(n // 2)
        ]
        return sum(terms) / len(terms)
    within = sum(
        naive_kernel(a[i], a[j], base, alphas)
        for a in (x, y)
        for i in range(n)
        for j in range(n)
        if i != j
    )
    across = sum(naive_kernel(x[i], y[j], base, alphas) for i in range(n) for j in range(n))
    return within / (n * (n - 1)) - 2 * across / n**2


def joint_features(method, batch, with_head_pooled=False):
    """The method's network on source + target in one pass, as the method must run it."""
    images = torch.cat([batch["source"]["images"], batch["target"]["images"]])
    return method.net(images, with_head_pooled=with_head_pooled)


def test_ddc_aligns_the_neck_of_the_joint_batch(pair, batches):
    method = build("ddc", pair.root).train()
    batch = batches[0]
    losses = method.training_step("train", batch, StepStub())
    with torch.no_grad():
        a = joint_features(method, batch)["feat"].double().mean(dim=(-2, -1))
    assert a.shape[1] == MODEL.neck  # the neck the head reads, not the backbone map
    expected = ((a[:BATCH].mean(0) - a[BATCH:].mean(0)) ** 2).sum()
    assert float(losses["mmd"].detach()) == pytest.approx(0.25 * float(expected), rel=1e-4)
    assert float(expected) > 1e-4  # the two domains differ in this layer


def test_neck_batchnorm_on_the_joint_batch_keeps_the_domain_gap(pair, batches):
    """The neck's BatchNorm normalises source and target together; normalising each domain
    alone would subtract each domain's mean and make linear MMD vanish by construction."""
    method = build("ddc", pair.root).train()
    batch = batches[0]
    src, tgt = batch["source"]["images"], batch["target"]["images"]
    with torch.no_grad():
        joint = method.net(torch.cat([src, tgt]))["pooled"]
        apart = torch.cat([method.net(src)["pooled"], method.net(tgt)["pooled"]])
    gap = mmd.linear_mmd2(joint[:BATCH], joint[BATCH:]).item()
    assert gap > 10 * mmd.linear_mmd2(apart[:BATCH], apart[BATCH:]).item()


def test_dann_discriminates_the_source_half_from_the_target_half(pair, batches):
    """The adversarial loss is BCE of D on the source features against 1 and on the target
    features against 0 (written out here with torch's BCE, not the harness's loss)."""
    method = build("dann", pair.root).train()
    batch = batches[2]
    losses = method.training_step("train", batch, StepStub(50, 0.5))
    with torch.no_grad():
        logits = method.discriminator(joint_features(method, batch)["pooled"]).double()
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    src, tgt = logits[:BATCH], logits[BATCH:]
    expected = 0.5 * (bce(src, torch.ones_like(src)) + bce(tgt, torch.zeros_like(tgt)))
    assert float(losses["adv"].detach()) == pytest.approx(
        method.hparams.trade_off * float(expected), rel=1e-4
    )
    # the halves differ, so a loss that saw one domain twice could not give this value
    swapped = 0.5 * (bce(tgt, torch.ones_like(tgt)) + bce(src, torch.zeros_like(src)))
    assert float(swapped) != pytest.approx(float(expected), rel=1e-3)


@pytest.mark.parametrize("entry", ["ddc", "dan", "dann"])
def test_alignment_trains_only_what_the_pose_head_reads(entry, pair, batches):
    """No side branch: every parameter the alignment term moves also shapes the pose
    prediction (a branch that only the alignment term trains could meet the loss without
    aligning anything the head uses). DANN's discriminator is the one exception: it is the
    adversary, and its gradient is reversed before the features."""
    method = build(entry, pair.root).train()
    losses = method.training_step("train", batches[0], StepStub(50, 0.5))

    def moved(loss):
        params = [p for p in method.parameters() if p.requires_grad]
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        return {
            id(p) for p, g in zip(params, grads, strict=True) if g is not None and g.abs().sum() > 0
        }

    align = moved(sum(v for k, v in losses.items() if k != "pose"))
    pose = moved(losses["pose"])
    adversary = {id(p) for p in getattr(method, "discriminator", torch.nn.Module()).parameters()}
    neck = {id(p) for p in method.net.neck.parameters()}
    assert neck <= align  # the neck is aligned ...
    assert align - adversary <= pose  # ... and nothing aligned is off the pose path


@pytest.mark.parametrize("entry", ["dan", "dan/quadratic"])
def test_dan_aligns_both_layers_source_against_target(entry, pair, batches):
    method = build(entry, pair.root).train()
    hp = method.hparams
    batch = batches[1]
    losses = method.training_step("train", batch, StepStub())
    with torch.no_grad():
        out = joint_features(method, batch, with_head_pooled=True)
        a = out["feat"].mean(dim=(-2, -1))
        h = out["head_pooled"]
    for key, feat in (("mmd", a), ("mmd_head", h)):
        expected = naive_mk_mmd2(feat[:BATCH], feat[BATCH:], hp.estimator, hp.alphas)
        assert float(losses[key].detach()) == pytest.approx(
            hp.trade_off * expected, rel=1e-4, abs=1e-7
        )
    # the two estimators differ on this batch, so a variant cannot silently use the other
    other = "linear" if hp.estimator == "quadratic" else "quadratic"
    assert naive_mk_mmd2(h[:BATCH], h[BATCH:], other, hp.alphas) != pytest.approx(
        naive_mk_mmd2(h[:BATCH], h[BATCH:], hp.estimator, hp.alphas), rel=1e-3
    )
