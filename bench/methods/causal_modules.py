"""The networks of Zhang et al. (ICCV 2021) Table 1 (supplement 004), scaled to the input size.

Table 1 is written for 256 px crops: the VAE encoder halves the image six times to 4×4×256
and the decoder doubles a 4×4×256 map six times back to 256 px. The scaling rule keeps the
4×4×256 bottleneck (so the FC layers are exactly Table 1's: 4096 → 256 and 256 → 4096) and
drops layers at the high-resolution end:

* VAE input size S = the largest power of two ≤ the crop size, at most 256 (Table 1's input)
  and at least 8; other crop sizes are resized to S (bilinear).
* depth n = log2(S / 4) (256 px → 6, 64 px → 4, 32 px → 3);
* encoder conv i (i = 0..n−1) has 256 / 2^(n−1−i) channels: the last n of Table 1's
  8, 16, 32, 64, 128, 256;
* decoder conv i (i = 0..n−2) has 256 / 2^(i+1) channels (the first n−1 of Table 1's
  128, 64, 32, 16, 8) and the last conv has 3 (Table 1's Conv_5, no BN / activation).

The generator and discriminator are MLPs on vectors and need no scaling.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.errors import DabenchError

BOTTLENECK = 4  # spatial size of Table 1's encoder output / decoder input
BOTTLENECK_CHANNELS = 256
MAX_VAE_SIZE = 256  # Table 1's input size
LEAK = 0.2  # LeakyReLU slope; Table 1 names LReLU without a slope (DCGAN's 0.2)


def vae_input_size(img_size: int) -> int:
    """The VAE's (square) input size for a crop of ``img_size`` px (see the module doc)."""
    if not isinstance(img_size, int) or img_size < 2 * BOTTLENECK:
        raise DabenchError(f"the causal VAE needs crops of at least 8 px, got {img_size!r}")
    return min(MAX_VAE_SIZE, 2 ** math.floor(math.log2(img_size)))


def vae_depth(size: int) -> int:
    """Number of stride-2 convolutions (and of upsampling convolutions) for a VAE input of
    ``size`` px: log2(size / 4), so that the encoder ends at 4×4 (Table 1: 256 px → 6)."""
    depth = math.log2(size / BOTTLENECK)
    if depth < 1 or depth != int(depth):
        raise DabenchError(f"VAE input size must be a power of two >= 8, got {size}")
    return int(depth)


def encoder_channels(depth: int) -> list[int]:
    return [BOTTLENECK_CHANNELS >> (depth - 1 - i) for i in range(depth)]


def decoder_channels(depth: int) -> list[int]:
    return [BOTTLENECK_CHANNELS >> (i + 1) for i in range(depth - 1)] + [3]


class VAEEncoder(nn.Module):
    """E: n × [conv 3×3 stride 2, BN, LeakyReLU] to 4×4×256, then FC heads for μ and log σ²."""

    def __init__(self, size: int, latent_dim: int = 256) -> None:
        super().__init__()
        self.size = size
        depth = vae_depth(size)
        layers: list[nn.Module] = []
        c_in = 3
        for c_out in encoder_channels(depth):
            layers += [
                nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.LeakyReLU(LEAK, inplace=True),
            ]
            c_in = c_out
        self.convs = nn.Sequential(*layers)
        flat = BOTTLENECK_CHANNELS * BOTTLENECK * BOTTLENECK
        self.fc_mu = nn.Linear(flat, latent_dim)
        self.fc_logvar = nn.Linear(flat, latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """[B,3,S,S] → (μ, log σ²), each [B,latent_dim]."""
        h = self.convs(x).flatten(1)
        return self.fc_mu(h), self.fc_logvar(h)


class VAEDecoder(nn.Module):
    """M: FC to 4×4×256, then n × [nearest ×2 upsampling, conv 3×3 stride 1 with replication
    padding, BN, LeakyReLU]; the last conv outputs 3 channels without BN / activation."""

    def __init__(self, size: int, latent_dim: int = 256) -> None:
        super().__init__()
        self.size = size
        depth = vae_depth(size)
        self.fc = nn.Linear(latent_dim, BOTTLENECK_CHANNELS * BOTTLENECK * BOTTLENECK)
        layers: list[nn.Module] = []
        c_in = BOTTLENECK_CHANNELS
        channels = decoder_channels(depth)
        for i, c_out in enumerate(channels):
            last = i == len(channels) - 1
            layers += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.ReplicationPad2d(1),
                nn.Conv2d(c_in, c_out, 3, stride=1, padding=0, bias=last),
            ]
            if not last:
                layers += [nn.BatchNorm2d(c_out), nn.LeakyReLU(LEAK, inplace=True)]
            c_in = c_out
        self.convs = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        """[B,latent_dim] → [B,3,S,S] (in the space of the encoder's input, [−1, 1])."""
        h = self.fc(z).view(-1, BOTTLENECK_CHANNELS, BOTTLENECK, BOTTLENECK)
        return self.convs(h)


def kl_divergence(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(μ, σ²) ‖ N(0, I)) per sample, summed over the latent dimensions (Kingma & Welling,
    appendix B): −½ Σ (1 + log σ² − μ² − σ²). [B,D] → [B]."""
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=-1)


def reparameterize(mu: Tensor, logvar: Tensor) -> Tensor:
    return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)


def vae_pixels(images: Tensor, size: int) -> Tensor:
    """uint8 [B,H,W,3] → float [B,3,size,size] in [−1, 1], the VAE's input and target."""
    x = images.permute(0, 3, 1, 2).float() / 127.5 - 1.0
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x


class FeatureGenerator(nn.Module):
    """g(pose, noise): [FC 1024, BN, ReLU, Dropout 0.5] × 2 → FC d, BN, Tanh (Table 1)."""

    def __init__(
        self,
        pose_dim: int,
        noise_dim: int,
        feat_dim: int = 256,
        hidden: int = 1024,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.pose_dim = pose_dim
        self.noise_dim = noise_dim
        blocks: list[nn.Module] = []
        c_in = pose_dim + noise_dim
        for _ in range(2):
            blocks += [
                nn.Linear(c_in, hidden),
                nn.BatchNorm1d(hidden),
                nn.ReLU(inplace=True),
                nn.Dropout(dropout),
            ]
            c_in = hidden
        blocks += [nn.Linear(hidden, feat_dim), nn.BatchNorm1d(feat_dim), nn.Tanh()]
        self.net = nn.Sequential(*blocks)

    def forward(self, pose: Tensor, noise: Tensor) -> Tensor:
        """pose [B,pose_dim], noise [B,noise_dim] → generated feature [B,feat_dim] in (−1, 1)."""
        return self.net(torch.cat([pose, noise], dim=-1))


class FeatureDiscriminator(nn.Module):
    """D: FC 1024, ReLU → FC 1, sigmoid (Table 1). ``logits`` feeds BCE-with-logits (the same
    loss as sigmoid + BCE, numerically stable); ``forward`` is the sigmoid probability."""

    def __init__(self, feat_dim: int = 256, hidden: int = 1024) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(feat_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1)
        )

    def logits(self, feat: Tensor) -> Tensor:
        """[B,d] → [B] logits of "real feature" (vs generated)."""
        return self.net(feat).squeeze(-1)

    def forward(self, feat: Tensor) -> Tensor:
        return torch.sigmoid(self.logits(feat))


class FeatureProjector(nn.Module):
    """φ: the pose extractor's pooled feature → the generated-feature space (FC d, BN, Tanh,
    mirroring g's output layer so that real and generated features share one bounded space)."""

    def __init__(self, in_dim: int, feat_dim: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, feat_dim), nn.BatchNorm1d(feat_dim), nn.Tanh())

    def forward(self, pooled: Tensor) -> Tensor:
        return self.net(pooled)
