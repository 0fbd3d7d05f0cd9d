"""RHD (Rendered Hand Pose Dataset v1.1, folder ``RHD_published_v2``): per split folder
(``training`` → train, ``evaluation`` → test, the official folders) one annotation pickle
``anno_<folder>.pickle`` (a dict of int sample id → ``{'xyz' 42 × 3 m, 'uv_vis' 42 × 3,
'K' 3 × 3}``, left hand in 0–20 and right hand in 21–41, each block in the rhd21 order) and
per sample ``color/%05d.png`` and ``mask/%05d.png`` (grey uint8 part labels: 0 background,
1 person, 2–17 left hand, 18–33 right hand; another mode or label is refused).

The annotation file is a pickle (datasets.md §0.1: plain dicts and numpy arrays), loaded
by :meth:`RawFiles.load_pickle`, which refuses any class but numpy's arrays.

One sample per image, the hand with more mask pixels (hand3d's BinaryDbReader rule: left when
it has strictly more pixels than the right, else right), without mirroring. Choosing it needs
the masks, so :meth:`RHD.items` reads every mask (folded into the fingerprint, because the
mask decides which joints a sample holds), and :meth:`RHD.mask_of`, which run.py hands only
the decoded mask, applies the same rule to the same labels, so the written mask is the
chosen hand's parts (the person and the other hand are background). An image whose chosen
hand has no visible keypoint cannot be cropped around its visible joints and is left out.

Units: kp3d = xyz · 1000 (mm, camera frame). kp2d is the projection of kp3d with K, not the
stored ``uv_vis`` (which the file rounds, as it rounds xyz; it agrees within a fraction of a
pixel, checked per split), so that kp2d = projection of kp3d holds in the shards. RHD's K puts
the principal point at exactly 160 for 320-px renders, the image centre in the pixel-edge
convention of the renderer; the shards put pixel centres at integers, so K is moved by −0.5 px
(and with it the projections). vis = ``uv_vis[:, 2] == 1``.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from bench.data.convert.base import Converter, Item, register
from bench.data.convert.raw import RawFiles
from bench.data.geometry import project
from bench.errors import DabenchError

FOLDERS = {"train": "training", "test": "evaluation"}
LEFT = (2, 17)  # part labels of the left hand (inclusive); the right hand follows
RIGHT = (18, 33)
# The renderer's pixel edges at integers → the shards' pixel centres at integers.
EDGE_TO_CENTRE = np.array([[1.0, 0.0, -0.5], [0.0, 1.0, -0.5], [0.0, 0.0, 1.0]])
# Median |uv_vis − projection| (px) over a split's visible joints above which the file is not
# the RHD v1.1 pair (uv = K xyz); its values are rounded to ~4 digits (a few 0.01 px).
UV_TOLERANCE = 1.0


def hand_pixels(labels: np.ndarray) -> tuple[int, int]:
    """Mask pixels of the left and the right hand in a part-label image."""
    left = int(np.count_nonzero((labels >= LEFT[0]) & (labels <= LEFT[1])))
    right = int(np.count_nonzero((labels >= RIGHT[0]) & (labels <= RIGHT[1])))
    return left, right


def chosen_hand(labels: np.ndarray) -> int:
    """0 (left) when the left hand has strictly more pixels, else 1 (right), as hand3d."""
    left, right = hand_pixels(labels)
    return 0 if left > right else 1


def _labels(decoded: np.ndarray) -> np.ndarray:
    """The part labels of a mask as run.py decodes it (grey → RGB: three equal channels)."""
    return decoded[..., 0]


def _part_labels(data: bytes, where: Path) -> np.ndarray:
    """A mask's labels, read directly (4x faster than through RGB, which matters for 44k
    masks); only a grey PNG gives run.py's decoding the same labels in every channel."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            mode = image.mode
            labels = np.asarray(image)
    except (UnidentifiedImageError, OSError) as exc:
        raise DabenchError(f"rhd: {where} is not a readable image: {exc}") from exc
    if mode != "L" or labels.max() > RIGHT[1]:
        raise DabenchError(
            f"rhd: {where} is not a grey part-label mask (expected mode L with labels "
            f"0-{RIGHT[1]}, found mode {mode} with values up to {int(labels.max())})"
        )
    return labels


@register
class RHD(Converter):
    card = "rhd"
    raw_joints = "rhd21"
    fields = ("masks",)

    def items(self, raw: RawFiles, split: str) -> list[Item]:
        folder = FOLDERS[split]
        name = f"{folder}/anno_{folder}.pickle"
        annotations = _load_pickle(raw, name, split)
        out = []
        residuals = []
        depths = []
        for sample_id in sorted(annotations):
            xyz, uv_vis, k = _entry(raw, name, sample_id, annotations[sample_id])
            image = f"{folder}/color/{sample_id:05d}.png"
            mask = f"{folder}/mask/{sample_id:05d}.png"
            raw.path(image, f"the colour image of sample {sample_id} of {name}")
            data = raw.read_bytes(mask, f"the part-label mask of sample {sample_id} of {name}")
            labels = _part_labels(data, raw.root / mask)
            block = slice(0, 21) if chosen_hand(labels) == 0 else slice(21, 42)
            vis = uv_vis[block, 2] == 1
            if not vis.any():
                continue  # nothing visible to crop around (hand3d: "happens almost never")
            kp3d = xyz[block] * 1000.0
            uv = project(kp3d, k)
            residuals.append(np.abs(uv_vis[block, :2] - uv).max(axis=1)[vis])
            depths.append(kp3d[:, 2])
            k_centre = EDGE_TO_CENTRE @ k
            out.append(
                Item(
                    image=image,
                    kp2d=project(kp3d, k_centre),
                    vis=vis,
                    kp3d=kp3d,
                    K=k_centre,
                    mask=mask,
                )
            )
        if out:
            _check_units(raw, name, np.concatenate(depths), np.concatenate(residuals))
        return out

    def mask_of(self, decoded: np.ndarray) -> np.ndarray:
        labels = _labels(decoded)
        low, high = LEFT if chosen_hand(labels) == 0 else RIGHT
        return (labels >= low) & (labels <= high)


def _load_pickle(raw: RawFiles, name: str, split: str) -> dict[Any, Any]:
    annotations = raw.load_pickle(
        name, f"the {split} annotations, a pickled dict of sample id -> dict"
    )
    where = raw.root / name
    if not isinstance(annotations, dict) or not annotations:
        raise DabenchError(
            f"rhd: {where} holds a {type(annotations).__name__}; expected a non-empty dict of "
            "int sample id -> {'xyz', 'uv_vis', 'K'} (RHD v1.1)"
        )
    bad = [key for key in annotations if not isinstance(key, int) or key < 0]
    if bad:
        raise DabenchError(
            f"rhd: {where} has keys such as {bad[0]!r}; expected int sample ids (RHD v1.1)"
        )
    return annotations


def _entry(
    raw: RawFiles, name: str, sample_id: int, entry: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    where = f"sample {sample_id} of {raw.root / name}"
    try:
        xyz = np.asarray(entry["xyz"], dtype=np.float64)
        uv_vis = np.asarray(entry["uv_vis"], dtype=np.float64)
        k = np.asarray(entry["K"], dtype=np.float64)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise DabenchError(
            f"rhd: {where} lacks a readable 'xyz', 'uv_vis' or 'K' ({type(exc).__name__}: {exc})"
        ) from exc
    if xyz.shape != (42, 3) or uv_vis.shape != (42, 3) or k.shape != (3, 3):
        raise DabenchError(
            f"rhd: {where} has xyz {xyz.shape}, uv_vis {uv_vis.shape}, K {k.shape}; expected "
            "(42, 3), (42, 3), (3, 3): both hands, left 0-20 and right 21-41 (RHD v1.1)"
        )
    if not (np.isfinite(xyz).all() and np.isfinite(uv_vis).all() and np.isfinite(k).all()):
        raise DabenchError(f"rhd: {where} has non-finite values")
    return xyz, uv_vis, k


def _check_units(raw: RawFiles, name: str, depth_mm: np.ndarray, residual: np.ndarray) -> None:
    where = raw.root / name
    if np.median(depth_mm) > 10_000.0:
        raise DabenchError(
            f"rhd: {where} puts the hands {np.median(depth_mm) / 1000:.0f} m away (median): "
            "its xyz look like mm; RHD v1.1 stores metres"
        )
    if len(residual) and np.median(residual) > UV_TOLERANCE:
        raise DabenchError(
            f"rhd: the 2D labels of {where} differ from the projection of xyz with K by "
            f"{np.median(residual):.2f} px (median over visible joints); expected RHD v1.1, "
            "where uv = K xyz"
        )
