"""MIM-FCR-AR (Park et al.): the adapter. Declaration and stages in
``bench/methods/specs/mim_fcr_ar.py``; every choice where the paper is silent in
``methods/mim-fcr-ar.yaml``."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from bench.atomic import atomic_path
from bench.data.pairs import PairShards, eval_batches
from bench.methods.base import Method
from bench.methods.common import match_images
from bench.methods.mim_modules import (
    MAEDecoder,
    attention_regularisation,
    decoder_size_for,
    fcr_weights,
    load_mae_decoder,
    reconstruction_losses,
    replace_background,
)
from bench.methods.specs.mim_fcr_ar import MASKS_FILE, MimSpec
from bench.models.backbones import normalize_images
from bench.models.gaussian_volumes import (
    decode_volumes,
    gaussian_volume_targets,
    volume_l2_loss,
)
from bench.models.pose_net import Prediction
from bench.models.unet import UNetSegmenter, iou, segmentation_loss
from bench.models.vit_tokens import (
    TokenEncoder,
    load_mae_checkpoint,
    sincos_pos_embed,
    use_sincos_pos_embed,
)

SEGMENTER_FILE = "segmenter.json"  # the segmenter's target IoU, beside its masks
EXPORT_BATCH = 64


class MimFcrAr(Method):
    spec = MimSpec

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        hp = self.hparams
        backbone = self.net.backbone
        # The token view shares the pose network's encoder: registered outside the module
        # tree, so the encoder's weights are stored once, under net.backbone.
        self.__dict__["encoder"] = TokenEncoder(backbone)
        grid = backbone.img_size // backbone.stride
        self.decoder: MAEDecoder | None = None
        if hp.pretrain == "mim":
            use_sincos_pos_embed(backbone)  # MAE's fixed 2-D sin-cos table, frozen
            dim, heads = decoder_size_for(backbone.out_channels)
            self.decoder = MAEDecoder(
                backbone.out_channels,
                grid * grid,
                backbone.stride,
                sincos_pos_embed(dim, grid),
                decoder_dim=dim,
                depth=hp.decoder_depth,
                heads=heads,
            )
            if hp.mae_checkpoint:
                decoder_state = load_mae_checkpoint(backbone, hp.mae_checkpoint)
                if decoder_state:
                    load_mae_decoder(self.decoder, decoder_state)
        self.segmenter = (
            UNetSegmenter(backbone.img_size, channels=hp.segmenter_channels)
            if hp.segments
            else None
        )
        self.attention_net: TokenEncoder | None = None  # f^A, made at fine-tuning's start
        self.segmenter_iou: float | None = None
        self._mae: torch.Tensor | None = None  # MAE's own loss of the last pre-training step

    # -- stages ------------------------------------------------------------------------------
    def on_stage_start(self, stage, ctx) -> None:
        hp = self.hparams
        pos = self.net.backbone.model.pos_embed
        self._mae = None
        if stage.name == "pretrain":
            pos.requires_grad_(False)
        elif stage.name == "finetune":
            # MAE fine-tunes the position embedding it pre-trained with a fixed table
            pos.requires_grad_(True)
            if hp.regularises:
                # f^A: the encoder as pre-training left it (on a resumed run the
                # checkpoint loaded next overwrites this copy with the stored f^A)
                self.attention_net = TokenEncoder(copy.deepcopy(self.net.backbone))
                self.freeze(self.attention_net)
        if "segment" in ctx.artifacts:
            path = Path(ctx.artifacts["segment"]) / SEGMENTER_FILE
            if path.exists():
                self.segmenter_iou = json.loads(path.read_text()).get("target_test_iou")

    def training_step(self, stage: str, batch, ctx) -> dict[str, torch.Tensor]:
        if stage == "segment":
            src = batch["source"]
            logits = self.segmenter.logits(normalize_images(src["images"]))
            return {"seg": segmentation_loss(logits, src["masks"].float())}
        if stage == "pretrain":
            return {"recon": self._reconstruction(batch)}
        return self._finetune(batch, ctx)

    def _reconstruction(self, batch) -> torch.Tensor:
        """Eq. 3 on source and target images (their backgrounds replaced by unconstrained
        images where a mask says where the subject is), weighted by Eq. 2."""
        hp = self.hparams
        patch = self.net.backbone.stride
        backgrounds = batch["backgrounds"]["images"] if hp.backgrounds else None
        images, weights = [], []
        for role in ("source", "target"):
            if role not in batch:
                continue
            x = batch[role]["images"]
            masks = batch[role]["masks"].float() if "masks" in batch[role] else None
            if backgrounds is not None and masks is not None:
                x, _ = replace_background(
                    x, masks, match_images(backgrounds, x), hp.background_prob
                )
            if hp.fcr and masks is not None:
                weights.append(fcr_weights(masks, patch, hp.alpha))
            else:
                n = (x.shape[1] // patch) * (x.shape[2] // patch)
                weights.append(torch.ones(x.shape[0], n, device=x.device))
            images.append(x)
        x = normalize_images(torch.cat(images))
        tokens, masking = self.encoder.forward_masked(x, hp.mask_ratio)
        pred = self.decoder(tokens, masking.ids_restore)
        losses = reconstruction_losses(
            pred, x, masking.mask, torch.cat(weights), patch, hp.norm_pix
        )
        self._mae = losses["mae"].detach()
        return losses["wmae"]

    def _pose_loss(self, src) -> torch.Tensor:
        """Eq. 5: L2 to a 3-D Gaussian at every joint with a 3D label (occluded joints
        included, as the integral loss's depth)."""
        hp = self.hparams
        volumes = self.net(src["images"])["volumes"]
        coords = self.net.targets(src["kp2d"], src["kp3d"], self.root)
        labelled = torch.isfinite(coords).all(dim=-1)
        target, weights = gaussian_volume_targets(
            coords, labelled, tuple(volumes.shape[-3:]), hp.heatmap_sigma
        )
        return hp.pose_weight * volume_l2_loss(volumes, target, weights)

    def _attention_loss(self, target) -> torch.Tensor:
        """Eq. 6 on target images: the trainable encoder's class-token attention against
        the frozen pre-trained copy's."""
        x = normalize_images(target["images"])
        _, rows = self.encoder.cls_attention(x)
        with torch.no_grad():
            _, frozen = self.attention_net.cls_attention(x)
        return self.hparams.attn_weight * attention_regularisation(rows, frozen)

    def _finetune(self, batch, ctx) -> dict[str, torch.Tensor]:
        hp = self.hparams
        if not hp.regularises:
            return {"pose": self._pose_loss(batch["source"])}
        if hp.ar_update == "sum":  # Eq. 7
            return {
                "pose": self._pose_loss(batch["source"]),
                "attn": self._attention_loss(batch["target"]),
            }
        # Algorithm 1: an update on L_kpt (source), then one on L_attn (target)
        pose = self._pose_loss(batch["source"])
        ctx.backward(pose, "main")
        ctx.optimizer_step("main")
        attn = self._attention_loss(batch["target"])
        ctx.backward(attn, "main")
        ctx.optimizer_step("main")
        return {"pose": pose.detach(), "attn": attn.detach()}

    def scalars(self) -> dict[str, float]:
        out = {"mae_loss": float(self._mae)} if self._mae is not None else {}
        if self.segmenter_iou is not None:
            out["segmenter_target_iou"] = self.segmenter_iou
        return out

    # -- the segmenter's artifact -------------------------------------------------------------
    @torch.no_grad()
    def export_artifact(self, stage: str, directory: Path, pair: PairShards) -> None:
        """After "segment": S_T, the segmenter's binary mask of every target training image
        (one row per row of the shard, read by the pre-training's FromArtifact view), and
        its IoU on the target test images where that shard has masks."""
        if stage != "segment":
            return
        was_training = self.segmenter.training
        self.segmenter.eval()
        try:
            masks = self._segment(pair.path("target", "train"))
            with atomic_path(Path(directory) / MASKS_FILE) as tmp, h5py.File(tmp, "w") as f:
                f.create_dataset("masks", data=masks, compression="gzip", chunks=True)
            info: dict[str, Any] = {"threshold": 0.5, "target_test_iou": None}
            if "masks" in pair.info("target_test").fields:
                scores = self._segment(pair.path("target", "test"), with_iou=True)
                info["target_test_iou"] = float(scores.mean())
            (Path(directory) / SEGMENTER_FILE).write_text(json.dumps(info, indent=1))
        finally:
            self.segmenter.train(was_training)

    def _segment(self, shard: Path, with_iou: bool = False) -> np.ndarray:
        device = next(self.segmenter.parameters()).device
        fields = ("images", "masks") if with_iou else ("images",)
        out = []
        for b in eval_batches(shard, fields, EXPORT_BATCH):
            probs = self.segmenter(normalize_images(b["images"].to(device)))
            if with_iou:
                out.append(iou(probs, b["masks"].to(device).float()).cpu())
            else:
                out.append((probs > 0.5).to(torch.uint8).cpu())
        return torch.cat(out).numpy()

    # -- prediction ---------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> Prediction:
        """Decode the Gaussian volumes (soft-argmax with a sharpening β, or argmax): an
        L2-regressed volume is not the logit map PoseNet's own decoding assumes."""
        volumes = self.net(images)["volumes"]
        coords = decode_volumes(volumes, self.hparams.decode)
        return self.net.decode({"coords": coords}, self.root)
