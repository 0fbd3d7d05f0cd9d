"""Causal interventions (Zhang et al., ICCV 2021, reconstructed): declaration. The
objective is argued in ``methods/causal-interventions.yaml`` and ``bench/methods/causal.py``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.data.views import Backgrounds, Images, Labelled
from bench.errors import DabenchError
from bench.methods.spec import Hparams, MethodSpec, Optim, Share, Stage, register_method
from bench.typed import check_choice, check_non_negative, check_positive_int

SETTINGS: tuple[str, ...] = ("da", "dg")  # SD + TD (target images) | SD + UD (backgrounds)
INTERVENTIONS: tuple[str, ...] = ("both", "swap", "prior")


@dataclass(frozen=True)
class CausalHparams(Hparams):
    setting: str = "da"
    pose_weight: float = 1.0
    vae_weight: float = 1.0  # 0: no VAE; every intervention is then a prior sample
    kl_weight: float = 1.0  # β of the ELBO (1 = the plain VAE of Table 1's reference [4])
    fact_weight: float = 1.0
    gen_pose_weight: float = 1.0
    feat_pose_weight: float = 1.0
    adv_weight: float = 0.1  # f's and g's adversarial terms; 0 switches the adversary off
    # Which interventions produce counterfactual features: "swap" sets the exogenous code to
    # an image of the other domain, "prior" draws it from the VAE prior N(0, I).
    interventions: str = "both"
    feat_dim: int = 256  # generated-feature dimension (Table 3: 128 / 256 / 512 / 1024)
    latent_dim: int = 256  # VAE latent (Table 1: FC_1&2 256 d)
    # Images per step the VAE decodes and reconstructs (half source, half other); every
    # image is still encoded for its code. At Table 1's widths the decoder costs about as
    # much per image as the pose network, so a small VAE batch keeps the step in budget.
    # 0 decodes every image of the step.
    vae_batch: int = 16
    gen_hidden: int = 1024
    disc_hidden: int = 1024
    dropout: float = 0.5
    warmup_share: float = 0.1  # share of the steps in which g and D do not train yet

    def __post_init__(self) -> None:
        where = "causal-interventions"
        check_choice(where, "setting", self.setting, SETTINGS)
        check_choice(where, "interventions", self.interventions, INTERVENTIONS)
        check_non_negative(
            where,
            pose_weight=self.pose_weight,
            vae_weight=self.vae_weight,
            kl_weight=self.kl_weight,
            fact_weight=self.fact_weight,
            gen_pose_weight=self.gen_pose_weight,
            feat_pose_weight=self.feat_pose_weight,
            adv_weight=self.adv_weight,
            vae_batch=self.vae_batch,
        )
        check_positive_int(
            where,
            feat_dim=self.feat_dim,
            latent_dim=self.latent_dim,
            gen_hidden=self.gen_hidden,
            disc_hidden=self.disc_hidden,
        )
        if not 0.0 <= self.dropout < 1.0:
            raise DabenchError(f"{where}: dropout must be in [0, 1), got {self.dropout!r}")
        if not 0.0 <= self.warmup_share < 1.0:
            raise DabenchError(
                f"{where}: warmup_share must be in [0, 1), got {self.warmup_share!r}"
            )

    @property
    def uses_generator(self) -> bool:
        return self.fact_weight > 0 or self.gen_pose_weight > 0 or self.adv_weight > 0

    @property
    def uses_features(self) -> bool:
        return self.uses_generator or self.feat_pose_weight > 0

    @property
    def uses_readout(self) -> bool:
        return self.feat_pose_weight > 0 or self.gen_pose_weight > 0

    @property
    def uses_adversary(self) -> bool:
        return self.uses_generator and self.adv_weight > 0


@register_method("causal-interventions")
class CausalSpec(MethodSpec):
    """Stages: "warmup" (the first ``warmup_share`` of the budget: the pose network, the
    read-out and the VAE; g and D idle), then "joint". With the adversary the joint stage
    alternates two optimisers each step: D on its loss, then every other module on theirs
    against the updated D (manual mode, as a GAN alternates D and G)."""

    Hparams = CausalHparams
    adapter = "bench.methods.causal:CausalInterventions"
    warm_start = True

    @classmethod
    def stages(cls, hp: Any) -> list[Stage]:
        other = Backgrounds() if hp.setting == "dg" else Images("target")
        views = {"source": Labelled("source"), "other": other}
        if hp.uses_adversary:
            joint_opts = {
                "disc": Optim(params=("discriminator",), losses=("disc",)),
                "model": Optim(),
            }
        else:
            joint_opts = {"main": Optim()}
        if hp.warmup_share > 0 and hp.uses_generator:
            # The VAE's codes and the real features are meaningless at initialisation, so g
            # and D start once the pose network, the read-out and the VAE have warmed up.
            return [
                Stage(
                    "warmup",
                    views=views,
                    length=Share(hp.warmup_share),
                    optimizers={"main": Optim(params=("warmup_parameters",))},
                ),
                Stage(
                    "joint",
                    views=views,
                    length=Share(1.0 - hp.warmup_share),
                    optimizers=joint_opts,
                    manual=hp.uses_adversary,
                ),
            ]
        return [Stage("joint", views=views, optimizers=joint_opts, manual=hp.uses_adversary)]

    @classmethod
    def losses(cls, hp: Any, stage: str) -> tuple[str, ...]:
        keys = ["pose"]
        if hp.uses_features and hp.uses_readout and hp.feat_pose_weight > 0:
            keys.append("feat_pose")
        if hp.vae_weight > 0:
            keys += ["vae_rec", "vae_kl"]
        if stage == "warmup" or not hp.uses_generator:
            return tuple(keys)
        if hp.fact_weight > 0:
            keys.append("fact")
        if hp.uses_readout and hp.gen_pose_weight > 0:
            keys.append("gen_pose")
        if hp.uses_adversary:
            keys += ["disc", "adv_f", "adv_g"]
        return tuple(keys)
