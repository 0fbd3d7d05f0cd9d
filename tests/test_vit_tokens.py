"""Token-level ViT access (bench/models/vit_tokens.py): MAE masking, masked encoding, class
attention with autograd, sin-cos position table, MAE checkpoints. Tiny ViTs, CPU, offline."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pytest
import timm
import torch
from torch import Tensor

from bench.errors import DabenchError
from bench.models.backbones import Backbone, create_backbone
from bench.models.vit_tokens import (
    TokenEncoder,
    gather_tokens,
    load_mae_checkpoint,
    random_masking,
    sincos_pos_embed,
    use_sincos_pos_embed,
)

SIZE, PATCH, N, D = 32, 8, 16, 192  # vit_tiny at 32 px, patch 8: a 4×4 grid of 192-d tokens


def tiny_vit(seed: int = 0, name: str = "vit_tiny", img_size: int = SIZE) -> Backbone:
    torch.manual_seed(seed)
    return create_backbone(name, img_size=img_size, patch_size=PATCH).eval()


def images(batch: int = 2, seed: int = 0, size: int = SIZE) -> Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- masking


@pytest.mark.parametrize(
    ("n", "ratio", "keep"),
    [
        (16, 0.75, 4),
        (256, 0.75, 64),
        (16, 0.0, 16),
        (100, 0.29, 71),
        # float error puts N·(1−r) just under an integer: int() would keep one less
        (20, 0.8, 4),  # 3.999999999999999
        (320, 0.8, 64),  # 63.999999999999986
        (10, 0.9, 1),  # 0.9999999999999998: int() would keep none
        (3, 0.9, 1),  # rounds to 0: at least one token is kept
    ],
)
def test_masking_keeps_round_of_n_times_one_minus_ratio(n: int, ratio: float, keep: int) -> None:
    m = random_masking(3, n, ratio, generator=seeded(0))
    assert m.num_keep == keep
    assert m.ids_keep.shape == (3, keep)
    assert m.ids_restore.shape == m.mask.shape == (3, n)
    assert m.mask.dtype.is_floating_point
    assert m.mask.sum(dim=1).tolist() == [float(n - keep)] * 3
    # the kept indices are exactly the mask's zeros (original token order)
    kept = torch.zeros(3, n).scatter_(1, m.ids_keep, 1.0)
    torch.testing.assert_close(kept, 1.0 - m.mask)


def test_masking_int_and_round_really_differ_on_those_cases() -> None:
    # guards the parametrisation above: these cases separate round() from MAE's int()
    assert int(20 * (1 - 0.8)) == 3 and int(320 * (1 - 0.8)) == 63 and int(10 * (1 - 0.9)) == 0


def test_masking_is_per_sample_and_seeded() -> None:
    m = random_masking(8, N, 0.75, generator=seeded(1))
    kept_sets = {tuple(sorted(row.tolist())) for row in m.ids_keep}
    assert len(kept_sets) > 1
    same = random_masking(8, N, 0.75, generator=seeded(1))
    other = random_masking(8, N, 0.75, generator=seeded(2))
    assert torch.equal(m.ids_keep, same.ids_keep) and torch.equal(m.mask, same.mask)
    assert not torch.equal(m.mask, other.mask)


def test_masking_draws_from_the_generator_not_the_global_rng() -> None:
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    random_masking(4, N, 0.5, generator=seeded(0))
    assert torch.equal(torch.rand(3), expected)


def test_masking_ids_restore_unshuffles() -> None:
    m = random_masking(4, N, 0.75, generator=seeded(3))
    arange = torch.arange(N).expand(4, N)
    assert torch.equal(torch.gather(m.ids_shuffle, 1, m.ids_restore), arange)
    # MAE's decoder: kept tokens then placeholders, un-shuffled with ids_restore
    positions = arange.unsqueeze(-1).float()
    kept = gather_tokens(positions, m.ids_keep)
    placeholders = torch.full((4, N - m.num_keep, 1), -1.0)
    restored = gather_tokens(torch.cat([kept, placeholders], dim=1), m.ids_restore)[..., 0]
    expected = torch.where(m.mask.bool(), torch.tensor(-1.0), arange.float())
    assert torch.equal(restored, expected)


@pytest.mark.parametrize("ratio", [1.0, -0.1, 1.5, math.nan, True, "0.5"])
def test_masking_rejects_bad_ratio(ratio: object) -> None:
    with pytest.raises(DabenchError, match="ratio"):
        random_masking(2, N, ratio)  # type: ignore[arg-type]


# ---------------------------------------------------------------- encoder


def test_forward_all_equals_timm_forward_features() -> None:
    backbone = tiny_vit()
    x = images()
    with torch.no_grad():
        ours = TokenEncoder(backbone).forward_all(x)
        timms = backbone.model.forward_features(x)
    assert ours.shape == (2, 1 + N, D)
    torch.testing.assert_close(ours, timms, rtol=0, atol=0)


def test_patch_tokens_add_the_patch_position_embedding() -> None:
    backbone = tiny_vit()
    x = images()
    with torch.no_grad():
        tokens = TokenEncoder(backbone).patch_tokens(x)
        raw = backbone.model.patch_embed(x)
    torch.testing.assert_close(tokens - raw, backbone.model.pos_embed[:, 1:].expand(2, -1, -1))


def test_forward_masked_shape_and_ratio_zero_is_forward_all_unshuffled() -> None:
    enc = TokenEncoder(tiny_vit())
    x = images()
    with torch.no_grad():
        out, m = enc.forward_masked(x, 0.75, generator=seeded(0))
        assert out.shape == (2, 1 + 4, D) and m.num_keep == 4
        full = enc.forward_all(x)
        out0, m0 = enc.forward_masked(x, 0.0, generator=seeded(0))
    assert not torch.equal(m0.ids_keep, torch.arange(N).expand(2, N))  # it did shuffle
    assert m0.mask.sum() == 0
    torch.testing.assert_close(out0[:, 0], full[:, 0])
    torch.testing.assert_close(gather_tokens(out0[:, 1:], m0.ids_restore), full[:, 1:])


def _patch_pixels(patch: int) -> tuple[slice, slice]:
    row, col = divmod(patch, SIZE // PATCH)
    return slice(row * PATCH, (row + 1) * PATCH), slice(col * PATCH, (col + 1) * PATCH)


def test_forward_masked_sees_only_the_kept_patches() -> None:
    enc = TokenEncoder(tiny_vit())
    x = images()
    with torch.no_grad():
        out, m = enc.forward_masked(x, 0.75, generator=seeded(4))
        removed = int(m.mask[0].nonzero()[0])
        kept = int(m.ids_keep[0, 0])
        for patch, changes in ((removed, False), (kept, True)):
            y = x.clone()
            rows, cols = _patch_pixels(patch)
            y[0, :, rows, cols] += 3.0
            out_y, m_y = enc.forward_masked(y, 0.75, generator=seeded(4))
            assert torch.equal(m_y.ids_keep, m.ids_keep)
            assert torch.equal(out_y[1], out[1])  # the other sample is untouched
            assert torch.equal(out_y[0], out[0]) != changes


def test_encoder_wraps_the_backbone_parameters_not_copies() -> None:
    backbone = tiny_vit()
    enc = TokenEncoder(backbone)
    assert {id(p) for p in enc.parameters()} == {id(p) for p in backbone.parameters()}
    before = backbone.model.cls_token.detach().clone()
    opt = torch.optim.SGD(enc.parameters(), lr=1.0)
    out, _ = enc.forward_masked(images(), 0.5, generator=seeded(0))
    out.pow(2).mean().backward()
    opt.step()
    assert not torch.equal(backbone.model.cls_token, before)


def test_encoder_rejects_cnn_unusual_vits_and_wrong_sizes() -> None:
    cnn = Backbone(
        torch.nn.Identity(),
        name="resnet18",
        out_channels=512,
        stride=32,
        img_size=SIZE,
        is_vit=False,
    )
    with pytest.raises(DabenchError, match=r"needs a ViT backbone.*resnet18.*vit_tiny"):
        TokenEncoder(cnn)
    for kwargs in ({"reg_tokens": 4}, {"class_token": False, "global_pool": "avg"}):
        model = timm.create_model(
            "vit_tiny_patch16_224",
            pretrained=False,
            img_size=SIZE,
            patch_size=PATCH,
            depth=1,
            num_classes=0,
            **kwargs,
        )
        odd = Backbone(
            model, name="vit_tiny", out_channels=D, stride=PATCH, img_size=SIZE, is_vit=True
        )
        with pytest.raises(DabenchError, match="class token|register"):
            TokenEncoder(odd)
    enc = TokenEncoder(tiny_vit())
    with pytest.raises(DabenchError, match="32×32"):
        enc.forward_masked(images(size=48), 0.75)
    with pytest.raises(DabenchError, match=r"\[B,3,H,W\]"):
        enc.forward_all(torch.zeros(2, 1, SIZE, SIZE))


# ---------------------------------------------------------------- class-token attention


def _manual_block0_rows(backbone: Backbone, x: Tensor) -> Tensor:
    model = backbone.model
    tokens = model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(x))))
    attn = model.blocks[0].attn
    h = model.blocks[0].norm1(tokens)
    b, t, _ = h.shape
    q, k, _v = attn.qkv(h).reshape(b, t, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    probs = ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
    return probs[:, :, 0]  # [B, heads, 1+N]


def test_cls_attention_shapes_rows_and_values() -> None:
    backbone = tiny_vit()
    enc = TokenEncoder(backbone)
    x = images()
    with torch.no_grad():
        tokens, raw = enc.attention_rows(x)
        tokens2, cls = enc.cls_attention(x)
        full = enc.forward_all(x)
        manual = _manual_block0_rows(backbone, x)
    heads = backbone.model.blocks[0].attn.num_heads
    assert raw.shape == (2, 12, heads, 1 + N)
    assert cls.shape == (2, 12, N)
    torch.testing.assert_close(raw.sum(-1), torch.ones(2, 12, heads), atol=1e-5, rtol=0)
    torch.testing.assert_close(raw[:, 0], manual)
    torch.testing.assert_close(cls, raw[..., 1:].mean(dim=2))
    assert (cls.sum(-1) < 1).all()
    torch.testing.assert_close(tokens, full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(tokens2, full, atol=1e-5, rtol=1e-5)


def test_cls_attention_backpropagates_into_the_blocks() -> None:
    backbone = tiny_vit()
    _, cls = TokenEncoder(backbone).cls_attention(images())
    weights = torch.rand(cls.shape, generator=seeded(0))
    (cls * weights).sum().backward()
    for index in (0, len(backbone.model.blocks) - 1):
        grad = backbone.model.blocks[index].attn.qkv.weight.grad
        assert grad is not None and grad.abs().sum() > 0


def test_cls_attention_restores_fused_flags_and_removes_hooks() -> None:
    backbone = tiny_vit()
    blocks = list(backbone.model.blocks)
    flags = [i % 3 != 0 for i in range(len(blocks))]  # mixed, so a blanket reset shows
    for blk, flag in zip(blocks, flags, strict=True):
        blk.attn.fused_attn = flag
    enc = TokenEncoder(backbone)

    def state() -> tuple[list[bool], list[int]]:
        return (
            [blk.attn.fused_attn for blk in blocks],
            [len(blk.attn.attn_drop._forward_hooks) for blk in blocks],
        )

    with torch.no_grad():
        enc.cls_attention(images())
    assert state() == (flags, [0] * len(blocks))

    def boom(_x: Tensor) -> Tensor:
        raise RuntimeError("boom")

    blocks[5].mlp.forward = boom
    with pytest.raises(RuntimeError, match="boom"), torch.no_grad():
        enc.cls_attention(images())
    assert state() == (flags, [0] * len(blocks))


# ---------------------------------------------------------------- sin-cos position table


def test_sincos_table_matches_hand_computed_entries() -> None:
    dim, grid = 16, 4
    table = sincos_pos_embed(dim, grid)
    assert table.shape == (1, 1 + grid * grid, dim) and table.dtype == torch.float32
    assert torch.equal(table[0, 0], torch.zeros(dim))
    row, col = 2, 3
    token = 1 + row * grid + col  # row-major, after the class token
    quarter = dim // 4
    for d in range(quarter):
        omega = 1.0 / 10000 ** (d / quarter)
        # first half: column (x), sines then cosines; second half: row (y)
        assert table[0, token, d].item() == pytest.approx(math.sin(col * omega), abs=1e-6)
        assert table[0, token, quarter + d].item() == pytest.approx(math.cos(col * omega), abs=1e-6)
        assert table[0, token, 2 * quarter + d].item() == pytest.approx(
            math.sin(row * omega), abs=1e-6
        )
        assert table[0, token, 3 * quarter + d].item() == pytest.approx(
            math.cos(row * omega), abs=1e-6
        )
    no_cls = sincos_pos_embed(dim, grid, cls_token=False)
    assert torch.equal(no_cls, table[:, 1:])
    with pytest.raises(DabenchError, match="multiple of 4"):
        sincos_pos_embed(18, grid)


def test_use_sincos_pos_embed_overwrites_and_freezes() -> None:
    backbone = tiny_vit()
    use_sincos_pos_embed(backbone)
    pos = backbone.model.pos_embed
    assert isinstance(pos, torch.nn.Parameter) and not pos.requires_grad
    assert torch.equal(pos.detach(), sincos_pos_embed(D, SIZE // PATCH))
    TokenEncoder(backbone).forward_all(images()).sum().backward()
    assert pos.grad is None
    assert backbone.model.blocks[0].attn.qkv.weight.grad is not None


# ---------------------------------------------------------------- MAE checkpoints

DECODER = {
    "mask_token": (1, 1, 64),
    "decoder_embed.weight": (64, D),
    "decoder_pos_embed": (1, 1 + N, 64),
    "decoder_blocks.0.norm1.weight": (64,),
    "decoder_pred.weight": (PATCH * PATCH * 3, 64),
}


def write_mae(path: Path, encoder: dict[str, Tensor], **extra: Tensor) -> dict[str, Tensor]:
    gen = seeded(9)
    decoder = {k: torch.randn(shape, generator=gen) for k, shape in DECODER.items()}
    torch.save(
        {
            "model": {**encoder, **decoder, **extra},
            "optimizer": {"state": {}, "param_groups": [{"lr": 2.4e-3, "params": [0, 1]}]},
            "epoch": 3,
            "args": argparse.Namespace(model="mae_vit_tiny", mask_ratio=0.75, norm_pix_loss=True),
        },
        path,
    )
    return decoder


def test_load_mae_checkpoint_restores_encoder_and_returns_decoder(tmp_path: Path) -> None:
    source = tiny_vit(seed=1)
    path = tmp_path / "checkpoint-3.pth"
    decoder = write_mae(path, source.model.state_dict())
    fresh = tiny_vit(seed=2)
    x = images()
    with torch.no_grad():
        assert not torch.equal(fresh.model.forward_features(x), source.model.forward_features(x))
        returned = load_mae_checkpoint(fresh, path)
        torch.testing.assert_close(
            fresh.model.forward_features(x), source.model.forward_features(x), rtol=0, atol=0
        )
    assert returned.keys() == decoder.keys()
    for key, value in decoder.items():
        assert torch.equal(returned[key], value)


def test_load_mae_checkpoint_resamples_the_position_grid(tmp_path: Path) -> None:
    source = tiny_vit(seed=1)
    path = tmp_path / "mae.pth"
    write_mae(path, source.model.state_dict())
    bigger = tiny_vit(seed=2, img_size=48)
    load_mae_checkpoint(bigger, path)
    assert bigger.model.pos_embed.shape == (1, 1 + 36, D)
    assert torch.equal(bigger.model.cls_token, source.model.cls_token)
    assert torch.equal(bigger.model.pos_embed[:, 0], source.model.pos_embed[:, 0])
    assert torch.equal(
        bigger.model.blocks[11].mlp.fc2.weight, source.model.blocks[11].mlp.fc2.weight
    )


def test_load_mae_checkpoint_refuses_what_does_not_fit(tmp_path: Path) -> None:
    target = tiny_vit(seed=2)
    encoder = tiny_vit(seed=1).model.state_dict()

    wider = tmp_path / "small.pth"
    write_mae(wider, tiny_vit(seed=1, name="vit_small").model.state_dict())
    stray = tmp_path / "stray.pth"
    write_mae(stray, encoder, **{"extra_proj.weight": torch.zeros(3)})
    short = tmp_path / "short.pth"
    write_mae(short, {k: v for k, v in encoder.items() if not k.startswith("blocks.11.")})

    cases = (
        (wider, r"mismatched \(e\.g\. cls_token \[1, 1, 384\] vs \[1, 1, 192\]"),
        (stray, r"1 unexpected \(e\.g\. extra_proj\.weight\)"),
        (short, r"missing \(e\.g\. blocks\.11\."),
    )
    before = {k: v.clone() for k, v in target.model.state_dict().items()}
    for path, problem in cases:
        with pytest.raises(DabenchError, match=problem) as info:
            load_mae_checkpoint(target, path)
        assert str(path) in str(info.value)
    # nothing was loaded by a refused checkpoint
    after = target.model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    with pytest.raises(DabenchError, match="not found"):
        load_mae_checkpoint(target, tmp_path / "absent.pth")


def test_grad_checkpointing_gives_the_same_tokens_and_attention_still_backpropagates() -> None:
    backbone = tiny_vit()
    enc = TokenEncoder(backbone)
    x = images()
    plain, _ = enc.forward_masked(x, 0.5, generator=seeded(0))
    backbone.model.set_grad_checkpointing(True)
    checkpointed, _ = enc.forward_masked(x, 0.5, generator=seeded(0))
    torch.testing.assert_close(checkpointed, plain)
    _, cls = enc.cls_attention(x)
    cls.sum().backward()
    assert backbone.model.blocks[0].attn.qkv.weight.grad is not None


def test_forward_all_applies_dropouts_as_timm_does() -> None:
    model = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=SIZE,
        patch_size=PATCH,
        depth=2,
        num_classes=0,
        pos_drop_rate=0.5,
    ).train()
    backbone = Backbone(
        model, name="vit_tiny", out_channels=D, stride=PATCH, img_size=SIZE, is_vit=True
    )
    x = images()
    torch.manual_seed(0)
    ours = TokenEncoder(backbone).forward_all(x)
    torch.manual_seed(0)
    timms = model.forward_features(x)
    torch.manual_seed(1)
    assert not torch.equal(TokenEncoder(backbone).forward_all(x), ours)  # dropout is active
    torch.testing.assert_close(ours, timms, rtol=0, atol=0)
