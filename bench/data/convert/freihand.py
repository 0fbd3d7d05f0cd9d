"""FreiHAND v2 (``FreiHAND_pub_v2/`` with ``FreiHAND_pub_v2_eval.zip`` unpacked into it).

Raw layout read: ``training_K.json`` and ``training_xyz.json`` (lists of N 3 × 3 intrinsics
and N 21 × 3 joints in metres, camera frame), ``training/rgb/%08d.jpg`` (image id
``idx + N·k`` for the colour versions k = 0 gs, 1 hom, 2 sample, 3 auto: the same pose and
labels four times), ``training/mask/%08d.jpg`` (one JPEG grey hand mask per pose ``idx``,
shared by its four versions, thresholded by :meth:`Converter.mask_of`);
``evaluation_K.json``, ``evaluation_xyz.json`` and ``evaluation/rgb/%08d.jpg``. N is
``len(training_K.json)``, not the hard-coded 32,560 of the official code (datasets.md §7).
The MANO, vertex and scale files are not read.

Splits (the card's): train = every training image, all four versions, in image-id order;
test = the evaluation images. ``seq`` = the pose id ``idx`` in both splits, so that the four
versions of a pose stay together when the harness holds sequences out.

Units: ``kp3d = xyz · 1000`` (mm); ``kp2d`` = the projection of ``xyz`` with the sample's
``K`` (FreiHAND's own ``projectPoints``), taken as 0-based pixels with centres at integers.
No visibility labels: every joint is visible. Joints are in the C21 order (hand21,
identity); right hands only, not mirrored.

Masks: the training shard has them; the test shard has none (the official code documents
no evaluation masks; ``evaluation/segmap`` was seen in one user repository only, with an
unknown encoding, and is not read: a guessed threshold could give wrong masks silently).
:meth:`FreiHAND.fields_of` gives each split its fields.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from bench.data.convert.base import Converter, Item, register
from bench.data.convert.raw import RawFiles
from bench.errors import DabenchError

JOINTS = 21
VERSIONS = ("gs", "hom", "sample", "auto")  # the colour versions, in image-id order
EVAL_ZIP = "FreiHAND_pub_v2_eval.zip"
# |wrist - middle_mcp| of a human hand is about 9 cm; the median over a file must lie in this
# range (metres) or the file is in another unit (a converted or foreign copy).
PALM_M = (0.04, 0.16)
TRAIN_FIELDS = ("seq", "masks")
TEST_FIELDS = ("seq",)


@register
class FreiHAND(Converter):
    card = "freihand"
    raw_joints = "hand21"

    fields = TRAIN_FIELDS

    def fields_of(self, split: str) -> tuple[str, ...]:
        """Masks in the training split only (see the module docstring)."""
        return TRAIN_FIELDS if split == "train" else TEST_FIELDS

    def items(self, raw: RawFiles, split: str) -> list[Item]:
        if split == "train":
            return self._training(raw)
        return self._evaluation(raw)

    def _training(self, raw: RawFiles) -> list[Item]:
        _check_root(raw)
        ks = _array(raw, "training_K.json", "the training intrinsics, a list of 3 x 3", (3, 3))
        xyz = _array(
            raw, "training_xyz.json", "the training 3D joints, a list of 21 x 3 in m", (21, 3)
        )
        _same_length(raw, ("training_K.json", ks), ("training_xyz.json", xyz))
        n = len(ks)
        kp2d = _project(raw, "training_xyz.json", xyz, ks)
        masks = []
        for idx in range(n):
            name = f"training/mask/{idx:08d}.jpg"
            raw.path(name, f"the hand mask of training pose {idx} of {n}")
            masks.append(name)
        out = []
        for k, version in enumerate(VERSIONS):
            for idx in range(n):
                image = f"training/rgb/{idx + n * k:08d}.jpg"
                raw.path(
                    image,
                    f"training pose {idx} in colour version {k} '{version}' (id = pose + "
                    f"{n} x version, {n} = len(training_K.json); every pose has "
                    f"{len(VERSIONS)} versions)",
                )
                out.append(_item(image, kp2d[idx], xyz[idx], ks[idx], idx, masks[idx]))
        return out

    def _evaluation(self, raw: RawFiles) -> list[Item]:
        _check_root(raw)
        source = (
            f"from {EVAL_ZIP} unpacked into the same folder; FreiHAND v1 and the v2 zip "
            "alone have no evaluation labels"
        )
        ks = _array(
            raw,
            "evaluation_K.json",
            f"the evaluation intrinsics, a list of 3 x 3, {source}",
            (3, 3),
        )
        xyz = _array(
            raw, "evaluation_xyz.json", f"the evaluation 3D joints in m, {source}", (21, 3)
        )
        _same_length(raw, ("evaluation_K.json", ks), ("evaluation_xyz.json", xyz))
        kp2d = _project(raw, "evaluation_xyz.json", xyz, ks)
        out = []
        for idx in range(len(ks)):
            image = f"evaluation/rgb/{idx:08d}.jpg"
            raw.path(image, f"evaluation image {idx} of {len(ks)}")
            out.append(_item(image, kp2d[idx], xyz[idx], ks[idx], idx, None))
        return out


def _item(
    image: str, kp2d: np.ndarray, xyz: np.ndarray, k: np.ndarray, idx: int, mask: str | None
) -> Item:
    return Item(
        image=image,
        kp2d=kp2d,
        vis=np.ones(JOINTS, bool),
        kp3d=xyz * 1000.0,
        K=k,
        mask=mask,
        seq=idx,
    )


def _check_root(raw: RawFiles) -> None:
    """A parent of the release folder, or a folder inside it, is named as such."""
    if (raw.root / "training_K.json").exists():
        return
    inside = sorted(p.parent.name for p in raw.root.glob("*/training_K.json"))
    if inside:
        raise DabenchError(
            f"freihand: {raw.root} is not the release folder; pass {raw.root / inside[0]} "
            "(the folder holding training_K.json)"
        )
    if raw.root.name in ("training", "evaluation", "rgb", "mask"):
        raise DabenchError(
            f"freihand: {raw.root} is a folder inside the release; pass the folder that "
            "holds training_K.json, training/ and evaluation/ (FreiHAND_pub_v2)"
        )


def _array(raw: RawFiles, name: str, what: str, shape: tuple[int, int]) -> np.ndarray:
    """A JSON list of ``shape`` arrays as float64 ``[N, *shape]``."""
    where = raw.root / name
    try:
        data: Any = json.loads(raw.read_bytes(name, what))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DabenchError(f"freihand: {where} is not valid JSON (cut short?): {exc}") from exc
    try:
        arr = np.asarray(data, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DabenchError(
            f"freihand: {where} is not a list of {shape[0]} x {shape[1]} number arrays ({what})"
        ) from exc
    if arr.ndim != 3 or arr.shape[1:] != shape or not len(arr):
        raise DabenchError(
            f"freihand: {where} holds an array of shape {arr.shape}; expected "
            f"(N, {shape[0]}, {shape[1]}) with N > 0 ({what})"
        )
    if not np.isfinite(arr).all():
        raise DabenchError(f"freihand: {where} holds non-finite values ({what})")
    return arr


def _same_length(raw: RawFiles, *named: tuple[str, np.ndarray]) -> None:
    lengths = {name: len(arr) for name, arr in named}
    if len(set(lengths.values())) > 1:
        raise DabenchError(
            f"freihand: the lists under {raw.root} differ in length {lengths}; they must "
            "have one entry per pose (files of different releases mixed?)"
        )


def _project(raw: RawFiles, name: str, xyz: np.ndarray, ks: np.ndarray) -> np.ndarray:
    """``[N, 21, 2]``: each pose projected with its own K, after checking the unit and that
    every joint lies in front of the camera."""
    palm = np.median(np.linalg.norm(xyz[:, 0] - xyz[:, 9], axis=-1))
    if not PALM_M[0] <= palm <= PALM_M[1]:
        raise DabenchError(
            f"freihand: {raw.root / name}: the median wrist to middle-MCP distance is "
            f"{palm:.4g}; expected {PALM_M[0]}-{PALM_M[1]} (metres, as FreiHAND stores "
            "them): the file is in another unit or of another dataset"
        )
    behind = np.argwhere(xyz[..., 2] <= 0)
    if len(behind):
        i, j = behind[0]
        raise DabenchError(
            f"freihand: {raw.root / name}: pose {i} joint {j} has depth {xyz[i, j, 2]:.4g} "
            "<= 0; expected every joint in front of the camera (camera frame, z forward)"
        )
    uvw = np.einsum("nij,nkj->nki", ks, xyz)
    return uvw[..., :2] / uvw[..., 2:]
