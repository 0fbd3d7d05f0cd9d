"""MaS's shape prior ψ: layer list, shapes for any size, skip wiring, norms, gradient to the
input, and that a few steps learn a skeleton → silhouette mapping."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.errors import DabenchError
from bench.losses.mask_losses import physique_loss
from bench.models.shape_prior import ShapePrior
from bench.models.skeleton_maps import bone_maps

SMALL = (4, 8, 16)


@pytest.mark.parametrize("skips", [False, True])
@pytest.mark.parametrize("size", [(16, 16), (17, 23), (9, 12), (1, 1)])
def test_output_shape_and_range_for_even_and_odd_sizes(
    skips: bool, size: tuple[int, int], one_thread
) -> None:
    torch.manual_seed(0)
    net = ShapePrior(SMALL, skips=skips)
    x = torch.rand(2, 1, *size)
    out = net(x)
    assert out.shape == (2, 1, *size)
    assert bool(((out > 0) & (out < 1)).all())
    # a [B,H,W] mask is taken as one channel
    assert net(x[:, 0]).shape == (2, 1, *size)


def test_default_layers_are_the_authors_list(one_thread) -> None:
    # PhysiqueMaskGenerator(layers=[32, 64, 128]) in the order the convs run
    net = ShapePrior().eval()
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    ran: list[tuple[int, int, int, tuple[int, int], tuple[int, int]]] = []
    hooks = [
        m.register_forward_hook(
            lambda m, i, o: ran.append(
                (m.in_channels, m.out_channels, m.stride[0], m.kernel_size, tuple(o.shape[-2:]))
            )
        )
        for m in convs
    ]
    with torch.no_grad():
        net(torch.rand(1, 1, 16, 16))
    for h in hooks:
        h.remove()
    k = (3, 3)
    assert ran == [
        (1, 32, 1, k, (16, 16)),
        (32, 32, 1, k, (16, 16)),
        (32, 64, 2, k, (8, 8)),
        (64, 64, 1, k, (8, 8)),
        (64, 128, 2, k, (4, 4)),
        (128, 128, 1, k, (4, 4)),
        (128, 64, 1, k, (8, 8)),  # after bilinear ×2
        (64, 64, 1, k, (8, 8)),
        (64, 32, 1, k, (16, 16)),  # after bilinear ×2
        (32, 1, 1, k, (16, 16)),
    ]
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    acts = [m for m in net.modules() if isinstance(m, nn.LeakyReLU)]
    assert len(norms) == len(acts) == len(convs) - 1
    assert all(a.negative_slope == 0.01 for a in acts)


def test_skips_concatenate_the_encoder_map_of_the_same_resolution(one_thread) -> None:
    torch.manual_seed(0)
    net = ShapePrior(SMALL, skips=True).eval()
    enc: list[torch.Tensor] = []
    fused: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda m, i, o: enc.append(o)) for m in net.encoder]
    hooks += [m.register_forward_hook(lambda m, i, o: fused.append(i[0])) for m in net.decoder]
    hooks.append(net.output.register_forward_hook(lambda m, i, o: fused.append(i[0])))
    with torch.no_grad():
        net(torch.rand(1, 1, 15, 11))
    for h in hooks:
        h.remove()
    assert [tuple(e.shape[-2:]) for e in enc] == [(15, 11), (8, 6)]
    for x, skip in zip(fused, reversed(enc), strict=True):
        c = skip.shape[1]
        assert x.shape[1] == 2 * c and x.shape[-2:] == skip.shape[-2:]
        assert torch.equal(x[:, :c], skip)  # skip first
    # without skips the output conv sees only the decoder's c0 channels
    assert ShapePrior(SMALL).output.in_channels == SMALL[0]


def test_gradient_reaches_the_input(one_thread) -> None:
    torch.manual_seed(0)
    for skips in (False, True):
        x = torch.rand(2, 1, 12, 10, requires_grad=True)
        ShapePrior(SMALL, skips=skips)(x).sum().backward()
        assert x.grad is not None and bool(x.grad.abs().sum() > 0)


def test_group_norm_leaves_no_batch_norm() -> None:
    net = ShapePrior(norm="group")
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())
    groups = [m for m in net.modules() if isinstance(m, nn.GroupNorm)]
    assert len(groups) == 9 and all(g.num_channels % g.num_groups == 0 for g in groups)
    assert ShapePrior((6, 12, 24), norm="group")(torch.rand(1, 1, 8, 8)).shape == (1, 1, 8, 8)


def test_rejects_bad_arguments_and_inputs() -> None:
    with pytest.raises(DabenchError, match="batch"):
        ShapePrior(norm="instance")
    for channels in [(32,), (32, 0, 8), "abc", (3.5, 8)]:
        with pytest.raises(DabenchError, match="channels"):
            ShapePrior(channels)  # type: ignore[arg-type]
    net = ShapePrior(SMALL)
    with pytest.raises(DabenchError):
        net(torch.rand(2, 3, 8, 8))
    with pytest.raises(DabenchError):
        net(torch.ones(2, 1, 8, 8, dtype=torch.uint8))


def _pair(size: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    """A skeleton mask drawn from a stick figure and a wider 'silhouette' around it."""
    pts = torch.tensor([[[0.0, 0.0], [0.0, -0.6], [-0.4, 0.7], [0.4, 0.7], [-0.5, -0.3]]])
    bones = [(0, 1), (0, 2), (0, 3), (1, 4)]
    skel = bone_maps(pts, bones, (size, size), sigma=0.06).amax(1, keepdim=True)
    silhouette = bone_maps(pts, bones, (size, size), sigma=0.2).amax(1, keepdim=True) > 0.5
    return skel, silhouette.float()


@pytest.mark.parametrize("norm", ["batch", "group"])
def test_a_few_steps_learn_a_silhouette(norm: str, one_thread) -> None:
    torch.manual_seed(0)
    skel, silhouette = _pair()
    net = ShapePrior(SMALL, norm=norm)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = physique_loss(net(skel), silhouette)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    # and beats copying the skeleton through as the silhouette
    assert losses[-1] < physique_loss(skel, silhouette).item()
    # the physique loss reaches the skeleton mask (hence the keypoints) through ψ
    skel = skel.clone().requires_grad_(True)
    physique_loss(net(skel), silhouette).backward()
    assert skel.grad is not None and bool(skel.grad.abs().sum() > 0)
