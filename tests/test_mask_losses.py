"""MaS's losses: mask terms (weights, power, clip), pose priors, affine equivariance (warp
direction, sampling, loss) and the stage-0 centroid targets."""

from __future__ import annotations

import math

import pytest
import torch

from bench.errors import DabenchError
from bench.losses.mask_losses import (
    H36M17_SPINE_BONES,
    H36M17_SYMMETRY_CENTRES,
    H36M17_SYMMETRY_PAIRS,
    H36M17_TIE_PAIRS,
    bone_length_loss,
    centroid_targets,
    equivariance_loss,
    init_loss,
    invert_affines,
    physique_loss,
    random_affines,
    skeleton_loss,
    symmetry_loss,
    tie_loss,
    transform_points,
    warp_images,
)
from bench.models.skeleton_maps import coordinate_grid

# --- mask losses -------------------------------------------------------------------------------

SKEL = torch.tensor([[[1.0, 0.5], [0.0, 0.05]]])  # [1,2,2]
GT = torch.tensor([[[1.0, 1.0], [0.0, 1.0]]])
G = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])


def test_mask_losses_vanish_on_equal_masks() -> None:
    m = torch.rand(2, 1, 5, 4)
    assert skeleton_loss(m, m).item() == 0.0
    assert skeleton_loss(m, m[:, 0], weights=torch.rand(2, 5, 4), clip=0.1).item() == 0.0
    assert physique_loss(m, m, weights=torch.rand(2, 1, 5, 4)).item() == 0.0


def test_skeleton_loss_hand_computed() -> None:
    # squared errors 0, 0.25, 0, 0.9025; mean over the 4 pixels
    assert skeleton_loss(SKEL, GT).item() == pytest.approx((0.25 + 0.9025) / 4)
    # G linear (the code): 2·0.25 + 4·0.9025
    assert skeleton_loss(SKEL, GT, weights=G).item() == pytest.approx((0.5 + 3.61) / 4)
    # G squared (the paper's ‖G ⊙ ·‖²): 4·0.25 + 16·0.9025
    got = skeleton_loss(SKEL, GT, weights=G, weight_power=2).item()
    assert got == pytest.approx((1.0 + 14.44) / 4)
    # [B,1,H,W] and [B,H,W] are the same masks
    assert skeleton_loss(SKEL[:, None], GT, weights=G[:, None]).item() == pytest.approx(
        (0.5 + 3.61) / 4
    )
    assert physique_loss(SKEL, GT, weights=G).item() == pytest.approx((0.5 + 3.61) / 4)


def test_skeleton_loss_clip_excludes_low_pixels() -> None:
    # the 0.05-vs-1 pixel counts without the clip, not with clip 0.1; the mean stays over 4
    assert skeleton_loss(SKEL, GT, clip=0.1).item() == pytest.approx(0.25 / 4)
    assert skeleton_loss(SKEL, GT, weights=G, clip=0.1).item() == pytest.approx(0.5 / 4)
    assert skeleton_loss(SKEL, GT, clip=0.01).item() == pytest.approx((0.25 + 0.9025) / 4)
    # the clipped term only pulls bone pixels that are outside the silhouette
    skel = SKEL.clone().requires_grad_(True)
    skeleton_loss(skel, GT, clip=0.1).backward()
    assert skel.grad[0, 1, 1].item() == 0.0 and skel.grad[0, 0, 1].item() < 0


def test_mask_losses_reject_bad_shapes() -> None:
    with pytest.raises(DabenchError, match="m_gt"):
        skeleton_loss(torch.rand(1, 4, 4), torch.rand(1, 4, 5))
    with pytest.raises(DabenchError, match=r"\[B,1,H,W\]"):
        physique_loss(torch.rand(1, 2, 4, 4), torch.rand(1, 2, 4, 4))
    with pytest.raises(DabenchError, match="weights"):
        skeleton_loss(SKEL, GT, weights=torch.rand(1, 3, 3))
    with pytest.raises(DabenchError, match="weight_power"):
        skeleton_loss(SKEL, GT, weights=G, weight_power=3)
    with pytest.raises(DabenchError, match="float"):
        physique_loss(SKEL, GT.bool())


# --- pose priors -------------------------------------------------------------------------------


def _symmetric_pose(dim: int = 3) -> torch.Tensor:
    """An h36m17 pose, symmetric about the x = 0 plane, spine along −y with unit bones."""
    p = torch.zeros(17, 3)
    p[7] = torch.tensor([0.0, -1.0, 0.0])  # spine
    p[8] = torch.tensor([0.0, -2.0, 0.0])  # thorax
    p[9] = torch.tensor([0.0, -3.0, 0.0])  # neck
    p[10] = torch.tensor([0.0, -4.0, 0.0])  # head
    for left, right, y, x in [(4, 1, 0.0, 0.5), (5, 2, 1.5, 0.6), (6, 3, 3.0, 0.6)]:
        p[left] = torch.tensor([x, y, 0.2 * y])
        p[right] = torch.tensor([-x, y, 0.2 * y])
    for left, right, y, x in [(11, 14, -2.0, 0.8), (12, 15, -1.0, 1.2), (13, 16, 0.0, 1.3)]:
        p[left] = torch.tensor([x, y, 0.1 * (y + 2)])
        p[right] = torch.tensor([-x, y, 0.1 * (y + 2)])
    return p[None, :, :dim].repeat(2, 1, 1)


@pytest.mark.parametrize("dim", [2, 3])
def test_bone_length_loss_zero_at_the_lengths_and_quadratic_in_the_stretch(dim: int) -> None:
    pose = _symmetric_pose(dim)
    lengths = [1.0, 1.0, 1.0, 1.0]
    assert bone_length_loss(pose, H36M17_SPINE_BONES, lengths).item() == pytest.approx(0.0)
    values = []
    for stretch in (0.1, 0.2, 0.4):
        moved = pose.clone()
        moved[:, 10, 1] -= stretch  # neck→head longer by `stretch`
        values.append(bone_length_loss(moved, H36M17_SPINE_BONES, lengths).item())
    assert values == pytest.approx([0.01, 0.04, 0.16], rel=1e-4)
    # per-sample lengths [B, n_bones]; the batch mean of the two samples' sums
    per_sample = torch.tensor([[1.0] * 4, [1.0, 1.0, 1.0, 0.5]])
    assert bone_length_loss(pose, H36M17_SPINE_BONES, per_sample).item() == pytest.approx(0.125)


def test_bone_length_loss_has_finite_gradient_at_a_zero_length_bone() -> None:
    pose = _symmetric_pose().requires_grad_(True)
    bone_length_loss(pose, [(0, 0), (0, 7)], [0.5, 1.0]).backward()
    assert bool(torch.isfinite(pose.grad).all())


@pytest.mark.parametrize("dim", [2, 3])
def test_symmetry_loss(dim: int) -> None:
    pose = _symmetric_pose(dim)
    pairs, centres = H36M17_SYMMETRY_PAIRS, H36M17_SYMMETRY_CENTRES
    assert symmetry_loss(pose, pairs, centres).item() == pytest.approx(0.0)
    moved = pose.clone()
    moved[0, 11, 0] += 0.4  # left shoulder of sample 0: the midpoint moves 0.2 off the thorax
    assert symmetry_loss(moved, pairs, centres).item() == pytest.approx(0.2**2 / 2)


def test_tie_loss() -> None:
    pose = _symmetric_pose(2)
    # wrists 2.6 apart, elbows 2.4 apart (both samples): 2.6² + 2.4²
    assert tie_loss(pose, H36M17_TIE_PAIRS).item() == pytest.approx(2.6**2 + 2.4**2)
    tied = pose.clone()
    tied[:, [13, 16, 12, 15]] = 0.0
    assert tie_loss(tied, H36M17_TIE_PAIRS).item() == 0.0


def test_pose_priors_reject_bad_input() -> None:
    pose = _symmetric_pose()
    with pytest.raises(DabenchError, match="lengths"):
        bone_length_loss(pose, H36M17_SPINE_BONES, [1.0, 1.0])
    with pytest.raises(DabenchError, match="bones"):
        bone_length_loss(pose, [(0, 17)], [1.0])
    with pytest.raises(DabenchError, match="centre"):
        symmetry_loss(pose, H36M17_SYMMETRY_PAIRS, [8])
    with pytest.raises(DabenchError, match=r"\[B,J,2\]"):
        tie_loss(torch.rand(2, 17, 4), H36M17_TIE_PAIRS)
    with pytest.raises(DabenchError, match="pairs"):
        tie_loss(pose, [])


# --- equivariance ------------------------------------------------------------------------------


def _blob(centre: tuple[float, float], size: tuple[int, int] = (40, 40), sigma: float = 0.06):
    """[1,1,H,W] Gaussian dot at a grid point."""
    grid = coordinate_grid(*size)
    d2 = (grid - torch.tensor(centre)).square().sum(-1)
    return torch.exp(-d2 / (2 * sigma**2))[None, None]


def _soft_argmax(images: torch.Tensor) -> torch.Tensor:
    """A translation-, rotation- and scale-equivariant 'detector': the intensity centroid,
    [B,1,2] in grid coordinates."""
    grid = coordinate_grid(*images.shape[-2:])
    w = images[:, 0]
    return (torch.einsum("bhw,hwc->bc", w, grid) / w.sum(dim=(-2, -1))[:, None])[:, None]


def test_random_affines_seeded_identity_and_ranges() -> None:
    a = random_affines(64, torch.Generator().manual_seed(3))
    b = random_affines(64, torch.Generator().manual_seed(3))
    assert a.shape == (64, 2, 3) and torch.equal(a, b)
    assert not torch.equal(a, random_affines(64, torch.Generator().manual_seed(4)))
    # the global RNG neither feeds nor is consumed by a call with a generator
    torch.manual_seed(123)
    state = torch.get_rng_state()
    assert torch.equal(random_affines(64, torch.Generator().manual_seed(3)), a)
    assert torch.equal(torch.get_rng_state(), state)
    s = torch.linalg.det(a[:, :, :2]).sqrt()
    assert bool(((s >= 0.75 - 1e-6) & (s <= 1.25 + 1e-6)).all())
    angle = torch.rad2deg(torch.atan2(a[:, 1, 0], a[:, 0, 0])).abs()
    assert angle.max() <= 60 + 1e-4 and 0 < (angle > 0).sum() < 64  # p_rotate 0.6
    assert bool((a[:, :, 2] == 0).all())  # translate 0 by default
    t = random_affines(64, torch.Generator().manual_seed(3), translate=0.1)[:, :, 2]
    assert t.abs().max() <= 0.1 and t.abs().max() > 0
    eye = random_affines(5, torch.Generator().manual_seed(0), scale=0, rotation_deg=0)
    assert torch.equal(eye, torch.eye(2, 3).expand(5, 2, 3))
    with pytest.raises(DabenchError, match="scale"):
        random_affines(2, scale=1.0)


def test_warp_moves_content_at_x_to_ax_plus_b() -> None:
    dot = (0.2, -0.3)
    explicit = torch.tensor(
        [
            [1.2 * math.cos(0.5), -1.2 * math.sin(0.5), 0.1],
            [1.2 * math.sin(0.5), 1.2 * math.cos(0.5), -0.05],
        ]
    )
    affines = torch.cat(
        [explicit[None], random_affines(3, torch.Generator().manual_seed(1), translate=0.1)]
    )
    for size in [(40, 40), (36, 48)]:
        image = _blob(dot, size).expand(4, 3, *size)
        warped = warp_images(image, affines)
        assert warped.shape == image.shape
        where = _soft_argmax(warped[:, :1])  # [B,1,2]
        expected = transform_points(torch.tensor([[dot]]).expand(4, 1, 2), affines)
        pixel = torch.tensor([2 / size[1], 2 / size[0]])
        assert bool(((where - expected).abs() <= pixel).all())
        # and the brightest pixel is within a pixel too (the centroid is not a fluke of blur)
        flat = warped[:, 0].flatten(1).argmax(-1)
        peak = coordinate_grid(*size).reshape(-1, 2)[flat]
        assert bool(((peak - expected[:, 0]).abs() <= pixel).all())


def test_warp_by_one_pixel_is_an_exact_shift() -> None:
    # grid coordinates are pixel centres: b = (2/W, 2/H) moves every pixel one right and one
    # down, exactly (an align_corners=True grid would shift by (W−1)/W px and blur)
    image = torch.rand(2, 3, 6, 8)
    affines = torch.tensor([[1.0, 0.0, 2 / 8], [0.0, 1.0, 2 / 6]]).expand(2, 2, 3)
    shifted = torch.zeros_like(image)
    shifted[..., 1:, 1:] = image[..., :-1, :-1]
    assert torch.allclose(warp_images(image, affines), shifted, atol=1e-5)


def test_warp_identity_and_inverse_round_trip() -> None:
    image = torch.rand(2, 1, 12, 10)
    assert torch.allclose(warp_images(image, torch.eye(2, 3).expand(2, 2, 3)), image, atol=1e-6)
    affines = random_affines(2, torch.Generator().manual_seed(0), translate=0.2)
    points = torch.rand(2, 5, 2) * 2 - 1
    back = transform_points(transform_points(points, affines), invert_affines(affines))
    assert torch.allclose(back, points, atol=1e-5)
    with pytest.raises(DabenchError, match="invertible"):
        invert_affines(torch.zeros(1, 2, 3))


def test_equivariance_loss_zero_for_equivariant_positive_for_constant() -> None:
    affines = random_affines(4, torch.Generator().manual_seed(2), translate=0.1)
    pred = torch.rand(4, 17, 2) - 0.5
    exact = transform_points(pred, affines)
    assert equivariance_loss(exact, pred, affines).item() == pytest.approx(0.0, abs=1e-12)
    # a soft-argmax detector of a dot, run on the image and on the warped image
    image = _blob((0.15, 0.1)).expand(4, 1, 40, 40)
    on_image = _soft_argmax(image)
    on_warped = _soft_argmax(warp_images(image, affines))
    pixel = 2 / 40
    assert equivariance_loss(on_warped, on_image, affines).item() < (0.5 * pixel) ** 2
    # a constant predictor ignores the transform
    const = torch.full((4, 17, 2), 0.3)
    expected = (transform_points(const, affines) - const).square().sum((-2, -1)).mean()
    got = equivariance_loss(const, const, affines)
    assert got.item() == pytest.approx(expected.item()) and got.item() > 0.01
    # weights drop joints: weight 0 everywhere -> 0
    assert equivariance_loss(const, const, affines, torch.zeros(4, 17)).item() == 0.0
    with pytest.raises(DabenchError, match=r"\[B,2,3\]"):
        equivariance_loss(const, const, affines[:2])


# --- stage-0 centroid targets --------------------------------------------------------------------


def test_centroid_targets_of_a_rectangle_and_of_an_empty_mask() -> None:
    masks = torch.zeros(2, 1, 20, 30)
    masks[0, 0, 4:10, 6:18] = 1.0  # rows 4..9, columns 6..17
    pelvis, thorax, valid = centroid_targets(masks, thorax_offset=0.3)
    centre = torch.tensor([(2 * 11.5 + 1) / 30 - 1, (2 * 6.5 + 1) / 20 - 1])
    assert torch.allclose(pelvis[0], centre, atol=1e-6)
    assert torch.allclose(thorax[0], centre - torch.tensor([0.0, 0.3]), atol=1e-6)  # up is −y
    assert valid.tolist() == [True, False]
    # empty: the image centre, no NaN
    assert pelvis[1].tolist() == [0.0, 0.0] and thorax[1].tolist() == pytest.approx([0.0, -0.3])
    assert bool(torch.isfinite(pelvis).all() and torch.isfinite(thorax).all())


def test_init_loss_averages_over_valid_samples_only() -> None:
    masks = torch.zeros(3, 16, 16)
    masks[0, 2:8, 3:9] = 1.0
    masks[2, 10:14, 4:12] = 0.5  # soft masks count
    pelvis, thorax, valid = centroid_targets(masks, thorax_offset=0.25)
    assert valid.tolist() == [True, False, True]
    pred_p = pelvis.clone().requires_grad_(True)
    pred_t = thorax.clone()
    pred_t[0, 0] += 0.1
    pred_t[1] = float("nan")  # an invalid sample's prediction cannot poison the loss
    loss = init_loss(pred_p, pred_t, pelvis, thorax, valid)
    assert loss.item() == pytest.approx(0.1**2 / 2)
    none = init_loss(pred_p, pred_t, pelvis, thorax, torch.zeros(3, dtype=torch.bool))
    assert none.item() == 0.0
    none.backward()
    assert pred_p.grad is not None and bool((pred_p.grad == 0).all())
    with pytest.raises(DabenchError, match="valid"):
        init_loss(pred_p, pred_t, pelvis, thorax, valid[:2])
