"""Geometric reconstruction of Lin et al. (bench.models.reconstruction): grid coordinates,
bone maps (Eq. 6), bone affines (Eq. 7), relative affines, the dense motion W (Eq. 8), the
generators G and their gradients back to the keypoints."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bench.errors import DabenchError
from bench.models.reconstruction import (
    DenseMotion,
    Generator,
    UNetGenerator,
    bone_affines,
    identity_flow,
    relative_affines,
    warp,
)
from bench.models.skeleton_maps import bone_maps, coordinate_grid, grid_to_heatmap, heatmap_to_grid

# tiny models run faster on one thread, and the test runs beside other jobs
pytestmark = pytest.mark.usefixtures("one_thread")


def _rot(degrees: float) -> torch.Tensor:
    a = math.radians(degrees)
    return torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])


def _bone_affine(parent: list[float], child: list[float], size: int = 64, sigma: float = 0.1):
    points = torch.tensor([[parent, child]])
    maps = bone_maps(points, [(0, 1)], (size, size), sigma)
    return bone_affines(maps, points.mean(dim=1, keepdim=True))


# --- coordinates ------------------------------------------------------------------------------


def test_grid_coordinates_are_pixel_centres_of_grid_sample() -> None:
    h, w = 4, 8
    xy = torch.tensor([[0.0, 0.0], [w - 1.0, h - 1.0], [2.5, 1.25]])
    grid = heatmap_to_grid(xy, (h, w))
    assert torch.allclose(grid[0], torch.tensor([-1 + 1 / w, -1 + 1 / h]))
    assert torch.allclose(grid[1], torch.tensor([1 - 1 / w, 1 - 1 / h]))
    assert torch.allclose(grid_to_heatmap(grid, (h, w)), xy)
    cg = coordinate_grid(h, w)
    assert cg.shape == (h, w, 2)
    assert torch.allclose(cg[2, 5], heatmap_to_grid(torch.tensor([5.0, 2.0]), (h, w)))
    # sampling at the pixel centres is the identity with align_corners=False
    image = torch.rand(2, 3, h, w)
    assert torch.allclose(warp(image, identity_flow(2, h, w)), image, atol=1e-6)


def test_warp_resizes_the_flow_and_keeps_the_identity() -> None:
    image = torch.rand(1, 2, 32, 32)
    # an identity flow at a quarter of the size stays the identity, borders included
    assert torch.allclose(warp(image, identity_flow(1, 8, 8)), image, atol=1e-5)
    # a constant shift of one image pixel to the right, given at 8×8, reads pixel x+1
    shift = identity_flow(1, 8, 8).clone()
    shift[..., 0] += 2 / 32
    moved = warp(image, shift)
    assert torch.allclose(moved[..., :-1], image[..., 1:], atol=1e-5)
    assert torch.allclose(moved[..., -1], image[..., -1], atol=1e-5)  # border padding


# --- bone maps --------------------------------------------------------------------------------


def test_bone_map_peaks_on_segment_and_decays_with_distance() -> None:
    size, sigma = (16, 16), 0.3
    ends = heatmap_to_grid(torch.tensor([[[3.0, 8.0], [12.0, 8.0]]]), size)
    sq = bone_maps(ends, [(0, 1)], size, sigma)[0, 0]
    flat = bone_maps(ends, [(0, 1)], size, sigma, squared=False)[0, 0]
    for m in (sq, flat):
        assert torch.allclose(m[8, 3:13], torch.ones(10), atol=1e-6)  # ends, midpoint, between
        assert m.max() <= 1
        across = m[8:16, 7]  # away from the middle of the segment
        beyond = m[8, 12:16]  # past the child end, along the bone's line
        assert bool((across[1:] < across[:-1]).all())
        assert bool((beyond[1:] < beyond[:-1]).all())
        assert torch.allclose(m[8 - 3, 7], m[8 + 3, 7])  # symmetric about the bone
        assert torch.allclose(m[8, 2], m[8, 13])  # and about its midpoint
    # off the segment: the squared form is exp(−d²/σ²), the other exp(−d/σ²)
    d = 2 * 3 / 16  # three pixels off the bone, in grid units
    assert sq[11, 7].item() == pytest.approx(math.exp(-(d**2) / sigma**2), rel=1e-5)
    assert flat[11, 7].item() == pytest.approx(math.exp(-d / sigma**2), rel=1e-5)
    # distance to the segment, not to its line: past the end the distance is to the end
    d_end = math.hypot(2 * 2 / 16, 2 * 3 / 16)  # pixel (x 14, y 11) vs end (12, 8)
    assert sq[11, 14].item() == pytest.approx(math.exp(-(d_end**2) / sigma**2), rel=1e-5)


@pytest.mark.parametrize("squared", [True, False])
def test_zero_length_bone_is_a_point_with_finite_gradient(squared: bool) -> None:
    size, sigma = (8, 8), 0.5
    # the point sits exactly on a pixel centre: d = 0 there (sqrt's singular point)
    point = heatmap_to_grid(torch.tensor([[[3.0, 4.0]]]), size).requires_grad_(True)
    maps = bone_maps(point, [(0, 0)], size, sigma, squared=squared)
    dist2 = ((coordinate_grid(*size) - point.detach()[0, 0]) ** 2).sum(-1)
    dist = dist2 if squared else dist2.sqrt()
    assert torch.allclose(maps[0, 0], torch.exp(-dist / sigma**2), atol=1e-6)
    assert maps[0, 0, 4, 3].item() == pytest.approx(1.0)
    (maps * torch.rand_like(maps)).sum().backward()
    assert point.grad is not None
    assert torch.isfinite(point.grad).all() and point.grad.abs().sum() > 0


def test_bone_maps_rejects_bad_bones() -> None:
    points = torch.zeros(1, 3, 2)
    with pytest.raises(DabenchError, match="bones"):
        bone_maps(points, [(0, 3)], (8, 8), 0.1)
    with pytest.raises(DabenchError, match="bones"):
        bone_maps(points, [], (8, 8), 0.1)


# --- bone affines -----------------------------------------------------------------------------


def test_bone_affines_recover_the_shape_of_an_elliptical_blob() -> None:
    # a Gaussian with covariance R diag(s1², s2²) Rᵀ: A's linear part must be R diag(s1, s2)
    s1, s2, centre = 0.25, 0.08, torch.tensor([0.1, -0.05])
    for degrees in (30.0, -70.0, 90.0 - 1e-3):
        rot = _rot(degrees)
        cov = rot @ torch.diag(torch.tensor([s1**2, s2**2])) @ rot.T
        rel = coordinate_grid(96, 96) - centre
        blob = torch.exp(-0.5 * torch.einsum("hwi,ij,hwj->hw", rel, torch.linalg.inv(cov), rel))
        a = bone_affines(blob[None, None], centre.view(1, 1, 2))[0, 0]
        assert torch.allclose(a[:, 2], centre)
        want = rot @ torch.diag(torch.tensor([s1, s2]))
        # our sign convention: a rotation whose first column has x ≥ 0
        want = want * (1.0 if want[0, 0] >= 0 else -1.0)
        assert torch.allclose(a[:, :2], want, atol=3e-3), (degrees, a, want)


def test_bone_affines_of_a_drawn_bone_follow_its_direction() -> None:
    for degrees in (0.0, 35.0, 100.0, -150.0):
        direction = _rot(degrees)[:, 0]
        a = _bone_affine((-0.4 * direction).tolist(), (0.4 * direction).tolist())[0, 0]
        major, minor = a[:, 0], a[:, 1]
        cosine = (major / major.norm()) @ direction
        assert abs(cosine.item()) == pytest.approx(1.0, abs=1e-4)  # the axis, up to sign
        assert major[0] >= 0
        assert torch.det(a[:, :2]) > 0  # a rotation times a positive scale
        assert major.norm() > 3 * minor.norm()  # elongated along the bone


def test_bone_affines_are_finite_for_isotropic_and_empty_maps() -> None:
    h = w = 16
    rel = coordinate_grid(h, w)
    blob = torch.exp(-(rel**2).sum(-1) / 0.1)  # round blob: covariance ∝ I
    maps = torch.stack([blob, torch.ones(h, w), torch.zeros(h, w)])[None].requires_grad_(True)
    centres = torch.zeros(1, 3, 2, requires_grad=True)
    a = bone_affines(maps, centres)
    assert torch.isfinite(a).all()
    # the empty map: Σ = eps·I exactly, A = √eps·I
    assert torch.allclose(a[0, 2, :, :2], 1e-3 * torch.eye(2), atol=1e-6)
    # the round blob: an isotropic scale (rotation arbitrary but well-defined)
    s = torch.linalg.svdvals(a[0, 0, :, :2])
    assert s[0].item() == pytest.approx(s[1].item(), rel=1e-3)
    (a * torch.randn_like(a)).sum().backward()
    assert maps.grad is not None and centres.grad is not None
    assert torch.isfinite(maps.grad).all() and torch.isfinite(centres.grad).all()


def test_near_isotropic_bone_gradients_stay_bounded() -> None:
    # a zero-length bone is a round blob whose float covariance is isotropic up to rounding:
    # the undamped eigenvector gradient ~ 1/(λ1 − λ2) reaches ~1e7 here
    torch.manual_seed(0)
    for centre in ([0.0, 0.0], [0.013, -0.021]):
        point = torch.tensor([[centre]], requires_grad=True)
        a = bone_affines(bone_maps(point, [(0, 0)], (16, 16), 0.3), point)
        (grad,) = torch.autograd.grad((a * torch.randn_like(a)).sum(), point)
        assert torch.isfinite(grad).all()
        assert grad.abs().max() < 100


# --- relative affines -------------------------------------------------------------------------


def test_relative_affine_of_a_bone_with_itself_is_the_identity() -> None:
    a = bone_affines(torch.rand(2, 3, 12, 12), torch.rand(2, 3, 2) - 0.5)
    rel = relative_affines(a, a)
    eye = torch.eye(2, 3).expand(2, 3, 2, 3)
    assert torch.allclose(rel, eye, atol=1e-5)


def test_relative_affine_maps_rotated_driving_bone_onto_base() -> None:
    base = torch.tensor([[-0.4, 0.1], [0.35, -0.15]])
    centre = base.mean(0)
    driving = (base - centre) @ _rot(30.0).T + centre
    a_base = _bone_affine(base[0].tolist(), base[1].tolist())
    a_drv = _bone_affine(driving[0].tolist(), driving[1].tolist())
    rel = relative_affines(a_drv, a_base)[0, 0]
    mapped = driving @ rel[:, :2].T + rel[:, 2]
    assert torch.allclose(mapped, base, atol=0.02)  # < 1 px of the 64×64 maps
    assert torch.allclose(rel[:, :2], _rot(-30.0), atol=0.02)


def test_relative_affine_sign_fix_removes_the_axis_flip() -> None:
    # axes at 80° and −80° (≡ 100°): the bone turned by −20°, not by 160°
    base = _rot(80.0)[:, 0] * 0.4
    driving = _rot(-80.0)[:, 0] * 0.4
    a_base = _bone_affine((-base).tolist(), base.tolist())
    a_drv = _bone_affine((-driving).tolist(), driving.tolist())
    # the axes of each bone are chosen with x ≥ 0, so without the fix U_b U_dᵀ = R(160°)
    raw = a_base[0, 0, :, :2] @ torch.linalg.inv(a_drv[0, 0, :, :2])
    assert raw[0, 0] < 0
    rel = relative_affines(a_drv, a_base)[0, 0]
    assert torch.allclose(rel[:, :2], _rot(-20.0), atol=0.02)


# --- W and G ----------------------------------------------------------------------------------


def test_dense_motion_with_identity_affines_is_the_identity_warp() -> None:
    torch.manual_seed(0)
    b, j, h, w = 2, 3, 16, 16
    net = DenseMotion(num_bones=j, channels=4, max_channels=16, blocks=3)
    points = torch.rand(b, j + 1, 2) * 1.6 - 0.8
    bones = [(0, 1), (1, 2), (2, 3)]
    maps = bone_maps(points, bones, (h, w), 0.2)
    a = bone_affines(maps, (points[:, :-1] + points[:, 1:]) / 2)
    image = torch.rand(b, 3, h, w)
    out = net(image, maps, torch.rand_like(maps), relative_affines(a, a))
    # every affine is the identity, so any masks give the identity flow
    assert out["masks"].std() > 0
    assert torch.allclose(out["flow"], identity_flow(b, h, w), atol=1e-5)
    assert torch.allclose(warp(image, out["flow"]), image, atol=1e-4)


def test_dense_motion_works_on_16px_with_all_blocks() -> None:
    torch.manual_seed(0)
    b, j = 2, 4
    net = DenseMotion(num_bones=j, channels=4, max_channels=16)  # 5 blocks: deepest at 1×1
    maps = torch.rand(b, j, 16, 16)
    affines = torch.eye(2, 3).repeat(b, j, 1, 1) + 0.1 * torch.randn(b, j, 2, 3)
    out = net(torch.rand(b, 3, 16, 16), maps, torch.rand_like(maps), affines)
    assert out["flow"].shape == (b, 16, 16, 2)
    assert out["masks"].shape == (b, j + 1, 16, 16)
    assert out["occlusion"].shape == (b, 1, 16, 16)
    assert torch.allclose(out["masks"].sum(1), torch.ones(b, 16, 16), atol=1e-5)
    assert bool(((out["occlusion"] > 0) & (out["occlusion"] < 1)).all())
    # the flow is the mask-weighted mix of the identity and the bone motions
    assert not torch.allclose(out["flow"], identity_flow(b, 16, 16), atol=1e-3)
    with pytest.raises(DabenchError, match="DenseMotion"):
        net(torch.rand(b, 3, 16, 16), maps[:, :3], maps, affines)


def _generators(extra_channels: int = 0) -> list[torch.nn.Module]:
    return [
        Generator(channels=8, res_blocks=2, max_channels=32, extra_channels=extra_channels),
        UNetGenerator(channels=8, blocks=5, max_channels=32, extra_channels=extra_channels),
    ]


@pytest.mark.parametrize("size", [32, 64])
def test_generators_output_images_of_the_input_size(size: int) -> None:
    torch.manual_seed(0)
    base = torch.rand(2, 3, size, size)
    m = size // 4  # W's motion resolution
    flow = identity_flow(2, m, m) + 0.2 * torch.randn(2, m, m, 2)
    occlusion = torch.rand(2, 1, m, m)
    for net in _generators():
        out = net(base, flow, occlusion)
        assert out.shape == base.shape
        assert out.min() >= 0 and out.max() <= 1
        assert not torch.allclose(out, base, atol=1e-2)
        # no flow: a plain encoder–decoder, still an image
        plain = net(base, None, None)
        assert plain.shape == base.shape and plain.min() >= 0 and plain.max() <= 1


def test_identity_flow_and_full_visibility_reproduce_the_base_image() -> None:
    # out = warped_base·C + previous·(1 − C): C ≡ 1 and the identity give back the base
    torch.manual_seed(0)
    base = torch.rand(2, 3, 32, 32)
    flow = identity_flow(2, 8, 8)
    for net in _generators():
        assert torch.allclose(net(base, flow, torch.ones(2, 1, 8, 8)), base, atol=1e-5)
        assert torch.allclose(net(base, flow, None), base, atol=1e-5)  # C ≡ 1 by default
        # C ≡ 0: nothing is taken from the base at the output, the decoder paints alone
        assert not torch.allclose(net(base, flow, torch.zeros(2, 1, 8, 8)), base, atol=1e-2)


def test_heatmap_ablation_generator_takes_extra_channels() -> None:
    torch.manual_seed(0)
    base, extra = torch.rand(2, 3, 32, 32), torch.rand(2, 6, 32, 32)
    for net in _generators(extra_channels=6):
        out = net(base, None, None, extra=extra)
        assert out.shape == base.shape
        assert not torch.allclose(out, net(base, None, None, extra=torch.zeros_like(extra)))
        with pytest.raises(DabenchError, match="extra"):
            net(base, None, None)
        with pytest.raises(DabenchError, match="occlusion"):
            net(base, None, torch.ones(2, 1, 8, 8), extra=extra)


def test_reconstruction_loss_reaches_the_keypoints() -> None:
    torch.manual_seed(0)
    size, m = (32, 32), (8, 8)
    # keypoints 2 and 3 coincide in both frames: bone (2, 3) has zero length, a round blob
    base = torch.tensor([[[-0.5, -0.4], [0.0, 0.1], [0.4, 0.3], [0.4, 0.3], [-0.3, 0.5]]])
    driving = base + torch.tensor([[[0.0, 0.0], [0.1, 0.05], [0.2, -0.1], [0.2, -0.1], [0.0, 0]]])
    # and a bone from a keypoint to itself, exactly on a pixel centre of the 8×8 maps
    base[0, 4] = heatmap_to_grid(torch.tensor([1.0, 6.0]), m)
    base.requires_grad_(True)
    driving.requires_grad_(True)
    bones = [(0, 1), (1, 2), (2, 3), (4, 4)]
    parents, children = [p for p, _ in bones], [c for _, c in bones]

    def affines(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = bone_maps(points, bones, m, sigma=0.15)
        centres = (points[:, parents] + points[:, children]) / 2
        return maps, bone_affines(maps, centres)

    base_maps, a_base = affines(base)
    drv_maps, a_drv = affines(driving)
    assert torch.isfinite(a_base).all() and torch.isfinite(a_drv).all()
    image, target = torch.rand(1, 3, *size), torch.rand(1, 3, *size)
    net_w = DenseMotion(num_bones=len(bones), channels=4, max_channels=16, blocks=3).eval()
    small = F.interpolate(image, size=m, mode="bilinear", antialias=True, align_corners=False)
    motion = net_w(small, base_maps, drv_maps, relative_affines(a_drv, a_base))
    for net_g in _generators():
        net_g.eval()
        out = net_g(image, motion["flow"], motion["occlusion"])
        grads = torch.autograd.grad((out - target).abs().mean(), [base, driving], retain_graph=True)
        for g in grads:
            assert torch.isfinite(g).all()
            assert g.abs().sum() > 0
        # every keypoint gets a gradient, those of the zero-length bones included
        assert (grads[0][0].abs().sum(-1) > 0).all()
        assert (grads[1][0].abs().sum(-1) > 0).all()
