"""MPII Human Pose in the common JSON layout of HRNet and mmpose: ``annot/mpii_train.json``
and ``annot/mpii_val.json`` (lists of ``{image, center, scale, joints 16 × 2, joints_vis
16}``, MATLAB's 1-based pixels) with the validation head boxes in ``annot/mpii_gt_val.mat``
(``headboxes_src`` 2 × 2 × N: corner, x/y, sample), images under ``images/``. The
validation list is this card's test split (the official test labels are withheld); head
size = 0.6 × the head-box diagonal, as MPII's evaluation computes it."""

from __future__ import annotations

import json

import numpy as np

from bench.data.convert.base import Converter, Item, register
from bench.data.convert.raw import RawFiles
from bench.errors import DabenchError

LISTS = {"train": "annot/mpii_train.json", "test": "annot/mpii_val.json"}
HEAD_BOXES = "annot/mpii_gt_val.mat"
SC_BIAS = 0.6


@register
class MPII(Converter):
    card = "mpii"
    raw_joints = "mpii16"
    fields = ("subject", "head_size")

    def items(self, raw: RawFiles, split: str) -> list[Item]:
        name = LISTS[split]
        where = raw.root / name
        try:
            entries = json.loads(raw.read_bytes(name, f"the {split} annotation list"))
        except json.JSONDecodeError as exc:
            raise DabenchError(f"mpii: {where} is not valid JSON (cut short?): {exc}") from exc
        if not isinstance(entries, list) or not entries:
            raise DabenchError(f"mpii: {where} must be a non-empty list of annotations")
        heads = np.full(len(entries), np.nan)
        if split == "test":
            boxes = np.asarray(
                raw.loadmat(HEAD_BOXES, "the validation head boxes", ("headboxes_src",))[
                    "headboxes_src"
                ],
                dtype=np.float64,
            )
            if boxes.shape != (2, 2, len(entries)):
                raise DabenchError(
                    f"mpii: {raw.root / HEAD_BOXES} holds headboxes_src of shape {boxes.shape};"
                    f" expected (2, 2, {len(entries)}), one box per entry of {name}"
                )
            heads = SC_BIAS * np.linalg.norm(boxes[1] - boxes[0], axis=0)
        out = []
        for i, entry in enumerate(entries):
            try:
                joints = np.asarray(entry["joints"], dtype=np.float64)
                vis = np.asarray(entry["joints_vis"], dtype=np.float64) > 0
                image = f"images/{entry['image']}"
            except (KeyError, TypeError, ValueError) as exc:
                raise DabenchError(
                    f"mpii: entry {i} of {where} lacks a readable image, joints or joints_vis "
                    f"({type(exc).__name__}: {exc})"
                ) from exc
            if joints.shape != (16, 2) or vis.shape != (16,):
                raise DabenchError(
                    f"mpii: entry {i} of {where} has joints {joints.shape} and joints_vis "
                    f"{vis.shape}; expected (16, 2) and (16,) — the MPII-16 order"
                )
            raw.path(image, f"the image of entry {i} of {name}")
            out.append(Item(image=image, kp2d=joints - 1.0, vis=vis, head_size=heads[i], subject=i))
        return out
