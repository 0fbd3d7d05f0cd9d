"""Token-level access to a timm ViT backbone: MAE masking, masked encoding, class-token
attention, MAE's fixed sin-cos position table and loading of MAE checkpoints.

The wrapped model is the backbone's own ``timm`` VisionTransformer: every parameter (class
token included) is shared, never copied, so pretraining or regularising through a
:class:`TokenEncoder` trains the encoder the pose network uses.

Masked encoding follows facebookresearch/mae ``models_mae.py`` (``forward_encoder``):
patch embedding + position embedding, per-sample random masking, class token prepended,
blocks, final norm.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from timm.models import checkpoint_seq
from torch import Tensor, nn

from bench.errors import DabenchError
from bench.models.backbones import (
    _VIT_MODELS,
    Backbone,
    _read_state_dict,
    _resample_pos_embed,
    fit_problems,
)

# Keys of a full MAE pretraining checkpoint that belong to its decoder (models_mae.py).
_DECODER_PREFIXES = ("decoder_", "mask_token")


@dataclass(frozen=True)
class Masking:
    """One MAE random masking of a batch of token sequences.

    ``ids_keep`` [B, num_keep]: indices (original order) of the kept tokens, in shuffle
    order; ``ids_shuffle`` [B, N]: kept first, then removed; ``ids_restore`` [B, N]: its
    inverse permutation (a decoder un-shuffles ``[kept, mask tokens]`` with it); ``mask``
    [B, N] float in the original token order, 1 = removed, 0 = kept (MAE's convention, so
    a loss weighted by it averages over removed patches).
    """

    ids_keep: Tensor
    ids_shuffle: Tensor
    ids_restore: Tensor
    mask: Tensor
    num_keep: int


def num_kept(num_tokens: int, ratio: float) -> int:
    """Tokens kept of ``num_tokens`` at mask ``ratio``: round(N·(1−r)), at least one."""
    # MAE uses int(), which truncates float error downwards: 320·(1−0.8) is
    # 63.999999999999986, so int() keeps 63 tokens where 64 are meant.
    return max(1, min(num_tokens, round(num_tokens * (1.0 - ratio))))


def random_masking(
    batch: int,
    num_tokens: int,
    ratio: float,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Masking:
    """MAE's per-sample random masking of ``num_tokens`` tokens at mask ``ratio`` in [0, 1).

    Noise ~ U(0,1) [B,N] is drawn from ``generator`` (default: the global RNG); each
    sample keeps its tokens of smallest noise, so samples get independent kept sets.
    """
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise DabenchError(f"batch must be a positive integer, got {batch!r}")
    if isinstance(num_tokens, bool) or not isinstance(num_tokens, int) or num_tokens < 1:
        raise DabenchError(f"num_tokens must be a positive integer, got {num_tokens!r}")
    if (
        isinstance(ratio, bool)
        or not isinstance(ratio, int | float)
        or not math.isfinite(ratio)
        or not 0.0 <= ratio < 1.0
    ):
        raise DabenchError(f"mask ratio must be a number in [0, 1), got {ratio!r}")
    if device is None and generator is not None:
        device = generator.device
    num_keep = num_kept(num_tokens, float(ratio))
    noise = torch.rand(batch, num_tokens, generator=generator, device=device)
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    # built in shuffle order (kept first), then put back in the original token order
    mask = torch.ones(batch, num_tokens, device=noise.device)
    mask[:, :num_keep] = 0.0
    mask = torch.gather(mask, 1, ids_restore)
    return Masking(
        ids_keep=ids_shuffle[:, :num_keep],
        ids_shuffle=ids_shuffle,
        ids_restore=ids_restore,
        mask=mask,
        num_keep=num_keep,
    )


def gather_tokens(tokens: Tensor, ids: Tensor) -> Tensor:
    """tokens [B,N,D], indices [B,K] -> the indexed tokens [B,K,D]."""
    return torch.gather(tokens, 1, ids.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


class TokenEncoder(nn.Module):
    """A ViT ``Backbone`` seen as token sequences (see the module docstring)."""

    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        if not getattr(backbone, "is_vit", False):
            raise DabenchError(
                f"masked image modelling needs a ViT backbone, got "
                f"{getattr(backbone, 'name', type(backbone).__name__)}; "
                f"valid: {', '.join(_VIT_MODELS)}"
            )
        model = backbone.model
        name = backbone.name
        # Only the plain layout [cls, patches] with pos_embed covering both is supported:
        # registers, a missing class token, a class token outside pos_embed or a dynamic grid
        # would each need their own token bookkeeping.
        if getattr(model, "cls_token", None) is None or model.num_prefix_tokens != 1:
            raise DabenchError(
                f"{name}: token access needs exactly one class token and no register tokens, "
                f"got {model.num_prefix_tokens} prefix tokens "
                f"(class token: {getattr(model, 'cls_token', None) is not None})"
            )
        if getattr(model, "reg_token", None) is not None:
            raise DabenchError(f"{name}: ViTs with register tokens are not supported")
        if getattr(model, "no_embed_class", False) or getattr(model, "dynamic_img_size", False):
            raise DabenchError(
                f"{name}: ViTs without a class position embedding or with dynamic image "
                f"size are not supported"
            )
        if model.pos_embed is None or model.pos_embed.shape[1] != 1 + self._grid(backbone) ** 2:
            raise DabenchError(f"{name}: position embedding does not cover [cls, patches]")
        self.backbone = backbone

    @staticmethod
    def _grid(backbone: Backbone) -> int:
        grid = tuple(backbone.model.patch_embed.grid_size)
        if grid[0] != grid[1]:
            raise DabenchError(f"{backbone.name}: non-square patch grid {grid}")
        return int(grid[0])

    @property
    def model(self) -> nn.Module:
        return self.backbone.model

    @property
    def num_patches(self) -> int:
        return self._grid(self.backbone) ** 2

    @property
    def embed_dim(self) -> int:
        return int(self.model.embed_dim)

    @property
    def depth(self) -> int:
        return len(self.model.blocks)

    def patch_tokens(self, x: Tensor) -> Tensor:
        """Normalised images [B,3,H,W] -> patch embeddings + their position embedding [B,N,D]."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise DabenchError(
                f"{self.backbone.name}: expected images [B,3,H,W], got {list(x.shape)}"
            )
        size = self.backbone.img_size
        if tuple(x.shape[-2:]) != (size, size):
            raise DabenchError(
                f"{self.backbone.name}: built for {size}×{size} images, "
                f"got {x.shape[-2]}×{x.shape[-1]}"
            )
        model = self.model
        return model.patch_embed(x) + model.pos_embed[:, model.num_prefix_tokens :]

    def _with_cls(self, patches: Tensor) -> Tensor:
        model = self.model
        cls = (model.cls_token + model.pos_embed[:, :1]).expand(patches.shape[0], -1, -1)
        # timm applies pos_drop to the sum of tokens and pos_embed (elementwise, so applying
        # it after the concatenation is the same)
        return model.pos_drop(torch.cat([cls, patches], dim=1))

    def _run_blocks(self, tokens: Tensor) -> Tensor:
        model = self.model
        if getattr(model, "grad_checkpointing", False) and not torch.jit.is_scripting():
            tokens = checkpoint_seq(model.blocks, tokens)
        else:
            tokens = model.blocks(tokens)
        return model.norm(tokens)

    def _embed_all(self, x: Tensor) -> Tensor:
        # timm's order in forward_features: embed, pos_drop, patch_drop, norm_pre
        tokens = self._with_cls(self.patch_tokens(x))
        return self.model.norm_pre(self.model.patch_drop(tokens))

    def forward_all(self, x: Tensor) -> Tensor:
        """All tokens after the final norm, class token first: [B, 1+N, D]
        (the same as the timm model's ``forward_features``)."""
        return self._run_blocks(self._embed_all(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_all(x)

    def forward_masked(
        self, x: Tensor, ratio: float, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Masking]:
        """Encode only a random subset of patches (MAE): tokens [B, 1+num_keep, D], class
        token first, kept patches in ``masking.ids_keep`` order; and the masking."""
        patches = self.patch_tokens(x)
        masking = random_masking(
            patches.shape[0], patches.shape[1], ratio, generator=generator, device=patches.device
        )
        kept = gather_tokens(patches, masking.ids_keep)
        # patch_drop (timm's PatchDropout) is skipped: MAE's masking takes its place, and a
        # second random drop would break the [1+num_keep] layout the decoder relies on
        tokens = self.model.norm_pre(self._with_cls(kept))
        return self._run_blocks(tokens), masking

    def attention_rows(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """All tokens [B, 1+N, D] and the class token's raw attention rows [B, L, heads, 1+N]
        (post-softmax, cls→cls entry included, so each row sums to 1), with autograd graph."""
        tokens = self._embed_all(x)
        blocks = list(self.model.blocks)
        for i, blk in enumerate(blocks):
            attn = getattr(blk, "attn", None)
            if not hasattr(attn, "fused_attn") or not isinstance(
                getattr(attn, "attn_drop", None), nn.Module
            ):
                raise DabenchError(
                    f"{self.backbone.name}: block {i} has no timm Attention with attn_drop; "
                    f"cannot read its attention"
                )
        rows: list[Tensor] = []

        def capture(_module: nn.Module, args: tuple[Tensor, ...], _output: Tensor) -> None:
            # the input of attn_drop is the post-softmax attention [B, heads, T, T], before
            # any dropout; keep only the class token's query row
            rows.append(args[0][:, :, 0])

        previous = [blk.attn.fused_attn for blk in blocks]
        handles = []
        try:
            for blk in blocks:
                # the fused kernel never materialises the probabilities; the eager path
                # computes softmax then passes it through attn_drop, where the hook sees it
                blk.attn.fused_attn = False
                handles.append(blk.attn.attn_drop.register_forward_hook(capture))
            # block by block, never through checkpoint_seq even with grad checkpointing on:
            # checkpointing recomputes the blocks during backward, after the fused flags are
            # restored, so the recomputed graph would not match the one that was captured
            for blk in blocks:
                tokens = blk(tokens)
            tokens = self.model.norm(tokens)
        finally:
            for handle in handles:
                handle.remove()
            for blk, flag in zip(blocks, previous, strict=True):
                blk.attn.fused_attn = flag
        if len(rows) != len(blocks):
            raise DabenchError(
                f"{self.backbone.name}: captured {len(rows)} attention maps for "
                f"{len(blocks)} blocks; the attention implementation bypasses attn_drop"
            )
        return tokens, torch.stack(rows, dim=1)

    def cls_attention(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """All tokens [B, 1+N, D] and the class token's attention to the patches per block,
        heads averaged: [B, L, N] (cls→cls dropped, so rows sum to slightly under 1)."""
        tokens, rows = self.attention_rows(x)
        return tokens, rows[..., 1:].mean(dim=2)


def _sincos_1d(dim: int, positions: Tensor) -> Tensor:
    """[M] positions -> [M, dim]: sin(pos·ω_d) for d < dim/2, then cos(pos·ω_d), with
    ω_d = 1/10000^(d/(dim/2))."""
    half = dim // 2
    omega = 1.0 / 10000.0 ** (torch.arange(half, dtype=torch.float64) / half)
    angles = positions.to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def sincos_pos_embed(embed_dim: int, grid_size: int, cls_token: bool = True) -> Tensor:
    """MAE's fixed 2-D sin-cos position table [1, (1+)grid², D] (float32).

    Tokens in row-major order (as timm's patch embedding flattens them); the first D/2
    channels encode the column (x) index, the last D/2 the row (y) index, matching
    facebookresearch/mae ``get_2d_sincos_pos_embed`` so official MAE weights line up. The
    class token's row is zeros.
    """
    if embed_dim <= 0 or embed_dim % 4:
        raise DabenchError(f"sin-cos embedding needs a positive multiple of 4, got {embed_dim}")
    if grid_size <= 0:
        raise DabenchError(f"grid_size must be positive, got {grid_size}")
    rows, cols = torch.meshgrid(torch.arange(grid_size), torch.arange(grid_size), indexing="ij")
    table = torch.cat(
        [
            _sincos_1d(embed_dim // 2, cols.reshape(-1)),
            _sincos_1d(embed_dim // 2, rows.reshape(-1)),
        ],
        dim=1,
    )
    if cls_token:
        table = torch.cat([torch.zeros(1, embed_dim, dtype=table.dtype), table], dim=0)
    # computed in float64 like MAE's numpy code, stored as float32 like its Parameter
    return table.to(torch.float32).unsqueeze(0)


def use_sincos_pos_embed(backbone: Backbone) -> None:
    """Overwrite ``backbone``'s position embedding with MAE's sin-cos table and freeze it."""
    encoder = TokenEncoder(backbone)
    pos_embed = backbone.model.pos_embed
    table = sincos_pos_embed(encoder.embed_dim, TokenEncoder._grid(backbone), cls_token=True)
    with torch.no_grad():
        pos_embed.copy_(table.to(device=pos_embed.device, dtype=pos_embed.dtype))
    pos_embed.requires_grad_(False)


def load_mae_checkpoint(backbone: Backbone, path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Load a local MAE checkpoint (facebookresearch ``mae_pretrain_vit_*.pth`` or a full
    pretraining checkpoint: {"model": state dict, "optimizer", "epoch", "args"}) into
    ``backbone``; returns its decoder entries (``decoder_*``, ``mask_token``) by name.

    The encoder entries load strictly, the position grid resampled if it differs. Loaded
    directly rather than through timm: timm's checkpoint filter takes any state dict with a
    ``mask_token`` for DINOv2 and converts it.
    """
    TokenEncoder(backbone)  # the ViT checks
    path = Path(path)
    state = _read_state_dict(path)
    target = backbone.model.state_dict()
    encoder: dict[str, Tensor] = {}
    decoder: dict[str, Tensor] = {}
    unexpected: list[str] = []
    for key, value in state.items():
        if key in target:
            encoder[key] = value
        elif key.startswith(_DECODER_PREFIXES):
            decoder[key] = value
        elif not key.startswith(backbone.ignored_keys):  # heads of fine-tuned checkpoints
            unexpected.append(key)
    if "pos_embed" in encoder:
        encoder["pos_embed"] = _resample_pos_embed(
            encoder["pos_embed"], target["pos_embed"], backbone.model.num_prefix_tokens
        )
    parts = fit_problems(encoder, target, unexpected)
    if parts:
        raise DabenchError(
            f"{path}: not an MAE checkpoint of backbone {backbone.name} "
            f"(width {backbone.model.embed_dim}, {len(backbone.model.blocks)} blocks): "
            + "; ".join(parts)
        )
    # requires_grad is a property of the parameter, not the state: a frozen sin-cos
    # pos_embed stays frozen
    backbone.model.load_state_dict(encoder, strict=True)
    return decoder
