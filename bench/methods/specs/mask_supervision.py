"""Mask as Supervision (S003, ECCV 2024): declaration. Unsupervised 3D human pose from
silhouettes: a skeleton mask drawn from the detector's keypoints (re-projected from their
multi-view triangulation where calibrated views exist) and a shape prior network's
silhouette of it are compared with the person's mask, over a three-stage cascade. It reads
target images, masks and cameras only — never a pose label. The choices where the paper is
silent are argued in ``methods/mask-as-supervision.yaml``; the adapter is
``bench/methods/mask_supervision.py``."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bench.data.views import Extra, Joined, Labelled, Masked, MultiView, View
from bench.errors import DabenchError
from bench.methods.spec import (
    Epochs,
    Hparams,
    MethodSpec,
    Optim,
    Schedule,
    Share,
    Stage,
    Steps,
    register_method,
)
from bench.typed import check_choice, check_non_negative, check_positive_int

# "multi-view": calibrated groups of ``views`` images of one moment; the mask of each view is
# drawn from the re-projection of the views' triangulated keypoints (Δ of Table 4).
# "single-view": every image alone, its mask drawn from its own keypoints (no Δ).
TRAININGS: tuple[str, ...] = ("multi-view", "single-view")
STRUCTURES: tuple[str, ...] = ("skeleton", "points")  # "points": Table 5, no structure prior
# Supervised post-processing (Sec. 3.3, Tables 1, 2, 5): after the cascade, a map from the
# discovered keypoints to the evaluation joints fitted on the target's *labelled* training
# split — a protocol that reads labels, so its rows say so.
SPPS: tuple[str, ...] = ("none", "linear", "mlp")
MERGES: tuple[str, ...] = ("sum", "max")
PSI_NORMS: tuple[str, ...] = ("batch", "group")
CASCADE: tuple[str, ...] = ("stage1", "stage2", "stage3")
FORMS: tuple[str, ...] = ("tight", "medium", "loose")  # the skeleton form of each stage
GEODESIC_FILE = "geodesic.h5"  # the weights G of every target training mask
# Table 3's fine-tuning after the cascade: on the multi-view target alone, or mixed with
# single-view images of another dataset (TikTok in the paper)
FINETUNE_DATA: tuple[str, ...] = ("multi-view", "mixed-view")


def extra_geodesic_file(card: str) -> str:
    """The geodesic weights of another dataset's training masks (mixed-view fine-tuning)."""
    return f"geodesic-{card}.h5"


@dataclass(frozen=True)
class MaskHparams(Hparams):
    training: str = "multi-view"
    views: int = 4  # calibrated views per group (Human3.6M: 4)
    # -- skeleton mask (Eqs. 4, 15–17)
    structure: str = "skeleton"
    merge: str = "sum"  # the paper's pixel-wise sum; "max": the authors' later code
    clip_sum: bool = False  # cap the sum at 1 where bones overlap
    # w = σ² of Eq. 4 per cascade stage ("round 3e-3 depending on cascade periods"), in
    # grid units of the [−1, 1] image; arms use w / arm_factor (the authors' code: 2)
    bone_width: tuple[float, float, float] = (3e-3, 3e-3, 3e-3)
    arm_factor: float = 2.0
    skel_clip: float = 0.0  # L_skel counts only pixels where M_skel > this (0: Eq. 5, all)
    mask_size: int = 0  # masks drawn and compared at this side (0: the image size)
    # -- shape prior network ψ (Eq. 6), made and trained from stage 2 on ("λ_p is set to
    # zero at the initial stage")
    shape_prior: bool = True
    psi_channels: tuple[int, ...] = (32, 64, 128)
    psi_skips: bool = False  # the authors' code has none; True: the paper's "U-Net"
    psi_norm: str = "batch"
    # -- geodesic weighting G (Eq. 9), on in stages 1 and 3
    geodesic: bool = True
    geodesic_params: tuple[float, float, float, float, float] = (2.0, 1.0, 3.0, 20.0, 0.0)
    weight_power: int = 1  # G multiplies the squared residual (code); 2: the printed ‖G⊙·‖²
    # each map divided by its mean (the paper states no scale; the code's constants make G
    # a ×22 factor that would swamp every other loss), or used as the constants give it
    geodesic_norm: str = "mean"
    # -- the cascade (supp. A.3): λ_s of stages 1–3, λ_p of stages 2–3, auxiliary weights
    skel_weight: tuple[float, float, float] = (10.0, 1.0, 2.0)
    phys_weight: tuple[float, float] = (4.0, 1.5)
    bone_weight: float = 2.5  # stage 1 only
    # constant lengths of pelvis→spine→thorax→neck→head in grid units (not given)
    bone_lengths: tuple[float, float, float, float] = (0.21, 0.23, 0.09, 0.11)
    eq_weight: float = 1.0
    sym_weight: float = 2.0
    eq_scale: float = 0.25
    eq_rotation: float = 30.0  # degrees
    eq_rotate_prob: float = 0.6
    init_steps: int = 400  # stage 1: pelvis and thorax pulled to the mask's centroid pair
    init_weight: float = 100.0  # not given; see the card
    thorax_offset: float = 0.4  # thorax target above the centroid, grid units (not given)
    tie_steps: int = 600  # stage 2: left/right wrists and elbows forced together
    tie_weight: float = 1.0
    # multi-view: the detector's root-relative depth regressed to the triangulated pose's
    # depth in each camera (the paper's 3D comes from somewhere; see the card)
    depth_weight: float = 1.0
    # -- lengths (epochs over the target's units) and optimisation
    stage1_epochs: float = 15.0
    stage2_epochs: float = 5.0
    stage3_epochs: float = 0.0  # 0: the grid's step budget; the paper: 25
    lr: float = 2e-4
    stage3_decay_at: float = 14 / 25  # ×0.5 after 14 of stage 3's 25 epochs
    # -- Table 3: fine-tuning after the cascade (0 epochs: none — the table's Baseline),
    # with stage 3's losses at its final lr, on the target's groups alone or mixed with
    # single-view images and masks of another dataset (``single_view_card``; ``single_batch``
    # images per step, 0: the grid's batch size)
    finetune_epochs: float = 0.0
    finetune_data: str = "multi-view"
    single_view_card: str = ""
    single_batch: int = 0
    # -- supervised post-processing: the map's training (the detector frozen)
    spp: str = "none"
    spp_hidden: int = 1024  # the MLP's two hidden layers
    spp_epochs: float = 5.0
    spp_lr: float = 1e-3

    def __post_init__(self) -> None:
        where = "mask-as-supervision"
        for name, choices in (
            ("training", TRAININGS),
            ("structure", STRUCTURES),
            ("merge", MERGES),
            ("psi_norm", PSI_NORMS),
            ("spp", SPPS),
            ("geodesic_norm", ("mean", "none")),
            ("finetune_data", FINETUNE_DATA),
        ):
            check_choice(where, name, getattr(self, name), choices)
        check_non_negative(
            where,
            skel_clip=self.skel_clip,
            mask_size=self.mask_size,
            bone_weight=self.bone_weight,
            eq_weight=self.eq_weight,
            sym_weight=self.sym_weight,
            eq_scale=self.eq_scale,
            eq_rotation=self.eq_rotation,
            init_steps=self.init_steps,
            init_weight=self.init_weight,
            tie_steps=self.tie_steps,
            tie_weight=self.tie_weight,
            depth_weight=self.depth_weight,
            stage1_epochs=self.stage1_epochs,
            stage2_epochs=self.stage2_epochs,
            stage3_epochs=self.stage3_epochs,
            finetune_epochs=self.finetune_epochs,
            single_batch=self.single_batch,
            **{f"skel_weight[{i}]": w for i, w in enumerate(self.skel_weight)},
            **{f"phys_weight[{i}]": w for i, w in enumerate(self.phys_weight)},
            **{f"bone_lengths[{i}]": w for i, w in enumerate(self.bone_lengths)},
        )
        check_positive_int(where, psi_channels=min(self.psi_channels, default=0))
        if self.training == "multi-view":
            check_positive_int(where, views=self.views - 1)  # at least 2 views
        check_positive_int(where, spp_hidden=self.spp_hidden)
        names = ("arm_factor", "lr", "thorax_offset", "spp_epochs", "spp_lr")
        bad = [n for n in names if not getattr(self, n) > 0]
        bad += [f"bone_width[{i}]" for i, w in enumerate(self.bone_width) if not w > 0]
        if bad:
            raise DabenchError(f"{where}: {', '.join(bad)} must be > 0")
        if len(self.psi_channels) < 2:
            raise DabenchError(f"{where}: psi_channels needs at least 2 levels")
        if self.weight_power not in (1, 2):
            raise DabenchError(f"{where}: weight_power must be 1 or 2, got {self.weight_power}")
        if not 0 < self.eq_rotate_prob <= 1 and self.eq_rotate_prob != 0:
            raise DabenchError(f"{where}: eq_rotate_prob must be in [0, 1]")
        if not 0 < self.stage3_decay_at < 1:
            raise DabenchError(f"{where}: stage3_decay_at must be in (0, 1)")
        if self.finetune_data == "mixed-view" and not self.single_view_card:
            raise DabenchError(
                f"{where}: mixed-view fine-tuning reads single-view images and masks of "
                "another dataset: set single_view_card (TikTok in the paper; "
                "synth-body-video on the synthetic benchmark)"
            )
        if self.eq_scale >= 1:
            raise DabenchError(f"{where}: eq_scale must be < 1 (scales 1 ± eq_scale)")

    @property
    def multi_view(self) -> bool:
        return self.training == "multi-view"

    @property
    def mixes(self) -> bool:
        """Whether a fine-tuning stage mixes in another dataset's single-view images."""
        return self.finetune_epochs > 0 and self.finetune_data == "mixed-view"

    def uses_geodesic(self, stage: int) -> bool:
        """G weights the mask losses in stages 1 and 3, never in 2 (supp. A.3)."""
        return self.geodesic and stage != 1

    def uses_physique(self, stage: int) -> bool:
        """L_phys (and ψ) in stages 2 and 3 (indices 1, 2), where λ_p > 0."""
        return self.shape_prior and stage > 0 and self.phys_weight[stage - 1] > 0


def _target_view(hp: MaskHparams, geodesic: bool) -> View:
    fields = ("images", "masks")
    view: View = MultiView("target", hp.views, fields) if hp.multi_view else Masked("target")
    return Joined(view, "geodesic", GEODESIC_FILE, ("weights",)) if geodesic else view


# What each stage's output depends on: variants that differ only later share it.
GEODESIC_READS = ("geodesic_params", "mask_size")
STAGE1_READS = (
    "training",
    "views",
    "structure",
    "merge",
    "clip_sum",
    "bone_width",
    "arm_factor",
    "skel_clip",
    "mask_size",
    "geodesic",
    "geodesic_params",
    "weight_power",
    "geodesic_norm",
    "skel_weight",
    "bone_weight",
    "bone_lengths",
    "eq_weight",
    "sym_weight",
    "eq_scale",
    "eq_rotation",
    "eq_rotate_prob",
    "init_steps",
    "init_weight",
    "thorax_offset",
    "depth_weight",
    "stage1_epochs",
    "lr",
)
STAGE2_READS = (
    *STAGE1_READS,
    "phys_weight",
    "shape_prior",
    "psi_channels",
    "psi_skips",
    "psi_norm",
    "tie_steps",
    "tie_weight",
    "stage2_epochs",
)


# stage 3 reads everything but what comes after it (fine-tuning, post-processing), so the
# rows of Table 3 and the SPP rows share the cascade of the plain row
_AFTER = ("spp", "finetune_", "single_")
STAGE3_READS = tuple(n for n in MaskHparams.__dataclass_fields__ if not n.startswith(_AFTER))
FINETUNE_READS = tuple(n for n in MaskHparams.__dataclass_fields__ if not n.startswith("spp"))


def _adam(params: tuple[str, ...], lr: float, schedule: Schedule | None = None) -> Optim:
    """Adam at the paper's 2e-4, no weight decay (supp. A.3)."""
    return Optim(
        params=params,
        factory="adam",
        lr=lr,
        weight_decay=0.0,
        schedule=schedule or Schedule("constant", warmup_steps=0),
    )


@register_method("mask-as-supervision")
class MaskSpec(MethodSpec):
    """Stages: "geodesic" (with G: the weight map of every target training mask, computed
    once, no training), then the cascade "stage1" (tight skeleton, L_skel with G, constant
    bone lengths, equivariance, symmetry, and the pelvis/thorax initialisation for its first
    steps), "stage2" (medium skeleton, L_skel and L_phys without G, ψ trained, left/right
    wrists and elbows tied for its first steps) and "stage3" (loose skeleton, L_skel and
    L_phys with G; the evaluated stage)."""

    Hparams = MaskHparams
    adapter = "bench.methods.mask_supervision:MaskAsSupervision"
    # the 17 joints of the Human3.6M tree its skeleton forms are drawn with
    # (bench/methods/mas_modules.py)
    joint_names = (
        "pelvis",
        "r_hip",
        "r_knee",
        "r_ankle",
        "l_hip",
        "l_knee",
        "l_ankle",
        "spine",
        "thorax",
        "neck",
        "head",
        "l_shoulder",
        "l_elbow",
        "l_wrist",
        "r_shoulder",
        "r_elbow",
        "r_wrist",
    )

    @classmethod
    def stages(cls, hp: Any) -> list[Stage]:
        stages = []
        if hp.geodesic:
            stages.append(
                Stage(
                    "geodesic",
                    views={"target": Masked("target")},
                    length=Steps(0),
                    optimizers={},
                    evaluate=False,
                    reads=GEODESIC_READS,
                )
            )
        lengths = (
            Epochs(hp.stage1_epochs, role="target"),
            Epochs(hp.stage2_epochs, role="target"),
            Epochs(hp.stage3_epochs, role="target") if hp.stage3_epochs > 0 else Share(1.0),
        )
        for k, name in enumerate(CASCADE):
            last = k == len(CASCADE) - 1
            params = ("net", "shape_prior") if hp.shape_prior and k > 0 else ("net",)
            decay = Schedule("multistep", milestones=(hp.stage3_decay_at,), gamma=0.5)
            stages.append(
                Stage(
                    name,
                    views={"target": _target_view(hp, hp.uses_geodesic(k))},
                    length=lengths[k],
                    optimizers={"main": _adam(params, hp.lr, decay if last else None)},
                    evaluate=last,
                    reads=None if last else (STAGE1_READS, STAGE2_READS)[k],
                )
            )

        if hp.finetune_epochs > 0:
            views = {"target": _target_view(hp, hp.geodesic)}
            sizes = {}
            stages[-1] = dataclasses.replace(stages[-1], evaluate=False, reads=STAGE3_READS)
            if hp.mixes:
                single: View = Extra(hp.single_view_card, ("images", "masks"))
                if hp.geodesic:
                    # the other dataset's weights in a stage of their own, after the cascade,
                    # which the plain row's cascade is thereby shared with
                    stages.append(
                        Stage(
                            "geodesic-single",
                            views={"single": single},
                            length=Steps(0),
                            optimizers={},
                            evaluate=False,
                            reads=(*GEODESIC_READS, "single_view_card"),
                        )
                    )
                    name = extra_geodesic_file(hp.single_view_card)
                    single = Joined(single, "geodesic-single", name, ("weights",))
                views["single"] = single
                sizes = {"single": hp.single_batch} if hp.single_batch else {}
            params = ("net", "shape_prior") if hp.shape_prior else ("net",)
            stages.append(
                Stage(
                    "finetune",
                    views=views,
                    length=Epochs(hp.finetune_epochs, role="target"),
                    batch_sizes=sizes,
                    # stage 3 ended at half the lr: fine-tuning continues there
                    optimizers={"main": _adam(params, hp.lr * 0.5)},
                    reads=FINETUNE_READS,
                )
            )
        if hp.spp != "none":
            # after the cascade: only the map trains, on labelled target training images
            before = STAGE3_READS if stages[-1].name == "stage3" else FINETUNE_READS
            stages[-1] = dataclasses.replace(stages[-1], evaluate=False, reads=before)
            stages.append(
                Stage(
                    "spp",
                    views={"target": Labelled("target")},
                    length=Epochs(hp.spp_epochs, role="target"),
                    optimizers={"main": _adam(("spp",), hp.spp_lr)},
                )
            )
        return stages

    @classmethod
    def notes(cls, hp: Mapping[str, Any]) -> str:
        if hp.get("spp", "none") == "none":
            return ""
        return (
            f"supervised post-processing ({hp['spp']} map fitted on the target's training "
            "labels): not unsupervised"
        )

    @classmethod
    def losses(cls, hp: Any, stage: str) -> tuple[str, ...]:
        if stage == "spp":
            return ("spp",)
        if stage.startswith("geodesic"):
            return ()
        k = 2 if stage == "finetune" else CASCADE.index(stage)  # fine-tuning: stage 3's
        out = ["skel"]
        if hp.uses_physique(k):
            out.append("phys")
        if k == 0:
            out += ["init", "bone"]
        if k == 1:
            out.append("tie")
        out += ["eq", "sym"]
        if hp.multi_view and hp.depth_weight > 0:
            out.append("depth")
        return tuple(out)
