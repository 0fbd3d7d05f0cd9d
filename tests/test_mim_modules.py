"""MIM building blocks of Park et al. (paper 000): patches, MAE decoder, FCR (Eq. 2-3),
background replacement and attention regularisation (Eq. 6)."""

from __future__ import annotations

import math

import pytest
import torch

from bench.errors import DabenchError
from bench.methods.mim_modules import (
    MAEDecoder,
    attention_regularisation,
    decoder_size_for,
    fcr_weights,
    load_mae_decoder,
    patchify,
    reconstruction_losses,
    replace_background,
    unpatchify,
)

# --- patchify ---------------------------------------------------------------------------


def test_patchify_round_trip_non_square():
    images = torch.randn(2, 3, 8, 12)
    patches = patchify(images, 4)
    assert patches.shape == (2, 6, 48)
    assert torch.equal(unpatchify(patches, 4, 8, 12), images)


def test_patchify_pixel_order_row_col_channel():
    p, h, w = 2, 2, 3  # patch grid 2 rows × 3 cols
    images = torch.zeros(1, 3, h * p, w * p)
    for ch in range(3):
        for y in range(h * p):
            for x in range(w * p):
                images[0, ch, y, x] = 1000 * y + 10 * x + ch
    patches = patchify(images, p)
    for i in range(h * w):
        py, px = divmod(i, w)  # row-major over the patch grid
        for r in range(p):
            for c in range(p):
                for k in range(3):
                    expected = 1000 * (py * p + r) + 10 * (px * p + c) + k
                    assert patches[0, i, (r * p + c) * 3 + k] == expected


def test_patchify_rejects_indivisible_size():
    with pytest.raises(DabenchError, match="divisible"):
        patchify(torch.zeros(1, 3, 10, 8), 4)
    with pytest.raises(DabenchError, match="divisible"):
        unpatchify(torch.zeros(1, 4, 48), 4, 8, 10)


# --- FCR weights (Eq. 2) ----------------------------------------------------------------


def test_fcr_weights_mean_one_and_monotone():
    masks = torch.rand(3, 16, 16)
    weights = fcr_weights(masks, 4, alpha=4.0)
    assert weights.shape == (3, 16)
    torch.testing.assert_close(weights.mean(dim=1), torch.ones(3))
    fractions = patchify(masks.unsqueeze(1).expand(-1, 3, -1, -1), 4).mean(dim=-1)
    for b in range(3):
        order = fractions[b].argsort()
        assert (weights[b, order].diff() > 0).all()


def test_fcr_weights_alpha_zero_is_uniform():
    weights = fcr_weights(torch.rand(2, 1, 8, 8), 4, alpha=0.0)
    assert torch.equal(weights, torch.ones(2, 4))


def test_fcr_weights_hand_computation():
    # 2×2 patches of 2×2 px; foreground fractions 1, 0.5, 0.25, 0 (row-major)
    mask = torch.tensor(
        [
            [1.0, 1.0, 1.0, 0.0],
            [1.0, 1.0, 1.0, 0.0],
            [1.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 0.0],
        ]
    )
    alpha = 4.0
    raw = [math.exp(alpha * (f - 0.5)) for f in (1.0, 0.5, 0.25, 0.0)]
    expected = torch.tensor([4 * v / sum(raw) for v in raw])
    torch.testing.assert_close(fcr_weights(mask[None], 2, alpha)[0], expected)


def test_fcr_weights_patch_order_matches_patchify():
    mask = torch.zeros(1, 8, 8)
    mask[0, :4, 4:] = 1  # top-right patch of a 2×2 grid
    weights = fcr_weights(mask, 4, alpha=4.0)
    assert weights[0].argmax().item() == 1
    assert patchify(mask[:, None].expand(-1, 3, -1, -1), 4)[0].sum(-1).argmax().item() == 1


def test_fcr_weights_rejects_unscaled_masks():
    with pytest.raises(DabenchError, match=r"\[0, 1\]"):
        fcr_weights(torch.full((1, 8, 8), 255.0), 4, alpha=4.0)


# --- reconstruction losses (Eq. 3 and MAE) ----------------------------------------------


def _random_mask(b: int, n: int, removed: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.rand(b, n, generator=g).argsort(dim=1)
    mask = torch.zeros(b, n)
    mask.scatter_(1, ids[:, :removed], 1.0)
    return mask


@pytest.mark.parametrize("norm_pix", [False, True])
def test_wmae_is_constant_times_mae(norm_pix):
    p, b, n, removed = 4, 3, 16, 12
    images = torch.randn(b, 3, 16, 16)
    pred = torch.randn(b, n, p * p * 3)
    mask = _random_mask(b, n, removed)
    losses = reconstruction_losses(pred, images, mask, None, p, norm_pix)
    constant = p * p * 3 * removed / n
    torch.testing.assert_close(losses["wmae"], constant * losses["mae"], atol=1e-6, rtol=1e-6)
    ones = reconstruction_losses(pred, images, mask, torch.ones(b, n), p, norm_pix)
    torch.testing.assert_close(ones["wmae"], losses["wmae"])


def test_wmae_doubles_with_doubled_weights_on_removed_patches():
    p, b, n = 4, 2, 16
    images = torch.randn(b, 3, 16, 16)
    pred = torch.randn(b, n, p * p * 3)
    mask = _random_mask(b, n, 8)
    weights = fcr_weights(torch.rand(b, 16, 16), p, alpha=4.0)
    base = reconstruction_losses(pred, images, mask, weights, p, False)
    doubled = torch.where(mask.bool(), 2 * weights, weights)
    twice = reconstruction_losses(pred, images, mask, doubled, p, False)
    torch.testing.assert_close(twice["wmae"], 2 * base["wmae"])
    torch.testing.assert_close(twice["mae"], base["mae"])


def test_visible_patches_never_count():
    p, b, n = 4, 2, 16
    images = torch.randn(b, 3, 16, 16)
    pred = torch.randn(b, n, p * p * 3)
    mask = _random_mask(b, n, 12)
    weights = torch.rand(b, n) + 0.5
    before = reconstruction_losses(pred, images, mask, weights, p, True)
    changed = pred + 100 * (1 - mask).unsqueeze(-1) * torch.randn_like(pred)
    after = reconstruction_losses(changed, images, mask, weights, p, True)
    assert torch.equal(before["wmae"], after["wmae"])
    assert torch.equal(before["mae"], after["mae"])
    assert before["mae"] > 0


def test_norm_pix_target_is_normalised_per_patch():
    p = 4
    images = torch.rand(2, 3, 8, 8) * 5 + 3
    target = patchify(images, p)
    normed = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
    mask = torch.ones(2, 4)
    losses = reconstruction_losses(normed, images, mask, None, p, norm_pix=True)
    assert losses["wmae"].item() < 1e-8 and losses["mae"].item() < 1e-8
    # predicting the zero-mean target is wrong without norm_pix (the targets' mean is ~5.5)
    assert reconstruction_losses(normed, images, mask, None, p, norm_pix=False)["mae"] > 10
    # a constant prediction of 0 scores the target's variance (≈1 per value) with norm_pix
    zero = reconstruction_losses(torch.zeros_like(normed), images, mask, None, p, True)
    torch.testing.assert_close(zero["mae"], torch.tensor(47 / 48), atol=1e-4, rtol=0)


def test_losses_reject_bad_shapes():
    with pytest.raises(DabenchError, match="mask"):
        reconstruction_losses(
            torch.zeros(1, 4, 48), torch.zeros(1, 3, 8, 8), torch.ones(1, 3), None, 4, False
        )


# --- MAE decoder ------------------------------------------------------------------------


def _decoder(depth: int, seed: int = 0, n: int = 4, p: int = 2, dim: int = 8) -> MAEDecoder:
    torch.manual_seed(seed)
    pos = torch.randn(1, n + 1, 32)
    return MAEDecoder(dim, n, p, pos, decoder_dim=32, depth=depth, heads=4)


def _mae_masking(b: int, n: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    ids_shuffle = torch.rand(b, n, generator=g).argsort(dim=1)
    return ids_shuffle, ids_shuffle.argsort(dim=1)


def test_decoder_size_rule():
    assert decoder_size_for(768) == (512, 16)
    assert decoder_size_for(384) == (256, 8)
    assert decoder_size_for(192) == (128, 4)


def test_decoder_output_shape_and_mask_token_grad():
    decoder = _decoder(depth=1)
    _, ids_restore = _mae_masking(2, 4)
    out = decoder(torch.randn(2, 2, 8), ids_restore)
    assert out.shape == (2, 4, 2 * 2 * 3)
    out.square().sum().backward()
    assert decoder.mask_token.grad is not None and decoder.mask_token.grad.abs().sum() > 0
    assert not decoder.decoder_pos_embed.requires_grad
    assert "decoder_pos_embed" not in dict(decoder.named_parameters())


def test_decoder_unshuffles_tokens_to_their_patches():
    b, n, keep = 2, 4, 2
    decoder = _decoder(depth=0)
    ids_shuffle, ids_restore = _mae_masking(b, n)
    tokens = torch.randn(b, 1 + keep, 8)
    out = decoder(tokens, ids_restore)
    pos = decoder.decoder_pos_embed[0]
    with torch.no_grad():
        for i in range(b):
            for j in range(n):
                slot = (ids_shuffle[i] == j).nonzero().item()  # place in the shuffled order
                if slot < keep:
                    x = decoder.decoder_embed(tokens[i, 1 + slot])
                else:
                    x = decoder.mask_token[0, 0]
                expected = decoder.decoder_pred(decoder.decoder_norm(x + pos[1 + j]))
                torch.testing.assert_close(out[i, j], expected)


def test_load_mae_decoder_round_trip_and_refusals():
    source, target = _decoder(depth=2, seed=0), _decoder(depth=2, seed=1)
    _, ids_restore = _mae_masking(1, 4)
    tokens = torch.randn(1, 3, 8)
    assert not torch.allclose(source(tokens, ids_restore), target(tokens, ids_restore))
    checkpoint = {**source.state_dict(), "cls_token": torch.zeros(1, 1, 8)}  # + encoder keys
    load_mae_decoder(target, checkpoint)
    torch.testing.assert_close(target(tokens, ids_restore), source(tokens, ids_restore))

    with pytest.raises(DabenchError, match=r"12 unexpected \(e\.g\. decoder_blocks\.1\."):
        load_mae_decoder(_decoder(depth=1), source.state_dict())
    bad = dict(source.state_dict())
    bad["decoder_pos_embed"] = torch.zeros(1, 10, 32)
    del bad["mask_token"]
    with pytest.raises(DabenchError) as err:
        load_mae_decoder(target, bad)
    assert "1 missing (e.g. mask_token)" in str(err.value)
    assert "decoder_pos_embed [1, 10, 32] vs [1, 5, 32]" in str(err.value)


def test_decoder_rejects_wrong_pos_embed():
    with pytest.raises(DabenchError, match="pos_embed"):
        MAEDecoder(8, 4, 2, torch.zeros(1, 4, 32), decoder_dim=32, depth=1, heads=4)


# --- background replacement -------------------------------------------------------------


def _uint8_batch(b: int = 4, size: int = 8):
    g = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (b, size, size, 3), generator=g, dtype=torch.uint8)
    backgrounds = torch.randint(0, 256, (b, size, size, 3), generator=g, dtype=torch.uint8)
    masks = torch.zeros(b, size, size)
    masks[:, : size // 2] = 1.0
    masks[:, size // 2, :] = 0.5  # one fractional row
    return images, masks, backgrounds


def test_replace_background_uint8_exact_where_mask_binary():
    images, masks, backgrounds = _uint8_batch()
    out, replaced = replace_background(images, masks, backgrounds, prob=1.0)
    assert out.dtype == torch.uint8 and replaced.all()
    fg, bg = masks == 1, masks == 0
    assert torch.equal(out[fg], images[fg])
    assert torch.equal(out[bg], backgrounds[bg])
    half = masks == 0.5
    blend = ((images[half].float() + backgrounds[half].float()) / 2).round().to(torch.uint8)
    assert torch.equal(out[half], blend)


def test_replace_background_float_channel_first():
    images, masks, backgrounds = (
        torch.rand(2, 3, 8, 8),
        torch.zeros(2, 8, 8),
        torch.rand(2, 3, 8, 8),
    )
    masks[:, :, :4] = 1
    out, replaced = replace_background(images, masks, backgrounds, prob=1.0)
    assert replaced.all()
    assert torch.equal(out[:, :, :, :4], images[:, :, :, :4])
    assert torch.equal(out[:, :, :, 4:], backgrounds[:, :, :, 4:])


def test_replace_background_probability_and_seed():
    images, masks, backgrounds = _uint8_batch(b=16)
    out, replaced = replace_background(images, masks, backgrounds, prob=0.0)
    assert not replaced.any() and torch.equal(out, images)
    runs = [
        replace_background(images, masks, backgrounds, 0.5, torch.Generator().manual_seed(7))
        for _ in range(2)
    ]
    assert torch.equal(runs[0][1], runs[1][1]) and torch.equal(runs[0][0], runs[1][0])
    chosen = runs[0][1]
    assert 0 < chosen.sum() < 16
    assert torch.equal(runs[0][0][~chosen], images[~chosen])
    bg = masks == 0
    assert torch.equal(runs[0][0][chosen][bg[chosen]], backgrounds[chosen][bg[chosen]])


def test_replace_background_rejects_bad_shapes():
    images, masks, backgrounds = _uint8_batch()
    with pytest.raises(DabenchError, match="backgrounds"):
        replace_background(images, masks, backgrounds[:, :4], prob=1.0)
    with pytest.raises(DabenchError, match="masks"):
        replace_background(images, masks[:, :4], backgrounds, prob=1.0)
    with pytest.raises(DabenchError, match="probability"):
        replace_background(images, masks, backgrounds, prob=1.5)


# --- attention regularisation (Eq. 6) ---------------------------------------------------


def test_attention_regularisation_values_and_gradients():
    a = torch.rand(2, 3, 5, requires_grad=True)
    assert attention_regularisation(a, a.detach().clone()).item() == 0.0
    frozen = torch.rand(2, 3, 5, requires_grad=True)
    loss = attention_regularisation(a, frozen)
    torch.testing.assert_close(loss, (a - frozen).abs().sum() / 30)
    loss.backward()
    assert a.grad is not None and a.grad.abs().sum() > 0
    assert frozen.grad is None


def test_attention_regularisation_hand_example():
    a = torch.tensor([[[0.5, 0.25], [0.0, 1.0]]])
    b = torch.tensor([[[0.25, 0.25], [0.5, 0.0]]])
    assert attention_regularisation(a, b).item() == pytest.approx((0.25 + 0 + 0.5 + 1.0) / 4)
