"""Differentiable multi-view geometry (bench.models.triangulation): projection, DLT
triangulation and reprojection, on rigs of 2–4 cameras on a ring around a subject 4 m away,
with full-frame (1000 px) and 64 px crop intrinsics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.data import geometry
from bench.data.synthetic.camera import crop_intrinsics
from bench.errors import DabenchError
from bench.models.triangulation import (
    project,
    project_with_depth,
    projection_matrices,
    reproject,
    triangulate,
)

pytestmark = pytest.mark.usefixtures("one_thread")

TARGET = np.array([0.0, 0.0, 4000.0])
RADIUS = 4000.0


def ring(
    views: int, batch: int = 2, seed: int = 0, elevation: float = 0.2
) -> tuple[np.ndarray, np.ndarray]:
    """World→camera R [B,V,3,3], t [B,V,3] of cameras on a ring around TARGET, looking at it.

    Views are 360°/max(V, 4) apart (so two views are 90° apart, not facing each other) from
    a random start, each lifted by a random elevation of up to ``elevation`` rad.
    """
    rng = np.random.default_rng(seed)
    az = rng.uniform(0, 2 * np.pi, (batch, 1)) + 2 * np.pi * np.arange(views) / max(views, 4)
    el = rng.uniform(-elevation, elevation, (batch, views))
    dirs = np.stack([np.cos(el) * np.cos(az), -np.sin(el), np.cos(el) * np.sin(az)], axis=-1)
    eye = TARGET + RADIUS * dirs
    up = np.broadcast_to([0.0, -1.0, 0.0], eye.shape)
    return geometry.look_at(eye, np.broadcast_to(TARGET, eye.shape), up)


def body(batch: int = 2, joints: int = 17, seed: int = 1) -> np.ndarray:
    """World joints [B,J,3] (mm) scattered ~300 mm around TARGET."""
    return TARGET + np.random.default_rng(seed).normal(0.0, 300.0, (batch, joints, 3))


def full_frame(rot: np.ndarray) -> np.ndarray:
    """K of a 1000×1000 px camera, focal 1000 px, for every view [B,V,3,3]."""
    k = np.array([[1000.0, 0.0, 499.5], [0.0, 1000.0, 499.5], [0.0, 0.0, 1.0]])
    return np.broadcast_to(k, rot.shape).copy()


def crops(world: np.ndarray, rot: np.ndarray, trans: np.ndarray) -> np.ndarray:
    """K of the 64×64 crop around the subject in every view [B,V,3,3] (the synthetic data's)."""
    b, v = rot.shape[:2]
    cam = geometry.world_to_camera(world[:, None], rot, trans).reshape(b * v, -1, 3)
    rng = np.random.default_rng(2)
    k = crop_intrinsics(cam, 64, rng.uniform(1.6, 2.0, b * v), rng.uniform(-0.05, 0.05, (b * v, 2)))
    return k.reshape(b, v, 3, 3)


def scene(views: int, intrinsics: str = "full", batch: int = 2, joints: int = 17, seed: int = 0):
    """(world [B,J,3], P [B,V,3,4], exact pixels [B,V,J,2], K [B,V,3,3]) as float64 tensors."""
    rot, trans = ring(views, batch, seed)
    world = body(batch, joints, seed + 1)
    k = full_frame(rot) if intrinsics == "full" else crops(world, rot, trans)
    k, rot, trans, world = (torch.from_numpy(x) for x in (k, rot, trans, world))
    P = projection_matrices(k, rot, trans)
    return world, P, project(world[:, None], P), k


# --- projection ----------------------------------------------------------------------------


def test_projection_follows_the_camera_convention_and_reports_depth():
    rot, trans = ring(3)
    world = body()
    k = full_frame(rot)
    P = projection_matrices(*(torch.from_numpy(x) for x in (k, rot, trans)))
    assert P.shape == (2, 3, 3, 4)
    cam = geometry.world_to_camera(world[:, None], rot, trans)  # [B,V,J,3]
    uv, depth = project_with_depth(torch.from_numpy(world)[:, None], P)
    np.testing.assert_allclose(uv.numpy(), geometry.project(cam, k), atol=1e-9)
    np.testing.assert_allclose(depth.numpy(), cam[..., 2], rtol=1e-12)
    assert (depth > 3000).all()  # the subject is in front of every camera


def test_projection_of_points_on_or_behind_the_camera_plane_stays_finite():
    P = torch.cat([torch.eye(3), torch.zeros(3, 1)], dim=1).double()  # camera at the origin
    world = torch.tensor([[1.0, 2.0, 0.0], [1.0, 2.0, -5.0], [1.0, 2.0, 5.0]], dtype=P.dtype)
    world.requires_grad_(True)
    uv, depth = project_with_depth(world, P)
    assert torch.isfinite(uv).all()
    assert depth.tolist() == [0.0, -5.0, 5.0]  # behind the camera: negative depth, to mask
    uv.sum().backward()
    assert torch.isfinite(world.grad).all()
    torch.testing.assert_close(uv[2], torch.tensor([0.2, 0.4], dtype=P.dtype))


# --- triangulation: accuracy ---------------------------------------------------------------


@pytest.mark.parametrize("intrinsics", ["full", "crop"])
@pytest.mark.parametrize("views", [2, 3, 4])
def test_exact_projections_triangulate_to_the_world_points(views, intrinsics):
    world, P, uv, k = scene(views, intrinsics)
    if intrinsics == "crop":  # the synthetic data's 64 px crops: focal ~100–200 px
        assert ((k[..., 0, 0] > 100) & (k[..., 0, 0] < 200)).all()
        assert ((uv > -0.5) & (uv < 63.5)).all()
    found = triangulate(uv, P)
    assert found.dtype == torch.float64 and found.shape == world.shape
    assert (found - world).abs().max() < 1e-3  # mm
    # float32 in: computed in float64, but P and uv carry float32 rounding (~1e-7 relative,
    # ~5e-4 mm here): 5e-3 mm
    found32 = triangulate(uv.float(), P.float())
    assert found32.dtype == torch.float32
    assert (found32.double() - world).abs().max() < 5e-3  # mm


def test_conditioning_makes_the_answer_independent_of_pixel_units_and_the_scale_of_p():
    """Noisy pixels: resampling one view (×16 pixel units, as a 64 px crop vs a 1000 px
    frame) and scaling another view's P change nothing — each residual is a distance in mm,
    whatever the view's pixel scale."""
    world, P, uv, _ = scene(3)
    uv = uv + torch.randn(uv.shape, generator=torch.Generator().manual_seed(0), dtype=uv.dtype)
    zoom = torch.diag(P.new_tensor([16.0, 16.0, 1.0]))
    P2, uv2 = P.clone(), uv.clone()
    P2[:, 0] = zoom @ P[:, 0]
    uv2[:, 0] = uv[:, 0] * 16.0
    P2[:, 1] = P[:, 1] * 1e-3
    base = triangulate(uv, P)
    assert 0.5 < (base - world).abs().max() < 50  # the noise does move the points
    torch.testing.assert_close(triangulate(uv2, P2), base, rtol=0, atol=1e-6)


# --- reprojection ----------------------------------------------------------------------------


def test_reprojecting_exact_pixels_returns_them():
    world, P, uv, _ = scene(4, "crop")
    found, back = reproject(uv, P)
    assert back.shape == uv.shape
    assert (found - world).abs().max() < 1e-3
    assert (back - uv).abs().max() < 1e-6  # px


def test_a_corrupted_view_is_outvoted_by_the_others():
    """20 px of error in view 0 of a 4-view rig: every view's reprojection moves less than
    the corruption (view 0's is pulled back towards the truth), and the 3D point is much
    closer to the truth than view 0's ray (20 px ≈ 80 mm off at 4 m, f = 1000 px) is."""
    world, P, uv, _ = scene(4)
    shift = torch.randn(2, 17, 2, generator=torch.Generator().manual_seed(0), dtype=uv.dtype)
    shift = 20.0 * shift / shift.norm(dim=-1, keepdim=True)
    bad = uv.clone()
    bad[:, 0] += shift
    found, back = reproject(bad, P)
    moved = (back - uv).norm(dim=-1)  # [B,V,J] px from the exact projections
    assert moved.max() < 0.75 * 20.0
    assert moved[:, 1:].median() < 0.5 * 20.0
    ray_error = 20.0 * 4000.0 / 1000.0
    error = (found - world).norm(dim=-1)
    assert error.max() < 0.75 * ray_error and error.median() < 0.5 * ray_error


# --- gradients -----------------------------------------------------------------------------


def test_gradcheck_in_float64():
    _world, P, uv, _ = scene(3, batch=1, joints=2)
    noise = torch.randn(uv.shape, generator=torch.Generator().manual_seed(0), dtype=uv.dtype)
    uv = (uv + 2.0 * noise).requires_grad_(True)
    P = P.clone().requires_grad_(True)
    weights = torch.rand(1, 3, 2, generator=torch.Generator().manual_seed(1), dtype=uv.dtype)
    weights = (weights + 0.5).requires_grad_(True)
    assert torch.autograd.gradcheck(triangulate, (uv, P, weights))
    assert torch.autograd.gradcheck(lambda a, p: reproject(a, p)[1], (uv, P))


def test_reprojection_error_gradient_is_finite_and_reaches_every_view():
    _world, P, uv, _ = scene(4, batch=4)
    noise = torch.randn(uv.shape, generator=torch.Generator().manual_seed(0), dtype=uv.dtype)
    for dtype in (torch.float64, torch.float32):
        pred = (uv + 3.0 * noise).to(dtype).requires_grad_(True)
        _, back = reproject(pred, P.to(dtype))
        (back - pred).square().sum().backward()
        assert torch.isfinite(pred.grad).all()
        assert (pred.grad.abs().amax(dim=(0, 2, 3)) > 0).all()  # every view gets some


def square_rig() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """K, R, t [1,4,...] of four full-frame views exactly 90° apart, level, looking at TARGET
    (which is then exactly the rig centre: where the optical axes meet)."""
    az = np.pi / 2 * np.arange(4)
    eye = TARGET + RADIUS * np.stack([np.cos(az), 0 * az, np.sin(az)], axis=-1)
    rot, trans = geometry.look_at(eye, np.broadcast_to(TARGET, eye.shape), np.array([0, -1.0, 0]))
    return full_frame(rot)[None], rot[None], trans[None]


def test_gradient_is_finite_on_a_perfectly_symmetric_rig():
    """Joints on the axis of a square rig: the systems have two equal singular values.
    Autograd's SVD backward divides by every gap and gives NaN there; the DLT's own backward
    only uses the gaps to the smallest, and matches finite differences."""
    P = projection_matrices(*(torch.from_numpy(x) for x in square_rig()))
    world = torch.from_numpy(TARGET + np.array([[0.0, 0.0, 0.0], [0.0, 100.0, 0.0]]))[None]
    uv = project(world[:, None], P).requires_grad_(True)
    found = triangulate(uv, P)
    torch.testing.assert_close(found, world, rtol=0, atol=1e-6)
    found.sum().backward()
    assert torch.isfinite(uv.grad).all()
    assert torch.autograd.gradcheck(lambda a: triangulate(a, P), (uv,))


# --- weights and degenerate joints -----------------------------------------------------------


def test_a_view_with_weight_zero_has_no_influence_on_that_joint():
    _world, P, uv, _ = scene(3)
    noise = torch.randn(uv.shape, generator=torch.Generator().manual_seed(0), dtype=uv.dtype)
    uv = uv + noise
    weights = torch.ones(2, 3, 17, dtype=uv.dtype)
    weights[:, 1, 5] = 0.0
    moved = uv.clone()
    moved[:, 1, 5] += 300.0
    moved.requires_grad_(True)
    found = triangulate(moved, P, weights)
    torch.testing.assert_close(found, triangulate(uv, P, weights), rtol=0, atol=1e-9)
    found.sum().backward()
    assert (moved.grad[:, 1, 5] == 0).all()
    # ... while with weight 1 the same move does change the joint
    assert (triangulate(moved.detach(), P)[:, 5] - triangulate(uv, P)[:, 5]).abs().max() > 1.0


def test_a_joint_seen_by_fewer_than_two_views_gets_the_documented_fallback():
    """One view left: the point of its ray closest to the rig centre (so it reprojects onto
    that view's pixel); no view left: the rig centre. Finite, differentiable (gradcheck),
    and the other joints are unaffected."""
    k, rot, trans = square_rig()
    P = projection_matrices(*(torch.from_numpy(x) for x in (k, rot, trans)))
    world = torch.from_numpy(body(1, 6))
    noise = torch.randn(1, 4, 6, 2, generator=torch.Generator().manual_seed(0), dtype=P.dtype)
    uv = project(world[:, None], P) + noise
    weights = torch.ones(1, 4, 6, dtype=uv.dtype)
    weights[:, 1:, 0] = 0.0  # joint 0: view 0 only
    weights[:, :, 1] = 0.0  # joint 1: no view
    found, back = reproject(uv, P, weights)
    # independently: the ray of view 0 through joint 0's pixel, and its point nearest TARGET
    centre = -rot[0, 0].T @ trans[0, 0]
    ray = rot[0, 0].T @ np.linalg.solve(k[0, 0], np.append(uv[0, 0, 0].numpy(), 1.0))
    nearest = centre + ray * ((TARGET - centre) @ ray) / (ray @ ray)
    np.testing.assert_allclose(found[0, 0].numpy(), nearest, rtol=0, atol=1e-3)
    assert (back[:, 0, 0] - uv[:, 0, 0]).abs().max() < 1e-6
    np.testing.assert_allclose(found[0, 1].numpy(), TARGET, rtol=0, atol=1e-3)
    torch.testing.assert_close(found[:, 2:], triangulate(uv[:, :, 2:], P), rtol=0, atol=1e-6)
    assert torch.autograd.gradcheck(
        lambda a: reproject(a, P, weights[:, :, :3])[1], (uv[:, :, :3].requires_grad_(True),)
    )


# --- bad input -------------------------------------------------------------------------------


def _bad_inputs():
    uv, P, w = torch.zeros(2, 3, 5, 2), torch.zeros(2, 3, 3, 4), torch.ones(2, 3, 5)
    yield "uv rank", uv[0], P, None
    yield "uv last dim", torch.zeros(2, 3, 5, 3), P, None
    yield "P shape", uv, torch.zeros(2, 3, 3, 3), None
    yield "batch mismatch", uv, P[:1], None
    yield "view mismatch", uv, P[:, :2], None
    yield "weights joints", uv, P, w[..., :4]
    yield "weights rank", uv, P, w[0]
    yield "one view", uv[:, :1], P[:, :1], None


@pytest.mark.parametrize("case", list(_bad_inputs()), ids=lambda c: c[0])
def test_bad_shapes_raise_one_error_naming_them(case):
    _, uv, P, weights = case
    with pytest.raises(DabenchError, match=r"uv \[.*\], P \[.*\]") as err:
        triangulate(uv, P, weights)
    assert str(list(uv.shape)) in str(err.value) and str(list(P.shape)) in str(err.value)
    with pytest.raises(DabenchError, match="uv"):
        reproject(uv, P, weights)


def test_bad_shapes_of_the_projection_helpers_raise():
    with pytest.raises(DabenchError, match=r"K \[3, 4\]"):
        projection_matrices(torch.zeros(3, 4), torch.eye(3), torch.zeros(3))
    with pytest.raises(DabenchError, match=r"world \[5, 2\]"):
        project(torch.zeros(5, 2), torch.zeros(3, 4))


def test_a_singular_camera_matrix_raises():
    _world, P, uv, _ = scene(2)
    P = P.clone()
    P[0, 1, :, :3] = 0.0
    with pytest.raises(DabenchError, match="singular"):
        triangulate(uv, P)


# --- the numpy face --------------------------------------------------------------------------


def _independent_dlt(kp2d: np.ndarray, proj: np.ndarray) -> np.ndarray:
    """The textbook DLT, unconditioned: rows u P₃ − P₁, v P₃ − P₂ of all views, SVD."""
    views, joints = kp2d.shape[:2]
    out = np.empty((joints, 3))
    for j in range(joints):
        rows = []
        for v in range(views):
            x, y = kp2d[v, j]
            rows += [x * proj[v, 2] - proj[v, 0], y * proj[v, 2] - proj[v, 1]]
        hom = np.linalg.svd(np.asarray(rows))[2][-1]
        out[j] = hom[:3] / hom[3]
    return out


def test_numpy_triangulate_agrees_with_an_independent_svd():
    """Exact pixels: the same points to 1e-6 mm. Noisy pixels (1 px): the conditioning
    reweights the least-squares problem a little, so the two agree to a few percent of the
    error the noise causes — the same answer for every purpose the data layer has."""
    world, P, uv, _ = scene(4, batch=1, seed=3)
    kp2d, proj, truth = uv[0].numpy(), P[0].numpy(), world[0].numpy()
    found = geometry.triangulate(kp2d, proj)
    assert isinstance(found, np.ndarray) and found.dtype == np.float64 and found.shape == (17, 3)
    np.testing.assert_allclose(found, _independent_dlt(kp2d, proj), rtol=0, atol=1e-6)
    np.testing.assert_allclose(found, truth, rtol=0, atol=1e-6)

    noisy = kp2d + np.random.default_rng(0).normal(0.0, 1.0, kp2d.shape)
    found, reference = geometry.triangulate(noisy, proj), _independent_dlt(noisy, proj)
    error = np.linalg.norm(reference - truth, axis=-1)
    assert np.linalg.norm(found - reference, axis=-1).max() < 0.05 * error.max()

    weights = np.ones((4, 17))
    weights[2] = 0.0  # dropping a view is dropping its rows
    # (not bit for bit: the normalising frame of the rig still includes the dropped camera)
    np.testing.assert_allclose(
        geometry.triangulate(noisy, proj, weights),
        geometry.triangulate(noisy[[0, 1, 3]], proj[[0, 1, 3]]),
        rtol=0,
        atol=1e-4,
    )
