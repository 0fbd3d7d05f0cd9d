"""Masked-image-modelling building blocks for Park et al. (paper 000): MAE pixel patches and
decoder, foreground-centric reconstruction (FCR, Eq. 2-3), background replacement with
unconstrained images, and attention regularisation (AR, Eq. 6).

Pure torch on tensors: the encoder (a timm ViT with MAE masking) lives elsewhere and hands
this module its visible tokens, ``ids_restore`` and masks. Conventions follow MAE
(facebookresearch/mae): patches are ordered row-major over the patch grid, the pixels inside a
patch row, column, channel; ``mask`` is [B, N] with 1 = removed, 0 = visible.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from bench.errors import DabenchError
from bench.models.backbones import fit_problems

NORM_PIX_EPS = 1e-6  # MAE's constant in the per-patch target normalisation
DECODER_HEAD_DIM = 32  # MAE ViT-B decoder: 512 channels / 16 heads


def _patch_grid(height: int, width: int, patch: int) -> tuple[int, int]:
    if patch < 1:
        raise DabenchError(f"patch size must be positive, got {patch}")
    if height % patch or width % patch:
        raise DabenchError(
            f"image size {height}x{width} is not divisible by the patch size {patch}"
        )
    return height // patch, width // patch


def patchify(images: Tensor, patch: int) -> Tensor:
    """[B, C, H, W] → [B, N, p²·C], N = (H/p)·(W/p) row-major; inside a patch: row, col, channel
    (MAE's 'nchpwq->nhwpqc'), so ``decoder_pred`` outputs of an MAE checkpoint line up."""
    if images.ndim != 4:
        raise DabenchError(f"patchify expects [B, C, H, W] images, got shape {tuple(images.shape)}")
    b, c, height, width = images.shape
    h, w = _patch_grid(height, width, patch)
    x = images.reshape(b, c, h, patch, w, patch)
    x = torch.einsum("nchpwq->nhwpqc", x)
    return x.reshape(b, h * w, patch * patch * c)


def unpatchify(patches: Tensor, patch: int, height: int, width: int) -> Tensor:
    """Inverse of :func:`patchify`: [B, N, p²·C] → [B, C, H, W]."""
    h, w = _patch_grid(height, width, patch)
    if patches.ndim != 3 or patches.shape[1] != h * w or patches.shape[2] % (patch * patch):
        raise DabenchError(
            f"unpatchify expects [B, {h * w}, p²·C] patches for a {height}x{width} image with "
            f"patch {patch}, got shape {tuple(patches.shape)}"
        )
    b = patches.shape[0]
    c = patches.shape[2] // (patch * patch)
    x = patches.reshape(b, h, w, patch, patch, c)
    x = torch.einsum("nhwpqc->nchpwq", x)
    return x.reshape(b, c, height, width)


def decoder_size_for(embed_dim: int) -> tuple[int, int]:
    """(decoder_dim, heads) of the MAE decoder for an encoder of width ``embed_dim``.

    Rule: decoder_dim = 2/3·embed_dim rounded to a multiple of 32 (at least 32), and
    heads = decoder_dim // 32. It reproduces the paper's (MAE's) 512-d, 16-head decoder for
    ViT-B (768) and keeps two things of that design for smaller encoders: the decoder is
    narrower than the encoder by the same ratio (so it stays the cheap part of pretraining),
    and each head keeps MAE's 32 channels (attention quality depends on head width, not head
    count). ViT-S 384 → (256, 8), ViT-Ti 192 → (128, 4). MAE itself keeps (512, 16) for
    ViT-L/H; the rule is meant for encoders up to ViT-B.
    """
    if embed_dim < 1:
        raise DabenchError(f"embed_dim must be positive, got {embed_dim}")
    units = max(1, (embed_dim * 2 + 48) // 96)  # round(embed_dim·2/3 / 32), half up
    decoder_dim = units * DECODER_HEAD_DIM
    return decoder_dim, decoder_dim // DECODER_HEAD_DIM


def _init_mae(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class MAEDecoder(nn.Module):
    """MAE's lightweight decoder: visible tokens (cls first) → per-patch pixels [B, N, p²·3].

    Attribute names match MAE's checkpoint keys (``decoder_embed``, ``mask_token``,
    ``decoder_pos_embed``, ``decoder_blocks``, ``decoder_norm``, ``decoder_pred``) so the
    decoder part of an MAE checkpoint loads with :func:`load_mae_decoder`. ``pos_embed`` is
    the caller's fixed [1, 1+N, decoder_dim] table (MAE: 2D sin-cos, zero cls row); it is kept
    as a persistent buffer so it is saved and moved with the module but never trained.
    ``depth`` 0 is allowed (embed → norm → pred), which makes the token bookkeeping testable.
    """

    def __init__(
        self,
        embed_dim: int,
        num_patches: int,
        patch: int,
        pos_embed: Tensor,
        decoder_dim: int = 512,
        depth: int = 1,
        heads: int = 16,
    ) -> None:
        super().__init__()
        if depth < 0 or num_patches < 1 or patch < 1:
            raise DabenchError(
                f"bad MAE decoder size: depth={depth}, num_patches={num_patches}, patch={patch}"
            )
        if decoder_dim % heads:
            raise DabenchError(f"decoder_dim {decoder_dim} is not divisible by heads {heads}")
        expected = (1, num_patches + 1, decoder_dim)
        if tuple(pos_embed.shape) != expected:
            raise DabenchError(
                f"decoder pos_embed must have shape {expected} (cls + {num_patches} patches), "
                f"got {tuple(pos_embed.shape)}"
            )
        self.embed_dim = embed_dim
        self.num_patches = num_patches
        self.patch = patch
        self.decoder_embed = nn.Linear(embed_dim, decoder_dim, bias=True)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.register_buffer("decoder_pos_embed", pos_embed.detach().clone().float())
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.decoder_blocks = nn.ModuleList(
            Block(decoder_dim, heads, mlp_ratio=4, qkv_bias=True, norm_layer=norm)
            for _ in range(depth)
        )
        self.decoder_norm = norm(decoder_dim)
        self.decoder_pred = nn.Linear(decoder_dim, patch * patch * 3, bias=True)
        self.apply(_init_mae)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, tokens: Tensor, ids_restore: Tensor) -> Tensor:
        """tokens [B, 1 + n_keep, embed_dim] (cls first, visible patches in shuffled order);
        ids_restore [B, N] (MAE: argsort of ids_shuffle) → predicted pixels [B, N, p²·3]."""
        n = self.num_patches
        if tokens.ndim != 3 or tokens.shape[-1] != self.embed_dim:
            raise DabenchError(
                f"decoder expects tokens [B, 1+n_keep, {self.embed_dim}], got {tuple(tokens.shape)}"
            )
        b, n_tokens = tokens.shape[:2]
        if tuple(ids_restore.shape) != (b, n):
            raise DabenchError(
                f"ids_restore must have shape {(b, n)}, got {tuple(ids_restore.shape)}"
            )
        if not 1 <= n_tokens <= n + 1:
            raise DabenchError(f"decoder got {n_tokens} tokens for {n} patches (+ cls)")
        x = self.decoder_embed(tokens)
        fill = self.mask_token.to(x.dtype).expand(b, n + 1 - n_tokens, -1)
        patches = torch.cat([x[:, 1:], fill], dim=1)
        index = ids_restore.long().unsqueeze(-1).expand(-1, -1, x.shape[-1])
        patches = torch.gather(patches, 1, index)
        x = torch.cat([x[:, :1], patches], dim=1) + self.decoder_pos_embed.to(x.dtype)
        for block in self.decoder_blocks:
            x = block(x)
        x = self.decoder_pred(self.decoder_norm(x))
        return x[:, 1:]


def _is_decoder_key(key: str) -> bool:
    return key == "mask_token" or key.startswith("decoder_")


def load_mae_decoder(decoder: MAEDecoder, state: Mapping[str, Tensor]) -> None:
    """Load MAE decoder weights strictly; raise one DabenchError naming every problem.

    ``state`` may be a whole MAE checkpoint ``model`` dict: keys that are not decoder keys
    (not ``mask_token`` / ``decoder_*``, i.e. the encoder's) are ignored. Among the decoder
    keys, missing, unexpected (e.g. an 8-block checkpoint into a 1-block decoder) and
    shape-mismatched ones (e.g. a 224-px pos embed into a 256-px decoder) are all refused.
    """
    own = decoder.state_dict()
    given = {k: v for k, v in state.items() if _is_decoder_key(k)}
    problems = fit_problems(given, own)
    if problems:
        raise DabenchError("MAE decoder checkpoint does not fit: " + "; ".join(problems))
    decoder.load_state_dict(given, strict=True)


def fcr_weights(masks: Tensor, patch: int, alpha: float) -> Tensor:
    """Foreground-centric patch weights, paper Eq. 2 → [B, N], mean 1 per image.

    w*_i is the foreground fraction of patch i (P×P average pool, stride P), ŵ_i =
    exp(α(w*_i − 0.5)) and w_i = N·ŵ_i / Σ_k ŵ_k. That is N·softmax(α(w* − 0.5)) over the
    patches of one image, which is how it is computed (no overflow for large α). α = 0 gives
    all ones (the paper's "w/o FCR"). Patch order is :func:`patchify`'s.
    """
    if masks.ndim == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    if masks.ndim != 3:
        raise DabenchError(f"masks must be [B, H, W] or [B, 1, H, W], got {tuple(masks.shape)}")
    _patch_grid(masks.shape[1], masks.shape[2], patch)
    s = masks.float()
    if s.numel() and (s.min() < 0 or s.max() > 1):
        raise DabenchError("foreground masks must lie in [0, 1] (foreground = 1)")
    fraction = F.avg_pool2d(s.unsqueeze(1), kernel_size=patch, stride=patch).flatten(1)
    return fraction.shape[1] * torch.softmax(alpha * (fraction - 0.5), dim=1)


def reconstruction_losses(
    pred: Tensor,
    images: Tensor,
    mask: Tensor,
    weights: Tensor | None,
    patch: int,
    norm_pix: bool,
) -> dict[str, Tensor]:
    """Pixel reconstruction losses on removed patches; returns {"wmae", "mae"} (float32).

    * "wmae" is paper Eq. 3 as printed: (1/N) Σ_i w_i·m_i·||x̂_i − x_i||²₂ with the squared
      L2 summed over the p²·3 values of a patch, averaged over the batch (weights None ≡ 1).
    * "mae" is MAE's own loss: per-patch mean squared error, averaged over removed patches
      only, unweighted (for logging and comparison with MAE).

    For w ≡ 1 and the same number R of removed patches in every image,
    wmae = p²·3 · (R/N) · mae exactly (= 768·0.75 = 576·mae for ViT-B/16 at r = 0.75): Eq. 3
    rescales MAE's loss by a constant, which matters for the effective learning rate only.
    ``norm_pix`` normalises each target patch by its mean and unbiased variance (MAE's
    norm_pix_loss, eps 1e-6); the paper does not say whether it uses it.
    """
    if images.ndim != 4:
        raise DabenchError(f"images must be [B, 3, H, W], got {tuple(images.shape)}")
    target = patchify(images, patch).float()
    pred = pred.float()
    if pred.shape != target.shape:
        raise DabenchError(
            f"prediction shape {tuple(pred.shape)} does not match the image patches "
            f"{tuple(target.shape)}"
        )
    b, n, d = target.shape
    if tuple(mask.shape) != (b, n):
        raise DabenchError(f"mask must have shape {(b, n)}, got {tuple(mask.shape)}")
    if weights is not None and tuple(weights.shape) != (b, n):
        raise DabenchError(f"weights must have shape {(b, n)}, got {tuple(weights.shape)}")
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + NORM_PIX_EPS).sqrt()
    squared = (pred - target).pow(2).sum(dim=-1)  # [B, N]: ||x̂_i − x_i||²₂
    removed = mask.float()
    weighted = removed if weights is None else weights.float() * removed
    wmae = (weighted * squared).sum(dim=1).div(n).mean()
    # clamp: with nothing removed the loss is 0 rather than 0/0
    mae = (squared / d * removed).sum() / removed.sum().clamp_min(1e-12)
    return {"wmae": wmae, "mae": mae}


def replace_background(
    images: Tensor,
    masks: Tensor,
    backgrounds: Tensor,
    prob: float,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Paste a chosen subset of images onto unconstrained backgrounds: x = s⊙x + (1 − s)⊙x_c.

    Each image is chosen independently with probability ``prob`` (drawn with ``generator``).
    ``images`` are uint8 [B, H, W, 3] (the shard format; the result stays uint8) or float
    [B, 3, H, W]; ``backgrounds`` have the same shape and dtype (resizing is the caller's);
    ``masks`` [B, H, W] in [0, 1], foreground = 1. Where s == 1 the output equals the input
    and where s == 0 the background, exactly (1·x + 0·x_c is exact in float; uint8 values
    round-trip through float32); only fractional s is rounded back to uint8.
    Returns (new images, bool [B] of the replaced ones).
    """
    if not 0.0 <= prob <= 1.0:
        raise DabenchError(f"background replacement probability must be in [0, 1], got {prob}")
    if images.ndim != 4:
        raise DabenchError(f"images must be 4-D, got shape {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        if images.shape[-1] != 3:
            raise DabenchError(f"uint8 images must be [B, H, W, 3], got {tuple(images.shape)}")
        spatial = tuple(images.shape[1:3])
    elif images.is_floating_point():
        if images.shape[1] != 3:
            raise DabenchError(f"float images must be [B, 3, H, W], got {tuple(images.shape)}")
        spatial = tuple(images.shape[2:])
    else:
        raise DabenchError(f"images must be uint8 or floating point, got {images.dtype}")
    if backgrounds.shape != images.shape or backgrounds.dtype != images.dtype:
        raise DabenchError(
            f"backgrounds {tuple(backgrounds.shape)} {backgrounds.dtype} must match the images "
            f"{tuple(images.shape)} {images.dtype}"
        )
    b = images.shape[0]
    if tuple(masks.shape) != (b, *spatial):
        raise DabenchError(f"masks must have shape {(b, *spatial)}, got {tuple(masks.shape)}")

    device = generator.device if generator is not None else images.device
    chosen = (torch.rand(b, generator=generator, device=device) < prob).to(images.device)
    out = images.clone()
    if not bool(chosen.any()):
        return out, chosen
    s = masks[chosen].float()
    if s.min() < 0 or s.max() > 1:
        raise DabenchError("foreground masks must lie in [0, 1] (foreground = 1)")
    if images.dtype == torch.uint8:
        s = s.unsqueeze(-1)
        blend = s * images[chosen].float() + (1 - s) * backgrounds[chosen].float()
        out[chosen] = blend.round_().clamp_(0, 255).to(torch.uint8)
    else:
        s = s.unsqueeze(1).to(images.dtype)
        out[chosen] = s * images[chosen] + (1 - s) * backgrounds[chosen]
    return out, chosen


def attention_regularisation(a_trainable: Tensor, a_frozen: Tensor) -> Tensor:
    """Paper Eq. 6: L1 distance between class-token attention maps [B, L, N] (L blocks, heads
    averaged, cls→cls entry dropped) of the trainable encoder and its frozen copy f^A.

    The paper writes ||ā^E − ā^A||₁ without saying sum or mean; this is the mean over all
    entries. Each row sums to about 1, so a sum over L·N = 3072 entries would make
    λ_attn = 100 dwarf L_kpt, while the mean keeps λ_attn·L_attn on a usable scale.
    ``a_frozen`` is detached: only the trainable encoder is regularised.
    """
    if a_trainable.ndim != 3 or a_trainable.shape != a_frozen.shape:
        raise DabenchError(
            "attention maps must both be [B, L, N] of the same shape, got "
            f"{tuple(a_trainable.shape)} and {tuple(a_frozen.shape)}"
        )
    return (a_trainable - a_frozen.detach()).abs().mean()
