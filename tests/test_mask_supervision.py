"""Mask as Supervision (S003) wired into the harness: the skeleton mask's geometry, the
skeleton forms of the cascade, the stages and losses of each, the multi-view re-projection
the masks are drawn from, the geodesic artifact, and that no pose label is ever read."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
import torch
from conftest import StepStub

from bench.config import TrainConfig
from bench.data.joints import get_joint_set
from bench.data.views import Joined, Masked, MultiView
from bench.errors import DabenchError
from bench.methods.base import build_method
from bench.methods.cards import resolve_method
from bench.methods.mas_modules import FORMS, skeleton, skeleton_mask
from bench.models.pose_net import ModelConfig
from bench.models.triangulation import project, projection_matrices
from bench.trainer import StageContext, Trainer

BODY = get_joint_set("h36m17")
SIZE = 64
TINY = {"psi_channels": [8, 16], "stage1_epochs": 0.5, "stage2_epochs": 0.5}

pytestmark = pytest.mark.usefixtures("one_thread")


def build(entry: str = "mask-as-supervision", **hp):
    resolved = resolve_method(entry, {**TINY, **hp})
    model = ModelConfig(
        **{
            "backbone": "resnet10t",
            "img_size": SIZE,
            "head_channels": 16,
            "depth_bins": 8,
            "neck": 32,
            **resolved.card.model,
        }
    )
    torch.manual_seed(0)
    return build_method(resolved.spec, resolved.hparams, model, 17, 0, BODY)


def _stage(method, name):
    return next(s for s in method.stages() if s.name == name)


# -- the skeleton mask -------------------------------------------------------------------------


def _segment_distance2(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Brute force: the squared distance to the closest of 2001 points along the segment."""
    line = a + np.linspace(0, 1, 2001)[:, None] * (b - a)
    return ((p[:, None, :] - line[None]) ** 2).sum(-1).min(axis=1)


def test_the_skeleton_mask_is_a_gaussian_of_the_distance_to_each_segment():
    """Eqs. 15–17 with the printed typos fixed: −w·log B_b is the squared distance to the
    segment, its ends included (points past either end measure to that end)."""
    width = 3e-3
    a, b = np.array([-0.4, -0.2]), np.array([0.3, 0.25])
    points = torch.zeros(1, 17, 2, dtype=torch.float64)
    points[0, 0], points[0, 7] = torch.tensor(a), torch.tensor(b)  # pelvis → spine
    one_bone = skeleton(BODY, "loose")
    one_bone = type(one_bone)(bones=((0, 7),), arms=(False,))
    m = skeleton_mask(points, one_bone, (48, 48), width)[0]
    ys, xs = torch.meshgrid(torch.arange(48), torch.arange(48), indexing="ij")
    grid = torch.stack([(2 * xs + 1) / 48 - 1, (2 * ys + 1) / 48 - 1], -1).double()
    near = m > 1e-6  # where −log is well conditioned
    got = (-width * torch.log(m[near])).numpy()
    want = _segment_distance2(grid[near].numpy(), a, b)
    np.testing.assert_allclose(got, want, atol=2e-6)
    # past both ends the distance is to the end point, not to the infinite line
    assert (grid[near].numpy() @ (b - a) < a @ (b - a)).any()
    assert (grid[near].numpy() @ (b - a) > b @ (b - a)).any()


def test_a_single_bone_mask_peaks_on_the_bone_and_is_symmetric_about_it():
    points = torch.zeros(1, 17, 2)
    points[0, 0] = torch.tensor([0.0, -0.5])
    points[0, 7] = torch.tensor([0.0, 0.5])  # a vertical bone through the centre column
    bone = type(skeleton(BODY, "loose"))(bones=((0, 7),), arms=(False,))
    m = skeleton_mask(points, bone, (31, 31), 3e-3)[0]  # column 15's centres lie on it
    torch.testing.assert_close(m, m.flip(-1))  # mirror image about the bone
    row = m[15]
    assert int(row.argmax()) == 15 and float(row.max()) == pytest.approx(1.0)
    assert bool((row[:16].diff() >= 0).all()) and bool((row[12:16].diff() > 0).all())


def _kinematic():
    return [(p, k) for k, p in enumerate(BODY.parents) if p >= 0]


def test_forms_sums_arms_and_points():
    tight, medium, loose = (skeleton(BODY, f) for f in FORMS)
    elbows = {BODY.joints.index("l_elbow"), BODY.joints.index("r_elbow")}
    assert not elbows & set(tight.joints)  # stage 1 draws no arms
    assert elbows <= set(loose.joints) and elbows <= set(medium.joints)
    assert len(medium.bones) > len(loose.bones)  # fewer auxiliary links stage by stage
    aux = [
        len(f.bones) - len(set(f.bones) & {tuple(b) for b in _kinematic()})
        for f in (tight, medium, loose)
    ]
    assert aux == [8, 6, 4]
    assert sum(loose.arms) == 4 and sum(tight.arms) == 0
    points = skeleton(BODY, "loose", "points")
    assert all(a == b for a, b in points.bones) and len(points.bones) == 17
    # arms drawn with w / arm_factor: the mask falls off faster across an arm bone
    kp = torch.zeros(1, 17, 2)
    kp[0, BODY.joints.index("l_elbow")] = torch.tensor([0.5, 0.0])
    kp[0, BODY.joints.index("l_wrist")] = torch.tensor([0.5, 0.5])
    arm = type(loose)(bones=((12, 13),), arms=(True,))
    leg = type(loose)(bones=((12, 13),), arms=(False,))
    across = (slice(None), 20, slice(None))
    thin, thick = (skeleton_mask(kp, s, (32, 32), 3e-3)[across] for s in (arm, leg))
    assert float(thin.sum()) < float(thick.sum())
    # a sum of overlapping bones exceeds 1 unless clipped; max never does
    overlap = skeleton_mask(
        kp, type(loose)(bones=((12, 13), (13, 12)), arms=(0, 0)), (32, 32), 3e-3
    )
    assert float(overlap.max()) > 1.2
    for kwargs in ({"clip": True}, {"merge": "max"}):
        capped = skeleton_mask(
            kp, type(loose)(bones=((12, 13), (13, 12)), arms=(0, 0)), (32, 32), 3e-3, **kwargs
        )
        assert float(capped.max()) <= 1.0 + 1e-6
    with pytest.raises(DabenchError, match="unknown skeleton form 'wide'"):
        skeleton(BODY, "wide")
    with pytest.raises(DabenchError, match="joint set hand21 has no"):
        skeleton(get_joint_set("hand21"), "tight")


# -- declaration -------------------------------------------------------------------------------


def test_the_cascade_runs_its_stages_with_the_losses_of_each():
    def plan(entry, **hp):
        r = resolve_method(entry, {**TINY, **hp})
        return {s.name: (s, r.spec.losses(r.hparams, s.name)) for s in r.spec.stages(r.hparams)}

    full = plan("mask-as-supervision")
    assert list(full) == ["geodesic", "stage1", "stage2", "stage3"]
    assert full["geodesic"][0].optimizers == {} and full["geodesic"][1] == ()
    assert full["stage1"][1] == ("skel", "init", "bone", "eq", "sym", "depth")
    assert full["stage2"][1] == ("skel", "phys", "tie", "eq", "sym", "depth")
    assert full["stage3"][1] == ("skel", "phys", "eq", "sym", "depth")
    # G in stages 1 and 3 only, joined to 4-view groups of target images and masks
    views = {name: s.views["target"] for name, (s, _) in full.items()}
    assert views["stage1"] == Joined(
        MultiView("target", 4, ("images", "masks")), "geodesic", "geodesic.h5", ("weights",)
    )
    assert views["stage2"] == MultiView("target", 4, ("images", "masks"))
    assert isinstance(views["stage3"], Joined)
    # only stage 3 evaluates; its lr halves after 14 of 25 epochs
    assert [s.evaluate for s, _ in full.values()] == [False, False, False, True]
    schedule = full["stage3"][0].optimizers["main"].schedule
    assert schedule.milestones == pytest.approx((14 / 25,)) and schedule.gamma == 0.5
    assert full["stage2"][0].optimizers["main"].params == ("net", "shape_prior")
    # Table 4: without ψ, G and Δ — single images, no geodesic stage, no physique
    bare = plan("mask-as-supervision/wo-psi-g-delta")
    assert list(bare) == ["stage1", "stage2", "stage3"]
    assert bare["stage2"][1] == ("skel", "tie", "eq", "sym")
    assert bare["stage1"][0].views["target"] == Masked("target")


def test_it_reads_target_images_masks_and_cameras_never_a_label():
    from bench.store import method_data

    r = resolve_method("mask-as-supervision", TINY)
    used = r.spec.data_used(r.hparams)
    assert set(used) == {"target"} and "pose labels" not in used["target"]
    assert {"images", "masks", "cameras"} <= set(used["target"])
    single = resolve_method("mask-as-supervision/single-view", TINY)
    assert single.spec.data_used(single.hparams) == {"target": ["images", "masks"]}
    assert "pose labels" not in method_data({"method": "mask-as-supervision", "hparams": {}})


def test_bad_settings_are_refused_with_the_reason():
    for hp, match in (
        ({"training": "stereo"}, "unknown training 'stereo'; valid: multi-view, single-view"),
        ({"views": 1}, "views must be a positive integer"),
        ({"bone_width": [3e-3, 0.0, 3e-3]}, r"bone_width\[1\] must be > 0"),
        ({"psi_channels": [8]}, "at least 2 levels"),
        ({"weight_power": 3}, "weight_power must be 1 or 2"),
        ({"bone_width": [3e-3, 3e-3]}, r"'bone_width' must be tuple\[float, float, float\]"),
    ):
        with pytest.raises(DabenchError, match=match):
            resolve_method("mask-as-supervision", hp)
    r = resolve_method("mask-as-supervision", TINY)
    with pytest.raises(DabenchError, match="build it with the pair's joint set"):
        build_method(r.spec, r.hparams, ModelConfig(img_size=SIZE, head="volumetric"), 17, 0)


# -- the adapter -------------------------------------------------------------------------------


def _rig(b: int = 2, v: int = 4):
    """``b`` groups of ``v`` cameras on a ring 4 m from the origin, 64-px crops."""
    angles = torch.arange(v) * (2 * math.pi / v) + 0.3
    rot = torch.zeros(v, 3, 3)
    rot[:, 0, 0], rot[:, 0, 2] = torch.cos(angles), -torch.sin(angles)
    rot[:, 1, 1] = 1.0
    rot[:, 2, 0], rot[:, 2, 2] = torch.sin(angles), torch.cos(angles)
    t = torch.tensor([0.0, 0.0, 4000.0]).expand(v, 3)
    k = torch.tensor([[150.0, 0, 32], [0, 150.0, 32], [0, 0, 1]]).expand(v, 3, 3)
    return k.expand(b, v, 3, 3), rot.expand(b, v, 3, 3), t.expand(b, v, 3)


def test_multi_view_masks_are_drawn_from_the_reprojected_triangulation():
    method = build()
    k, rot, t = _rig()
    g = torch.Generator().manual_seed(5)
    world = torch.randn(2, 17, 3, generator=g) * 300
    uv = project(world[:, None], projection_matrices(k, rot, t))  # [2,4,17,2]
    own = (2 * uv + 1) / SIZE - 1
    coords = torch.zeros(8, 17, 3)
    tgt = {"images": torch.zeros(2, 4, SIZE, SIZE, 3), "K": k, "cam_R": rot, "cam_t": t}
    draw, _ = method._multi_view(own.flatten(0, 1), coords, tgt)
    torch.testing.assert_close(draw, own.flatten(0, 1), atol=1e-4, rtol=0)  # consistent views
    # one view swaps its left and right: the masks of every view follow the other views
    flipped = own.clone()
    swap = [j for pair in BODY.flip_pairs for j in pair]
    flipped[0, 1, swap] = own[0, 1, [j for pair in BODY.flip_pairs for j in pair[::-1]]]
    draw, _ = method._multi_view(flipped.flatten(0, 1), coords, tgt)
    moved = (draw.view(2, 4, 17, 2)[0, 1] - own[0, 1]).norm(dim=-1)[swap]
    kept = (flipped[0, 1] - own[0, 1]).norm(dim=-1)[swap]
    assert float(moved.mean()) < 0.5 * float(kept.mean())  # outvoted by three views


def test_the_depth_head_learns_the_triangulated_depth_in_each_camera():
    method = build()
    k, rot, t = _rig(1)
    world = torch.randn(1, 17, 3, generator=torch.Generator().manual_seed(6)) * 300
    uv = project(world[:, None], projection_matrices(k, rot, t))
    own = (2 * uv + 1) / SIZE - 1
    cam = torch.einsum("vij,kj->vki", rot[0], world[0]) + t[0][:, None]
    z = (cam[..., 2] - cam[..., :1, 2]) / method.net.config.depth_range_mm
    coords = torch.cat([own[0] * 0, z[..., None]], -1)
    tgt = {"images": torch.zeros(1, 4, SIZE, SIZE, 3), "K": k, "cam_R": rot, "cam_t": t}
    _, depth = method._multi_view(own.flatten(0, 1), coords, tgt)
    assert float(depth) == pytest.approx(0, abs=1e-8)
    _, off = method._multi_view(own.flatten(0, 1), coords + torch.tensor([0, 0, 0.1]), tgt)
    assert float(off) == pytest.approx(0.01, rel=1e-3)


def test_the_initialisation_and_the_tie_act_for_their_first_steps_only():
    method = build(init_steps=2, tie_steps=1)
    g = torch.Generator().manual_seed(7)
    masks = torch.zeros(1, 4, SIZE, SIZE, dtype=torch.uint8)
    masks[..., 10:54, 24:40] = 1
    k, rot, t = _rig(1)
    batch = {
        "target": {
            "images": torch.randint(0, 256, (1, 4, SIZE, SIZE, 3), dtype=torch.uint8, generator=g),
            "masks": masks,
            "weights": torch.ones(1, 4, SIZE, SIZE),
            "K": k,
            "cam_R": rot,
            "cam_t": t,
        }
    }
    method.train()
    seen = {}
    for stage, steps in (("stage1", (0, 1, 2)), ("stage2", (0, 1))):
        method.on_stage_start(_stage(method, stage), StageContext({}))
        for step in steps:
            losses = method.training_step(stage, batch, StepStub(step))
            assert all(torch.isfinite(v) for v in losses.values()), losses
            seen[(stage, step)] = {k: float(v) for k, v in losses.items()}
    assert seen[("stage1", 0)]["init"] > 0 and seen[("stage1", 1)]["init"] > 0
    assert seen[("stage1", 2)]["init"] == 0
    assert seen[("stage2", 0)]["tie"] > 0 and seen[("stage2", 1)]["tie"] == 0
    assert method.shape_prior is not None  # made when stage 2 started


def test_the_geodesic_artifact_has_a_row_per_training_mask(body_pair, tmp_path):
    pair = body_pair()
    method = build(mask_size=32)
    method.export_artifact("geodesic", tmp_path, pair)
    n = pair.info("target_train").num_samples
    with h5py.File(tmp_path / "geodesic.h5") as f:
        w = f["weights"][:]
    assert w.shape == (n, 32, 32) and w.dtype == np.float16
    assert float(w.min()) >= 21.9 and float(w.max()) <= 28.5  # G's range (M.5)


def test_a_tiny_cascade_trains_end_to_end(body_pair, tmp_path):
    pair = body_pair()
    method = build(init_steps=1, tie_steps=1)
    config = TrainConfig(steps=2, batch_size=4, eval_every=2, warmup_steps=0, log_every=1)
    trainer = Trainer(method, pair, config, seed=0, workdir=tmp_path, progress=False)
    assert trainer.lengths["geodesic"] == 0 and trainer.lengths["stage3"] == 2
    result = trainer.fit()
    assert result.status == "ok"
    assert [e["stage"] for e in result.losses][-1] == "stage3"
    assert "skeleton_mask_iou" in result.losses[-1]
    overall = result.evaluations[-1].metrics["target_test"]["overall"]
    assert np.isfinite(overall["mpjpe"])
    # the target test split has 4-view moments: the ambiguity ratio is reported
    assert 0 <= overall["ambiguity_pct"] <= 50


def test_spp_fits_a_map_on_target_labels_and_says_so(body_pair, tmp_path):
    from bench.store import method_notes

    r = resolve_method("mask-as-supervision/spp", TINY)
    stages = r.spec.stages(r.hparams)
    assert [s.name for s in stages][-2:] == ["stage3", "spp"]
    assert [s.evaluate for s in stages][-2:] == [False, True]
    assert "pose labels" in r.spec.data_used(r.hparams)["target"]
    note = method_notes({"method": "mask-as-supervision", "hparams": {"spp": "linear"}})
    assert "target's training labels" in note and "not unsupervised" in note
    # the cascade it starts from is the plain row's: nothing of SPP in stage 3's key
    assert not any(n.startswith("spp") for n in stages[-2].reads)
    method = build("mask-as-supervision/spp")
    for stage in ("stage2", "spp"):
        method.on_stage_start(_stage(method, stage), StageContext({}))
    assert not any(p.requires_grad for p in method.net.parameters())  # the detector is frozen
    images = torch.randint(0, 256, (2, SIZE, SIZE, 3), dtype=torch.uint8)
    before = method.net.decode(method.net(images), 0).kp2d
    torch.testing.assert_close(method.predict(images).kp2d, before)  # identity at the start
    with torch.no_grad():
        method.spp.bias.add_(0.01)
    assert not torch.allclose(method.predict(images).kp2d, before)  # prediction goes through it
    pair = body_pair()
    batch = next(iter(pair_batches(pair)))
    loss = method.training_step("spp", {"target": batch}, StepStub(0))["spp"]
    loss.backward()
    assert method.spp.weight.grad is not None and float(method.spp.weight.grad.abs().sum()) > 0


def pair_batches(pair):
    from bench.data.views import Labelled

    stream = Labelled("target").stream(pair, 4, 0)
    while True:
        yield {k: v for k, v in next(stream).items() if k != "index"}


def test_geodesic_maps_are_used_at_unit_mean_unless_asked_otherwise():
    k, rot, t = _rig(1)
    masks = torch.zeros(1, 4, SIZE, SIZE, dtype=torch.uint8)
    masks[..., 10:54, 24:40] = 1
    images = torch.randint(0, 256, (1, 4, SIZE, SIZE, 3), dtype=torch.uint8)
    skel = {}
    for norm in ("mean", "none"):
        for scale in (1.0, 22.0):
            method = build(geodesic_norm=norm, eq_weight=0.0)
            method.on_stage_start(_stage(method, "stage1"), StageContext({}))
            tgt = {"images": images, "masks": masks, "K": k, "cam_R": rot, "cam_t": t}
            tgt["weights"] = torch.full((1, 4, SIZE, SIZE), scale)
            method.eval()
            losses = method.training_step("stage1", {"target": tgt}, StepStub(0))
            skel[(norm, scale)] = float(losses["skel"])
    assert skel[("mean", 1.0)] == pytest.approx(skel[("mean", 22.0)], rel=1e-5)
    assert skel[("none", 22.0)] == pytest.approx(22 * skel[("none", 1.0)], rel=1e-5)


def test_mixed_view_fine_tuning_reads_another_datasets_single_images(tmp_path):
    """Table 3: after the cascade, stage 3's losses on the target's groups and on another
    dataset's single-view images and masks, in one forward pass; the geodesic stage makes
    weights for both."""
    from bench.data.pairs import pair_shards
    from bench.data.synthetic.build import synthesize
    from bench.data.views import Extra

    cards = ["synth-body-clean", "synth-body-style", "synth-body-video"]
    synthesize(cards, tmp_path, n_train=64, n_test=8, size=32, progress=False)
    pair = pair_shards(*cards[:2], tmp_path, extras=(cards[2],))
    method = build(
        "mask-as-supervision/mixed-view", single_view_card="synth-body-video", mask_size=32
    )
    stages = {s.name: s for s in method.stages()}
    assert stages["finetune"].views["single"].view == Extra("synth-body-video", ("images", "masks"))
    assert stages["finetune"].evaluate and not stages["stage3"].evaluate
    (tmp_path / "geo").mkdir()
    method.export_artifact("geodesic", tmp_path / "geo", pair)
    method.export_artifact("geodesic-single", tmp_path / "geo", pair)
    with h5py.File(tmp_path / "geo" / "geodesic-synth-body-video.h5") as f:
        assert f["weights"].shape[0] == pair.info("extra:synth-body-video").num_samples
    artifacts = {"geodesic": tmp_path / "geo", "geodesic-single": tmp_path / "geo"}
    for name in ("stage2", "finetune"):
        method.on_stage_start(stages[name], StageContext(artifacts))
    streams = {
        role: view.stream(pair, 2, 0, artifacts=artifacts)
        for role, view in stages["finetune"].views.items()
    }
    batch = {
        role: {k: v for k, v in next(s).items() if k != "index"} for role, s in streams.items()
    }
    assert batch["single"]["images"].shape[0] == 2 and batch["target"]["images"].ndim == 5
    method.train()
    seen = []
    real = method.net.forward
    method.net.forward = lambda x: seen.append(x.shape[0]) or real(x)
    losses = method.training_step("finetune", batch, StepStub(0))
    assert set(losses) == {"skel", "phys", "eq", "sym", "depth"}
    assert seen[0] == 2 * 4 + 2  # two groups of four views and two single images at once
    assert all(torch.isfinite(v) for v in losses.values())


def test_a_grid_refuses_it_on_hands_unless_the_pair_skips_it(tmp_path):
    from conftest import write_grid

    from bench.grid import load_grid
    from bench.methods.mas_modules import FORMS as forms

    r = resolve_method("mask-as-supervision", TINY)
    assert set(r.spec.joint_names) == {
        BODY.joints[j] for f in forms for j in skeleton(BODY, f).joints
    }
    pairs = [
        {"source": "synth-hand-clean", "target": "synth-hand-wild"},
        {"source": "synth-body-clean", "target": "synth-body-wild"},
    ]
    grid = dict(methods=["source-only", "mask-as-supervision"], model={"head": "volumetric"})
    with pytest.raises(
        DabenchError,
        match=r"mask-as-supervision cannot run on synth-hand-clean.*skip: .mask-as-supervision.",
    ):
        load_grid(write_grid(tmp_path, pairs=pairs, **grid))
    pairs[0]["skip"] = ["mask-as-supervision"]
    loaded = load_grid(write_grid(tmp_path, pairs=pairs, **grid))
    runs = {(t.method, t.target) for t in loaded.trials}
    assert runs == {
        ("source-only", "synth-hand-wild"),
        ("source-only", "synth-body-wild"),
        ("mask-as-supervision", "synth-body-wild"),
    }
    pairs[0]["skip"] = ["dann"]
    with pytest.raises(DabenchError, match="skip must list methods the grid runs"):
        load_grid(write_grid(tmp_path, pairs=pairs, **grid))


def test_each_cascade_stage_weighs_its_terms_with_its_own_lambdas():
    """supp. A.3: λ_s = 10, 1, 2 and λ_p = –, 4, 1.5 over stages 1–3 — each term is the
    unit-weight term times its stage's λ."""
    k, rot, t = _rig(1)
    masks = torch.zeros(1, 4, SIZE, SIZE, dtype=torch.uint8)
    masks[..., 10:54, 24:40] = 1
    g = torch.Generator().manual_seed(9)
    images = torch.randint(0, 256, (1, 4, SIZE, SIZE, 3), dtype=torch.uint8, generator=g)
    batch = {
        "target": {
            "images": images,
            "masks": masks,
            "weights": torch.rand(1, 4, SIZE, SIZE, generator=g) + 1,
            "K": k,
            "cam_R": rot,
            "cam_t": t,
        }
    }

    def terms(**hp):
        method = build(eq_weight=0.0, **hp)
        out = {}
        for stage in ("stage1", "stage2", "stage3"):
            method.on_stage_start(_stage(method, stage), StageContext({}))
            method.eval()  # ψ's BatchNorm in eval mode: both builds see the same function
            losses = method.training_step(stage, batch, StepStub(10**6))
            out[stage] = {k: float(v) for k, v in losses.items()}
        return out

    paper, unit = terms(), terms(skel_weight=[1.0, 1.0, 1.0], phys_weight=[1.0, 1.0])
    for stage, lam_s in zip(("stage1", "stage2", "stage3"), (10.0, 1.0, 2.0), strict=True):
        assert paper[stage]["skel"] == pytest.approx(lam_s * unit[stage]["skel"], rel=1e-4)
    for stage, lam_p in (("stage2", 4.0), ("stage3", 1.5)):
        assert paper[stage]["phys"] == pytest.approx(lam_p * unit[stage]["phys"], rel=1e-4)
    assert "phys" not in paper["stage1"]  # ψ enters at stage 2
    assert paper["stage2"]["phys"] > 0 and paper["stage3"]["phys"] > 0  # and counts there
    bones = terms(bone_weight=1.0)["stage1"]["bone"]
    assert paper["stage1"]["bone"] == pytest.approx(2.5 * bones, rel=1e-4)  # stage 1 only


def test_each_views_mask_is_drawn_from_the_reprojection_not_its_own_2d(monkeypatch):
    """Δ inside the training step: the points the skeleton masks are drawn from are the
    multi-view re-projection, not the views' own predictions."""
    import bench.methods.mask_supervision as mas

    method = build(eq_weight=0.0)
    k, rot, t = _rig(1)
    masks = torch.zeros(1, 4, SIZE, SIZE, dtype=torch.uint8)
    masks[..., 10:54, 24:40] = 1
    images = torch.randint(0, 256, (1, 4, SIZE, SIZE, 3), dtype=torch.uint8)
    tgt = {"images": images, "masks": masks, "K": k, "cam_R": rot, "cam_t": t}
    tgt["weights"] = torch.ones(1, 4, SIZE, SIZE)
    seen = {}
    real_multi, real_mask = method._multi_view, mas.skeleton_mask

    def multi_view(own, coords, part):
        draw, depth = real_multi(own, coords, part)
        seen["own"], seen["reprojected"] = own.detach(), draw.detach() + 0.25
        return draw + 0.25, depth  # moved: the masks must follow it

    def mask(points, *args, **kwargs):
        seen["drawn"] = points.detach()
        return real_mask(points, *args, **kwargs)

    method._multi_view = multi_view
    monkeypatch.setattr(mas, "skeleton_mask", mask)
    method.on_stage_start(_stage(method, "stage1"), StageContext({}))
    method.training_step("stage1", {"target": tgt}, StepStub(0))
    assert torch.equal(seen["drawn"], seen["reprojected"])
    assert not torch.allclose(seen["drawn"], seen["own"])
