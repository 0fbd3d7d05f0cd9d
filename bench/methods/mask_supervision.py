"""Mask as Supervision (S003, ECCV 2024): the adapter. Declaration and stages in
``bench/methods/specs/mask_supervision.py``; every choice where the paper is silent in
``methods/mask-as-supervision.yaml``."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.atomic import atomic_path
from bench.data.pairs import PairShards, eval_batches
from bench.data.views import extra_role
from bench.errors import DabenchError
from bench.losses.geodesic import geodesic_weights_batch
from bench.losses.mask_losses import (
    bone_length_loss,
    centroid_targets,
    equivariance_loss,
    init_loss,
    physique_loss,
    random_affines,
    skeleton_loss,
    symmetry_loss,
    tie_loss,
    warp_images,
)
from bench.methods.base import Method
from bench.methods.common import WindowMean
from bench.methods.mas_modules import skeleton, skeleton_mask
from bench.methods.specs.mask_supervision import (
    CASCADE,
    FORMS,
    GEODESIC_FILE,
    MaskSpec,
    extra_geodesic_file,
)
from bench.models.backbones import normalize_images
from bench.models.pose_net import Prediction
from bench.models.shape_prior import ShapePrior
from bench.models.skeleton_maps import grid_to_heatmap, heatmap_to_grid
from bench.models.triangulation import projection_matrices, reproject

# Joints by name: the spine chain of the constant bone lengths (supp. A.1), the symmetric
# pairs and their centres (Eq. 14: shoulders about the thorax, hips about the pelvis), the
# pairs tied in stage 2 (wrists, elbows), and the stage-0 pair (pelvis, thorax).
SPINE = ("pelvis", "spine", "thorax", "neck", "head")
SYMMETRIC = (("l_shoulder", "r_shoulder", "thorax"), ("l_hip", "r_hip", "pelvis"))
TIED = (("l_wrist", "r_wrist"), ("l_elbow", "r_elbow"))
EXPORT_BATCH = 256


class MaskAsSupervision(Method):
    spec = MaskSpec
    predictor_parts = ("net", "spp")

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        hp = self.hparams
        jset = self.joint_set
        if jset is None:
            raise DabenchError(
                "mask-as-supervision draws skeletons from the kinematic tree: build it with "
                "the pair's joint set"
            )
        self.skeletons = [skeleton(jset, form, hp.structure) for form in FORMS]
        index = {name: i for i, name in enumerate(jset.joints)}
        self.spine = [(index[a], index[b]) for a, b in pairwise(SPINE)]
        self.symmetric = [(index[lf], index[rt]) for lf, rt, _ in SYMMETRIC]
        self.centres = [index[c] for *_, c in SYMMETRIC]
        self.tied = [(index[a], index[b]) for a, b in TIED]
        self.pelvis, self.thorax = index["pelvis"], index["thorax"]
        self.mask_size = hp.mask_size or self.net.config.img_size
        # ψ is made when stage 2 starts (the earlier stages hold the same modules with and
        # without it, so their artifacts are shared)
        self.shape_prior: ShapePrior | None = None
        # the supervised post-processing map, made when its stage starts
        self.spp: nn.Module | None = None
        self._scalars = {k: WindowMean() for k in ("mask_iou",)}

    # -- stages ---------------------------------------------------------------------------------
    def on_stage_start(self, stage, ctx) -> None:
        if stage.name == "spp":
            # only the map trains: the detector is what the cascade made
            self.freeze(self.net)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(torch.initial_seed() + 3)
                made = spp_map(self.hparams.spp, self.net.num_joints, self.hparams.spp_hidden)
            self.spp = made.to(next(self.net.parameters()).device)
        if stage.name == "stage2" and self.hparams.shape_prior:
            hp = self.hparams
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(torch.initial_seed() + 2)
                made = ShapePrior(hp.psi_channels, skips=hp.psi_skips, norm=hp.psi_norm)
            self.shape_prior = made.to(next(self.net.parameters()).device)

    def training_step(self, stage: str, batch, ctx) -> dict[str, Tensor]:
        if stage == "spp":
            return {"spp": self._spp_loss(batch["target"])}
        hp = self.hparams
        k = stage_index(stage)
        tgt = batch["target"]
        multi = tgt["images"].ndim == 5
        # one forward pass over the target's images (every view of every group) and, in
        # mixed-view fine-tuning, the single-view images of the other dataset after them
        parts = [tgt, batch["single"]] if "single" in batch else [tgt]
        flat = [_flat(part, "images") for part in parts]
        x = normalize_images(torch.cat(flat))
        coords = self.net(x)["coords"]
        own = 2 * coords[..., :2].float() - 1  # the detector's 2D, grid coordinates
        losses: dict[str, Tensor] = {}
        draw = own
        if multi:
            n = flat[0].shape[0]
            drawn, depth = self._multi_view(own[:n], coords[:n], tgt)
            draw = torch.cat([drawn, own[n:]])
            if hp.depth_weight > 0:
                losses["depth"] = hp.depth_weight * depth
        gt = self._resize(torch.cat([_flat(part, "masks") for part in parts]))
        m_skel = skeleton_mask(
            draw,
            self.skeletons[k],
            (self.mask_size, self.mask_size),
            hp.bone_width[k],
            arm_factor=hp.arm_factor,
            merge=hp.merge,
            clip=hp.clip_sum,
        )
        weights = None
        if hp.uses_geodesic(k):
            # float32 before the cat: the artifact stores half precision, and autocast
            # refuses to concatenate float16 with its own bf16
            weights = torch.cat([_flat(part, "weights").float() for part in parts])
            if hp.geodesic_norm == "mean":
                weights = weights / weights.mean(dim=(-2, -1), keepdim=True)
        clip = hp.skel_clip or None
        losses["skel"] = hp.skel_weight[k] * skeleton_loss(
            m_skel, gt, weights, clip=clip, weight_power=hp.weight_power
        )
        if hp.uses_physique(k):
            m_phys = self.shape_prior(m_skel[:, None])
            losses["phys"] = hp.phys_weight[k - 1] * physique_loss(
                m_phys, gt, weights, weight_power=hp.weight_power
            )
        self._scalars["mask_iou"].add(_soft_iou(m_skel.detach().clamp(0, 1), gt))
        stage_step = ctx.stage_step
        if k == 0:
            pelvis, thorax, valid = centroid_targets(gt, hp.thorax_offset)
            on = stage_step < hp.init_steps
            losses["init"] = (hp.init_weight if on else 0.0) * init_loss(
                own[:, self.pelvis], own[:, self.thorax], pelvis, thorax, valid
            )
            lengths = torch.tensor(hp.bone_lengths, device=own.device, dtype=own.dtype)
            losses["bone"] = hp.bone_weight * bone_length_loss(own, self.spine, lengths)
        if k == 1:
            on = stage_step < hp.tie_steps
            losses["tie"] = (hp.tie_weight if on else 0.0) * tie_loss(own, self.tied)
        if hp.eq_weight > 0:
            losses["eq"] = hp.eq_weight * self._equivariance(x, own)
        else:
            losses["eq"] = own.sum() * 0
        losses["sym"] = hp.sym_weight * symmetry_loss(own, self.symmetric, self.centres)
        return losses

    def _resize(self, masks: Tensor) -> Tensor:
        """uint8 masks [N,H,W] (0/1 or 0/255) → float [N,m,m] in [0, 1] at the mask size."""
        m = masks.float()
        m = m / 255.0 if m.amax() > 1 else m
        if m.shape[-1] != self.mask_size or m.shape[-2] != self.mask_size:
            size = (self.mask_size, self.mask_size)
            m = F.interpolate(m[:, None], size=size, mode="bilinear", antialias=True)[:, 0]
        return m

    def _multi_view(self, own: Tensor, coords: Tensor, tgt) -> tuple[Tensor, Tensor]:
        """Δ of Eq. 10: the views' 2D triangulated and re-projected into every view (the
        points each view's mask is drawn from), and the depth loss: the detector's
        root-relative depth against the triangulated pose's in each camera."""
        b, v = tgt["images"].shape[:2]
        size = self.net.config.img_size
        uv = grid_to_heatmap(own, (size, size))  # grid → image px
        proj = projection_matrices(tgt["K"].float(), tgt["cam_R"].float(), tgt["cam_t"].float())
        world, uv_re = reproject(uv.view(b, v, *uv.shape[1:]), proj)
        draw = heatmap_to_grid(uv_re.flatten(0, 1), (size, size))
        with torch.no_grad():
            cam = torch.einsum("bvij,bkj->bvki", tgt["cam_R"].float(), world.detach())
            cam = cam + tgt["cam_t"].float()[:, :, None]
            z = (cam[..., 2] - cam[..., self.root : self.root + 1, 2]).flatten(0, 1)
            z = z / self.net.config.depth_range_mm
        depth = F.mse_loss(coords[..., 2].float(), z)
        return draw, depth

    def _equivariance(self, x: Tensor, own: Tensor) -> Tensor:
        """L_eq (Eq. 13): keypoints of an affinely warped image against the warped keypoints."""
        hp = self.hparams
        gen = torch.Generator(device="cpu").manual_seed(int(torch.randint(0, 2**31, ()).item()))
        affines = random_affines(
            x.shape[0],
            generator=gen,
            scale=hp.eq_scale,
            rotation_deg=hp.eq_rotation,
            p_rotate=hp.eq_rotate_prob,
        ).to(device=x.device, dtype=own.dtype)
        warped = self.net(warp_images(x, affines.to(x.dtype)))["coords"]
        return equivariance_loss(2 * warped[..., :2].float() - 1, own, affines)

    def _spp_loss(self, labelled) -> Tensor:
        """The map from the frozen detector's keypoints to the labelled joints, both in the
        head's normalised (x, y, z), mean squared error."""
        with torch.no_grad():
            coords = self.net(labelled["images"])["coords"].float()
        target = self.net.targets(labelled["kp2d"], labelled["kp3d"], self.root)
        known = torch.isfinite(target)
        err = (self._mapped(coords) - torch.nan_to_num(target)) ** 2
        return (err * known).sum() / known.sum().clamp_min(1)

    def _mapped(self, coords: Tensor) -> Tensor:
        return self.spp(coords.flatten(1)).view_as(coords)

    def scalars(self) -> dict[str, float]:
        out = {}
        value = self._scalars["mask_iou"].pop()
        if value is not None:
            out["skeleton_mask_iou"] = value
        return out

    # -- the geodesic artifact ------------------------------------------------------------------
    def export_artifact(self, stage: str, directory: Path, pair: PairShards) -> None:
        """After "geodesic": G of every target training mask (float16, one row per shard row,
        at the mask size), read by the cascade's stages through a Joined view; after
        "geodesic-single", the same for the other dataset of mixed-view fine-tuning."""
        hp = self.hparams
        if stage == "geodesic":
            shards = {GEODESIC_FILE: pair.path("target", "train")}
        elif stage == "geodesic-single":  # mixed-view fine-tuning's other dataset
            card = hp.single_view_card
            shards = {extra_geodesic_file(card): pair.info(extra_role(card)).path}
        else:
            return
        for name, shard in shards.items():
            chunks = []
            for b in eval_batches(shard, ("masks",), EXPORT_BATCH):
                masks = self._resize(b["masks"]).numpy()
                chunks.append(geodesic_weights_batch(masks, hp.geodesic_params))
            weights = np.concatenate(chunks).astype(np.float16)
            with atomic_path(Path(directory) / name) as tmp, h5py.File(tmp, "w") as f:
                f.create_dataset("weights", data=weights, chunks=(1, *weights.shape[1:]))

    # -- prediction -----------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, images: Tensor) -> Prediction:
        """The detector's integral (x, y, z) — through the SPP map where one was fitted —
        as px in the crop and root-relative depth."""
        coords = self.net(images)["coords"]
        if self.spp is not None:
            coords = self._mapped(coords.float())
        return self.net.decode({"coords": coords}, self.root)


def spp_map(kind: str, joints: int, hidden: int) -> nn.Module:
    """SPP's θ: R^{J×3} → R^{J×3} (S003 Sec. 3.3), "linear" (initialised to the identity:
    the discovered keypoints are already meant as joints) or "mlp" (two hidden layers)."""
    n = 3 * joints
    if kind == "linear":
        linear = nn.Linear(n, n)
        with torch.no_grad():
            linear.weight.copy_(torch.eye(n))
            linear.bias.zero_()
        return linear
    if kind == "mlp":
        return nn.Sequential(
            nn.Linear(n, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, n),
        )
    raise DabenchError(f"unknown spp {kind!r}; valid: linear, mlp")


def stage_index(stage: str) -> int:
    """The cascade stage whose settings a stage uses: fine-tuning continues stage 3's."""
    return 2 if stage == "finetune" else CASCADE.index(stage)


def _flat(part: dict[str, Tensor], field: str) -> Tensor:
    """A batch field of single images [B,...] or of view groups [B,V,...] as [N,...]."""
    value = part[field]
    grouped = part["images"].ndim == 5
    return value.flatten(0, 1) if grouped else value


def _soft_iou(pred: Tensor, gt: Tensor) -> Tensor:
    inter = (pred * gt).flatten(1).sum(1)
    union = (pred + gt - pred * gt).flatten(1).sum(1)
    return (inter / union.clamp_min(1e-6)).mean()
