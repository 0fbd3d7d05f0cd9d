"""Behaviour of bench.metrics: hand-computed values, invariances, a slow reference, edge cases."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.linalg import orthogonal_procrustes

from bench.data.joints import JointSet, get_joint_set
from bench.errors import DabenchError
from bench.metrics import (
    AUC3D_THRESHOLDS_MM,
    AUC_HAND_THRESHOLDS_MM,
    METRICS_VERSION,
    auc_3dhp,
    auc_hand,
    evaluate,
    mpjpe,
    n_mpjpe,
    pa_mpjpe,
    pck,
    pck2d,
    pck_tll,
    pckh,
    procrustes_align,
    root_relative,
    tll_quantize,
)

TINY = JointSet(
    name="tiny3",
    joints=("a", "b", "c"),
    parents=(-1, 0, 0),
    root=0,
    flip_pairs=(),
    groups={"bc": (1, 2), "all": (0, 1, 2)},
)

POOLED = (
    "mpjpe",
    "pa_mpjpe",
    "pa_mpjpe_refl",
    "n_mpjpe",
    "pck3d_150",
    "auc3d_0_150",
    "auc_20_50",
    "pck2d_005",
    "err2d_pct",
    "err2d_px",
)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


def make_data(
    rng: np.random.Generator, n: int, k: int, size: int = 256, noise3d: float = 20.0
) -> dict[str, np.ndarray]:
    gt3d = rng.normal(0, 60, (n, k, 3)) + np.array([0, 0, 800.0])
    pred3d = gt3d + rng.normal(0, noise3d, (n, k, 3)) + rng.normal(0, 30, (n, 1, 3))
    gt2d = rng.uniform(-0.5, size - 0.5, (n, k, 2))
    pred2d = gt2d + rng.normal(0, 8, (n, k, 2))
    vis = rng.random((n, k)) < 0.8
    return {"pred2d": pred2d, "gt2d": gt2d, "pred3d": pred3d, "gt3d": gt3d, "vis": vis}


def run(data: dict[str, np.ndarray], joint_set, size=256, heatmap_size=None):
    return evaluate(
        data["pred2d"],
        data["gt2d"],
        data["pred3d"],
        data["gt3d"],
        data["vis"],
        joint_set,
        size,
        heatmap_size,
    )


# --------------------------------------------------------------------------------------------
# Hand-computed values
# --------------------------------------------------------------------------------------------


def tiny_data() -> dict[str, np.ndarray]:
    gt3d = np.array(
        [
            [[0, 0, 0], [100, 0, 0], [0, 100, 0]],
            [[0, 0, 0], [0, 0, 200], [50, 0, 0]],
        ],
        dtype=float,
    )
    pred3d = np.array(
        [
            [[0, 0, 0], [120, 0, 0], [0, 100, 0]],  # errors 0, 20, 0
            [[1000, 0, 0], [1000, 0, 200], [1050, 160, 0]],  # root offset; errors 0, 0, 160
        ],
        dtype=float,
    )
    gt2d = np.full((2, 3, 2), 50.0)
    offsets = np.array([[0, 3, 5], [4, 100, 6]], dtype=float)  # along x, px
    pred2d = gt2d.copy()
    pred2d[..., 0] += offsets
    vis = np.array([[True, True, True], [True, False, True]])
    return {"pred2d": pred2d, "gt2d": gt2d, "pred3d": pred3d, "gt3d": gt3d, "vis": vis}


def test_hand_computed_tiny_example():
    r = run(tiny_data(), TINY, size=100)
    o = r.overall
    assert o["mpjpe"] == pytest.approx(180 / 6)
    assert o["pck3d_150"] == pytest.approx(100 * 5 / 6)
    # 3DHP (strict): error 0 passes the 30 thresholds > 0, 20 passes 25..150 (26), 160 none.
    assert o["auc3d_0_150"] == pytest.approx(100 * (4 * 30 + 26) / (6 * 31))
    # Hand AUC (<=, 20..50 mm): five errors (20 included) pass every threshold, one none.
    assert o["auc_20_50"] == pytest.approx(100 * 5 / 6)
    s1 = 22000 / 24400  # <P^,P> / <P^,P^> of sample 1
    s2 = 42500 / 68100
    n_errs = [
        abs(120 * s1 - 100),
        abs(100 * s1 - 100),
        200 * (1 - s2),
        math.hypot(50 * s2 - 50, 160 * s2),
    ]
    assert o["n_mpjpe"] == pytest.approx(sum(n_errs) / 6)
    # 2D, crop 100 px -> PCK threshold 5 px (strict); visible errors 0, 3, 5, 4, 6.
    assert o["err2d_px"] == pytest.approx(18 / 5)
    assert o["err2d_pct"] == pytest.approx(18 / 5)
    assert o["pck2d_005"] == pytest.approx(60.0)
    np.testing.assert_allclose(r.per_joint["mpjpe"], [0, 10, 80])
    np.testing.assert_allclose(r.per_joint["pck2d_005"], [100, 100, 0])
    np.testing.assert_allclose(r.per_joint["err2d_px"], [2, 3, 5.5])
    assert r.per_group["bc"]["mpjpe"] == pytest.approx(180 / 4)
    assert "epe" not in o


def test_building_blocks_hand_computed():
    err = np.array([0.0, 5.0, 10.0, 150.0, np.inf])
    assert pck(err, 5.0) == pytest.approx(20.0)
    assert pck(err, 5.0, strict=False) == pytest.approx(40.0)
    assert pck(err, 7.0, mask=err < 100) == pytest.approx(200 / 3)
    assert math.isnan(pck(err, 5.0, mask=np.zeros(5, bool)))
    # 0 passes 30 thresholds, 5 -> 29, 10 -> 28, 150 and inf -> 0
    assert auc_3dhp(err) == pytest.approx(100 * (30 + 29 + 28) / (5 * 31))
    # 35 mm passes thresholds 35..50 with `<=`: the PCK curve steps from 0 to 1 at 35 mm,
    # and the trapezoid between 34 and 35 mm contributes half a step.
    assert auc_hand(np.array([35.0])) == pytest.approx(100 * 15.5 / 30)
    assert len(AUC3D_THRESHOLDS_MM) == 31 and AUC3D_THRESHOLDS_MM[-1] == 150
    np.testing.assert_allclose(AUC_HAND_THRESHOLDS_MM, np.arange(20, 51))


def test_perfect_prediction_scores():
    rng = np.random.default_rng(1)
    d = make_data(rng, 50, 21)
    d["pred3d"], d["pred2d"] = d["gt3d"].copy(), d["gt2d"].copy()
    o = run(d, "hand21").overall
    assert o["auc3d_0_150"] == pytest.approx(100 * 30 / 31)
    assert o["auc_20_50"] == pytest.approx(100.0)
    assert o["pck2d_005"] == pytest.approx(100.0)
    assert o["pck2d_tll"] == pytest.approx(100.0)
    assert o["pck3d_150"] == pytest.approx(100.0)
    for m in ("mpjpe", "pa_mpjpe", "pa_mpjpe_refl", "n_mpjpe", "epe", "err2d_px"):
        assert o[m] == pytest.approx(0.0, abs=1e-9), m


# --------------------------------------------------------------------------------------------
# Alignment
# --------------------------------------------------------------------------------------------


def test_pa_mpjpe_invariant_to_similarity_transform():
    rng = np.random.default_rng(2)
    gt = rng.normal(0, 80, (40, 21, 3))
    noisy = gt + rng.normal(0, 10, gt.shape)
    rot = np.stack([random_rotation(rng) for _ in range(40)])
    scale = rng.uniform(0.5, 2.0, (40, 1, 1))
    shift = rng.normal(0, 500, (40, 1, 3))

    def transform(x):
        return scale * (x @ rot) + shift

    assert pa_mpjpe(transform(gt), gt) == pytest.approx(0.0, abs=1e-9)
    assert mpjpe(transform(gt), gt, "hand21") > 10
    base = pa_mpjpe(noisy, gt)
    assert base > 1
    assert pa_mpjpe(transform(noisy), gt) == pytest.approx(base, rel=1e-9)
    assert mpjpe(transform(noisy), gt, "hand21") != pytest.approx(
        mpjpe(noisy, gt, "hand21"), rel=1e-3
    )
    np.testing.assert_allclose(procrustes_align(transform(gt), gt), gt, atol=1e-9)


def test_mirrored_prediction_needs_reflection_to_look_perfect():
    rng = np.random.default_rng(3)
    d = make_data(rng, 30, 21)
    gt_rr = root_relative(d["gt3d"], "hand21")
    noise = rng.normal(0, 1.0, gt_rr.shape)
    d["pred3d"] = gt_rr * np.array([-1.0, 1.0, 1.0]) + noise
    o = run(d, "hand21").overall
    noise_level = np.linalg.norm(noise, axis=-1).mean()
    assert o["pa_mpjpe_refl"] < 1.5 * noise_level
    assert o["pa_mpjpe"] > 10 * noise_level
    # the best proper fit to a mirror image, against the per-sample reference
    ref = [ref_kabsch(p, g, False) for p, g in zip(d["pred3d"], gt_rr, strict=True)]
    ref_err = np.linalg.norm(np.array(ref) - gt_rr, axis=-1).mean()
    assert o["pa_mpjpe"] == pytest.approx(ref_err, rel=1e-6)
    # For an ordinary (unmirrored) prediction both variants agree.
    d["pred3d"] = gt_rr + noise
    o2 = run(d, "hand21").overall
    assert o2["pa_mpjpe_refl"] == pytest.approx(o2["pa_mpjpe"], rel=1e-9)


def test_n_mpjpe_scale_only():
    rng = np.random.default_rng(4)
    d = make_data(rng, 20, 17)
    d["pred3d"] = 0.7 * d["gt3d"]
    o = run(d, "h36m17").overall
    assert o["n_mpjpe"] == pytest.approx(0.0, abs=1e-9)
    assert o["mpjpe"] > 5
    gt_rr = root_relative(d["gt3d"], "h36m17")
    assert n_mpjpe(0.7 * gt_rr, gt_rr) == pytest.approx(0.0, abs=1e-9)
    rotated = gt_rr @ random_rotation(rng)
    assert n_mpjpe(rotated, gt_rr, "h36m17") > 5
    assert pa_mpjpe(rotated, gt_rr) == pytest.approx(0.0, abs=1e-9)


def test_common14_root_is_hip_midpoint():
    rng = np.random.default_rng(5)
    d = make_data(rng, 20, 14)
    d["pred3d"] = d["gt3d"] + np.array([120.0, -40.0, 300.0])
    assert run(d, "common14").overall["mpjpe"] == pytest.approx(0.0, abs=1e-9)
    # Moving only the neck (the tree root) must cost one joint's error, not fourteen.
    neck = get_joint_set("common14").index("neck")
    d["pred3d"] = d["gt3d"].copy()
    d["pred3d"][:, neck] += np.array([70.0, 0.0, 0.0])
    r = run(d, "common14")
    assert r.overall["mpjpe"] == pytest.approx(70 / 14)
    assert r.per_joint["mpjpe"][neck] == pytest.approx(70.0)


# --------------------------------------------------------------------------------------------
# Structure: permutation, groups, report
# --------------------------------------------------------------------------------------------


def test_joint_permutation_permutes_per_joint_and_keeps_overall():
    rng = np.random.default_rng(6)
    d = make_data(rng, 64, 21)
    perm = np.concatenate([[0], 1 + rng.permutation(20)])  # hand21's root (0) stays put
    dp = {k: v[:, perm] for k, v in d.items()}
    a, b = run(d, "hand21"), run(dp, "hand21")
    for m, v in a.overall.items():
        assert b.overall[m] == pytest.approx(v, rel=1e-9), m
    for m, v in a.per_joint.items():
        np.testing.assert_allclose(b.per_joint[m], v[perm], rtol=1e-9, err_msg=m)
    assert not np.allclose(a.per_joint["mpjpe"], b.per_joint["mpjpe"])


def test_joint_permutation_with_permuted_joint_set():
    rng = np.random.default_rng(7)
    d = make_data(rng, 32, 3)
    perm = np.array([2, 0, 1])
    moved = JointSet(
        name="tiny3p",
        joints=tuple(TINY.joints[i] for i in perm),
        parents=(1, -1, 1),
        root=1,
        flip_pairs=(),
        groups={"all": (0, 1, 2)},
    )
    a, b = run(d, TINY), run({k: v[:, perm] for k, v in d.items()}, moved)
    for m, v in a.overall.items():
        assert b.overall[m] == pytest.approx(v, rel=1e-9), m
    for m, v in a.per_joint.items():
        np.testing.assert_allclose(b.per_joint[m], v[perm], rtol=1e-9, err_msg=m)


def test_groups_pool_over_pairs_and_all_equals_overall():
    rng = np.random.default_rng(8)
    d = make_data(rng, 200, 21)
    r = run(d, "hand21")
    assert {"mcp", "pip", "dip", "tip", "all"} <= set(r.per_group)
    for m, v in r.overall.items():
        assert r.per_group["all"][m] == pytest.approx(v, rel=1e-12), m
    tip = list(get_joint_set("hand21").groups["tip"])
    e2 = r.per_sample["err2d"][:, tip]
    assert r.per_group["tip"]["err2d_px"] == pytest.approx(np.nanmean(e2))  # pooled, not macro
    assert r.per_group["tip"]["mpjpe"] == pytest.approx(r.per_sample["err3d"][:, tip].mean())
    assert r.per_group["tip"]["pck2d_tll"] == pytest.approx(
        np.mean(r.per_joint["pck2d_tll"][tip])  # TLL stays a macro mean over joints
    )
    for m in POOLED:
        assert r.per_joint[m].shape == (21,)
    assert r.overall["epe"] == r.overall["mpjpe"]
    assert r.version == METRICS_VERSION


def test_mpii16_all_group_is_limb_joints_only():
    rng = np.random.default_rng(9)
    r = run(make_data(rng, 50, 16), "mpii16")
    assert r.per_group["all"]["mpjpe"] != pytest.approx(r.overall["mpjpe"], rel=1e-9)
    assert r.per_group["all16"]["mpjpe"] == pytest.approx(r.overall["mpjpe"], rel=1e-12)


def test_to_dict_is_json_and_maps_nan_to_none():
    rng = np.random.default_rng(10)
    d = make_data(rng, 10, 21)
    d["vis"][:, 4] = False  # thumb tip never visible -> 2D per-joint metrics undefined
    r = run(d, "hand21")
    out = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    assert out["version"] == METRICS_VERSION
    assert "per_sample" not in out
    assert out["per_joint"]["err2d_px"][4] is None
    assert out["per_joint"]["pck2d_tll"][4] is None
    assert out["per_joint"]["mpjpe"][4] == pytest.approx(r.per_joint["mpjpe"][4])
    assert out["overall"]["mpjpe"] == pytest.approx(r.overall["mpjpe"])
    assert out["joints"] == list(get_joint_set("hand21").joints)


# --------------------------------------------------------------------------------------------
# TLL PCK
# --------------------------------------------------------------------------------------------


def cell_centre(j):
    """Crop px of heatmap cell j's centre in TLL's corner-aligned grid (stride 4)."""
    return np.asarray(j, dtype=float) * 4


def test_tll_quantize_mapping():
    # TLL's int(px / 4 + 0.5): cell j covers [4j − 2, 4j + 2)
    xs = np.array([-0.5, 1.99, 2.0, 5.99, 6.0, 253.9, 300.0, -10.0])
    cells = tll_quantize(np.stack([xs, xs], -1), 256, 64)[:, 0]
    np.testing.assert_array_equal(cells, [0, 0, 1, 1, 2, 63, 63, 0])
    # non-square: (H, W) = (128, 256) with a 32 x 64 heatmap -> stride 4 on both axes
    assert tll_quantize(np.array([8.0, 8.0]), (128, 256), (32, 64)).tolist() == [2, 2]
    assert np.isnan(tll_quantize(np.array([np.nan, 1.0]), 256, 64)).all()
    centres = cell_centre(np.stack([np.arange(64)] * 2, -1))
    np.testing.assert_array_equal(tll_quantize(centres, 256, 64)[:, 1], range(64))
    # not the pixel-centred rule floor((px + 0.5) / 4) of the harness's own heatmaps
    assert tll_quantize(np.array([2.5, 2.5]), 256, 64).tolist() == [1, 1]


def tll_reference_pck(pred, gt, vis, image=256, heatmap=64, sigma=2):
    """TLL's keypoint pipeline written out from its description, independent of
    bench.metrics: generate_target draws each visible joint's Gaussian (σ cells) around
    int(px / stride + 0.5) unless it lies wholly off the grid; accuracy argmaxes the heatmaps
    (get_max_preds: an all-zero map gives (0, 0)), calc_dists drops targets with x <= 1 or
    y <= 1, normalises by heatmap / 10 and dist_acc counts d < 0.5; avg_acc is the mean over
    joints with a valid target. The prediction's heatmap is the target a network trained on
    these targets would output for the predicted location."""
    stride = image / heatmap
    radius = 3 * sigma

    def heatmap_of(x, y, draw):
        target = np.zeros((heatmap, heatmap))
        mu_x, mu_y = int(x / stride + 0.5), int(y / stride + 0.5)
        ul = (int(mu_x - radius), int(mu_y - radius))
        br = (int(mu_x + radius + 1), int(mu_y + radius + 1))
        if not draw or ul[0] >= heatmap or ul[1] >= heatmap or br[0] < 0 or br[1] < 0:
            return target
        cols, rows = np.meshgrid(np.arange(heatmap), np.arange(heatmap))
        inside = (cols >= ul[0]) & (cols < br[0]) & (rows >= ul[1]) & (rows < br[1])
        g = np.exp(-((cols - mu_x) ** 2 + (rows - mu_y) ** 2) / (2 * sigma**2))
        return np.where(inside, g, 0.0)

    def argmax(hm):
        idx = int(np.argmax(hm))
        if hm.flat[idx] <= 0:
            return np.zeros(2)
        return np.array([idx % heatmap, idx // heatmap], dtype=float)

    n, k = vis.shape
    acc = []
    for j in range(k):
        hits, count = 0, 0
        for i in range(n):
            t = argmax(heatmap_of(*gt[i, j], vis[i, j]))
            if not (t[0] > 1 and t[1] > 1):
                continue
            p = argmax(heatmap_of(*pred[i, j], True))
            count += 1
            hits += float(np.linalg.norm((p - t) / (heatmap / 10))) < 0.5
        if count:
            acc.append(hits / count)
    return 100.0 * float(np.mean(acc))


def test_tll_pck_matches_tlls_own_pipeline():
    rng = np.random.default_rng(3)
    n, k = 60, 6
    # GT over the crop and beyond (joints cut off by the crop, some wholly off the grid);
    # predictions near GT, scattered at the scale of the 3.2-cell threshold
    gt = rng.uniform(-40.0, 296.0, (n, k, 2))
    gt[:20] = rng.uniform(0.0, 16.0, (20, k, 2))  # near the (0, 0) sentinel
    pred = np.clip(gt + rng.normal(0.0, 10.0, gt.shape), -20.0, 275.0)
    vis = rng.random((n, k)) > 0.15
    expected = tll_reference_pck(pred, gt, vis)
    assert 20.0 < expected < 90.0  # neither trivially all right nor all wrong
    assert pck_tll(pred, gt, vis, 256, 64) == pytest.approx(expected, abs=1e-9)


def test_tll_threshold_in_heatmap_cells():
    # 64 x 64 heatmap: correct iff distance < 3.2 cells
    gt = cell_centre(np.array([[[10, 10]] * 4]))
    pred = cell_centre(np.array([[[13, 10], [14, 10], [12, 12], [13, 12]]]))
    vis = np.ones((1, 4), bool)
    correct = [True, False, True, False]
    for j in range(4):
        assert pck_tll(pred[:, j : j + 1], gt[:, j : j + 1], vis[:, :1], 256) == (
            100.0 if correct[j] else 0.0
        )
    # 40 x 40 heatmap: 2 cells is exactly 0.5 normalised, which TLL's strict `<` rejects
    gt = cell_centre(np.array([[[10.0, 10.0]]]))
    assert pck_tll(cell_centre(np.array([[[12.0, 10.0]]])), gt, vis[:, :1], 160, 40) == 0.0
    assert pck_tll(cell_centre(np.array([[[11.0, 11.0]]])), gt, vis[:, :1], 160, 40) == 100.0


def test_tll_ignores_invisible_and_sentinel_cells():
    gt = cell_centre(np.array([[[10, 10], [1, 30], [30, 1], [20, 20], [40, 40]]], dtype=float))
    pred = gt.copy()
    pred[0, 1:4] += 100.0  # wrong where ignored ...
    vis = np.array([[True, True, True, False, True]])
    assert pck_tll(pred, gt, vis, 256, 64) == pytest.approx(100.0)
    # ... and the same errors on valid joints count.
    gt2 = gt.copy()
    gt2[0, 1:3] = cell_centre(np.array([[2, 30], [30, 2]]))
    pred2 = gt2.copy()
    pred2[0, 1:3] += 100.0
    assert pck_tll(pred2, gt2, vis, 256, 64) == pytest.approx(100 * 2 / 4)
    d = {
        "pred2d": pred,
        "gt2d": gt,
        "pred3d": np.zeros((1, 5, 3)),
        "gt3d": np.zeros((1, 5, 3)),
        "vis": vis,
    }
    five = JointSet("five", tuple("abcde"), (-1, 0, 0, 0, 0), 0, (), {"all": (0, 1, 2, 3, 4)})
    r = run(d, five)
    assert r.per_sample["tll_valid"].tolist() == [[True, False, False, False, True]]
    assert r.overall["pck2d_tll"] == pytest.approx(100.0)
    assert np.isnan(r.per_joint["pck2d_tll"][1:4]).all()
    assert r.overall["pck2d_005"] < 100  # the sub-pixel PCK has no such sentinel


def test_tll_non_finite_prediction_is_wrong_even_at_the_border():
    gt = cell_centre(np.array([[[63.0, 30.0], [63.0, 30.0], [63.0, 30.0]]]))
    pred = gt.copy()
    pred[0, 0, 0] = np.inf  # would clip onto the GT's border cell
    pred[0, 1, 0] = np.nan
    vis = np.ones((1, 3), bool)
    assert pck_tll(pred, gt, vis, 256, 64) == pytest.approx(100 / 3)


def test_tll_batch_weighted_differs_from_dataset_level():
    c = cell_centre(10)
    gt = np.full((4, 1, 2), c)
    pred = gt.copy()
    pred[2] += 100.0  # batch 2: its only valid sample is wrong
    vis = np.array([[True], [True], [True], [False]])
    # dataset: 2 correct of 3 valid; batches of 2: (1.0 * 2 + 0.0 * 2) / 4
    assert pck_tll(pred, gt, vis, 256, 64) == pytest.approx(200 / 3)
    assert pck_tll(pred, gt, vis, 256, 64, batch_size=2) == pytest.approx(50.0)
    for one_batch in (4, 100):
        assert pck_tll(pred, gt, vis, 256, 64, batch_size=one_batch) == pytest.approx(200 / 3)
    with pytest.raises(DabenchError, match="batch_size"):
        pck_tll(pred, gt, vis, 256, 64, batch_size=0)


# --------------------------------------------------------------------------------------------
# Agreement with a slow, independent reference
# --------------------------------------------------------------------------------------------

REF_ROOTS = {"hand21": [0], "common14": [2, 3], "h36m17": [0]}


def ref_kabsch(pred, gt, reflection):
    """One sample; proper rotation via SVD + det fix, or FreiHAND's align_w_scale."""
    if reflection:
        t1, t2 = gt.mean(0), pred.mean(0)
        a, b = gt - t1, pred - t2
        s1, s2 = np.linalg.norm(a), np.linalg.norm(b)
        rot, s = orthogonal_procrustes(a / s1, b / s2)
        return (b / s2) @ rot.T * s * s1 + t1
    mu_p, mu_g = pred.mean(0), gt.mean(0)
    y, x = pred - mu_p, gt - mu_g
    u, sv, vt = np.linalg.svd(y.T @ x)
    d = np.ones(3)
    if np.linalg.det(u @ vt) < 0:
        d[-1] = -1
    rot = u @ np.diag(d) @ vt
    s = (sv * d).sum() / (y**2).sum()
    return s * y @ rot + mu_g


def reference_overall(data, name, size, hm):
    pred3d, gt3d, pred2d, gt2d, vis = (data[k] for k in ("pred3d", "gt3d", "pred2d", "gt2d", "vis"))
    n, k, _ = gt3d.shape
    e3, epa, erefl, en = [], [], [], []
    for i in range(n):
        p = pred3d[i] - pred3d[i, REF_ROOTS[name]].mean(0)
        g = gt3d[i] - gt3d[i, REF_ROOTS[name]].mean(0)
        for j in range(k):
            e3.append(np.linalg.norm(p[j] - g[j]))
        a, ar = ref_kabsch(p, g, False), ref_kabsch(p, g, True)
        s = (p * g).sum() / (p * p).sum()
        for j in range(k):
            epa.append(np.linalg.norm(a[j] - g[j]))
            erefl.append(np.linalg.norm(ar[j] - g[j]))
            en.append(np.linalg.norm(s * p[j] - g[j]))
    e3 = np.array(e3)
    out = {
        "mpjpe": e3.mean(),
        "pa_mpjpe": np.mean(epa),
        "pa_mpjpe_refl": np.mean(erefl),
        "n_mpjpe": np.mean(en),
        "pck3d_150": 100 * sum(e < 150 for e in e3) / len(e3),
    }
    curve = [sum(e < t for e in e3) / len(e3) for t in range(0, 151, 5)]
    out["auc3d_0_150"] = 100 * sum(curve) / len(curve)
    ts = [20 + i for i in range(31)]
    hc = [sum(e <= t for e in e3) / len(e3) for t in ts]
    out["auc_20_50"] = 100 * sum((hc[i] + hc[i + 1]) / 2 for i in range(30)) / 30
    if name == "hand21":
        out["epe"] = out["mpjpe"]
    side = max(size)
    e2 = [math.hypot(*(pred2d[i, j] - gt2d[i, j])) for i in range(n) for j in range(k) if vis[i, j]]
    out["err2d_px"] = np.mean(e2)
    out["err2d_pct"] = 100 * np.mean(e2) / side
    out["pck2d_005"] = 100 * sum(e < 0.05 * side for e in e2) / len(e2)
    out["pck2d_tll"] = reference_tll(pred2d, gt2d, vis, size, hm, batch=n)
    return out


def reference_tll(pred2d, gt2d, vis, size, hm, batch):
    """TLL validate(): per batch accuracy() (calc_dists / dist_acc), AverageMeter by size."""

    def raw(v, s_img, s_hm):
        return int(v / (s_img / s_hm) + 0.5)  # generate_target's mu

    def cell(v, s_img, s_hm):
        return min(max(raw(v, s_img, s_hm), 0), s_hm - 1)

    def drawn(v, s_img, s_hm):  # any part of the σ = 2 Gaussian (radius 6) on the grid
        mu = raw(v, s_img, s_hm)
        return mu - 6 < s_hm and mu + 7 >= 0

    total, count = 0.0, 0
    for start in range(0, len(gt2d), batch):
        stop = min(start + batch, len(gt2d))
        accs = []
        for j in range(gt2d.shape[1]):
            dists = []
            for i in range(start, stop):
                gx, gy = cell(gt2d[i, j, 0], size[1], hm[1]), cell(gt2d[i, j, 1], size[0], hm[0])
                on_grid = drawn(gt2d[i, j, 0], size[1], hm[1]) and drawn(
                    gt2d[i, j, 1], size[0], hm[0]
                )
                if not vis[i, j] or not on_grid or gx <= 1 or gy <= 1:
                    dists.append(-1)
                    continue
                px, py = (
                    cell(pred2d[i, j, 0], size[1], hm[1]),
                    cell(pred2d[i, j, 1], size[0], hm[0]),
                )
                dists.append(math.hypot((px - gx) / (hm[0] / 10), (py - gy) / (hm[1] / 10)))
            good = [d for d in dists if d != -1]
            accs.append(sum(d < 0.5 for d in good) / len(good) if good else -1)
        valid = [a for a in accs if a >= 0]
        avg = sum(valid) / len(valid) if valid else 0.0
        total += avg * (stop - start)
        count += stop - start
    return 100 * total / count


@pytest.mark.parametrize(
    ("name", "size", "hm"),
    [("hand21", (256, 256), (64, 64)), ("common14", (96, 192), (24, 48))],
)
def test_agrees_with_slow_reference(name, size, hm):
    rng = np.random.default_rng(11)
    k = get_joint_set(name).num_joints
    d = make_data(rng, 60, k, size=min(size), noise3d=40.0)
    d["pred2d"][..., 0] += rng.normal(0, 3, d["pred2d"].shape[:2])
    r = run(d, name, size=size, heatmap_size=hm)
    ref = reference_overall(d, name, size, hm)
    assert set(r.overall) == set(ref)
    for m, v in ref.items():
        assert r.overall[m] == pytest.approx(v, rel=1e-6), m
    # and the batch-weighted TLL variant, with a ragged last batch
    assert pck_tll(d["pred2d"], d["gt2d"], d["vis"], size, hm, batch_size=16) == pytest.approx(
        reference_tll(d["pred2d"], d["gt2d"], d["vis"], size, hm, batch=16), rel=1e-9
    )
    assert pck2d(d["pred2d"], d["gt2d"], d["vis"], size) == pytest.approx(ref["pck2d_005"])


# --------------------------------------------------------------------------------------------
# Non-finite input and validation
# --------------------------------------------------------------------------------------------


def test_non_finite_predictions_are_evaluable():
    rng = np.random.default_rng(12)
    d = make_data(rng, 20, 21)
    d["vis"][:] = True
    d["gt2d"] = rng.uniform(20, 230, d["gt2d"].shape)  # clear of TLL's border sentinel
    d["pred2d"] = d["gt2d"].copy()
    d["pred3d"] = d["gt3d"] + rng.normal(0, 5, d["gt3d"].shape)  # every finite error < 150
    d["pred3d"][0, 5] = np.nan
    d["pred3d"][1, 0] = np.inf  # root: the whole sample is infinitely wrong root-relative
    d["pred2d"][2, 3] = np.nan
    r = run(d, "hand21")
    o = r.overall
    for m in ("mpjpe", "pa_mpjpe", "pa_mpjpe_refl", "n_mpjpe", "epe", "err2d_px", "err2d_pct"):
        assert o[m] == math.inf, m
    # the bad joints count as misses, nothing else changes
    assert o["pck3d_150"] == pytest.approx(100 * (420 - 1 - 21) / 420)
    assert o["pck2d_005"] == pytest.approx(100 * 419 / 420)
    assert o["pck2d_tll"] == pytest.approx(100 * (20 + 19 / 20) / 21)
    for m in ("auc3d_0_150", "auc_20_50"):
        assert math.isfinite(o[m]), m
    e = r.per_sample["err3d"]
    assert e[0, 5] == math.inf and np.isfinite(e[0, np.arange(21) != 5]).all()
    assert np.isinf(e[1]).all()
    assert np.isinf(r.per_sample["err3d_pa"][0]).all()  # the alignment uses every joint
    assert np.isinf(r.per_sample["err3d_n"][0]).all()
    assert np.isfinite(r.per_sample["err3d_pa"][2:]).all()
    assert r.per_sample["tll_valid"][2, 3] and not r.per_sample["tll_correct"][2, 3]
    assert r.per_sample["err2d"][2, 3] == math.inf
    assert json.loads(json.dumps(r.to_dict()))["overall"]["mpjpe"] == math.inf


def test_gt_must_be_finite():
    rng = np.random.default_rng(13)
    d = make_data(rng, 5, 21)
    bad = {**d, "gt3d": d["gt3d"].copy()}
    bad["gt3d"][2, 7, 1] = np.nan
    with pytest.raises(DabenchError, match=r"gt3d.*sample 2, joint 7"):
        run(bad, "hand21")
    bad = {**d, "gt2d": d["gt2d"].copy(), "vis": d["vis"].copy()}
    bad["gt2d"][1, 3] = np.nan
    bad["vis"][1, 3] = True
    with pytest.raises(DabenchError, match="gt2d"):
        run(bad, "hand21")
    bad["vis"][1, 3] = False  # an invisible joint's 2D label is never read
    assert math.isfinite(run(bad, "hand21").overall["err2d_px"])


def test_validation_errors():
    rng = np.random.default_rng(14)
    d = make_data(rng, 5, 20)
    with pytest.raises(DabenchError, match=r"21 joints.*20"):
        run(d, "hand21")
    d = make_data(rng, 5, 21)
    cases = [
        ({"pred3d": d["pred3d"][:4]}, "shape"),
        ({"pred2d": d["pred3d"]}, r"pred2d must have shape \[N, K, 2\]"),
        ({"gt3d": d["gt3d"][..., :2]}, "gt3d"),
        ({"vis": d["vis"][:, :20]}, "vis"),
        ({"vis": d["vis"] * 0.5}, "vis"),
        ({"pred2d": d["pred2d"][:4], "gt2d": d["gt2d"][:4], "vis": d["vis"][:4]}, r"\[N, K\]"),
    ]
    for change, msg in cases:
        with pytest.raises(DabenchError, match=msg):
            run({**d, **change}, "hand21")
    with pytest.raises(DabenchError, match="image_size"):
        run(d, "hand21", size=0)
    with pytest.raises(DabenchError, match="unknown joint set"):
        run(d, "hand22")
    with pytest.raises(DabenchError, match="N = 0"):
        run({key: v[:0] for key, v in d.items()}, "hand21")


def test_ambiguity_ratio_counts_views_that_disagree_on_left_and_right():
    """Eq. 11 on a hand-built 4-view moment: swapping left and right in one view makes f = 1
    of N = 4, so r = min(1, 3) / 4 = 25 %; two views, 50 %; all four (consistently wrong),
    0 %; a second, clean moment halves the mean."""
    from bench.metrics import ambiguity_ratio, flip_errors

    js = get_joint_set("h36m17")
    rng = np.random.default_rng(0)
    gt = rng.uniform(5, 59, size=(4, 17, 2))
    vis = np.ones((4, 17), bool)
    swap = np.arange(17)
    for a, b in js.flip_pairs:
        swap[a], swap[b] = b, a
    moment = np.zeros(4, int)
    assert ambiguity_ratio(gt, gt, vis, js, moment) == 0.0
    for flipped_views, expected in (
        ([1], 25.0),
        ([0, 2], 50.0),
        ([0, 1, 2], 25.0),
        ([0, 1, 2, 3], 0.0),
    ):
        pred = gt.copy()
        pred[flipped_views] = gt[flipped_views][:, swap]
        assert ambiguity_ratio(pred, gt, vis, js, moment) == pytest.approx(expected)
    plain, flipped = flip_errors(pred, gt, vis, js)
    assert (flipped < plain).all()
    # a clean second moment: the mean over moments
    pred = np.concatenate([gt, gt])
    pred[1] = gt[1][swap]
    both = ambiguity_ratio(
        pred, np.concatenate([gt, gt]), np.ones((8, 17), bool), js, np.repeat([0, 1], 4)
    )
    assert both == pytest.approx(12.5)
    # single-view moments are left out; none with two views: NaN
    assert math.isnan(ambiguity_ratio(gt, gt, vis, js, np.arange(4)))
    with pytest.raises(DabenchError, match="groups must be"):
        ambiguity_ratio(gt, gt, vis, js, np.zeros(3, int))


def test_evaluate_reports_the_ambiguity_ratio_only_given_groups_and_sides():
    rng = np.random.default_rng(1)
    g2 = rng.uniform(5, 59, size=(4, 17, 2))
    g3 = rng.normal(size=(4, 17, 3)) * 100 + [0, 0, 4000]
    vis = np.ones((4, 17), bool)
    base = evaluate(g2, g2, g3, g3, vis, "h36m17", 64)
    assert "ambiguity_pct" not in base.overall
    grouped = evaluate(g2, g2, g3, g3, vis, "h36m17", 64, groups=np.zeros(4, int))
    assert grouped.overall["ambiguity_pct"] == 0.0
    h2 = rng.uniform(5, 59, size=(4, 21, 2))
    h3 = rng.normal(size=(4, 21, 3)) * 30 + [0, 0, 500]
    hand = evaluate(h2, h2, h3, h3, np.ones((4, 21), bool), "hand21", 64, groups=np.zeros(4, int))
    assert "ambiguity_pct" not in hand.overall  # one hand has no left and right


# --------------------------------------------------------------------------------------------
# PCKh and 2D-only samples
# --------------------------------------------------------------------------------------------


def test_pckh_hand_computed_with_mpiis_total():
    js = get_joint_set("h36m17")
    k = js.num_joints
    gt2d = np.full((2, k, 2), 30.0)
    pred2d = gt2d.copy()
    # head sizes 10 and 4 px: the threshold is 5 and 2 px; `<=` counts a joint exactly on it
    pred2d[0, :, 0] += np.where(np.arange(k) % 2 == 0, 5.0, 5.01)  # even joints on the line
    pred2d[1, :, 0] += 1.0  # all within 2 px
    vis = np.ones((2, k), bool)
    vis[1, 3] = False
    head = np.array([10.0, 4.0])
    even = (np.arange(k) % 2 == 0).sum()
    assert pckh(pred2d, gt2d, vis, head) == pytest.approx(100 * (even + k - 1) / (2 * k - 1))
    pelvis, thorax = js.joints.index("pelvis"), js.joints.index("thorax")
    # pelvis (0) and thorax (8) are even: on the line in sample 0; MPII's total leaves
    # them out, the per-joint values do not
    counted = [j for j in range(k) if j not in (pelvis, thorax)]
    right = sum(j % 2 == 0 for j in counted) + sum(j != 3 for j in counted)
    total = len(counted) + sum(j != 3 for j in counted)
    gt3d = np.full((2, k, 3), np.nan)
    r = evaluate(pred2d, gt2d, np.zeros((2, k, 3)), gt3d, vis, js, 64, head_size=head)
    assert r.overall["pckh_50"] == pytest.approx(100 * right / total)
    assert r.per_joint["pckh_50"][pelvis] == 100.0 and r.per_joint["pckh_50"][1] == 50.0
    # no head size: no PCKh; a sample without a usable head size is not counted
    assert "pckh_50" not in evaluate(pred2d, gt2d, np.zeros((2, k, 3)), gt3d, vis, js, 64).overall
    assert pckh(pred2d, gt2d, vis, np.array([np.nan, 4.0])) == 100.0
    with pytest.raises(DabenchError, match=r"head_size must be \[N\] = \[2\]"):
        pckh(pred2d, gt2d, vis, np.ones(3))


def test_2d_only_samples_are_left_out_of_the_3d_metrics_only():
    rng = np.random.default_rng(21)
    d = make_data(rng, 12, 17, size=64)
    mixed = {**d, "gt3d": d["gt3d"].copy()}
    only2d = np.zeros(12, bool)
    only2d[[1, 4, 5, 9]] = True
    mixed["gt3d"][only2d] = np.nan
    r = run(mixed, "h36m17", size=64)
    sub = run({k: v[~only2d] for k, v in d.items()}, "h36m17", size=64)
    full = run(d, "h36m17", size=64)
    for m in ("mpjpe", "pa_mpjpe", "n_mpjpe", "pck3d_150", "auc3d_0_150"):
        assert r.overall[m] == pytest.approx(sub.overall[m]), m  # 3D: the labelled samples
    for m in ("pck2d_005", "err2d_px", "pck2d_tll"):
        assert r.overall[m] == pytest.approx(full.overall[m]), m  # 2D: every sample
    assert np.isnan(r.per_sample["err3d"][only2d]).all()
    # a wholly 2D-only set: 3D metrics undefined (None in JSON), 2D ones as before
    none3d = run({**d, "gt3d": np.full_like(d["gt3d"], np.nan)}, "h36m17", size=64)
    assert all(math.isnan(none3d.overall[m]) for m in ("mpjpe", "pa_mpjpe", "pck3d_150"))
    assert none3d.to_dict()["overall"]["mpjpe"] is None
    assert none3d.overall["pck2d_005"] == pytest.approx(full.overall["pck2d_005"])
    # a sample with only some 3D joints missing is still an error, named by its own index
    partial = {**mixed, "gt3d": mixed["gt3d"].copy()}
    partial["gt3d"][6, 2, 0] = np.nan
    with pytest.raises(DabenchError, match=r"gt3d.*sample 6, joint 2"):
        run(partial, "h36m17", size=64)
