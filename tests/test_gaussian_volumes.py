"""3-D Gaussian volume targets, the L2 volume loss (Park et al., Eq. 5) and volume decoding."""

from __future__ import annotations

import pytest
import torch

from bench.errors import DabenchError
from bench.models.gaussian_volumes import (
    decode_volumes,
    gaussian_volume_targets,
    volume_l2_loss,
)

SHAPE = (16, 16, 16)  # (D, h, w)


def _coords(vox: torch.Tensor, shape: tuple[int, int, int] = SHAPE) -> torch.Tensor:
    """Voxel (x, y, z) -> the normalised space of PoseNet.targets."""
    d, h, w = shape
    return torch.stack(
        [(vox[..., 0] + 0.5) / w, (vox[..., 1] + 0.5) / h, (vox[..., 2] + 0.5) / d - 0.5], -1
    )


def _random_voxels(n: int, seed: int, lo: float = 2.0, hi: float = 13.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return lo + (hi - lo) * torch.rand(1, n, 3, generator=gen, dtype=torch.float64)


def test_peak_at_the_joint_voxel() -> None:
    vox = torch.tensor([[[3.0, 10.0, 5.0], [7.3, 2.6, 12.8]]])
    targets, weights = gaussian_volume_targets(_coords(vox), torch.ones(1, 2), SHAPE, 2.0)
    assert targets.shape == (1, 2, *SHAPE) and weights.tolist() == [[1.0, 1.0]]
    for k in range(2):
        idx = int(targets[0, k].flatten().argmax())
        z, y, x = idx // 256, (idx // 16) % 16, idx % 16
        assert [x, y, z] == vox[0, k].round().long().tolist()
    # exactly 1 at an integer centre (D, h, w index order), below 1 off-grid
    assert float(targets[0, 0, 5, 10, 3]) == pytest.approx(1.0, abs=1e-6)
    assert float(targets[0, 1].max()) < 0.99
    # separable Gaussian with sigma in voxels: one voxel along z from the centre
    assert float(targets[0, 0, 6, 10, 3]) == pytest.approx(torch.exp(torch.tensor(-1 / 8)).item())


def test_far_outside_or_invalid_joints_get_zero_weight() -> None:
    sigma = 2.0
    vox = torch.tensor(
        [
            [
                [8.0, 8.0, 16 - 0.5 + 3 * sigma + 0.1],  # beyond the depth range by > 3σ
                [-0.5 - 3 * sigma - 0.1, 8.0, 8.0],  # left of the crop by > 3σ
                [8.0, 8.0, 16 - 0.5 + 3 * sigma - 1.0],  # outside, but its tail reaches in
                [8.0, 8.0, 8.0],  # fine, but not visible
            ]
        ]
    )
    coords = _coords(vox)
    coords = torch.cat([coords, torch.tensor([[[float("nan"), 0.5, 0.0]]])], dim=1)
    coords = torch.cat([coords, torch.tensor([[[0.5, 0.5, float("inf")]]])], dim=1)
    coords = torch.cat([coords, torch.tensor([[[0.5, 0.5, float("nan")]]])], dim=1)
    vis = torch.tensor([[1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0]])
    targets, weights = gaussian_volume_targets(coords, vis, SHAPE, sigma)
    assert weights.tolist() == [[0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]]
    assert bool(torch.isfinite(targets).all())
    assert float(targets[0, [0, 1, 3, 4, 5, 6]].abs().max()) == 0.0
    assert float(targets[0, 2].max()) > 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_decode_recovers_the_joints(seed: int) -> None:
    vox = _random_voxels(6, seed)
    targets, _ = gaussian_volume_targets(_coords(vox), torch.ones(1, 6), SHAPE, 2.0)
    scale = torch.tensor([16.0, 16.0, 16.0], dtype=torch.float64)
    soft = decode_volumes(targets)
    assert soft.shape == (1, 6, 3)
    assert float(((soft - _coords(vox)) * scale).abs().max()) < 0.1
    hard = decode_volumes(targets, "argmax")
    assert torch.allclose(hard, _coords(vox.round()))


def test_default_beta_holds_in_a_64_bin_volume() -> None:
    # the far field of 64³ voxels outweighs a too-soft softmax (PoseNet's volumes are 64³)
    shape = (64, 64, 64)
    vox = torch.tensor([[[10.2, 50.7, 40.4]]])
    targets, _ = gaussian_volume_targets(_coords(vox, shape), torch.ones(1, 1), shape, 2.0)
    err = (decode_volumes(targets) - _coords(vox, shape)) * 64
    assert float(err.abs().max()) < 0.1


def test_decode_soft_argmax_is_differentiable_and_modes_checked() -> None:
    vol = torch.zeros(1, 1, *SHAPE, requires_grad=True)
    decode_volumes(vol).sum().backward()
    assert vol.grad is not None
    with pytest.raises(DabenchError, match="soft-argmax.*argmax"):
        decode_volumes(vol, "integral")


def test_volume_l2_loss() -> None:
    vox = torch.tensor([[[3.0, 4.0, 5.0], [8.0, 8.0, 8.0]]])
    target, weights = gaussian_volume_targets(_coords(vox), torch.ones(1, 2), SHAPE, 2.0)
    assert float(volume_l2_loss(target, target, weights)) == 0.0
    pred = target.clone()
    pred[0, 0, 0, 0, 0] += 0.5
    assert float(volume_l2_loss(pred, target, weights)) > 0.0
    # a weight-0 joint is ignored, even when its prediction is not finite
    pred = target.clone()
    pred[0, 1] = float("nan")
    loss = volume_l2_loss(pred, target, torch.tensor([[1.0, 0.0]]))
    assert float(loss) == 0.0

    # by hand on a 1×1×2 volume per joint: mean over voxels, then weighted mean over joints
    pred = torch.tensor([[[[[1.0, 3.0]]], [[[0.0, 2.0]]]]])  # [1,2,1,1,2]
    target = torch.tensor([[[[[0.0, 1.0]]], [[[0.0, 0.0]]]]])
    w = torch.tensor([[1.0, 3.0]])
    per_joint = [(1 + 4) / 2, (0 + 4) / 2]
    expected = (1 * per_joint[0] + 3 * per_joint[1]) / 4
    assert float(volume_l2_loss(pred, target, w)) == pytest.approx(expected)
    assert float(volume_l2_loss(pred, target, torch.zeros(1, 2))) == 0.0
    with pytest.raises(DabenchError):
        volume_l2_loss(pred, target[:, :1], w)
