"""S001's pre-training alignment (InfoNCE, Eq. 2) and integrated pseudo-labelling (Eq. 3):
confidence and reprojection masks, re-centred heatmap labels, kinematic correction, the
mask schedules of the pseudo-label loss and the mask overlap."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch

from bench.data.joints import get_joint_set
from bench.errors import DabenchError
from bench.losses.contrastive import info_nce
from bench.losses.pseudo_labels import (
    MASK_SCHEDULES,
    confidence_mask,
    heatmap_errors,
    kinematic_correction,
    mask_overlap,
    mean_bone_lengths,
    pseudo_heatmaps,
    pseudo_loss,
    reprojection_mask,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- InfoNCE (Eq. 2)


def _cos(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def test_info_nce_matches_a_hand_computation_of_eq2():
    z = [[1.0, 0.0, 2.0, -1.0], [0.5, 1.5, -0.5, 0.0], [-1.0, 2.0, 0.0, 1.0]]
    z_pos = [[0.8, 0.2, 1.5, -1.2], [0.0, 1.0, -1.0, 0.5], [-2.0, 1.0, 0.5, 0.5]]
    tau = 0.5
    terms = []
    for i in range(3):
        numerator = math.exp(_cos(z[i], z_pos[i]) / tau)
        denominator = 0.0
        for k in range(3):
            if k != i:
                denominator += math.exp(_cos(z[i], z[k]) / tau)
                denominator += math.exp(_cos(z[i], z_pos[k]) / tau)
        terms.append(-math.log(numerator / denominator))
    expected = sum(terms) / 3  # mean over anchors, not Eq. 2's printed sum
    got = info_nce(torch.tensor(z, dtype=torch.float64), torch.tensor(z_pos, dtype=torch.float64))
    assert got.item() == pytest.approx(expected, rel=1e-12)
    # τ enters: a different temperature gives a different value
    assert info_nce(torch.tensor(z), torch.tensor(z_pos), tau=0.1).item() != pytest.approx(
        expected, rel=1e-3
    )


def test_info_nce_is_invariant_to_positive_scaling_of_the_features():
    z = torch.randn(5, 8, generator=gen(0), dtype=torch.float64)
    z_pos = z + 0.3 * torch.randn(5, 8, generator=gen(1), dtype=torch.float64)
    base = info_nce(z, z_pos)
    assert torch.allclose(info_nce(3.7 * z, z_pos), base, rtol=1e-10)
    assert torch.allclose(info_nce(z, 0.01 * z_pos), base, rtol=1e-10)


def test_info_nce_is_lower_for_true_positives_than_for_permuted_ones():
    z = torch.randn(6, 4, generator=gen(2))
    derangement = torch.tensor([1, 2, 3, 4, 5, 0])
    assert info_nce(z, z) < info_nce(z, z[derangement])


def test_info_nce_rejects_a_batch_of_one_and_mismatched_shapes():
    with pytest.raises(DabenchError, match="at least 2"):
        info_nce(torch.randn(1, 4), torch.randn(1, 4))
    with pytest.raises(DabenchError, match="one shape"):
        info_nce(torch.randn(3, 4), torch.randn(3, 5))


# ---------------------------------------------------------------- M_2D (confidence mask)


@pytest.mark.parametrize(
    ("b", "k", "q"),
    [(1, 1, 0.0), (2, 21, 0.5), (3, 17, 0.5), (4, 5, 0.29), (5, 20, 0.29), (7, 3, 0.9)],
)
@pytest.mark.parametrize("ties", [False, True])
def test_confidence_mask_keeps_exactly_the_configured_number(b, k, q, ties):
    conf = torch.rand(b, k, generator=gen(b * k))
    if ties:
        conf = (conf * 3).floor()  # only three distinct values: many ties at the cut
    mask = confidence_mask(conf, q)
    n = b * k
    expected_drop = math.floor(Fraction(str(q)) * n)  # exact decimal arithmetic
    assert mask.dtype == torch.bool and mask.shape == (b, k)
    assert int(mask.sum()) == n - expected_drop


def test_confidence_mask_keeps_the_most_confident_keypoints():
    conf = torch.randn(4, 6, generator=gen(3))
    mask = confidence_mask(conf, 0.5)
    assert conf[mask].min() > conf[~mask].max()
    # NaN confidences rank last
    conf[0, 0] = float("nan")
    assert not confidence_mask(conf, 0.25)[0, 0]


def test_confidence_mask_breaks_ties_by_flat_index():
    conf = torch.tensor([[0.5, 0.9, 0.5], [0.5, 0.1, 0.5]])
    # drop ⌊0.5·6⌋ = 3: 0.1 and two of the four 0.5s; the tied 0.5s with the lowest flat
    # indices (0 and 2) are kept
    expected = torch.tensor([[True, True, True], [False, False, False]])
    assert torch.equal(confidence_mask(conf, 0.5), expected)
    assert torch.equal(confidence_mask(conf.clone(), 0.5), expected)
    flat_ties = torch.full((3, 4), 0.7)
    assert torch.equal(confidence_mask(flat_ties, 0.5).reshape(-1), torch.arange(12) < 6)


def test_confidence_mask_rejects_quantiles_outside_0_1():
    for q in (-0.1, 1.0, float("nan")):
        with pytest.raises(DabenchError, match="drop_quantile"):
            confidence_mask(torch.rand(2, 3), q)


# ---------------------------------------------------------------- h̃ (re-centred Gaussians)


def test_pseudo_heatmaps_peak_at_the_teacher_argmax():
    teacher = torch.rand(2, 3, 9, 11, generator=gen(4))
    spots = [(1, 2), (8, 10), (4, 0), (0, 0), (5, 7), (3, 3)]  # (row, col)
    for n, (r, c) in enumerate(spots):
        teacher[n // 3, n % 3, r, c] = 2.0
    labels = pseudo_heatmaps(teacher, sigma=2.0)
    assert labels.shape == teacher.shape
    for n, (r, c) in enumerate(spots):
        label = labels[n // 3, n % 3]
        assert label[r, c].item() == pytest.approx(1.0)
        assert torch.equal(label.flatten().argmax(), torch.tensor(r * 11 + c))
        assert label.max().item() == pytest.approx(1.0)
    # sigma is the Gaussian's: one pixel off the peak along x it is exp(−1/(2σ²))
    assert labels[0, 0, 1, 3].item() == pytest.approx(math.exp(-1 / 8))


# ---------------------------------------------------------------- ỹ (kinematic correction)


def _build_pose(parents, root, root_xyz, bone_vectors):
    """Pose [B,K,3] from per-child bone vectors [B,K,3], walking the tree in Python."""
    b, k, _ = bone_vectors.shape
    pose = torch.zeros(b, k, 3, dtype=bone_vectors.dtype)
    placed = {root}
    pose[:, root] = root_xyz
    while len(placed) < k:
        for j in range(k):
            if j not in placed and parents[j] in placed:
                pose[:, j] = pose[:, parents[j]] + bone_vectors[:, j]
                placed.add(j)
    return pose


def _bones(pose, parents, root):
    return {j: pose[:, j] - pose[:, parents[j]] for j in range(len(parents)) if j != root}


def _case(name):
    js = get_joint_set(name)
    if name == "hand21":
        assert js.joints[js.root] == "wrist"
        child = js.joints.index("index_mcp")
    else:
        child = js.joints.index("r_hip")
    assert js.parents[child] == js.root
    return js, (js.root, child)


def _random_bones(k, seed, b=3):
    g = gen(seed)
    directions = torch.nn.functional.normalize(
        torch.randn(b, k, 3, generator=g, dtype=torch.float64), dim=-1
    )
    lengths = 10 + 40 * torch.rand(b, k, 1, generator=g, dtype=torch.float64)
    return directions * lengths


@pytest.mark.parametrize("name", ["hand21", "h36m17"])
def test_kinematic_correction_keeps_directions_and_sets_reference_lengths(name):
    js, scale_bone = _case(name)
    k, parents, root = js.num_joints, js.parents, js.root
    g = gen(5)
    reference = 20 + 30 * torch.rand(k, generator=g, dtype=torch.float64)
    root_xyz = torch.tensor([[10.0, -20.0, 500.0], [0.0, 0.0, 800.0], [-5.0, 5.0, 300.0]])
    pose = _build_pose(parents, root, root_xyz.double(), _random_bones(k, 6))
    out = kinematic_correction(pose, parents, root, reference, scale_bone)
    assert out.shape == pose.shape and torch.isfinite(out).all()
    assert torch.allclose(out[:, root], pose[:, root])
    p, c = scale_bone
    scale = (pose[:, c] - pose[:, p]).norm(dim=-1) / reference[c]
    before, after = _bones(pose, parents, root), _bones(out, parents, root)
    for j in before:
        cosine = torch.nn.functional.cosine_similarity(before[j], after[j], dim=-1)
        assert torch.allclose(cosine, torch.ones_like(cosine), atol=1e-5), j
        assert torch.allclose(after[j].norm(dim=-1), reference[j] * scale, rtol=1e-6), j
    # the pose did change (its bones were not proportional to the reference)
    assert (out - pose).abs().max() > 1.0


@pytest.mark.parametrize("name", ["hand21", "h36m17"])
@pytest.mark.parametrize("size", [1.0, 0.37, 2.5])
def test_kinematic_correction_leaves_a_consistent_pose_unchanged(name, size):
    js, scale_bone = _case(name)
    k, parents, root = js.num_joints, js.parents, js.root
    reference = 20 + 30 * torch.rand(k, generator=gen(7), dtype=torch.float64)
    directions = torch.nn.functional.normalize(_random_bones(k, 8, b=2), dim=-1)
    bones = directions * (size * reference)[None, :, None]
    pose = _build_pose(parents, root, torch.tensor([3.0, 4.0, 600.0], dtype=torch.float64), bones)
    out = kinematic_correction(pose, parents, root, reference, scale_bone)
    assert torch.allclose(out, pose, atol=1e-9)
    # the [K−1] layout (root entry left out) means the same
    without_root = torch.cat([reference[:root], reference[root + 1 :]])
    assert torch.allclose(kinematic_correction(pose, parents, root, without_root, scale_bone), pose)
    # the scale bone may be given child-first
    assert torch.allclose(
        kinematic_correction(pose, parents, root, reference, scale_bone[::-1]), pose
    )


def test_kinematic_correction_is_finite_with_zero_length_bones():
    js, scale_bone = _case("hand21")
    k, parents, root = js.num_joints, js.parents, js.root
    reference = torch.full((k,), 30.0, dtype=torch.float64)
    pose = _build_pose(parents, root, torch.zeros(3, dtype=torch.float64), _random_bones(k, 9, b=2))
    mid = js.joints.index("middle_pip")
    pose[0, mid] = pose[0, parents[mid]]  # zero-length bone in sample 0
    pose[1] = pose[1, root]  # every bone of sample 1 has length 0, the scale bone too
    pose.requires_grad_(True)
    out = kinematic_correction(pose, parents, root, reference, scale_bone)
    assert torch.isfinite(out).all()
    # documented choice: a zero-length bone's child sits on its corrected parent
    assert torch.allclose(out[0, mid], out[0, parents[mid]])
    assert torch.allclose(out[1], pose[1].detach())
    out.sum().backward()
    assert torch.isfinite(pose.grad).all()


def test_kinematic_correction_confines_a_nan_joint_to_its_subtree():
    js, scale_bone = _case("hand21")
    k, parents, root = js.num_joints, js.parents, js.root
    pose = _build_pose(
        parents, root, torch.zeros(3, dtype=torch.float64), _random_bones(k, 13, b=1)
    )
    ring_pip = js.joints.index("ring_pip")
    pose[0, ring_pip, 0] = float("nan")
    out = kinematic_correction(pose, parents, root, torch.full((k,), 30.0), scale_bone)
    subtree = {ring_pip, js.joints.index("ring_dip"), js.joints.index("ring_tip")}
    for j in range(k):
        assert bool(torch.isfinite(out[0, j]).all()) == (j not in subtree), js.joints[j]


def test_kinematic_correction_rejects_bad_scale_bones_and_references():
    js, scale_bone = _case("hand21")
    pose = torch.zeros(1, 21, 3)
    with pytest.raises(DabenchError, match="scale_bone"):
        kinematic_correction(pose, js.parents, js.root, torch.ones(21), (1, 5))
    bad = torch.ones(21)
    bad[5] = float("nan")
    with pytest.raises(DabenchError, match="finite and > 0"):
        kinematic_correction(pose, js.parents, js.root, bad, scale_bone)


def test_mean_bone_lengths_recovers_known_lengths_ignoring_non_finite_samples():
    js = get_joint_set("h36m17")
    k, parents, root = js.num_joints, js.parents, js.root
    lengths = torch.arange(1, k + 1, dtype=torch.float64) * 10  # bone ending in j: 10(j+1)
    directions = torch.nn.functional.normalize(_random_bones(k, 10, b=4), dim=-1)
    # sample n scales every bone by (1, 2, 3, 100)[n]; the last is made NaN below
    factors = torch.tensor([1.0, 2.0, 3.0, 100.0], dtype=torch.float64)
    bones = directions * lengths[None, :, None] * factors[:, None, None]
    poses = _build_pose(parents, root, torch.zeros(3, dtype=torch.float64), bones)
    poses[3, :] = float("nan")
    got = mean_bone_lengths(poses, parents)
    expected = lengths * 2.0  # mean of factors 1, 2, 3
    expected[root] = 0.0
    assert torch.allclose(got, expected)


# ---------------------------------------------------------------- M_3D and the loss


def test_reprojection_mask_keeps_shifts_strictly_below_the_threshold():
    before = torch.zeros(1, 4, 2)
    after = torch.tensor([[[3.0, 4.0], [0.0, 4.999], [0.0, 5.001], [float("nan"), 0.0]]])
    assert reprojection_mask(before, after, 5.0).tolist() == [[False, True, False, False]]
    assert reprojection_mask(before, after, 5.0 + 1e-6)[0, 0]


def test_heatmap_errors_is_the_l2_norm_not_its_square():
    pred = torch.zeros(1, 2, 3, 3)
    target = torch.zeros(1, 2, 3, 3)
    target[0, 0, 0, 0], target[0, 0, 2, 2] = 3.0, 4.0
    target[0, 1, 1, 1] = 0.5
    assert torch.allclose(heatmap_errors(pred, target), torch.tensor([[5.0, 0.5]]))


HEAT = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
POSE = [[10.0, 20.0, 30.0], [40.0, 50.0, 60.0]]
M2D = [[True, False, True], [False, False, True]]  # heat 1, 3, 6
M3D = [[True, True, False], [False, False, False]]  # pose 10, 20
LAM = 0.1
INDEPENDENT = (1 + 3 + 6) / 3 + LAM * (10 + 20) / 2  # 3.333… + 1.5
UNION = ((1 + LAM * 10) + (2 + LAM * 20) + (3 + LAM * 30) + (6 + LAM * 60)) / 4  # M: 4 entries


@pytest.mark.parametrize(
    ("schedule", "union_now", "expected"),
    [
        ("independent-then-union", False, INDEPENDENT),
        ("independent-then-union", True, UNION),
        ("independent", True, INDEPENDENT),
        ("union", False, UNION),
        ("m2d-only", True, (1 + 3 + 6) / 3),
        ("m3d-only", False, LAM * (10 + 20) / 2),
    ],
)
def test_pseudo_loss_schedules_match_hand_computations(schedule, union_now, expected):
    got = pseudo_loss(
        torch.tensor(HEAT), torch.tensor(POSE), torch.tensor(M2D), torch.tensor(M3D),
        schedule, union_now, lambda_y=LAM,
    )  # fmt: skip
    assert got.item() == pytest.approx(expected)


def test_pseudo_loss_union_differs_from_independent_when_masks_differ():
    args = (torch.tensor(HEAT), torch.tensor(POSE), torch.tensor(M2D), torch.tensor(M3D))
    assert INDEPENDENT != pytest.approx(UNION)
    independent = pseudo_loss(*args, "independent", False)
    union = pseudo_loss(*args, "union", False)
    assert independent.item() != pytest.approx(union.item())
    # with identical masks the two phases coincide: the difference comes from the masks
    same = torch.tensor(M2D)
    a = pseudo_loss(torch.tensor(HEAT), torch.tensor(POSE), same, same, "independent", False)
    b = pseudo_loss(torch.tensor(HEAT), torch.tensor(POSE), same, same, "union", False)
    assert a.item() == pytest.approx(b.item())


@pytest.mark.parametrize("schedule", MASK_SCHEDULES)
@pytest.mark.parametrize("union_now", [False, True])
def test_pseudo_loss_with_empty_masks_is_zero_with_a_zero_gradient(schedule, union_now):
    heat = torch.rand(2, 3, generator=gen(11)).requires_grad_(True)
    pose = torch.rand(2, 3, generator=gen(12))
    pose[0, 0] = float("nan")  # a failed lift outside the masks must not leak in
    pose.requires_grad_(True)
    empty = torch.zeros(2, 3, dtype=torch.bool)
    loss = pseudo_loss(heat, pose, empty, empty, schedule, union_now)
    assert loss.item() == 0.0
    loss.backward()
    # the single-term schedules do not read the other error at all
    used = {"m2d-only": (heat,), "m3d-only": (pose,)}.get(schedule, (heat, pose))
    for err in used:
        assert err.grad is not None and torch.equal(err.grad, torch.zeros_like(err))


def test_pseudo_loss_rejects_an_unknown_schedule():
    x = torch.zeros(1, 2)
    m = torch.zeros(1, 2, dtype=torch.bool)
    with pytest.raises(DabenchError, match="independent-then-union, independent, union"):
        pseudo_loss(x, x, m, m, "intersection", False)


def test_mask_overlap_is_intersection_over_union():
    a = torch.tensor([[True, True, False, False]])
    b = torch.tensor([[True, False, True, False]])
    assert mask_overlap(a, b).item() == pytest.approx(1 / 3)
    assert mask_overlap(a, a).item() == 1.0
    assert mask_overlap(a, ~a).item() == 0.0
    none = torch.zeros(1, 4, dtype=torch.bool)
    assert mask_overlap(none, none).item() == 1.0
    assert mask_overlap(a, none).item() == 0.0
