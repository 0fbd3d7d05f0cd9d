"""causal-interventions (Zhang et al., ICCV 2021, reconstructed): Table 1 shapes under the
scaling rule, the VAE's KL term, every loss term, both settings (SD + TD, SD + UD), data
needs and an end-to-end run through the harness."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import assert_predicts_with_the_pose_net_only
from torch import nn

from bench.config import TrainConfig
from bench.data.pairs import pair_shards
from bench.data.synthetic.build import synthesize
from bench.data.views import Backgrounds, Images, Labelled, check_views
from bench.errors import DabenchError
from bench.grid import load_grid
from bench.methods import causal as causal_module
from bench.methods.base import build_method
from bench.methods.cards import load_method_card, resolve_method
from bench.methods.causal import CausalInterventions
from bench.methods.causal_modules import (
    FeatureDiscriminator,
    FeatureGenerator,
    VAEDecoder,
    VAEEncoder,
    decoder_channels,
    encoder_channels,
    kl_divergence,
    vae_depth,
    vae_input_size,
)
from bench.methods.specs.causal import CausalHparams
from bench.models.pose_net import ModelConfig, coord_l1
from bench.runner import prepare, run_grid
from bench.trainer import StageUpdater, StepContext

K = 21


# Tiny models: one intra-op thread is faster, and far faster on a loaded machine.
pytestmark = pytest.mark.usefixtures("one_thread")


TINY_MODEL = ModelConfig(img_size=32, head="volumetric", depth_bins=8, head_channels=32)


# -- the VAE's KL term -------------------------------------------------------------------
def test_kl_is_zero_at_the_prior_and_matches_the_closed_form():
    zero = torch.zeros(3, 256)
    assert torch.equal(kl_divergence(zero, zero), torch.zeros(3))
    torch.manual_seed(0)
    mu, logvar = torch.randn(5, 16), torch.randn(5, 16)
    kl = kl_divergence(mu, logvar)
    assert (kl > 0).all()
    closed = 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(-1)
    assert torch.allclose(kl, closed)
    reference = torch.distributions.kl_divergence(
        torch.distributions.Normal(mu, (0.5 * logvar).exp()), torch.distributions.Normal(0, 1)
    ).sum(-1)
    assert torch.allclose(kl, reference, atol=1e-5)
    # Only μ or only σ away from the prior is already positive.
    assert kl_divergence(torch.ones(1, 4), torch.zeros(1, 4)).item() == pytest.approx(2.0)
    assert kl_divergence(torch.zeros(1, 4), torch.ones(1, 4)).item() > 0


# -- the scaling rule and Table 1's shapes -----------------------------------------------
def test_scaling_rule():
    # depth = log2(S / 4): Table 1's six layers at 256 px, four at 64 px, three at 32 px.
    assert [vae_depth(s) for s in (256, 128, 64, 32, 16, 8)] == [6, 5, 4, 3, 2, 1]
    assert encoder_channels(6) == [8, 16, 32, 64, 128, 256]  # Table 1 exactly
    assert decoder_channels(6) == [128, 64, 32, 16, 8, 3]
    assert encoder_channels(4) == [32, 64, 128, 256]  # the last four: 4×4×256 is kept
    assert decoder_channels(4) == [128, 64, 32, 3]
    # Other crop sizes: the largest power of two below, clipped to Table 1's 256 px.
    assert [vae_input_size(s) for s in (64, 96, 256, 512, 8)] == [64, 64, 256, 256, 8]
    for bad in (4, 48):
        with pytest.raises(DabenchError):
            vae_depth(bad)
    with pytest.raises(DabenchError, match="at least 8 px"):
        vae_input_size(4)


def _conv_shapes(module: nn.Module, x: torch.Tensor) -> list[tuple[int, ...]]:
    shapes: list[tuple[int, ...]] = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape[1:])))
        for m in module.modules()
        if isinstance(m, nn.Conv2d)
    ]
    try:
        module(x)
    finally:
        for h in hooks:
            h.remove()
    return shapes


@pytest.mark.parametrize("size", [256, 64])
def test_vae_has_table1_shapes_at_the_scaled_size(size):
    n = vae_depth(size)
    enc, dec = VAEEncoder(size).eval(), VAEDecoder(size).eval()
    x = torch.randn(2, 3, size, size)
    # Table 1: 128×128×8, 64×64×16, …, 4×4×256 at 256 px (channel c at side 1024 / c).
    table_enc = [(c, 1024 // c, 1024 // c) for c in (8, 16, 32, 64, 128, 256)]
    assert _conv_shapes(enc, x) == table_enc[-n:]
    mu, logvar = enc(x)
    assert mu.shape == logvar.shape == (2, 256)
    assert enc.fc_mu.in_features == 4096 and dec.fc.out_features == 4096
    table_dec = [(128, 8, 8), (64, 16, 16), (32, 32, 32), (16, 64, 64), (8, 128, 128)]
    assert _conv_shapes(dec, mu) == [*table_dec[: n - 1], (3, size, size)]
    # Layer types: stride-2 convs + BN + LReLU; nearest upsampling + replication padding.
    convs = [m for m in enc.convs if isinstance(m, nn.Conv2d)]
    assert all(c.kernel_size == (3, 3) and c.stride == (2, 2) for c in convs)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in enc.convs) == n
    assert sum(isinstance(m, nn.LeakyReLU) for m in enc.convs) == n
    ups = [m for m in dec.convs if isinstance(m, nn.Upsample)]
    assert len(ups) == n and all(u.mode == "nearest" and u.scale_factor == 2 for u in ups)
    assert sum(isinstance(m, nn.ReplicationPad2d) for m in dec.convs) == n
    dconvs = [m for m in dec.convs if isinstance(m, nn.Conv2d)]
    assert all(c.stride == (1, 1) and c.padding == (0, 0) for c in dconvs)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in dec.convs) == n - 1  # not after the last
    assert isinstance(dec.convs[-1], nn.Conv2d)


@pytest.mark.parametrize("feat_dim", [128, 256, 512, 1024])
def test_generator_and_discriminator_have_table1_shapes(feat_dim):
    g = FeatureGenerator(3 * K, 256, feat_dim)
    linears = [m for m in g.net if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (3 * K + 256, 1024),
        (1024, 1024),
        (1024, feat_dim),
    ]
    assert sum(isinstance(m, nn.BatchNorm1d) for m in g.net) == 3
    drops = [m for m in g.net if isinstance(m, nn.Dropout)]
    assert len(drops) == 2 and all(d.p == 0.5 for d in drops)
    assert isinstance(g.net[-1], nn.Tanh)
    # g is conditioned on both inputs: a counterfactual needs the noise (the intervened
    # factor) and the pose to both reach the feature
    g.eval()
    pose, noise = torch.randn(6, 3 * K), torch.randn(6, 256)
    feat = g(pose, noise)
    assert feat.shape == (6, feat_dim)
    assert not torch.allclose(g(pose, torch.randn(6, 256)), feat, atol=1e-4)
    assert not torch.allclose(g(torch.randn(6, 3 * K), noise), feat, atol=1e-4)
    d = FeatureDiscriminator(feat_dim)
    assert [(m.in_features, m.out_features) for m in d.net if isinstance(m, nn.Linear)] == [
        (feat_dim, 1024),
        (1024, 1),
    ]
    assert d(feat).shape == (6,)


def test_the_method_builds_its_parts_at_the_crop_size():
    method = CausalInterventions(CausalHparams(), ModelConfig(img_size=64), K, 0)
    assert method.vae_size == 64 and len(encoder_channels(vae_depth(64))) == 4
    assert method.net.config.img_size == 64
    assert method.projector.net[0].out_features == 256
    assert method.generator.net[-3].out_features == 256


# -- losses, stages and prediction -------------------------------------------------------
def _batch(n: int = 6, size: int = 32) -> dict:
    gen = torch.Generator().manual_seed(0)
    vis = torch.ones(n, K, dtype=torch.bool)
    vis[0, :3] = False
    src = {
        "images": torch.randint(0, 255, (n, size, size, 3), dtype=torch.uint8, generator=gen),
        "kp2d": torch.rand(n, K, 2, generator=gen) * (size - 1),
        "kp3d": torch.rand(n, K, 3, generator=gen) * 100 + 400,
        "vis": vis,
    }
    other = {"images": torch.randint(0, 255, (n, size, size, 3), dtype=torch.uint8, generator=gen)}
    return {"source": src, "other": other}


ALL_TERMS = {
    "pose",
    "feat_pose",
    "vae_rec",
    "vae_kl",
    "fact",
    "gen_pose",
    "disc",
    "adv_f",
    "adv_g",
}


def _method(entry: str, **overrides) -> CausalInterventions:
    torch.manual_seed(0)
    resolved = resolve_method(entry, overrides)
    return build_method(resolved.spec, resolved.hparams, TINY_MODEL, K, 0)


def _stage(method: CausalInterventions, name: str):
    return next(s for s in method.stages() if s.name == name)


def _updater(method: CausalInterventions, stage: str = "joint", lr: float = 1e-3) -> StageUpdater:
    """The trainer's own update machinery for one stage (named optimisers, manual steps)."""
    config = TrainConfig(lr=lr, warmup_steps=0, grad_clip=0.0)
    return StageUpdater(method, _stage(method, stage), config, steps=4)


def _step(method: CausalInterventions, stage: str = "joint", batch=None, **kw) -> dict:
    update = _updater(method, stage, **kw)
    return update.step(batch or _batch(), StepContext(update))


@pytest.mark.parametrize("entry", ["causal-interventions", "causal-interventions/sd-ud"])
def test_trains_a_few_steps_in_both_settings_and_predicts(entry):
    method = _method(entry)
    assert [s.name for s in method.stages()] == ["warmup", "joint"]
    batch = _batch()
    warm_update = _updater(method, "warmup")
    warm_params = {id(p) for p in warm_update.params["main"]}
    assert not warm_params & {id(p) for p in method.generator.parameters()}
    assert not warm_params & {id(p) for p in method.discriminator.parameters()}
    warm = warm_update.step(batch, StepContext(warm_update))
    assert set(warm) == {"pose", "feat_pose", "vae_rec", "vae_kl"}
    update = _updater(method)
    before = {
        part: [p.detach().clone() for p in getattr(method, part).parameters()]
        for part in ("net", "encoder", "decoder", "projector", "readout", "generator")
    }
    first = None
    for step in range(6):  # the VAE's loss is noisy over the first few steps
        losses = update.step(batch, StepContext(update, step, step / 6))
        assert set(losses) == ALL_TERMS
        assert all(torch.isfinite(v) and v.ndim == 0 for v in losses.values())
        if step == 0:
            for part, old in before.items():
                now = list(getattr(method, part).parameters())
                assert any(not torch.equal(a, b) for a, b in zip(old, now, strict=True)), part
        first = first if first is not None else {k: float(v.detach()) for k, v in losses.items()}
    assert "disc_acc" in method.scalars()
    assert method.scalars() == {}  # the window restarts after each read
    # The same few steps lower the supervised and reconstruction losses.
    last = {k: float(v.detach()) for k, v in losses.items()}
    assert last["pose"] < first["pose"] and last["vae_rec"] < first["vae_rec"]
    method.eval()
    images = batch["source"]["images"]
    pred = method.predict(images)
    assert pred.kp2d.shape == (6, K, 2) and pred.rel_depth.shape == (6, K)
    # Test-time prediction is h(f(x)) only: the VAE, g, D, φ and q never change it.
    parts = ("encoder", "decoder", "generator", "discriminator", "projector", "readout")
    assert_predicts_with_the_pose_net_only(method, images, parts)


def test_dg_keeps_background_images_out_of_the_feature_space(monkeypatch):
    method = _method("causal-interventions/sd-ud")
    seen: list[int] = []
    real_features = method.net.features
    monkeypatch.setattr(method.net, "features", lambda x: seen.append(len(x)) or real_features(x))
    _step(method)
    assert seen == [6]  # source images only
    da = _method("causal-interventions")
    seen.clear()
    real_da = da.net.features
    monkeypatch.setattr(da.net, "features", lambda x: seen.append(len(x)) or real_da(x))
    _step(da)
    assert seen == [12]  # source + target through the backbone together
    seen.clear()
    _step(da, "warmup")
    assert seen == [12]  # in the warm-up too: BatchNorm keeps one regime across stages


def test_discriminator_and_model_alternate_with_their_own_optimisers():
    method = _method("causal-interventions")
    update = _updater(method)
    d_params = {id(p) for p in method.discriminator.parameters()}
    assert list(update.optimizers) == ["disc", "model"]  # D first, then everything else
    assert {id(p) for p in update.params["disc"]} == d_params
    assert not d_params & {id(p) for p in update.params["model"]}
    model_params = {id(p) for p in update.params["model"]}
    for part in (method.net, method.projector, method.generator, method.encoder):
        assert {id(p) for p in part.parameters()} <= model_params
    # D's logits before its step (its own loss, on detached features), then after it (f's
    # and g's adversarial terms): the model steps against the updated discriminator.
    seen: list[torch.Tensor] = []
    logits = method.discriminator.logits

    def spy(feat):
        seen.append(method.discriminator.net[-1].weight.detach().clone())
        return logits(feat)

    method.discriminator.logits = spy
    calls = []
    backward, optimizer_step = update.backward, update.optimizer_step
    update.backward = lambda loss, name: calls.append(("backward", name)) or backward(loss, name)
    update.optimizer_step = lambda name, ctx: (
        calls.append(("step", name)) or optimizer_step(name, ctx)
    )
    d_before = [p.detach().clone() for p in method.discriminator.parameters()]
    update.step(_batch(), StepContext(update))
    assert calls == [
        ("backward", "disc"),
        ("step", "disc"),
        ("backward", "model"),
        ("step", "model"),
    ]
    assert len(seen) == 4
    assert torch.equal(seen[0], seen[1]) and torch.equal(seen[2], seen[3])
    assert not torch.equal(seen[1], seen[2])  # D moved between its update and the model's
    d_after = list(method.discriminator.parameters())
    # the model's update left D where D's own update put it
    assert torch.equal(d_after[-2].detach(), seen[2])
    assert any(not torch.equal(a, b) for a, b in zip(d_before, d_after, strict=True))


def test_each_update_follows_only_its_own_losses():
    method = _method("causal-interventions")
    update = _updater(method)
    ctx = StepContext(update)
    losses = {}
    real = update.optimizer_step
    grads = {}

    def record(name, c):
        grads[name] = {
            part: any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())
            for part, m in (
                ("disc", method.discriminator),
                ("net", method.net),
                ("projector", method.projector),
                ("generator", method.generator),
                ("encoder", method.encoder),
            )
        }
        real(name, c)

    update.optimizer_step = record
    losses = update.step(_batch(), ctx)
    assert set(losses) == ALL_TERMS
    # D's update: gradients in D only; the model's: everywhere but D.
    assert grads["disc"] == {
        "disc": True,
        "net": False,
        "projector": False,
        "generator": False,
        "encoder": False,
    }
    assert not grads["model"]["disc"]
    assert grads["model"]["net"] and grads["model"]["projector"] and grads["model"]["generator"]


def test_losses_reach_only_what_they_should():
    method = _method("causal-interventions", adv_weight=0.0)  # grouped: one summed backward
    out = method.training_step("joint", _batch(), StepContext(_updater(method)))
    # fact pulls g towards the real feature, never the real feature towards g.
    out["fact"].backward(retain_graph=True)
    assert all(p.grad is None for p in method.projector.parameters())
    assert any(p.grad is not None for p in method.generator.parameters())
    # g reads the VAE's codes detached: the VAE trains on its ELBO only.
    method.zero_grad()
    out["gen_pose"].backward()
    assert all(p.grad is None for p in method.encoder.parameters())


def test_adversarial_terms_are_non_saturating_bce():
    method = _method("causal-interventions")
    b = 2.0
    with torch.no_grad():
        for p in method.discriminator.parameters():
            p.zero_()
        method.discriminator.net[-1].bias.fill_(b)  # logit b everywhere: "real" w.p. σ(b)
    # lr 0: D keeps its constant logit through its own update
    losses = {k: float(v) for k, v in _step(method, lr=0.0).items()}

    def softplus(x: float) -> float:
        return float(np.log1p(np.exp(x)))

    # D: −½[log σ(b) + log(1 − σ(b))]; f wants its real features called generated
    # (−log(1 − σ(b))), g wants its counterfactuals called real (−log σ(b)).
    assert losses["disc"] == pytest.approx(0.5 * (softplus(-b) + softplus(b)), rel=1e-5)
    assert losses["adv_f"] == pytest.approx(0.1 * softplus(b), rel=1e-5)
    assert losses["adv_g"] == pytest.approx(0.1 * softplus(-b), rel=1e-5)
    # D calls everything real: right on the real half, wrong on the generated half.
    assert method.scalars()["disc_acc"] == 0.5


def test_head_outputs_from_features_equal_the_pose_net_forward():
    method = _method("causal-interventions").eval()
    images = _batch()["source"]["images"]
    with torch.no_grad():
        full = method.net(images)
        split = method.net.head_outputs(method.net.features(images))
    assert torch.allclose(full["coords"], split["coords"])
    assert torch.allclose(full["pooled"], split["pooled"])


def test_coord_l1_weighting():
    target = torch.full((1, 2, 3), 0.5)
    pred = target + torch.tensor([[[0.1, 0.2, 0.3], [0.1, 0.1, 0.1]]])
    vis = torch.tensor([[True, False]])
    # joint 0 counts x, y, z; joint 1 only z (invisible); mean over all 6 entries
    assert float(coord_l1(pred, target, vis)) == pytest.approx((0.1 + 0.2 + 0.3 + 0.1) / 6)
    target[0, 0, 2] = float("nan")
    assert float(coord_l1(pred, target, vis)) == pytest.approx((0.1 + 0.2 + 0.1) / 6)


@pytest.mark.parametrize(
    ("variant", "absent", "missing_parts"),
    [
        ("no-vae", {"vae_rec", "vae_kl"}, ("encoder", "decoder")),
        ("no-generator", {"fact", "gen_pose", "disc", "adv_f", "adv_g"}, ("generator",)),
        ("no-adversary", {"disc", "adv_f", "adv_g"}, ("discriminator",)),
        ("no-factual", {"fact"}, ()),
        ("no-gen-pose", {"gen_pose"}, ()),
        ("no-feat-pose", {"feat_pose"}, ()),
        ("swap-only", set(), ()),
        ("prior-only", set(), ()),
        ("feat-128", set(), ()),
        ("sd-ud-no-vae", {"vae_rec", "vae_kl"}, ("encoder", "decoder")),
    ],
)
def test_every_term_is_switchable(variant, absent, missing_parts):
    method = _method(f"causal-interventions/{variant}")
    for part in missing_parts:
        assert getattr(method, part) is None
    losses = _step(method)
    assert set(losses) == ALL_TERMS - absent
    assert all(torch.isfinite(v) for v in losses.values())
    if variant == "no-generator":
        assert [s.name for s in method.stages()] == ["joint"]


def test_interventions_choose_the_counterfactual_codes(monkeypatch):
    for variant, expected in (("", 3), ("/swap-only", 2), ("/prior-only", 2), ("/no-vae", 2)):
        method = _method("causal-interventions" + variant)
        calls: list[int] = []
        forward = method.generator.forward
        monkeypatch.setattr(
            method.generator,
            "forward",
            lambda p, u, f=forward, c=calls: c.append(len(u)) or f(p, u),
        )
        _step(method)
        # factual + one batch of counterfactuals per intervention kind
        assert calls == [6 * expected], variant


def test_invalid_hyper_parameters_are_one_clear_error():
    with pytest.raises(DabenchError, match="unknown setting 'tda'"):
        resolve_method("causal-interventions", {"setting": "tda"})
    with pytest.raises(DabenchError, match="unknown interventions"):
        resolve_method("causal-interventions", {"interventions": "all"})
    with pytest.raises(DabenchError, match="warmup_share"):
        resolve_method("causal-interventions", {"warmup_share": 1.0})
    with pytest.raises(DabenchError, match="adv_weight must be >= 0"):
        resolve_method("causal-interventions", {"adv_weight": -1})


# -- card and data needs -----------------------------------------------------------------
def test_card():
    card = load_method_card("causal-interventions")
    assert card.category == "domain-adaptation"
    assert card.model == {"head": "volumetric", "depth_bins": 16}
    assert "RECONSTRUCTED" in card.description
    assert any(c.startswith("[paper]") for c in card.choices)
    assert any(c.startswith("[inferred]") for c in card.choices)
    assert any(c.startswith("Scaling rule") for c in card.choices)
    assert {"sd-ud", "feat-128", "feat-512", "feat-1024", "no-vae"} <= set(card.variants)
    for entry in card.reported:
        assert set(entry) == {"paper", "setting", "metric", "values"}
        assert entry["metric"] in {"mpjpe_mm", "pa_mpjpe_mm", "epe_mm"}
    table2 = next(e for e in card.reported if "Table 2" in e["paper"] and e["metric"] == "mpjpe_mm")
    assert table2["values"]["SURREAL→3DPW"] == 103.2
    for group in card.ablation_groups.values():
        for entry in group:
            resolve_method(entry)


def test_views_depend_on_the_setting():
    da = resolve_method("causal-interventions")
    dg = resolve_method("causal-interventions/sd-ud")
    for stage in da.spec.stages(da.hparams):
        assert stage.views == {"source": Labelled("source"), "other": Images("target")}
    for stage in dg.spec.stages(dg.hparams):
        assert stage.views == {"source": Labelled("source"), "other": Backgrounds()}


CAUSAL_GRID = {
    "name": "tiny-causal",
    "methods": ["causal-interventions", "causal-interventions/sd-ud"],
    "model": {"head_channels": 32},
}


def test_harness_refuses_a_store_without_background_images(tmp_path, monkeypatch, tiny_grid):
    root = tmp_path / "shards"
    synthesize(
        ["synth-hand-clean", "synth-hand-wild"], root, n_train=40, n_test=8, size=32, progress=False
    )
    pair = pair_shards("synth-hand-clean", "synth-hand-wild", root)
    dg = resolve_method("causal-interventions/sd-ud")
    da = resolve_method("causal-interventions")
    check_views("causal-interventions", da.spec.stages(da.hparams)[-1].views, pair)
    with pytest.raises(DabenchError, match="synth-backgrounds"):
        check_views("causal-interventions/sd-ud", dg.spec.stages(dg.hparams)[-1].views, pair)
    # Through the runner, with shard generation off (a store of converted real datasets):
    # the grid is refused before any trial starts.
    monkeypatch.setattr("bench.trial.ensure_shards", lambda *a, **k: None)
    path = tiny_grid(**{**CAUSAL_GRID, "methods": ["causal-interventions/sd-ud"]})
    with pytest.raises(DabenchError, match=r"causal-interventions/sd-ud cannot run.*backgrounds"):
        prepare(list(load_grid(path).trials), root, progress=False)


def test_end_to_end_through_the_harness_in_both_settings(tmp_path, tiny_grid):
    grid = load_grid(tiny_grid(**CAUSAL_GRID))
    data_root = tmp_path / "shards"
    summary = run_grid(
        grid,
        tmp_path / "results",
        executor="local",
        data_root=data_root,
        progress=False,
        log=lambda msg: None,
    )
    assert summary.ran == 2 and not summary.failed
    assert (data_root / "synth-backgrounds" / "train.h5").exists()  # generated for sd-ud
    for record in summary.records:
        assert record["status"] == "ok", record.get("error")
        assert record["metrics"]["target_test"]["overall"]["mpjpe"] > 0
        losses = {k for e in record["curves"]["losses"] for k in e}
        assert {"pose", "vae_rec", "fact", "disc", "adv_f", "disc_acc"} <= losses
        assert {e["stage"] for e in record["curves"]["losses"]} <= {"warmup", "joint"}
        assert record["spec"]["model"]["head"] == "volumetric"


# -- what the method computes, pinned (each of these catches a planted bug) ------------------
def _spy(monkeypatch, method):
    """Record the VAE's codes, the generator's codes and the discriminator's inputs."""
    seen: dict[str, list] = {"z": [], "u": [], "d": [], "enc": []}
    real_rep = causal_module.reparameterize

    def rep(mu, logvar):
        z = real_rep(mu, logvar)
        seen["z"].append(z.detach())
        return z

    monkeypatch.setattr(causal_module, "reparameterize", rep)
    if method.generator is not None:
        forward = method.generator.forward
        monkeypatch.setattr(
            method.generator, "forward", lambda p, u: seen["u"].append(u.detach()) or forward(p, u)
        )
    if method.discriminator is not None:
        logits = method.discriminator.logits
        monkeypatch.setattr(
            method.discriminator, "logits", lambda f: seen["d"].append(f.detach()) or logits(f)
        )
    if method.encoder is not None:
        encode = method.encoder.forward

        def encoder(x):
            mu, logvar = encode(x)
            seen["enc"].append((x.detach(), mu.detach(), logvar.detach()))
            return mu, logvar

        monkeypatch.setattr(method.encoder, "forward", encoder)
    return seen


def test_swap_interventions_use_the_other_domains_codes(monkeypatch):
    method = _method("causal-interventions/swap-only")
    seen = _spy(monkeypatch, method)
    _step(method)
    (z,) = seen["z"]
    (u,) = seen["u"]
    n = 6
    # factual codes are the source images' own, the interventions the other images'
    assert torch.equal(u[:n], z[:n])
    assert torch.equal(u[n:], z[n:])
    assert not torch.allclose(z[:n], z[n:])


@pytest.mark.parametrize(
    ("entry", "rows"), [("causal-interventions", 12), ("causal-interventions/sd-ud", 6)]
)
def test_target_features_reach_the_adversary_only_in_the_da_setting(monkeypatch, entry, rows):
    method = _method(entry)
    seen = _spy(monkeypatch, method)
    _step(method)
    real_for_d = seen["d"][0]  # D's own update: the real features first
    assert real_for_d.shape[0] == rows
    if rows == 12:  # the target half is the projected target features, not a copy
        assert not torch.allclose(real_for_d[:6], real_for_d[6:])


def test_the_kl_term_is_the_elbo_per_pixel_value(monkeypatch):
    method = _method("causal-interventions", kl_weight=0.5, vae_weight=2.0, vae_batch=4)
    seen = _spy(monkeypatch, method)
    losses = _step(method)
    ((x, mu, logvar),) = seen["enc"]
    sub = torch.tensor([0, 1, 6, 7])  # two source and two other images (vae_batch = 4)
    mu, logvar = mu[sub].double(), logvar[sub].double()
    kl = 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(-1).mean()
    per_value = x[0].numel()  # 3 × S × S values per image
    assert per_value == 3 * method.vae_size**2
    expected = 2.0 * 0.5 * float(kl) / per_value
    assert float(losses["vae_kl"]) == pytest.approx(expected, rel=1e-4)
