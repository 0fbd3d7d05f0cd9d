"""Geometric reconstruction (Lin et al.) wired into the harness: which stages each variant
runs and which artifacts variants share, the mean teacher's update, L_sup of Eq. 1, the
warm start of L_rec, the source's reference bone lengths, decoding, and the features that
are rebuilt rather than stored."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from conftest import write_grid

from bench.data.joints import get_joint_set
from bench.data.views import FramePairs, Images
from bench.errors import DabenchError
from bench.grid import load_grid
from bench.losses.pseudo_labels import mean_bone_lengths
from bench.methods.base import build_method
from bench.methods.cards import resolve_method
from bench.models.heatmaps import gaussian_targets, image_to_heatmap
from bench.models.pose_net import ModelConfig
from bench.trainer import StageContext

SIZE = 32
HAND = get_joint_set("hand21")
TINY = {
    "features": "random-vgg19",
    "feature_width": 0.125,
    "generator_channels": 8,
    "motion_channels": 8,
    "motion_max_channels": 16,
}

pytestmark = pytest.mark.usefixtures("one_thread")


def build(entry: str = "geometric-reconstruction", **hparams):
    resolved = resolve_method(entry, {**TINY, **hparams})
    model = ModelConfig(
        **{"backbone": "resnet10t", "img_size": SIZE, "head_channels": 16, **resolved.card.model}
    )
    torch.manual_seed(0)
    return build_method(resolved.spec, resolved.hparams, model, 21, 0, HAND)


def _stage(method, name):
    return next(s for s in method.stages() if s.name == name)


class _Ctx:
    def __init__(self, progress: float = 0.0) -> None:
        self.progress, self.step = progress, 0


def _frames(n: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 2, SIZE, SIZE, 3), dtype=torch.uint8, generator=g)


# -- declaration -----------------------------------------------------------------------------


def test_each_variant_runs_the_stages_its_losses_need():
    def plan(entry):
        r = resolve_method(entry, TINY)
        return {
            s.name: (s.views, r.spec.losses(r.hparams, s.name)) for s in r.spec.stages(r.hparams)
        }

    full = plan("geometric-reconstruction")
    assert list(full) == ["stylenet", "pretrain", "generator", "finetune"]
    assert full["finetune"][1] == ("sup", "pseudo", "rec")
    assert full["finetune"][0]["target"] == FramePairs("target", (5, 15), ("images", "K"))
    # w/o L_align: no StyleNet and no target images in pre-training
    no_align = plan("geometric-reconstruction/wo-align")
    assert list(no_align) == ["pretrain", "generator", "finetune"]
    assert set(no_align["pretrain"][0]) == {"source"} and no_align["pretrain"][1] == ("sup",)
    # w/o L_rec: no generator stage; pseudo-labels need single target images with K only
    no_rec = plan("geometric-reconstruction/wo-rec")
    assert list(no_rec) == ["stylenet", "pretrain", "finetune"]
    assert no_rec["finetune"][0]["target"] == Images("target", ("images", "K"))
    assert no_rec["finetune"][1] == ("sup", "pseudo")
    assert plan("geometric-reconstruction/wo-pseudo")["finetune"][1] == ("sup", "rec")
    # Table 4's ranges reach the frame-pair view; Table B's mask rows run without L_rec
    assert plan("geometric-reconstruction/stride-30-50")["finetune"][0]["target"].stride == (30, 50)
    assert "generator" not in plan("geometric-reconstruction/m3d-only")


def test_variants_share_the_stages_they_agree_on(tmp_path):
    variants = ["", "/wo-pseudo", "/union", "/heatmap-rec", "/stride-0-5", "/wo-align"]
    grid = load_grid(
        write_grid(
            tmp_path,
            methods=[f"geometric-reconstruction{v}" for v in variants],
            pairs=[{"source": "synth-hand-clean", "target": "synth-hand-video"}],
            model={"backbone": "resnet10t", "head": "2.5d"},
            hparams={"geometric-reconstruction": TINY},
            train={"steps": 4},
        )
    )
    runs = Counter(run.stages[0] for run in grid.stage_runs)
    # one StyleNet and one pre-training for every variant with L_align, one pre-training
    # without it; generators: the full method's (shared by w/o L_pseudo, which differs only
    # in fine-tuning), the L_heatmap one, the [0, 5] one, and w/o L_align's
    assert runs == {"stylenet": 1, "pretrain": 2, "generator": 4}
    upstream = {t.label: [u.key for u in t.upstream] for t in grid.trials}
    full = upstream["geometric-reconstruction"]
    assert upstream["geometric-reconstruction/wo-pseudo"] == full
    assert upstream["geometric-reconstruction/union"] == full[:2]  # no L_rec: no generator
    assert upstream["geometric-reconstruction/stride-0-5"][:2] == full[:2]


def test_bad_settings_are_refused_with_the_reason():
    with pytest.raises(DabenchError, match="features vgg19 needs vgg_weights"):
        build(features="vgg19", feature_width=1.0)
    with pytest.raises(DabenchError, match="feature_width 0.5 needs features random-vgg19"):
        resolve_method("geometric-reconstruction", {"features": "vgg19", "feature_width": 0.5})
    with pytest.raises(DabenchError, match="stride must be"):
        resolve_method("geometric-reconstruction", {"stride": [9, 3]})
    # a tuple annotation's arity and element types are the grid file's contract too
    for bad in ([3], [5, 15, 30], [5.5, 15]):
        with pytest.raises(DabenchError, match=r"'stride' must be tuple\[int, int\]"):
            resolve_method("geometric-reconstruction", {"stride": bad})
    with pytest.raises(DabenchError, match="generator_epochs must be > 0"):
        resolve_method("geometric-reconstruction", {"generator_epochs": 0.0})
    with pytest.raises(DabenchError, match="unknown mask_schedule 'both'; valid: independent-"):
        resolve_method("geometric-reconstruction", {"mask_schedule": "both"})
    resolved = resolve_method("geometric-reconstruction", TINY)
    model = ModelConfig(backbone="resnet10t", img_size=SIZE, head="volumetric")
    with pytest.raises(DabenchError, match="model.head must be 2.5d"):
        build_method(resolved.spec, resolved.hparams, model, 21, 0, HAND)
    with pytest.raises(DabenchError, match="build it with the pair's joint set"):
        model = ModelConfig(backbone="resnet10t", img_size=SIZE, head="2.5d")
        build_method(resolved.spec, resolved.hparams, model, 21, 0)


# -- the adapter -----------------------------------------------------------------------------


def test_the_teacher_is_an_ema_of_the_parameters_that_leaves_buffers_alone():
    method = build()
    method.on_stage_start(_stage(method, "finetune"), StageContext({}))
    teacher = method.teacher
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    with torch.no_grad():
        for p in method.net.parameters():
            p.add_(1.0)
        for b in method.net.buffers():
            if b.is_floating_point():
                b.add_(5.0)
    method.after_optimizer_step("finetune", "main", _Ctx())
    alpha = method.hparams.ema
    student = dict(method.net.named_parameters())
    for name, p in teacher.named_parameters():
        # θ_t ← α θ_t + (1 − α) θ_s with the student moved by 1 from the teacher
        torch.testing.assert_close(p, before[name] + (1 - alpha))
        torch.testing.assert_close(p, student[name] - alpha)
    for name, b in teacher.named_buffers():
        assert torch.equal(b, before[name]), name  # BN statistics stay the pre-trained ones
    assert not any(p.requires_grad for p in teacher.parameters())


def test_eq1_is_zero_for_the_labels_own_heatmaps_and_depths_and_grows_with_error():
    method = build()
    g = torch.Generator().manual_seed(0)
    kp2d = torch.rand(2, 21, 2, generator=g) * (SIZE - 1)
    kp3d = torch.randn(2, 21, 3, generator=g) * 30 + torch.tensor([0.0, 0.0, 500.0])
    vis = torch.ones(2, 21, dtype=torch.bool)
    labels = {"kp2d": kp2d, "kp3d": kp3d, "vis": vis}
    h = SIZE // method.net.config.heatmap_stride
    xy = image_to_heatmap(kp2d, method.net.config.heatmap_stride)
    heat, _ = gaussian_targets(xy, vis, (h, h), method.hparams.heatmap_sigma)
    depth = method.net.targets(kp2d, kp3d, method.root)[..., 2]
    exact = {"heat": heat, "depth": depth}
    assert float(method._sup_loss(exact, labels)) == pytest.approx(0.0, abs=1e-4)
    # "norm" (as printed): per-sample L2 norms averaged, so a unit error in one depth of
    # one sample adds λ_d / B
    off = {"heat": heat, "depth": depth + torch.eye(21)[0] * torch.tensor([[1.0], [0.0]])}
    lam = method.hparams.lambda_d
    assert float(method._sup_loss(off, labels)) == pytest.approx(lam / 2, rel=1e-3)
    mse = build(sup_form="mse")
    assert float(mse._sup_loss(off, labels)) == pytest.approx(lam * 1 / 42, rel=1e-3)


def test_rec_reaches_the_predictor_only_after_the_warm_start():
    method = build(rec_start=0.5)
    method.bone_sum.fill_(30.0)
    method.bone_count.fill_(1.0)
    for stage in ("generator", "finetune"):  # W and G are made when their stage starts
        method.on_stage_start(_stage(method, stage), StageContext({}))
    method.train()
    g = torch.Generator().manual_seed(1)
    src = {
        "images": torch.randint(0, 256, (2, SIZE, SIZE, 3), dtype=torch.uint8, generator=g),
        "kp2d": torch.rand(2, 21, 2, generator=g) * SIZE,
        "kp3d": torch.randn(2, 21, 3, generator=g) * 30 + 500,
        "vis": torch.ones(2, 21, dtype=torch.bool),
    }
    intrinsics = torch.tensor([[60.0, 0, 16], [0, 60.0, 16], [0, 0, 1]]).expand(4, 2, 3, 3)
    batch = {"source": src, "target": {"images": _frames(4), "K": intrinsics}}
    head = method.net.head.net.final.weight
    grads = {}
    for progress in (0.25, 0.75):
        method.zero_grad()
        losses = method.training_step("finetune", batch, _Ctx(progress))
        assert set(losses) == {"sup", "pseudo", "rec"}
        losses["rec"].backward()
        grads[progress] = head.grad
        gen = next(method.reconstructor.generator.parameters()).grad
        assert gen is not None and bool(gen.abs().sum() > 0)  # W and G always learn
    assert grads[0.25] is None or float(grads[0.25].abs().sum()) == 0.0
    assert torch.isfinite(grads[0.75]).all() and float(grads[0.75].abs().sum()) > 0


def test_reference_bone_lengths_are_the_means_over_pretraining_batches():
    method = build("geometric-reconstruction/wo-align")
    with pytest.raises(DabenchError, match="no source bone lengths"):
        method.reference_lengths()
    g = torch.Generator().manual_seed(2)
    seen = []
    for _ in range(2):
        kp3d = torch.randn(3, 21, 3, generator=g) * 40
        kp3d[0, 4] = float("nan")  # a missing joint counts nothing for its bones
        seen.append(kp3d)
        method._count_bones(kp3d)
    expected = mean_bone_lengths(torch.cat(seen), HAND.parents)
    torch.testing.assert_close(method.reference_lengths()[1:], expected[1:].float())


def test_argmax_decoding_recovers_keypoints_from_gaussian_heatmaps():
    method = build().eval()
    stride = method.net.config.heatmap_stride
    h = SIZE // stride
    kp = torch.tensor([[[10.0, 6.0], [3.0, 21.0]]])
    heat, _ = gaussian_targets(image_to_heatmap(kp, stride), torch.ones(1, 2), (h, h), 1.0)
    depth = torch.tensor([[0.0, 0.1]])
    method._outputs = lambda net, images: {"heat": heat, "depth": depth, "xy": None}
    pred = method.predict(torch.zeros(1, SIZE, SIZE, 3, dtype=torch.uint8))
    # the argmax cell with the quarter-cell shift: within half a cell of the keypoint
    assert (pred.kp2d - kp).abs().max() <= stride / 2
    assert pred.rel_depth[0, 1] == pytest.approx(0.1 * method.net.config.depth_range_mm)


def test_rebuilt_features_stay_out_of_the_state_and_a_state_round_trips():
    method, other = build(), build()
    assert not any(k.startswith("reconstructor.") for k in method.state_dict())
    for m in (method, other):
        m.on_stage_start(_stage(m, "generator"), StageContext({}))
    state = method.state_dict()
    assert not any(k.startswith(("vgg.", "style_net.encoder.", "perceptual.")) for k in state)
    assert any(k.startswith("style_net.decoder.") for k in state)
    assert any(k.startswith("reconstructor.") for k in state)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.5)
    other.load_state_dict(state)  # strict: only the rebuilt features may be absent
    for k, v in other.state_dict().items():
        assert torch.equal(v, state[k]), k
    # the features are the same seeded weights in both
    for a, b in zip(method.vgg.parameters(), build().vgg.parameters(), strict=True):
        assert torch.equal(a, b)


# -- grids -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["lin-table1-hand", "lin-table2-body"])
def test_the_paper_grids_validate_in_the_papers_configuration(name):
    grid = load_grid(name)
    ours = [t for t in grid.trials if t.label == "geometric-reconstruction"]
    model = ours[0].model
    assert (model["backbone"], model["img_size"], model["head"]) == ("resnet101", 256, "2.5d")
    assert (model["head_channels"], model["heatmap_stride"], model["neck"]) == (256, 4, 0)
    hp = ours[0].hparams
    assert (hp["pretrain_epochs"], hp["pretrain_batch"], hp["finetune_epochs"]) == (40, 64, 80)
    assert (hp["pretrain_lr"], ours[0].train["lr"], ours[0].train["batch_size"]) == (
        1e-4,
        1e-4,
        32,
    )
    assert (hp["features"], hp["stride"]) == ("vgg19", [5, 15])
    assert (hp["align_weight"], hp["pseudo_weight"]) == (0.1, 0.1)
    targets = {t.target for t in grid.trials}
    assert targets == ({"h3d", "mvhand"} if "hand" in name else {"h36m", "3dpw", "lsp"})
    for t in ours:  # LSP has no video: no reconstruction there
        assert t.hparams["rec_weight"] == (0.0 if t.target == "lsp" else 0.1)


def test_the_ablation_grid_runs_every_table_sharing_its_stages():
    from bench.methods.cards import load_method_card

    grid = load_grid("geometric-ablation")
    labels = {t.label for t in grid.trials}
    groups = load_method_card("geometric-reconstruction").ablation_groups
    for table in ("components", "losses", "reconstruction", "masks"):
        assert set(groups[table]) <= labels, table
    # Table 4: every range; [5, 15] is the method's own default row
    assert set(groups["stride"]) - labels == {"geometric-reconstruction/stride-5-15"}
    assert len(grid.trials) == 2 * len(labels) == 30
    runs = Counter((s.target, s.stages) for s in grid.stage_runs)
    for target in ("synth-hand-video", "synth-body-video"):
        # one StyleNet; pre-training with and without L_align; generators: the method's
        # (shared by w/o L_pseudo and Table A's +rec), w/o L_align's, L_heatmap and 4 strides
        assert runs[(target, ("features",))] == 1  # one autoencoder, shared by every row
        assert runs[(target, ("stylenet",))] == 1
        assert runs[(target, ("pretrain",))] == 2
        assert runs[(target, ("generator",))] == 7
    starts = {(t.label, t.target): t.start.key for t in grid.trials if t.start}
    for target in ("synth-hand-video", "synth-body-video"):
        full = starts[("geometric-reconstruction", target)]
        assert starts[("geometric-reconstruction/wo-pseudo", target)] == full
        assert starts[("geometric-reconstruction/table-a-rec", target)] == full


def test_records_and_reports_say_which_vgg_features_a_row_used():
    from bench.store import method_notes

    def notes(**hp):
        return method_notes({"method": "geometric-reconstruction", "hparams": hp})

    random = notes(align_weight=0.1, features="random-vgg19", feature_seed=3, feature_width=0.25)
    assert (
        random == "VGG-19 features with seeded random weights (seed 3, width 0.25), not ImageNet's"
    )
    assert notes(rec_weight=0.1, features="vgg19", vgg_weights="/w/vgg19.pth").endswith("vgg19.pth")
    assert notes(align_weight=0.0, rec_weight=0.0, features="random-vgg19") == ""  # no VGG used
    assert method_notes({"method": "source-only", "hparams": {}}) == ""
    assert method_notes({"method": "no-longer-registered", "hparams": {}}) == ""


def test_each_pseudo_label_term_reaches_the_student():
    """Eq. 3 through the adapter: the 2D term alone (M_2D only) and the 3D term alone
    (M_3D only) are both non-zero and move the student's head."""
    intrinsics = torch.tensor([[60.0, 0, 16], [0, 60.0, 16], [0, 0, 1]]).expand(8, 3, 3)
    images = _frames(4).flatten(0, 1)
    for schedule in ("m2d-only", "m3d-only"):
        method = build(mask_schedule=schedule, gamma_3d=10.0)  # γ_3D keeps every keypoint
        method.bone_sum.fill_(30.0)
        method.bone_count.fill_(1.0)
        method.on_stage_start(_stage(method, "finetune"), StageContext({}))
        method.train()
        loss = method._pseudo(method._outputs(method.net, images), images, intrinsics, _Ctx())
        assert float(loss.detach()) > 0, schedule
        loss.backward()
        assert float(method.net.head.net.final.weight.grad.abs().sum()) > 0, schedule


def test_align_pairs_each_source_image_with_its_own_stylised_copy():
    """Eq. 2 through the adapter: z of the source images against z of *their* stylised
    copies (StyleNet replaced by a known image transform), not of themselves or others."""
    from bench.losses.contrastive import info_nce
    from bench.models.backbones import normalize_images

    method = build()
    method.train()
    g = torch.Generator().manual_seed(4)
    src = {
        "images": torch.randint(0, 256, (4, SIZE, SIZE, 3), dtype=torch.uint8, generator=g),
        "kp2d": torch.rand(4, 21, 2, generator=g) * SIZE,
        "kp3d": torch.randn(4, 21, 3, generator=g) * 30 + 500,
        "vis": torch.ones(4, 21, dtype=torch.bool),
    }
    stylised = lambda x, style, alpha: x.flip(-1) * 0.5  # noqa: E731
    method.style_net.stylize = stylised
    batch = {"source": src, "target": {"images": src["images"]}}
    losses = method.training_step("pretrain", batch, _Ctx())
    x = normalize_images(src["images"])
    z = method.net.pool(method.net(torch.cat([x, stylised(x, None, None)]))["feat"])
    expected = info_nce(z[:4], z[4:], method.hparams.tau)
    align = float(losses["align"].detach())
    assert align == pytest.approx(method.hparams.align_weight * float(expected.detach()))
    wrong = info_nce(z[:4], z[:4], method.hparams.tau)
    assert abs(float(expected) - float(wrong)) > 1e-3  # the check can tell them apart


def test_rec_compares_the_reconstruction_with_the_driving_frame():
    method = build()
    method.on_stage_start(_stage(method, "generator"), StageContext({}))
    frames = _frames(2, seed=5)
    base, drv = frames[:, 0], frames[:, 1]
    probs = torch.full((2, 21, 8, 8), 1 / 64)
    # a reconstructor that returns the driving frame exactly: L_rec = 0
    method.reconstructor.forward = lambda b, pb, pd: drv.permute(0, 3, 1, 2).float() / 255
    assert float(method._reconstruction(base, drv, probs, probs)) == pytest.approx(0, abs=1e-6)
    method.reconstructor.forward = lambda b, pb, pd: b  # the base frame: L_rec > 0
    assert float(method._reconstruction(base, drv, probs, probs)) > 0.01


# -- features trained in-harness (trained-vgg19) ----------------------------------------------


def test_trained_features_get_a_stage_of_their_own_shared_by_every_variant(tmp_path):
    r = resolve_method("geometric-reconstruction/trained-features", TINY)
    stages = r.spec.stages(r.hparams)
    assert [s.name for s in stages] == ["features", "stylenet", "pretrain", "generator", "finetune"]
    assert r.spec.losses(r.hparams, "features") == ("pixel",)
    assert set(stages[0].views) == {"source", "target"}
    # later stages depend on how the features were trained
    assert all("feature_epochs" in s.reads for s in stages[:-1])
    plain = resolve_method("geometric-reconstruction", TINY)
    assert all("feature_epochs" not in (s.reads or ()) for s in plain.spec.stages(plain.hparams))
    # with neither L_align nor L_rec no VGG is read, so nothing is trained
    none = resolve_method(
        "geometric-reconstruction/trained-features", {**TINY, "align_weight": 0, "rec_weight": 0}
    )
    assert [s.name for s in none.spec.stages(none.hparams)] == ["pretrain", "finetune"]
    grid = load_grid(
        write_grid(
            tmp_path,
            methods=["geometric-reconstruction", "geometric-reconstruction/wo-rec"],
            pairs=[{"source": "synth-hand-clean", "target": "synth-hand-video"}],
            model={"backbone": "resnet10t", "head": "2.5d"},
            hparams={"geometric-reconstruction": {**TINY, "features": "trained-vgg19"}},
            train={"steps": 4},
        )
    )
    # one autoencoder for both (it is always trained to relu5_1), then one StyleNet
    runs = Counter(run.stages[0] for run in grid.stage_runs)
    assert runs["features"] == 1 and runs["stylenet"] == 1


def test_trained_features_learn_in_their_stage_then_are_frozen_state():
    method = build("geometric-reconstruction/trained-features")
    stack_params = list(method.feature_stack.parameters())
    assert not any(p.requires_grad for p in stack_params)
    method.on_stage_start(_stage(method, "features"), StageContext({}))
    assert all(p.requires_grad for p in stack_params)
    g = torch.Generator().manual_seed(3)
    coarse = torch.rand(4, 3, 4, 4, generator=g) * 255  # smooth images an autoencoder can learn
    images = torch.nn.functional.interpolate(coarse, size=(SIZE, SIZE), mode="bilinear")
    images = images.permute(0, 2, 3, 1).to(torch.uint8)
    batch = {"source": {"images": images}, "target": {"images": images.flip(1)}}
    params = [*stack_params, *method.feature_decoder.parameters()]
    opt = torch.optim.Adam(params, lr=1e-3)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = method.training_step("features", batch, _Ctx())["pixel"]
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert min(losses[-5:]) < 0.85 * losses[0]
    # the trained stack is what StyleNet's encoder and the perceptual loss read
    first = method.feature_stack[0].weight
    assert method.vgg.slices[0][0].weight is first
    assert method.style_net.encoder.slices[0][0].weight is first
    assert method.perceptual.features.slices[0][0].weight is first
    method.on_stage_start(_stage(method, "stylenet"), StageContext({}))
    assert not any(p.requires_grad for p in stack_params)
    # trained weights are state: kept in the stage's artifact and restored by loading it
    state = method.state_dict()
    assert torch.equal(state["vgg.slices.0.0.weight"], first)
    fresh = build("geometric-reconstruction/trained-features")
    assert not torch.equal(fresh.feature_stack[0].weight, first)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.style_net.encoder.slices[0][0].weight, first)


def test_trained_features_are_refused_without_a_stage_length_and_named_in_reports():
    from bench.store import method_notes

    with pytest.raises(DabenchError, match="feature_epochs must be > 0"):
        resolve_method("geometric-reconstruction/trained-features", {"feature_epochs": 0})
    note = method_notes(
        {
            "method": "geometric-reconstruction",
            "hparams": {
                "rec_weight": 0.1,
                "features": "trained-vgg19",
                "feature_width": 0.25,
                "feature_epochs": 0.5,
            },
        }
    )
    assert note == (
        "VGG-19 layout at width 0.25 trained here as an autoencoder of source and target "
        "images (0.5 epochs), not ImageNet's"
    )
