"""The U-Net segmenter f^S (Park et al., Table 6): shapes, depth rule, channels, learning a toy
mask, IoU and the BCE loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.errors import DabenchError
from bench.models.unet import UNetSegmenter, iou, segmentation_loss, unet_depth


def _bottleneck_side(net: UNetSegmenter, size: int) -> int:
    seen: list[int] = []
    handle = net.bottleneck.register_forward_hook(lambda m, i, o: seen.append(o.shape[-1]))
    with torch.no_grad():
        net.eval()(torch.randn(1, 3, size, size))
    handle.remove()
    return seen[0]


@pytest.mark.parametrize("size", [32, 64])
def test_output_is_probability_map_of_input_size(size: int) -> None:
    torch.manual_seed(0)
    net = UNetSegmenter(size)
    out = net(torch.randn(2, 3, size, size))
    assert out.shape == (2, size, size)
    assert bool(((out > 0) & (out < 1)).all())
    logits = net.logits(torch.randn(2, 3, size, size))
    assert logits.shape == (2, size, size)
    assert logits.min() < 0 < logits.max()  # not already squashed


def test_depth_rule_and_bottleneck() -> None:
    # Table 6 at 256 px: stem 128, pools to 64, 32, 16, 8 — checked without a 256 forward
    big = UNetSegmenter(256)
    assert big.depth == 4 and len(big.encoder) == 4 and len(big.decoder) == 4
    assert big.bottleneck_size == 8
    assert [unet_depth(s) for s in (16, 32, 64, 128, 256, 512)] == [1, 1, 2, 3, 4, 4]
    for size in (32, 64):
        net = UNetSegmenter(size)
        side = _bottleneck_side(net, size)
        assert side == net.bottleneck_size >= 4
    assert _bottleneck_side(UNetSegmenter(64), 64) == 8
    assert _bottleneck_side(UNetSegmenter(64, depth=3), 64) == 4


def test_decoder_concatenates_the_encoder_map_of_its_resolution() -> None:
    torch.manual_seed(0)
    net = UNetSegmenter(64, depth=3).eval()
    enc: list[torch.Tensor] = []
    dec: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda m, i, o: enc.append(o)) for m in net.encoder]
    hooks += [m.register_forward_hook(lambda m, i, o: dec.append(i[0])) for m in net.decoder]
    with torch.no_grad():
        net(torch.randn(1, 3, 64, 64))
    for h in hooks:
        h.remove()
    assert [e.shape[-1] for e in enc] == [32, 16, 8]
    for x, skip in zip(dec, reversed(enc), strict=True):
        assert x.shape[1] == 128 and x.shape[-1] == skip.shape[-1]
        assert torch.equal(x[:, :64], skip)  # skip first, as Table 6's Concat(skip, up)


def test_rejects_sizes_the_skips_cannot_match() -> None:
    with pytest.raises(DabenchError):
        UNetSegmenter(36, depth=2)  # 36 is not a multiple of 8
    with pytest.raises(DabenchError):
        UNetSegmenter(32)(torch.randn(1, 3, 30, 30))
    with pytest.raises(DabenchError):
        UNetSegmenter(32)(torch.zeros(1, 32, 32, 3, dtype=torch.uint8))


def test_every_layer_has_64_channels() -> None:
    net = UNetSegmenter(256)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    # stem + 2 per encoder stage + bottleneck 2 + (up + 2) per decoder stage + up + 2 + 1×1
    assert len(convs) == 1 + 2 * 4 + 2 + 3 * 4 + 3 + 1
    assert convs[0].kernel_size == (7, 7) and convs[0].stride == (2, 2)
    for conv in convs[:-1]:
        assert conv.out_channels == 64
        assert conv.in_channels in (3, 64, 128)
    assert convs[-1].out_channels == 1 and convs[-1].kernel_size == (1, 1)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == 1  # stem only


def _toy_batch(gen: torch.Generator, n: int, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    masks = torch.zeros(n, size, size)
    for i in range(n):
        side = int(torch.randint(12, 24, (1,), generator=gen))
        y0, x0 = (int(v) for v in torch.randint(0, size - side, (2,), generator=gen))
        masks[i, y0 : y0 + side, x0 : x0 + side] = 1.0
    noise = 0.1 * torch.randn(n, 3, size, size, generator=gen)
    images = (masks[:, None] * 2.0 - 1.0) + noise  # bright square on dark, ~normalised
    return images, masks


def test_learns_a_bright_square(one_thread) -> None:
    # 16 channels instead of 64 (same code path, ~8× cheaper) keeps this under a second; with
    # squares covering 15–50% of the image, every seed tried escapes the all-background start
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    net = UNetSegmenter(32, channels=16)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    images, masks = _toy_batch(gen, 8)
    test_images, test_masks = _toy_batch(gen, 8)
    with torch.no_grad():
        assert float(iou(net.eval()(test_images), test_masks).mean()) < 0.5
    net.train()
    for _ in range(30):
        loss = segmentation_loss(net.logits(images), masks)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        scores = iou(net.eval()(test_images), test_masks)
    assert scores.shape == (8,)
    assert float(scores.mean()) > 0.8


def test_iou_known_values() -> None:
    a = torch.zeros(4, 8, 8)
    b = torch.zeros(4, 8, 8)
    a[0, :4] = 1.0
    b[0, :4] = 1.0  # identical
    a[1, :4] = 1.0
    b[1, 4:] = 1.0  # disjoint
    # image 2: both empty
    a[3, :4] = 1.0
    b[3, :2] = 1.0  # half overlap: 16 / 32
    assert iou(a, b).tolist() == [1.0, 0.0, 1.0, 0.5]
    # probabilities are thresholded, not multiplied
    assert iou(0.6 * a, b).tolist() == [1.0, 0.0, 1.0, 0.5]
    assert iou(0.4 * a, b).tolist() == [0.0, 0.0, 1.0, 0.0]
    with pytest.raises(DabenchError):
        iou(a, b[:, :4])


def test_segmentation_loss_is_bce_with_logits() -> None:
    logits = torch.tensor([[[2.0, -1.0], [0.0, 3.0]]])
    masks = torch.tensor([[[1.0, 0.0], [0.5, 0.0]]])
    p = torch.sigmoid(logits)
    by_hand = -(masks * p.log() + (1 - masks) * (1 - p).log()).mean()
    loss = segmentation_loss(logits, masks)
    assert torch.allclose(loss, by_hand, atol=1e-6)
    assert torch.allclose(loss, F.binary_cross_entropy_with_logits(logits, masks))
    with pytest.raises(DabenchError):
        segmentation_loss(logits, masks[0])
