"""Zhang et al., "Learning Causal Representation for Training Cross-Domain Pose Estimator via
Generative Interventions" (ICCV 2021) — a reconstruction.

Only the supplement (architectures, Tables 2–3) and the abstract survive; the objective below
is our reading of them, argued in ``methods/causal-interventions.yaml``. In short, with
x_s, y_s a labelled source image and pose, x_o an unlabelled image (target in DA, background
in DG), c = φ(pool(f(x))) the real feature and u = E(x) the VAE's abducted exogenous code:

* pose    L1 integral loss of h(f(x_s)) (the volumetric predictor), as every method;
* vae     ‖M(u) − x‖² + β·KL on x_s ∪ x_o (the generative model of images of every domain);
* fact    ‖g(y_s, u_s) − sg(c_s)‖²: g learns the feature mechanism on the factual state;
* gen_pose / feat_pose   a shared linear pose read-out q on generated and on real features;
* adversary D (sigmoid) separates real features (source, and target in DA) from
  counterfactual features g(y_s, u') under interventions u' (another domain's code, or a
  prior sample); g and f each try to fool it (non-saturating, D frozen for them).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.config import ModelConfig
from bench.data.joints import JointSet
from bench.methods.base import Batch, Method, StepContext
from bench.methods.causal_modules import (
    FeatureDiscriminator,
    FeatureGenerator,
    FeatureProjector,
    VAEDecoder,
    VAEEncoder,
    kl_divergence,
    reparameterize,
    vae_input_size,
    vae_pixels,
)
from bench.methods.common import WindowMean
from bench.methods.specs.causal import CausalHparams, CausalSpec
from bench.models.pose_net import coord_l1


class PoseReadout(nn.Module):
    """q: a linear read-out of normalised (x, y, z) from a d-dim feature, shared by real and
    generated features (linear, so that "the pose determines the feature" stays simple)."""

    def __init__(self, feat_dim: int, num_joints: int) -> None:
        super().__init__()
        self.num_joints = num_joints
        self.fc = nn.Linear(feat_dim, 3 * num_joints)
        # Start at the crop centre and depth 0, the middle of the normalised target range.
        self.register_buffer("offset", torch.tensor([0.5, 0.5, 0.0]), persistent=False)

    def forward(self, feat: Tensor) -> Tensor:
        return self.fc(feat).view(-1, self.num_joints, 3) + self.offset


def _bce(logits: Tensor, real: bool) -> Tensor:
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)


class CausalInterventions(Method):
    """Pose extractor f + volumetric predictor h, trained with a VAE (abduction of the
    exogenous code), a feature generator g(pose, code) and a feature discriminator D; see
    the module docstring and the method card."""

    spec = CausalSpec

    def __init__(
        self,
        hparams: CausalHparams,
        model_config: ModelConfig,
        num_joints: int,
        root: int,
        joint_set: JointSet | None = None,
    ) -> None:
        super().__init__(hparams, model_config, num_joints, root, joint_set)
        hp = hparams
        self.vae_size = vae_input_size(model_config.img_size)
        # Parts an ablation switches off are not built: no dead parameters in the optimiser.
        self.encoder: VAEEncoder | None = None
        self.decoder: VAEDecoder | None = None
        if hp.vae_weight > 0:
            self.encoder = VAEEncoder(self.vae_size, hp.latent_dim)
            self.decoder = VAEDecoder(self.vae_size, hp.latent_dim)
        self.projector = (
            FeatureProjector(self.net.feature_channels, hp.feat_dim) if hp.uses_features else None
        )
        self.readout = (
            PoseReadout(hp.feat_dim, num_joints)
            if hp.feat_pose_weight > 0 or hp.gen_pose_weight > 0
            else None
        )
        self.generator = (
            FeatureGenerator(3 * num_joints, hp.latent_dim, hp.feat_dim, hp.gen_hidden, hp.dropout)
            if hp.uses_generator
            else None
        )
        self.discriminator = (
            FeatureDiscriminator(hp.feat_dim, hp.disc_hidden) if hp.adv_weight > 0 else None
        )
        self._disc_acc = WindowMean()

    # -- training ---------------------------------------------------------------------------
    def warmup_parameters(self) -> Iterator[nn.Parameter]:
        for part in (self.net, self.projector, self.readout, self.encoder, self.decoder):
            if part is not None:
                yield from part.parameters()

    def training_step(self, stage: str, batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
        hp = self.hparams
        src = batch["source"]
        other = batch["other"]["images"]
        n = src["images"].shape[0]
        joint = stage != "warmup"
        adversary = joint and self.discriminator is not None
        losses: dict[str, Tensor] = {}

        # In DA the backbone runs on source + target in one batch in every stage (as the
        # DA baselines do), so BatchNorm keeps one regime from warm-up to the joint stage;
        # the target features feed the adversary. Background images (DG) hold no subject,
        # so they never enter the feature space, only the VAE.
        joint_pass = hp.setting == "da"
        if joint_pass:
            feat = self.net.features(torch.cat([src["images"], other]))
            out_s = self.net.head_outputs(feat[:n])
            pooled = self.net.pool(feat)
        else:
            out_s = self.net(src["images"])
            pooled = out_s["pooled"]
        losses["pose"] = hp.pose_weight * self.supervised_loss(src, out_s)

        y = self.net.targets(src["kp2d"], src["kp3d"], self.root)
        vis = src["vis"]
        real = self.projector(pooled) if self.projector is not None else None
        if real is not None and self.readout is not None and hp.feat_pose_weight > 0:
            losses["feat_pose"] = hp.feat_pose_weight * coord_l1(self.readout(real[:n]), y, vis)

        codes_s = codes_o = None
        if self.encoder is not None and self.decoder is not None:
            x = vae_pixels(torch.cat([src["images"], other]), self.vae_size)
            mu, logvar = self.encoder(x)
            z = reparameterize(mu, logvar)
            sub = self._vae_subset(n, len(x), x.device)
            rec = self.decoder(z[sub])
            # The Gaussian-decoder ELBO per image, divided by its number of pixel values so
            # that its scale does not grow with the crop size.
            per_value = x[0].numel()
            losses["vae_rec"] = hp.vae_weight * (rec - x[sub]).pow(2).mean()
            losses["vae_kl"] = (
                hp.vae_weight
                * hp.kl_weight
                * kl_divergence(mu[sub], logvar[sub]).mean()
                / per_value
            )
            # Abduction only: g must not reshape the generative model of images.
            codes = z.detach()
            codes_s, codes_o = codes[:n], codes[n:]

        if not joint or self.generator is None:
            return losses

        # Counterfactual features of the source poses: the pose is kept, the exogenous code
        # is intervened on (another domain's code, or a random domain from the prior).
        noises_cf = []
        if codes_o is not None and hp.interventions in ("swap", "both"):
            noises_cf.append(codes_o[torch.arange(n, device=codes_o.device) % len(codes_o)])
        if codes_o is None or hp.interventions in ("prior", "both"):
            noises_cf.append(torch.randn(n, hp.latent_dim, device=y.device, dtype=real.dtype))
        factual = hp.fact_weight > 0
        if factual:
            u_s = codes_s if codes_s is not None else torch.randn_like(noises_cf[-1])
            noises = [u_s, *noises_cf]
        else:
            noises = noises_cf
        pose_in = torch.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0).flatten(1)
        # One call, so that g's BatchNorm normalises over factual and counterfactual inputs.
        gen = self.generator(pose_in.repeat(len(noises), 1), torch.cat(noises))
        gen_cf = gen[n:] if factual else gen
        if factual:
            losses["fact"] = hp.fact_weight * F.mse_loss(gen[:n], real[:n].detach())
        if self.readout is not None and hp.gen_pose_weight > 0:
            reps = len(noises)
            losses["gen_pose"] = hp.gen_pose_weight * coord_l1(
                self.readout(gen), y.repeat(reps, 1, 1), vis.repeat(reps, 1)
            )

        if not adversary:
            return losses
        # GAN alternation, as DomainBed's and pytorch-adapt's adversarial updates: D steps
        # on its loss first; then f, g and the rest step on theirs against the updated D.
        real_all = real if joint_pass else real[:n]
        d = self.discriminator
        logit_real, logit_fake = d.logits(real_all.detach()), d.logits(gen_cf.detach())
        losses["disc"] = 0.5 * (_bce(logit_real, True) + _bce(logit_fake, False))
        self._disc_acc.add(
            0.5 * ((logit_real > 0).float().mean() + (logit_fake <= 0).float().mean())
        )
        ctx.backward(losses["disc"], "disc")
        ctx.optimizer_step("disc")
        losses["adv_f"] = hp.adv_weight * _bce(d.logits(real_all), False)
        losses["adv_g"] = hp.adv_weight * _bce(d.logits(gen_cf), True)
        ctx.backward(sum(v for k, v in losses.items() if k != "disc"), "model")
        ctx.optimizer_step("model")
        return {k: v.detach() for k, v in losses.items()}

    def _vae_subset(self, n_source: int, n_all: int, device: torch.device) -> Tensor:
        """Indices of the images the VAE reconstructs this step: the first ⌈k/2⌉ source and
        ⌊k/2⌋ other images (batches are shuffled, so the first ones are a random draw)."""
        k = self.hparams.vae_batch
        if k == 0 or k >= n_all:
            return torch.arange(n_all, device=device)
        k_src = min(n_source, (k + 1) // 2)
        k_other = min(n_all - n_source, k - k_src)
        return torch.cat(
            [
                torch.arange(k_src, device=device),
                torch.arange(n_source, n_source + k_other, device=device),
            ]
        )

    def scalars(self) -> dict[str, float]:
        acc = self._disc_acc.pop()
        return {} if acc is None else {"disc_acc": acc}
