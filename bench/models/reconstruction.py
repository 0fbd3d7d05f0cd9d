"""Geometric reconstruction of Lin et al. (NeurIPS 2023, Sec. 3.3.2; supp. Sec. A): bone maps
(Eq. 6), per-bone affines by a 2×2 eigen-decomposition (Eq. 7), their driving→base relative
transform, the warping estimation module W (Eq. 8) and the generation module G.

No official code exists; the building blocks follow snap-research/articulated-animation
(region affines from heatmap covariances, the pixel-wise flow hourglass, the Johnson
generator with warped skips), re-written here.

Coordinates: everything works in normalised grid coordinates x, y ∈ [−1, 1], x first (see
:mod:`bench.models.skeleton_maps`, which also holds the bone maps of Eq. 6, shared with Mask
as Supervision's skeleton mask). Because the grid is resolution-free, a keypoint, a bone
map's σ and an affine mean the same thing at every map size.

Direction of the warp: ``grid_sample`` pulls, so a flow holds, for every pixel of the
*driving* frame, the location in the *base* image to read from (D^{drv←b} of the paper).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.errors import DabenchError
from bench.models.skeleton_maps import (
    coordinate_grid,
)

# below this squared eigen-gap (covariance units², far under float32 resolution of any real
# bone) the covariance is treated as exactly isotropic, so no sqrt is taken of a zero
_TINY = 1e-30
# relative eigen-gap below which the eigenvector gradient is damped (see _principal_axes)
_GAP_DAMPING = 1e-3


# --- bone maps and affines (Eqs. 6–7) ----------------------------------------------------------


def bone_affines(maps: Tensor, centres: Tensor, eps: float = 1e-6) -> Tensor:
    """Eq. 7: A_j = [U_j S_j^{1/2}, μ_j] [B,J,2,3] from bone maps [B,J,h,w] and the bone
    centres μ_j [B,J,2] (grid coordinates; the paper's μ_j is the midpoint of parent and
    child).

    * Each map is first normalised to sum 1 over its pixels, as articulated-animation
      normalises its (softmax) region heatmaps: otherwise Σ_j would scale with the bone's
      length and thickness and the affine would measure "mass" rather than shape.
    * Σ_j = Σ_p b̄_j(p)(p − μ_j)(p − μ_j)ᵀ about the given centre (not the map's own mean,
      which differs when the image border clips the bone), plus ``eps``·I so that A_j stays
      invertible for a map with no spread (e.g. a bone entirely off the image).
    * Σ_j is symmetric positive definite, so its SVD is its eigen-decomposition; we compute
      it in closed form (:func:`_principal_axes`) instead of ``torch.svd``, whose gradient
      is NaN/inf for equal singular values (a round blob, a zero-length bone).
    * Sign convention: U_j is the rotation by θ_j ∈ (−π/2, π/2] whose first column is the
      major axis — so the first column has x ≥ 0 and det U_j = +1. The remaining 180°
      ambiguity of an axis is resolved for pairs in :func:`relative_affines`.
    """
    if maps.ndim != 4:
        raise DabenchError(f"maps must be [B,J,h,w], got {list(maps.shape)}")
    if centres.shape != (*maps.shape[:2], 2):
        raise DabenchError(
            f"centres must be [B,J,2] = {[*maps.shape[:2], 2]}, got {list(centres.shape)}"
        )
    h, w = maps.shape[-2:]
    weights = maps / maps.sum(dim=(-2, -1), keepdim=True).clamp_min(eps)
    grid = coordinate_grid(h, w, maps.device, maps.dtype)
    dx = grid[..., 0] - centres[..., 0, None, None]  # [B,J,h,w]
    dy = grid[..., 1] - centres[..., 1, None, None]
    sxx = (weights * dx * dx).sum(dim=(-2, -1)) + eps
    syy = (weights * dy * dy).sum(dim=(-2, -1)) + eps
    sxy = (weights * dx * dy).sum(dim=(-2, -1))
    rotation, (lam1, lam2) = _principal_axes(sxx, sxy, syy, eps)
    scale = torch.stack([lam1.clamp_min(eps).sqrt(), lam2.clamp_min(eps).sqrt()], dim=-1)
    linear = rotation * scale[..., None, :]  # U·diag(√λ): scale the columns
    return torch.cat([linear, centres[..., None]], dim=-1)


def _principal_axes(
    sxx: Tensor, sxy: Tensor, syy: Tensor, eps: float
) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """Closed-form eigen-decomposition of the symmetric 2×2 matrices [[sxx, sxy], [sxy, syy]]:
    (U [...,2,2], (λ1, λ2)) with λ1 ≥ λ2 and U the rotation by θ = ½·atan2(2·sxy, sxx − syy).

    Gradient safety at (near-)equal eigenvalues, where the eigenvector is undefined:
    * the half gap r = √(((sxx − syy)/2)² + sxy²) is taken through a double ``where``, so
      r = 0 exactly gives a zero (not NaN) gradient; λ = mean ± r has bounded gradients
      elsewhere (|∂r/∂s| ≤ 1);
    * θ's true gradient is proportional to 1/r (the 1/(λ1 − λ2) of eigenvector
      derivatives), and atan2's backward is 0/0 = NaN at r = 0. We keep θ's value exact
      but damp its gradient to r/(r² + κ²) instead of 1/r (Wang et al., "Backpropagation-
      friendly eigendecomposition", NeurIPS 2019), with κ = eps + 10⁻³·mean eigenvalue:
      untouched for any bone whose anisotropy exceeds ~0.1 %, bounded by 1/(2κ) for a blob.
    """
    half_diff = 0.5 * (sxx - syy)
    mean = 0.5 * (sxx + syy)
    r2 = half_diff * half_diff + sxy * sxy
    gapped = r2 > _TINY
    r = torch.where(
        gapped, torch.sqrt(torch.where(gapped, r2, torch.ones_like(r2))), torch.zeros_like(r2)
    )
    lam1 = mean + r
    lam2 = mean - r

    x0, y0, r0 = half_diff.detach(), sxy.detach(), r.detach()
    kappa2 = (eps + _GAP_DAMPING * mean.detach().abs()) ** 2
    # value: atan2(y0, x0) (exact; the surrogate term below is identically 0 in value);
    # gradient: (x0·dy − y0·dx)/(r0² + κ²), the damped derivative of atan2(y, x)
    angle = torch.atan2(y0, x0) + (x0 * sxy - y0 * half_diff) / (r0 * r0 + kappa2)
    theta = 0.5 * angle
    cos, sin = torch.cos(theta), torch.sin(theta)
    rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    return rotation, (lam1, lam2)


def relative_affines(driving: Tensor, base: Tensor) -> Tensor:
    """Per-bone map from driving-frame to base-frame coordinates, [B,J,2,3]:
    z_b = L (z − μ_d) + μ_b with L = A_b A_d⁻¹ (2×2 parts; μ the third columns).

    S001 writes A^{drv←b} = A^{drv←ref}(A^{b←ref})⁻¹; we implement the backward direction,
    driving pixel → base location, because ``grid_sample`` pulls (articulated-animation's
    ``create_sparse_motions``). The result, applied to [z; 1], is the sparse motion of Eq. 8.

    Sign fix (articulated-animation's ``revert_axis_swap``): L is multiplied by the sign of
    its [0, 0] entry (sign(0) = 1). A bone map is symmetric under a 180° turn about its
    centre, so each A's axes are only defined up to sign; when the base and driving bones
    get opposite choices, L contains a spurious 180° rotation and would flip the limb. The
    fix picks, of the two, the transform whose rotation is within ±90°.

    A_d must be invertible; those of :func:`bone_affines` are (``eps``·I).
    """
    if driving.shape != base.shape or driving.shape[-2:] != (2, 3):
        raise DabenchError(
            f"driving {list(driving.shape)} and base {list(base.shape)} must both be [...,2,3]"
        )
    a, b = driving[..., 0, 0], driving[..., 0, 1]
    c, d = driving[..., 1, 0], driving[..., 1, 1]
    det = a * d - b * c
    inverse = torch.stack([torch.stack([d, -b], -1), torch.stack([-c, a], -1)], -2)
    inverse = inverse / det[..., None, None]
    linear = base[..., :2] @ inverse
    sign = torch.where(linear[..., 0:1, 0:1] >= 0, 1.0, -1.0).to(linear.dtype)
    linear = linear * sign
    shift = base[..., 2] - (linear @ driving[..., 2:3])[..., 0]
    return torch.cat([linear, shift[..., None]], dim=-1)


# --- warping ----------------------------------------------------------------------------------


def warp(x: Tensor, grid: Tensor, padding_mode: str = "border") -> Tensor:
    """Sample ``x`` [B,C,h,w] at ``grid`` [B,h',w',2] (grid coordinates), -> [B,C,h,w].

    A grid of another size is resized to x's size first (bilinear, align_corners=False, on
    the channel-first field). We resize the *displacement* (grid minus the identity grid of
    its own size) and add x's identity grid back, rather than the absolute grid as
    articulated-animation does: the identity then stays exactly the identity at every size,
    and the border pixels are not pulled inwards by the clamping of bilinear resizing.

    ``padding_mode`` "border" (default): a location outside the base frame reads the
    nearest edge pixel. Base and driving frames come from one video with one background, so
    the edge is a better guess than black, and zeros would inject values that mean
    "nothing" only in image space, not in the BN-normalised feature maps; the occlusion map
    C lets G inpaint where neither is right. "zeros" is articulated-animation's choice.
    """
    if x.ndim != 4 or grid.ndim != 4 or grid.shape[-1] != 2 or grid.shape[0] != x.shape[0]:
        raise DabenchError(
            f"warp takes x [B,C,h,w] and grid [B,h,w,2], got {list(x.shape)} and {list(grid.shape)}"
        )
    grid = _resize_grid(grid, (x.shape[-2], x.shape[-1]))
    return F.grid_sample(
        x, grid.to(x.dtype), mode="bilinear", padding_mode=padding_mode, align_corners=False
    )


def _resize_grid(grid: Tensor, size: tuple[int, int]) -> Tensor:
    h, w = grid.shape[1:3]
    if (h, w) == tuple(size):
        return grid
    old = coordinate_grid(h, w, grid.device, grid.dtype)
    new = coordinate_grid(size[0], size[1], grid.device, grid.dtype)
    disp = (grid - old).permute(0, 3, 1, 2)
    disp = F.interpolate(disp, size=size, mode="bilinear", align_corners=False)
    return disp.permute(0, 2, 3, 1) + new


def _resize_map(x: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


# --- shared blocks ----------------------------------------------------------------------------


def _conv_bn_relu(in_channels: int, out_channels: int, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def _down(x: Tensor) -> Tensor:
    # ceil mode: a side of 1 (or an odd side) still pools, so no input is too small for the
    # number of levels; partial windows average only the pixels they cover
    return F.avg_pool2d(x, 2, ceil_mode=True)


def _up(x: Tensor, size: Sequence[int]) -> Tensor:
    # nearest ×2 as articulated-animation's UpBlock2d, to the skip's exact size so that
    # odd sides and levels that ceil-mode pooling kept at 1 px line up again
    return F.interpolate(x, size=tuple(size), mode="nearest")


def _check_channels(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or value < 1:
            raise DabenchError(f"{name} must be a positive integer, got {value!r}")


def _check_counts(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or value < 0:
            raise DabenchError(f"{name} must be a non-negative integer, got {value!r}")


class _Hourglass(nn.Module):
    """articulated-animation's ``Hourglass``: ``blocks`` down blocks (conv3×3–BN–ReLU–
    AvgPool 2×2) with channels min(max, channels·2^(i+1)), then ``blocks`` up blocks
    (nearest ×2–conv3×3–BN–ReLU) each followed by concatenation with the encoder map of its
    resolution (the last one with the input). Output channels: channels + in_channels."""

    def __init__(self, in_channels: int, channels: int, max_channels: int, blocks: int) -> None:
        super().__init__()

        def width(i: int) -> int:
            return min(max_channels, channels * 2**i)

        self.down = nn.ModuleList(
            _conv_bn_relu(in_channels if i == 0 else width(i), width(i + 1)) for i in range(blocks)
        )
        self.up = nn.ModuleList(
            _conv_bn_relu((1 if i == blocks - 1 else 2) * width(i + 1), width(i))
            for i in reversed(range(blocks))
        )
        self.out_channels = width(0) + in_channels

    def forward(self, x: Tensor) -> Tensor:
        feats = [x]
        for block in self.down:
            feats.append(_down(block(feats[-1])))
        out = feats.pop()
        for block in self.up:
            skip = feats.pop()
            out = torch.cat([block(_up(out, skip.shape[-2:])), skip], dim=1)
        return out


# --- W: dense motion (Eq. 8) ------------------------------------------------------------------


class DenseMotion(nn.Module):
    """The warping estimation module W (Eq. 8; supp. Sec. A): per-pixel bone masks and the
    occlusion (inpainting) map from the base image and the bone maps of both frames, and the
    flow D^{drv←b} they make from the relative bone affines.

    * Input: concat(base image, base bone maps, driving bone maps), as the paper lists
      (I^b, B^b, B^drv). articulated-animation instead feeds, per region, the difference of
      Gaussians at the driving and source regions and the source image warped by that
      region's affine; we follow the paper.
    * Hourglass: articulated-animation's (``channels`` 64, ``max_channels`` 1024, ``blocks``
      5 as its config): the encoder's i-th block outputs min(max, channels·2^(i+1)), the
      decoder mirrors it and ends with the input concatenated (see :class:`_Hourglass`).
      Average pooling, as its DownBlock2d (the supplement says only "pool").
    * Small inputs: pooling uses ceil mode and the decoder upsamples to each skip's exact
      size, so every input size works with all ``blocks`` levels (at 16×16 the two deepest
      of 5 run at 1×1) and every parameter is always used (no dead weights under DDP). In
      training mode BatchNorm needs more than one value per channel, so a batch of 1 fails
      once the deepest level is 1×1 — use a batch ≥ 2 (or eval mode) for tiny inputs.
    * Heads: two 7×7 convs (padding 3, as articulated-animation): J+1 mask logits, softmax
      over channels with channel 0 the background, and the occlusion map C (sigmoid).
    * Flow: D(p) = M_0(p)·p + Σ_{j≥1} M_j(p)·(A_j [p; 1]), the background the identity
      (no background motion predictor); A_j from :func:`relative_affines` map driving to
      base coordinates, so the flow is a sampling grid for ``grid_sample`` on the base.

    The caller passes everything at the motion resolution (H/4 in the paper), having
    downsampled the base image itself.
    """

    def __init__(
        self,
        num_bones: int,
        channels: int = 64,
        max_channels: int = 1024,
        blocks: int = 5,
        image_channels: int = 3,
    ) -> None:
        super().__init__()
        _check_channels(
            num_bones=num_bones,
            channels=channels,
            max_channels=max_channels,
            blocks=blocks,
            image_channels=image_channels,
        )
        self.num_bones = num_bones
        self.image_channels = image_channels
        self.hourglass = _Hourglass(image_channels + 2 * num_bones, channels, max_channels, blocks)
        self.mask = nn.Conv2d(self.hourglass.out_channels, num_bones + 1, 7, padding=3)
        self.occlusion = nn.Conv2d(self.hourglass.out_channels, 1, 7, padding=3)

    def forward(
        self, base_image: Tensor, base_bones: Tensor, driving_bones: Tensor, affines: Tensor
    ) -> dict[str, Tensor]:
        """Base image [B,C,h,w], bone maps [B,J,h,w] of both frames and the relative affines
        [B,J,2,3] -> dict(flow [B,h,w,2] grid coordinates, masks [B,J+1,h,w] (sum 1 over
        channels, 0 = background), occlusion [B,1,h,w] in (0, 1))."""
        j = self.num_bones
        b, _, h, w = base_image.shape if base_image.ndim == 4 else (-1,) * 4
        if (
            base_image.shape[1:2] != (self.image_channels,)
            or base_bones.shape != (b, j, h, w)
            or driving_bones.shape != (b, j, h, w)
            or affines.shape != (b, j, 2, 3)
        ):
            raise DabenchError(
                f"DenseMotion({j} bones, {self.image_channels} image channels) takes "
                f"base_image [B,{self.image_channels},h,w], bone maps [B,{j},h,w] and affines "
                f"[B,{j},2,3]; got {list(base_image.shape)}, {list(base_bones.shape)}, "
                f"{list(driving_bones.shape)}, {list(affines.shape)}"
            )
        feats = self.hourglass(torch.cat([base_image, base_bones, driving_bones], dim=1))
        masks = torch.softmax(self.mask(feats), dim=1)
        occlusion = torch.sigmoid(self.occlusion(feats))
        grid = coordinate_grid(h, w, base_image.device, affines.dtype)  # [h,w,2]
        # A_j [p; 1] for every bone and pixel: [B,J,h,w,2]
        moved = torch.einsum("bjkl,hwl->bjhwk", affines[..., :2], grid)
        moved = moved + affines[:, :, None, None, :, 2]
        motions = torch.cat([grid.expand(b, 1, h, w, 2), moved], dim=1)  # [B,J+1,h,w,2]
        flow = (masks[..., None] * motions).sum(dim=1)
        return {"flow": flow, "masks": masks, "occlusion": occlusion}


# --- G: generators with warped skips ----------------------------------------------------------


def _check_generator_inputs(
    base_image: Tensor,
    flow: Tensor | None,
    occlusion: Tensor | None,
    extra: Tensor | None,
    image_channels: int,
    extra_channels: int,
) -> Tensor:
    if base_image.ndim != 4 or base_image.shape[1] != image_channels:
        raise DabenchError(
            f"base_image must be [B,{image_channels},H,W], got {list(base_image.shape)}"
        )
    b = base_image.shape[0]
    if flow is not None and (flow.ndim != 4 or flow.shape[0] != b or flow.shape[-1] != 2):
        raise DabenchError(f"flow must be [B,h,w,2] with B = {b}, got {list(flow.shape)}")
    if occlusion is not None:
        if flow is None:
            raise DabenchError("an occlusion map needs a flow (nothing is warped without one)")
        if occlusion.ndim != 4 or occlusion.shape[:2] != (b, 1):
            raise DabenchError(
                f"occlusion must be [B,1,h,w] with B = {b}, got {list(occlusion.shape)}"
            )
    if extra_channels:
        want = (b, extra_channels, *base_image.shape[-2:])
        if extra is None or extra.shape != want:
            got = None if extra is None else list(extra.shape)
            raise DabenchError(f"extra must be {list(want)} (extra_channels), got {got}")
        return torch.cat([base_image, extra], dim=1)
    if extra is not None:
        raise DabenchError("extra given but the generator was built with extra_channels=0")
    return base_image


def _apply_skip(
    skip: Tensor, previous: Tensor | None, flow: Tensor | None, occlusion: Tensor | None
) -> Tensor:
    """One skip connection: warped_skip·C + previous·(1 − C) (articulated-animation's
    ``apply_optical``); without a previous map, warped_skip·C. C ≡ 1 when no occlusion map
    is given (the warped skip replaces the previous map). Without a flow the skip is added
    unwarped: previous + skip."""
    if flow is None:
        return skip if previous is None else previous + skip
    warped = warp(skip, flow)
    if occlusion is None:
        return warped
    c = _resize_map(occlusion.to(warped.dtype), (warped.shape[-2], warped.shape[-1]))
    return warped * c if previous is None else warped * c + previous * (1 - c)


class _ResBlock(nn.Module):
    """Pre-activation residual block: x + conv(ReLU(BN(conv(ReLU(BN(x))))))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class Generator(nn.Module):
    """The generation module G, articulated-animation's reading of the supplement's "Johnson
    architecture with two down-sampling blocks, six residual blocks and two up-sampling
    blocks" (its ``Generator`` with ``skips=True``).

    Layers: 7×7 conv–BN–ReLU (``channels``) → ``down_blocks`` × [conv3×3–BN–ReLU–AvgPool 2×2]
    doubling the channels (capped at ``max_channels``) → ``res_blocks`` pre-activation
    residual blocks → ``down_blocks`` × [nearest ×2–conv3×3–BN–ReLU] halving → 7×7 conv →
    sigmoid.

    Warped skips (as articulated-animation): the deepest encoder map is warped and
    multiplied by C before the residual blocks; before every up block and before the final
    conv the encoder map of that resolution is warped and blended,
    out = warped_skip·C + previous·(1 − C); the sigmoid output is finally blended the same
    way with the warped raw base image. The flow and C (motion resolution) are resized to
    each map (:func:`warp`, bilinear for C). With ``occlusion=None``, C ≡ 1.

    With ``flow=None`` (the "L_heatmap" ablation, usually with ``extra`` heatmaps) nothing
    is warped or blended: every skip is added unwarped (previous + skip), a plain
    encoder–decoder with additive skips, and the sigmoid output is returned as is.

    ``extra_channels`` > 0: ``extra`` [B,extra_channels,H,W] is concatenated to the base
    image at the first conv (only the base image is blended at the output). Pooling in ceil
    mode and upsampling to the skip's size make any H, W work.
    """

    def __init__(
        self,
        channels: int = 64,
        down_blocks: int = 2,
        res_blocks: int = 6,
        max_channels: int = 512,
        image_channels: int = 3,
        extra_channels: int = 0,
    ) -> None:
        super().__init__()
        _check_channels(
            channels=channels,
            down_blocks=down_blocks,
            max_channels=max_channels,
            image_channels=image_channels,
        )
        _check_counts(res_blocks=res_blocks, extra_channels=extra_channels)
        self.image_channels = image_channels
        self.extra_channels = extra_channels

        def width(i: int) -> int:
            return min(max_channels, channels * 2**i)

        self.first = _conv_bn_relu(image_channels + extra_channels, channels, kernel=7)
        self.down = nn.ModuleList(_conv_bn_relu(width(i), width(i + 1)) for i in range(down_blocks))
        self.res = nn.Sequential(*(_ResBlock(width(down_blocks)) for _ in range(res_blocks)))
        self.up = nn.ModuleList(
            _conv_bn_relu(width(i + 1), width(i)) for i in reversed(range(down_blocks))
        )
        self.final = nn.Conv2d(channels, image_channels, 7, padding=3)

    def forward(
        self,
        base_image: Tensor,
        flow: Tensor | None,
        occlusion: Tensor | None,
        extra: Tensor | None = None,
    ) -> Tensor:
        """Base image [B,C,H,W] in [0, 1], flow [B,h,w,2] (grid coordinates, driving → base)
        or None, occlusion [B,1,h,w] or None, extra [B,E,H,W] or None -> the reconstructed
        driving image [B,C,H,W] in [0, 1]."""
        x = _check_generator_inputs(
            base_image, flow, occlusion, extra, self.image_channels, self.extra_channels
        )
        skips = [self.first(x)]
        for block in self.down:
            skips.append(_down(block(skips[-1])))
        out = self.res(_apply_skip(skips[-1], None, flow, occlusion))
        for i, block in enumerate(self.up):
            level = len(self.up) - i  # skips[level] has the resolution of `out`
            out = _apply_skip(skips[level], out, flow, occlusion)
            out = block(_up(out, skips[level - 1].shape[-2:]))
        out = _apply_skip(skips[0], out, flow, occlusion)
        out = torch.sigmoid(self.final(out))
        if flow is not None:
            out = _apply_skip(base_image, out, flow, occlusion)
        return out


class UNetGenerator(nn.Module):
    """The supplement's other reading of G: "U-Net with five conv3×3–BN–ReLU–avg pool 2×2
    blocks in the encoder and five upsample 2×2–conv3×3–BN–ReLU blocks in the decoder", with
    the same warped-skip blending at every skip level.

    Layers: ``blocks`` encoder blocks conv3×3–BN–ReLU (channels min(max, channels·2^i)) whose
    output is the skip of that resolution, then AvgPool 2×2; ``blocks`` decoder blocks
    nearest ×2–conv3×3–BN–ReLU back to the skip's channels, each followed by the blend
    warped_skip·C + previous·(1 − C); a 3×3 conv to the image channels and a sigmoid; the
    final blend with the warped base image as in :class:`Generator`. The pooled bottom map
    is warped and multiplied by C like the Johnson generator's bottleneck input.

    Choices: "upsample 2×2" is a parameter-free nearest ×2 (as articulated-animation's
    UpBlock2d; a conv follows, unlike the transposed conv of :mod:`bench.models.unet`);
    skips are blended, not concatenated (the paper: the warped skip "is added to the
    1 − C activated feature map of the previous layer"). Levels clamp to the input like
    :class:`DenseMotion` (ceil-mode pooling, upsampling to each skip's size). ``flow=None``
    and ``extra`` as in :class:`Generator`.
    """

    def __init__(
        self,
        channels: int = 64,
        blocks: int = 5,
        max_channels: int = 512,
        image_channels: int = 3,
        extra_channels: int = 0,
    ) -> None:
        super().__init__()
        _check_channels(
            channels=channels,
            blocks=blocks,
            max_channels=max_channels,
            image_channels=image_channels,
        )
        _check_counts(extra_channels=extra_channels)
        self.image_channels = image_channels
        self.extra_channels = extra_channels
        widths = [min(max_channels, channels * 2**i) for i in range(blocks)]
        ins = [image_channels + extra_channels, *widths[:-1]]
        self.down = nn.ModuleList(_conv_bn_relu(i, o) for i, o in zip(ins, widths, strict=True))
        # decoder block i (deepest first) maps the map below (or the bottom) to skip i's width
        below = [*widths[1:], widths[-1]]
        self.up = nn.ModuleList(_conv_bn_relu(below[i], widths[i]) for i in reversed(range(blocks)))
        self.final = nn.Conv2d(widths[0], image_channels, 3, padding=1)

    def forward(
        self,
        base_image: Tensor,
        flow: Tensor | None,
        occlusion: Tensor | None,
        extra: Tensor | None = None,
    ) -> Tensor:
        """As :meth:`Generator.forward`: the reconstructed driving image [B,C,H,W] in
        [0, 1]."""
        x = _check_generator_inputs(
            base_image, flow, occlusion, extra, self.image_channels, self.extra_channels
        )
        skips = []
        for block in self.down:
            skips.append(block(x))
            x = _down(skips[-1])
        out = _apply_skip(x, None, flow, occlusion)
        for block, skip in zip(self.up, reversed(skips), strict=True):
            out = _apply_skip(skip, block(_up(out, skip.shape[-2:])), flow, occlusion)
        out = torch.sigmoid(self.final(out))
        if flow is not None:
            out = _apply_skip(base_image, out, flow, occlusion)
        return out


def identity_flow(
    batch: int,
    h: int,
    w: int,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """The identity sampling grid [B,h,w,2] (no motion)."""
    return coordinate_grid(h, w, device, dtype).expand(batch, h, w, 2)


__all__ = [
    "DenseMotion",
    "Generator",
    "UNetGenerator",
    "bone_affines",
    "identity_flow",
    "relative_affines",
    "warp",
]
