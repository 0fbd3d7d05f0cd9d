"""Geometric reconstruction (Lin et al., NeurIPS 2023): the adapter. Declaration and stages
in ``bench/methods/specs/geometric.py``; every choice where the papers are silent in
``methods/geometric-reconstruction.yaml``."""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.data.joints import JointSet
from bench.errors import DabenchError
from bench.losses.contrastive import info_nce
from bench.losses.pseudo_labels import (
    confidence_mask,
    heatmap_errors,
    kinematic_correction,
    mask_overlap,
    pseudo_heatmaps,
    pseudo_loss,
    reprojection_mask,
)
from bench.methods.base import Method
from bench.methods.common import WindowMean, ema_update, match_images
from bench.methods.specs.geometric import GeometricSpec
from bench.models.backbones import normalize_images
from bench.models.heatmaps import (
    argmax_2d,
    gaussian_targets,
    heatmap_to_image,
    image_to_heatmap,
    soft_argmax_2d,
)
from bench.models.lifting import lift_25d, root_depth_from_bone
from bench.models.pose_net import Prediction
from bench.models.reconstruction import (
    DenseMotion,
    Generator,
    UNetGenerator,
    bone_affines,
    relative_affines,
)
from bench.models.skeleton_maps import bone_maps, heatmap_to_grid
from bench.models.style_net import StyleNet, mirror_decoder
from bench.models.vgg import (
    PerceptualLoss,
    VGGFeatures,
    build_vgg19_features,
    load_vgg19,
    random_vgg19,
)

# The bone whose length scales a sample for the kinematic correction and fixes the root
# depth of a lifted 2.5D pose (Iqbal et al.'s wrist → index MCP for hands); other joint sets
# use the bone from the root to its first child.
SCALE_BONES = {
    "hand21": ("wrist", "index_mcp"),
    "h36m17": ("pelvis", "spine"),
    "mpii16": ("pelvis", "thorax"),
    "smpl24": ("pelvis", "spine1"),
}


def scale_bone(jset: JointSet) -> tuple[int, int]:
    """(parent, child) of the bone that scales a sample of ``jset``."""
    if jset.name in SCALE_BONES:
        parent, child = SCALE_BONES[jset.name]
        return jset.joints.index(parent), jset.joints.index(child)
    child = next(k for k, p in enumerate(jset.parents) if p == jset.root)
    return jset.root, child


def bones_of(jset: JointSet) -> list[tuple[int, int]]:
    """Every (parent, child) edge of the kinematic tree: the J bones of Eq. 6."""
    return [(p, k) for k, p in enumerate(jset.parents) if p >= 0]


class Reconstructor(nn.Module):
    """W and G of Sec. 3.3.2: the driving frame from the base frame and both frames'
    keypoint heatmaps. ``reconstruction="warp"``: bone maps (Eq. 6) → per-bone affines by
    SVD (Eq. 7) → W's masks, flow and inpainting map (Eq. 8) → G with warped skips;
    ``"heatmap"`` (Table 3's L_heatmap): no W, G reads the base image and both frames'
    heatmaps."""

    def __init__(self, hp: Any, jset: JointSet, img_size: int) -> None:
        super().__init__()
        self.mode = hp.reconstruction
        self.bones = bones_of(jset)
        # bone ends as index tensors once, not every step (non-persistent: not state)
        self.register_buffer("bone_parents", torch.tensor([b[0] for b in self.bones]), False)
        self.register_buffer("bone_children", torch.tensor([b[1] for b in self.bones]), False)
        self.num_joints = jset.num_joints
        self.motion_size = max(1, img_size // 4)  # D and C at H/4 × W/4 (Sec. 3.3.2)
        # σ of Eq. 6 in grid units (the image spans 2)
        self.sigma = 2.0 * hp.bone_sigma
        self.squared = hp.distance == "squared"
        extra = 0
        self.motion: DenseMotion | None = None
        if self.mode == "warp":
            self.motion = DenseMotion(
                len(self.bones), channels=hp.motion_channels, max_channels=hp.motion_max_channels
            )
        else:
            extra = 2 * jset.num_joints
        maker = Generator if hp.generator == "johnson" else UNetGenerator
        self.generator = maker(channels=hp.generator_channels, extra_channels=extra)

    def forward(self, base: Tensor, probs_base: Tensor, probs_drv: Tensor) -> Tensor:
        """``base`` [B,3,H,W] in [0,1]; ``probs_*`` [B,K,h,w] the keypoint heatmaps as
        spatial probabilities (softmax(β·h)) → the reconstructed driving frame in [0,1]."""
        if self.mode == "heatmap":
            size = base.shape[-2:]
            maps = torch.cat([_peak_one(probs_base), _peak_one(probs_drv)], dim=1)
            extra = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
            return self.generator(base, None, None, extra=extra)
        size = (self.motion_size, self.motion_size)
        mu_b, mu_d = _expected_grid(probs_base), _expected_grid(probs_drv)
        maps_b = bone_maps(mu_b, self.bones, size, self.sigma, squared=self.squared)
        maps_d = bone_maps(mu_d, self.bones, size, self.sigma, squared=self.squared)
        ends = (self.bone_parents, self.bone_children)
        affine_b = bone_affines(maps_b, 0.5 * (mu_b[:, ends[0]] + mu_b[:, ends[1]]))
        affine_d = bone_affines(maps_d, 0.5 * (mu_d[:, ends[0]] + mu_d[:, ends[1]]))
        small = F.interpolate(base, size=size, mode="bilinear", antialias=True)
        motion = self.motion(small, maps_b, maps_d, relative_affines(affine_d, affine_b))
        return self.generator(base, motion["flow"], motion["occlusion"])


def _expected_grid(probs: Tensor) -> Tensor:
    """Eq. 5: the expected location of each probability map, in grid coordinates."""
    h, w = probs.shape[-2:]
    xs = torch.arange(w, device=probs.device, dtype=probs.dtype)
    ys = torch.arange(h, device=probs.device, dtype=probs.dtype)
    xy = torch.stack([(probs.sum(-2) * xs).sum(-1), (probs.sum(-1) * ys).sum(-1)], dim=-1)
    return heatmap_to_grid(xy, (h, w))


def _peak_one(probs: Tensor) -> Tensor:
    return probs / probs.flatten(-2).amax(-1).clamp_min(1e-12)[..., None, None]


def _unit_images(images: Tensor) -> Tensor:
    """uint8 [B,H,W,3] → float [B,3,H,W] in [0,1] (what G and the perceptual loss read)."""
    return images.permute(0, 3, 1, 2).float().div(255.0)


class GeometricReconstruction(Method):
    spec = GeometricSpec

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        hp = self.hparams
        if self.joint_set is None:
            raise DabenchError(
                "geometric-reconstruction reads the kinematic tree (bone maps, kinematic "
                "correction): build it with the pair's joint set"
            )
        if self.net.config.head != "2.5d":
            raise DabenchError(
                "geometric-reconstruction predicts 2.5D (K heatmaps + K depth maps, S002): "
                f"model.head must be 2.5d, got {self.net.config.head}"
            )
        jset = self.joint_set
        self.scale_bone = scale_bone(jset)
        # Features built from a file or a seed are not state: they are rebuilt identically,
        # so checkpoints and artifacts leave them out (a full VGG-19 is 80 MB). Features
        # trained here (trained-vgg19) are state, kept with the stage that trained them.
        self.vgg: VGGFeatures | None = None
        self.style_net: StyleNet | None = None
        self.perceptual: PerceptualLoss | None = None
        self.feature_stack: nn.Sequential | None = None
        self.feature_decoder: nn.Sequential | None = None
        if hp.needs_features:
            depth = "relu5_1" if hp.reconstructs else "relu4_1"
            if hp.trains_features:
                # always to relu5_1, so that variants with and without L_rec share the
                # trained stack (StyleNet reads its first four slices)
                stack = random_vgg19(hp.feature_width, "relu5_1", hp.feature_seed)
                self.feature_stack = stack
                self.feature_decoder = mirror_decoder(stack)
                # a 25-conv plain autoencoder barely moves from PyTorch's default conv init
                # (activations shrink layer by layer); He init keeps their scale and it learns
                for layer in self.feature_decoder:
                    if isinstance(layer, nn.Conv2d):
                        nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
                        nn.init.zeros_(layer.bias)
            elif hp.features == "vgg19":
                if not hp.vgg_weights:
                    raise DabenchError(
                        "geometric-reconstruction: features vgg19 needs vgg_weights, a local "
                        "VGG-19 file (torchvision or timm layout); without one use features "
                        "random-vgg19 (the synthetic benchmark's substitute)"
                    )
                stack = build_vgg19_features(1.0, depth)
                load_vgg19(stack, hp.vgg_weights)
            else:
                stack = random_vgg19(hp.feature_width, depth, hp.feature_seed)
            self.vgg = VGGFeatures(stack)
            self.freeze(self.vgg)
            if hp.aligns:
                self.style_net = StyleNet(stack, style_loss=hp.style_loss)
            if hp.reconstructs:
                self.perceptual = PerceptualLoss(self.vgg)
        self.projection: nn.Module | None = None
        if hp.aligns and hp.align_feature == "projection":
            c = self.net.feature_channels
            self.projection = nn.Sequential(
                nn.Linear(c, c), nn.ReLU(inplace=True), nn.Linear(c, hp.projection_dim)
            )
        # W and G are made when the generator stage starts, so that the stages before it
        # hold the same modules with and without L_rec (their artifacts are shared)
        self.reconstructor: Reconstructor | None = None
        # The source's mean bone lengths (mm), indexed by child joint: the reference of the
        # kinematic correction, accumulated over the labelled batches of pre-training
        k = jset.num_joints
        self.register_buffer("bone_sum", torch.zeros(k, dtype=torch.float64))
        self.register_buffer("bone_count", torch.zeros(k, dtype=torch.float64))
        self.teacher: nn.Module | None = None  # the mean teacher, made at fine-tuning's start
        self._rebuilt = self._rebuilt_keys()
        self._register_state_dict_hook(_drop_rebuilt)
        self.register_load_state_dict_post_hook(_ignore_rebuilt)
        self._scalars = {k: WindowMean() for k in ("overlap", "m2d", "m3d", "align", "rec")}

    def _rebuilt_keys(self) -> set[str]:
        if self.vgg is None or self.feature_stack is not None:
            return set()
        frozen = {id(t) for t in (*self.vgg.parameters(), *self.vgg.buffers())}
        named = (
            *self.named_parameters(remove_duplicate=False),
            *self.named_buffers(remove_duplicate=False),
        )
        return {name for name, t in named if id(t) in frozen}

    # -- the keypoint predictor's outputs -------------------------------------------------------
    def _outputs(self, net: nn.Module, images: Tensor) -> dict[str, Tensor]:
        """Heatmaps ĥ [B,K,h,w] (regressed to Gaussians), their spatial probabilities
        softmax(β·ĥ), the depth d̂ = Σ_p softmax(β·ĥ)(p)·D(p) [B,K] (normalised like
        PoseNet.targets' z), and the soft-argmax (x, y) in heatmap px."""
        out = net(images)
        heat = out["heatmaps"]
        xy, probs = soft_argmax_2d(heat.float(), self.hparams.softmax_beta)
        depth = (probs * out["depth"].float()).sum(dim=(-2, -1))
        return {"heat": heat, "probs": probs, "depth": depth, "xy": xy, "feat": out["feat"]}

    def _coords(self, xy_hm: Tensor, depth: Tensor, size: tuple[int, int]) -> Tensor:
        """Heatmap px and normalised depth → PoseNet's normalised (x, y, z)."""
        h, w = size
        return torch.stack([(xy_hm[..., 0] + 0.5) / w, (xy_hm[..., 1] + 0.5) / h, depth], -1)

    def _sup_loss(self, o: dict[str, Tensor], labels: dict[str, Tensor]) -> Tensor:
        """Eq. 1: heatmaps against Gaussians (σ = 2 heatmap px) at visible joints, plus
        λ_d × the root-relative depth of every joint with a 3D label."""
        hp = self.hparams
        heat = o["heat"].float()
        size = tuple(heat.shape[-2:])
        xy = image_to_heatmap(labels["kp2d"], self.net.config.heatmap_stride)
        target, weight = gaussian_targets(xy, labels["vis"], size, hp.heatmap_sigma)
        z = self.net.targets(labels["kp2d"], labels["kp3d"], self.root)[..., 2]
        known = torch.isfinite(z)
        dz = torch.where(known, o["depth"] - torch.nan_to_num(z), torch.zeros_like(o["depth"]))
        dh = (heat - target) * weight[..., None, None]
        if hp.sup_form == "norm":
            heat_term = dh.flatten(1).norm(dim=1)
            depth_term = torch.sqrt((dz**2).sum(-1) + 1e-12)
            return (heat_term + hp.lambda_d * depth_term).mean()
        heat_term = (dh**2).mean()
        depth_term = (dz**2).sum() / known.sum().clamp_min(1)
        return heat_term + hp.lambda_d * depth_term

    # -- stages ---------------------------------------------------------------------------------
    def on_stage_start(self, stage, ctx) -> None:
        if self.feature_stack is not None:
            # trainable in its own stage only; frozen features for every later one
            self.feature_stack.requires_grad_(stage.name == "features")
        if stage.name == "generator":
            # initial weights from the trial's seed alone, whichever path led here
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(torch.initial_seed() + 1)
                made = Reconstructor(self.hparams, self.joint_set, self.net.config.img_size)
            self.reconstructor = made.to(next(self.net.parameters()).device)
        if stage.name == "finetune" and self.hparams.pseudo_labels:
            # the mean teacher starts as the pre-trained predictor (on a resumed run the
            # checkpoint loaded next overwrites it with the stored teacher)
            self.teacher = copy.deepcopy(self.net)
            self.freeze(self.teacher)

    def after_optimizer_step(self, stage: str, optimizer: str, ctx) -> None:
        if stage == "finetune" and self.teacher is not None:
            # θ_t ← α θ_t + (1 − α) θ_s, parameters only (UniFrame's OldWeightEMA)
            ema_update(self.teacher, self.net, self.hparams.ema)

    def training_step(self, stage: str, batch, ctx) -> dict[str, Tensor]:
        if stage == "features":
            return {"pixel": self._features(batch)}
        if stage == "stylenet":
            return self._stylenet(batch)
        if stage == "pretrain":
            return self._pretrain(batch)
        if stage == "generator":
            return {"rec": self._generator(batch)}
        return self._finetune(batch, ctx)

    def _features(self, batch) -> Tensor:
        """features trained-vgg19: the VGG stack to relu5_1 and its mirrored decoder as an
        autoencoder, ℓ1 between source and target images (ImageNet-normalised, as the stack
        reads them) and their reconstructions."""
        src = batch["source"]["images"]
        x = normalize_images(torch.cat([src, match_images(batch["target"]["images"], src)]))
        recon = self.feature_decoder(self.feature_stack(x))
        if recon.shape[-2:] != x.shape[-2:]:  # floor pooling of a size not divisible by 16
            recon = F.interpolate(recon, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return (recon - x).abs().mean()

    def _stylenet(self, batch) -> dict[str, Tensor]:
        content = normalize_images(batch["source"]["images"])
        style = normalize_images(match_images(batch["target"]["images"], batch["source"]["images"]))
        losses = self.style_net.losses(content, style)
        return {"content": losses["content"], "style": self.hparams.style_weight * losses["style"]}

    def _pretrain(self, batch) -> dict[str, Tensor]:
        """Eq. 10: L_sup on source images (and their stylised copies, which keep the pose)
        + λ_a·L_align between the two's features (Eq. 2)."""
        hp = self.hparams
        src = batch["source"]
        self._count_bones(src["kp3d"])
        if not hp.aligns:
            return {"sup": self._sup_loss(self._outputs(self.net, src["images"]), src)}
        x = normalize_images(src["images"])
        style = normalize_images(match_images(batch["target"]["images"], src["images"]))
        # UniFrame's content/style mix α ~ U(0, 1) per image
        alpha = torch.rand(x.shape[0], device=x.device)
        with torch.no_grad():
            stylised = self.style_net.stylize(x, style, alpha)
        o = self._outputs(self.net, torch.cat([x, stylised]))
        labels = {k: torch.cat([v, v]) for k, v in src.items() if k in ("kp2d", "kp3d", "vis")}
        z = self.net.pool(o["feat"])
        if self.projection is not None:
            z = self.projection(z)
        n = x.shape[0]
        align = info_nce(z[:n], z[n:], hp.tau)
        self._scalars["align"].add(align)
        return {"sup": self._sup_loss(o, labels), "align": hp.align_weight * align}

    @torch.no_grad()
    def _count_bones(self, kp3d: Tensor) -> None:
        parents = torch.tensor(self.joint_set.parents, device=kp3d.device)
        child = torch.arange(len(parents), device=kp3d.device)[parents >= 0]
        lengths = (kp3d[:, child] - kp3d[:, parents[parents >= 0]]).norm(dim=-1).double()
        ok = torch.isfinite(lengths)
        self.bone_sum[child] += torch.where(ok, lengths, torch.zeros_like(lengths)).sum(0)
        self.bone_count[child] += ok.sum(0).double()

    def reference_lengths(self) -> Tensor:
        """The source's mean bone lengths [K] (mm), indexed by child joint."""
        bones = torch.tensor(self.joint_set.parents, device=self.bone_count.device) >= 0
        if not bool((self.bone_count[bones] > 0).all()):
            raise DabenchError(
                "geometric-reconstruction: no source bone lengths were seen in pre-training; "
                "the kinematic correction has no reference"
            )
        return (self.bone_sum / self.bone_count.clamp_min(1)).float()

    def _pair_images(self, tgt: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """A FramePairs batch [B,2,...] → base and driving frames; images stay uint8."""
        images = tgt["images"]
        return images[:, 0], images[:, 1]

    def _generator(self, batch) -> Tensor:
        """The supplement's generator pre-training: W and G on target frame pairs, driven by
        the frozen pre-trained predictor's keypoints."""
        base, drv = self._pair_images(batch["target"])
        was = self.net.training
        self.net.eval()
        with torch.no_grad():
            o = self._outputs(self.net, torch.cat([base, drv]))
        self.net.train(was)
        n = base.shape[0]
        return self._reconstruction(base, drv, o["probs"][:n], o["probs"][n:])

    def _reconstruction(
        self, base: Tensor, drv: Tensor, probs_b: Tensor, probs_d: Tensor
    ) -> Tensor:
        """Eq. 9: the multi-scale perceptual loss of the reconstructed driving frame."""
        pred = self.reconstructor(_unit_images(base), probs_b, probs_d)
        loss = self.perceptual(pred, _unit_images(drv))
        self._scalars["rec"].add(loss)
        return loss

    def _finetune(self, batch, ctx) -> dict[str, Tensor]:
        """Eq. 11: L_sup + λ_r·L_rec + λ_p·L_pseudo."""
        hp = self.hparams
        src = batch["source"]
        losses = {"sup": self._sup_loss(self._outputs(self.net, src["images"]), src)}
        if "target" not in batch:
            return losses
        tgt = batch["target"]
        if tgt["images"].ndim == 5:  # frame pairs: both frames are target images
            images = tgt["images"].flatten(0, 1)
            intrinsics = tgt["K"].flatten(0, 1)
        else:
            images, intrinsics = tgt["images"], tgt["K"]
        o = self._outputs(self.net, images)
        if hp.pseudo_labels:
            losses["pseudo"] = hp.pseudo_weight * self._pseudo(o, images, intrinsics, ctx)
        if hp.reconstructs:
            probs = o["probs"]
            if ctx.progress < hp.rec_start:
                # warm start: L_sup and L_pseudo train the predictor; L_rec only W and G
                probs = probs.detach()
            losses["rec"] = hp.rec_weight * self._reconstruction(
                tgt["images"][:, 0], tgt["images"][:, 1], probs[0::2], probs[1::2]
            )
        return losses

    def _pseudo(self, o: dict[str, Tensor], images: Tensor, intrinsics: Tensor, ctx) -> Tensor:
        """Eq. 3 against the mean teacher: 2D pseudo-labels (Gaussians at the teacher's
        argmax, kept where its confidence clears the batch quantile: M_2D) and 3D
        pseudo-labels (the teacher's 2.5D pose lifted and kinematically corrected, kept
        where the correction moves its projection by less than γ_3D: M_3D)."""
        hp = self.hparams
        with torch.no_grad():
            t = self._outputs(self.teacher, images)
            heat_t = t["heat"].float()
            size = tuple(heat_t.shape[-2:])
            m2d = confidence_mask(heat_t.flatten(-2).amax(-1), hp.drop_quantile)
            target_2d = pseudo_heatmaps(heat_t, hp.heatmap_sigma)
            xy_t = argmax_2d(heat_t)
            kp2d = heatmap_to_image(xy_t, self.net.config.heatmap_stride)
            depth = t["depth"] - t["depth"][:, self.root : self.root + 1]
            rel = depth * self.net.config.depth_range_mm
            refs = self.reference_lengths()
            p, c = self.scale_bone
            root_z = root_depth_from_bone(kp2d, rel, intrinsics.float(), (p, c), refs[c])
            pose = lift_25d(kp2d, rel, root_z, intrinsics.float())
            fixed = kinematic_correction(pose, self.joint_set.parents, self.root, refs, (p, c))
            proj = fixed @ intrinsics.float().transpose(-1, -2)
            kp2d_fixed = proj[..., :2] / proj[..., 2:].clamp_min(1e-6)
            m3d = reprojection_mask(kp2d, kp2d_fixed, hp.gamma_3d * self.net.config.img_size)
            target_3d = self.net.targets(kp2d_fixed, fixed, self.root)
            self._scalars["overlap"].add(mask_overlap(m2d, m3d))
            self._scalars["m2d"].add(m2d.float().mean())
            self._scalars["m3d"].add(m3d.float().mean())
        heat_err = heatmap_errors(o["heat"].float(), target_2d)
        coords = self._coords(o["xy"], o["depth"], size)
        pose_err = (coords - target_3d).norm(dim=-1)
        return pseudo_loss(
            heat_err,
            pose_err,
            m2d,
            m3d,
            hp.mask_schedule,
            union_now=ctx.progress >= hp.union_from,
            lambda_y=hp.lambda_y,
        )

    def scalars(self) -> dict[str, float]:
        names = {
            "overlap": "mask_overlap",
            "m2d": "m2d_fraction",
            "m3d": "m3d_fraction",
            "align": "align_loss",
            "rec": "rec_loss",
        }
        out = {}
        for key, name in names.items():
            value = self._scalars[key].pop()
            if value is not None:
                out[name] = value
        return out

    # -- prediction -----------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, images: Tensor) -> Prediction:
        """2D from the heatmaps (argmax with the quarter-pixel shift, or soft-argmax(β)),
        root-relative depth pooled by softmax(β·ĥ)."""
        o = self._outputs(self.net, images)
        size = tuple(o["heat"].shape[-2:])
        xy = argmax_2d(o["heat"].float()) if self.hparams.decode == "argmax" else o["xy"]
        return self.net.decode({"coords": self._coords(xy, o["depth"], size)}, self.root)


def _drop_rebuilt(module: GeometricReconstruction, state: dict, prefix: str, local: dict) -> None:
    for name in module._rebuilt:
        state.pop(prefix + name, None)


def _ignore_rebuilt(module: GeometricReconstruction, incompatible: Any) -> None:
    rebuilt = module._rebuilt
    incompatible.missing_keys[:] = [k for k in incompatible.missing_keys if k not in rebuilt]
