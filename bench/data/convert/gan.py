"""GANerated Hands (``GANeratedHands_Release/``).

Raw layout read: ``data/noObject/<partition>/`` and ``data/withObject/<partition>/``, per
frame ``<%04d>_color_composed.png`` (the 256 × 256 crop, the source image) and three
one-line comma-separated text files: ``_joint2D.txt`` (42 values, crop px),
``_joint_pos_global.txt`` (63 values, the original 640 × 480 camera's frame) and
``_crop_params.txt`` (u, v, scale: the crop box's top-left in the original image and its
scale). Frames are found by listing ``*_color_composed.png`` (partitions differ in size);
``_joint_pos.txt`` (root-relative, normalised) is not read.

Splits (the release has none; the card's rule, tllib's for unsplit sets): every frame of
both folders, sorted by relative path, shuffled with ``random.Random(42)``; test = the first
``min(int(0.2 · N), 3200)``, train = the rest; each split kept in path order. The split thus
depends on the whole listing, which is folded into the fingerprint.

Units: ``kp3d`` = ``joint_pos_global`` as is, taken as mm [U]: the median
|wrist − middle MCP| of a split must be 60–120 or the conversion stops. ``K`` of the stored
crop = the release's fixed K carried by the crop, ``uv_crop = (uv_orig − (u, v)) · scale``
[L]: ``fx = fy = 617.173 · scale``, ``cx = (315.453 − u) · scale``,
``cy = (242.259 − v) · scale``. ``kp2d`` = the projection of ``kp3d`` with it, checked against
``_joint2D.txt`` (at most :data:`JOINT2D_TOLERANCE_PX` apart on every joint). No visibility
labels: every joint is visible. Joints W, T0..T3, I0..I3, M0..M3, R0..R3, L0..L3 = hand21,
identity; left hands assumed [U], not mirrored.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np

from bench.data.convert.base import Converter, Item, register
from bench.data.convert.raw import RawFiles
from bench.errors import DabenchError

FOLDERS = ("data/noObject", "data/withObject")
IMAGE_SUFFIX = "_color_composed.png"
# The release's intrinsics of the original 640 x 480 camera (README).
FOCAL, CX, CY = 617.173, 315.453, 242.259
SEED, TEST_FRACTION, TEST_CAP = 42, 0.2, 3200
PALM_MM = (60.0, 120.0)  # |wrist - middle MCP| of a hand in mm (card's unit check)
# The release's 2D labels may be rounded or use another half-pixel convention; a wrong
# reading of the crop parameters moves joints by tens of pixels.
JOINT2D_TOLERANCE_PX = 2.0


def split_frames(frames: list[str]) -> dict[str, list[str]]:
    """The card's split of the frame names (relative paths): train and test, each in path
    order."""
    order = sorted(frames)
    shuffled = list(order)
    random.Random(SEED).shuffle(shuffled)
    test = set(shuffled[: min(int(TEST_FRACTION * len(order)), TEST_CAP)])
    return {
        "train": [f for f in order if f not in test],
        "test": [f for f in order if f in test],
    }


@register
class GANeratedHands(Converter):
    card = "gan"
    raw_joints = "hand21"

    def items(self, raw: RawFiles, split: str) -> list[Item]:
        frames = _list_frames(raw)
        members = split_frames(frames)[split]
        out = []
        palms = []
        for image in members:
            stem = image[: -len(IMAGE_SUFFIX)]
            uv_label = _values(raw, f"{stem}_joint2D.txt", 42, "the 21 2D joints u1,v1,...")
            xyz = _values(raw, f"{stem}_joint_pos_global.txt", 63, "the 21 3D joints x1,y1,z1,...")
            crop = _values(raw, f"{stem}_crop_params.txt", 3, "the crop's u, v, scale")
            uv_label, xyz = uv_label.reshape(21, 2), xyz.reshape(21, 3)
            u, v, scale = crop
            if scale <= 0:
                raise DabenchError(
                    f"gan: {raw.root / stem}_crop_params.txt has scale {scale:.4g}; expected "
                    "u, v, scale with scale > 0"
                )
            if (xyz[:, 2] <= 0).any():
                raise DabenchError(
                    f"gan: {raw.root / stem}_joint_pos_global.txt has a joint with z <= 0; "
                    "expected every joint in front of the camera"
                )
            k = np.array(
                [
                    [FOCAL * scale, 0.0, (CX - u) * scale],
                    [0.0, FOCAL * scale, (CY - v) * scale],
                    [0.0, 0.0, 1.0],
                ]
            )
            uvw = xyz @ k.T
            kp2d = uvw[:, :2] / uvw[:, 2:]
            off = float(np.abs(kp2d - uv_label).max())
            if off > JOINT2D_TOLERANCE_PX:
                raise DabenchError(
                    f"gan: {raw.root / stem}_joint2D.txt is up to {off:.3g} px from the "
                    f"projection of _joint_pos_global.txt with the crop's K (fixed K, "
                    f"uv_crop = (uv - [u, v]) * scale); expected at most "
                    f"{JOINT2D_TOLERANCE_PX} px: another crop convention or a mixed copy"
                )
            palms.append(np.linalg.norm(xyz[0] - xyz[9]))
            out.append(Item(image=image, kp2d=kp2d, vis=np.ones(21, bool), kp3d=xyz, K=k))
        if palms:
            palm = float(np.median(palms))
            if not PALM_MM[0] <= palm <= PALM_MM[1]:
                raise DabenchError(
                    f"gan: the median wrist to middle-MCP distance of the {split} frames' "
                    f"_joint_pos_global.txt under {raw.root} is {palm:.4g}; expected "
                    f"{PALM_MM[0]:g}-{PALM_MM[1]:g} (mm): the files are in another unit"
                )
        return out


def _list_frames(raw: RawFiles) -> list[str]:
    """Every ``*_color_composed.png`` of both folders (relative paths), the listing folded
    into the fingerprint."""
    _check_root(raw)
    frames = []
    for folder in FOLDERS:
        path = raw.path(folder, "frames in <partition %04d>/<%04d>_color_composed.png")
        found = sorted(p.relative_to(raw.root).as_posix() for p in path.glob(f"*/*{IMAGE_SUFFIX}"))
        if not found:
            loose = len(list(path.glob(f"*{IMAGE_SUFFIX}")))
            raise DabenchError(
                f"gan: {path} holds no <partition>/<frame>{IMAGE_SUFFIX}"
                + (f" ({loose} frames lie directly in it: another layout)" if loose else "")
                + "; expected the GANeratedHands_Release layout (see datasets/gan.yaml)"
            )
        frames += found
    raw.note(f"frames:{len(frames)}:{hashlib.sha256(chr(10).join(frames).encode()).hexdigest()}")
    return frames


def _check_root(raw: RawFiles) -> None:
    """The release folder's parent, or its data/ folder, is named as such."""
    if (raw.root / "data").is_dir():
        return
    if (raw.root / "noObject").is_dir() or (raw.root / "withObject").is_dir():
        raise DabenchError(
            f"gan: {raw.root} is the release's data folder; pass its parent "
            f"{raw.root.parent} (GANeratedHands_Release)"
        )
    inside = sorted(p.parent.parent.name for p in raw.root.glob("*/data/noObject"))
    if inside:
        raise DabenchError(
            f"gan: {raw.root} is not the release folder; pass {raw.root / inside[0]} "
            "(the folder holding data/noObject and data/withObject)"
        )


def _values(raw: RawFiles, name: str, count: int, what: str) -> np.ndarray:
    """One comma-separated line of ``count`` numbers."""
    text = raw.read_bytes(name, what).decode("ascii", errors="replace")
    try:
        values = np.array([float(x) for x in text.replace(",", " ").split()])
    except ValueError as exc:
        raise DabenchError(f"gan: {raw.root / name} is not a list of numbers ({what})") from exc
    if values.shape != (count,) or not np.isfinite(values).all():
        raise DabenchError(
            f"gan: {raw.root / name} holds {values.size} values; expected {count} finite "
            f"numbers ({what})"
        )
    return values
