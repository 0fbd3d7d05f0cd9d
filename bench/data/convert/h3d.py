"""H3D, Hand-3D-Studio, as tllib distributes it (``H3D_crop/``): ``annotation.json``, a list of
``{name, keypoint2d [21, 2], keypoint3d [21, 3] (camera frame), intrinsic_matrix [3, 3],
without_object, ...}``, and the crops ``part1/`` … ``part5/`` that ``name`` points to
(relative to ``H3D_crop/``).

Split (tllib's ``Hand3DStudio``, task ``noobject``, exactly): keep the entries with
``int(without_object) == 1`` in file order, ``random.seed(42); random.shuffle(...)`` (a
``random.Random(42)`` here, which draws the same permutation without touching the global
generator), test = the first ``min(int(0.2 · N), 3200)``, train = the rest. Each split is
written in file order.

Units: keypoint3d's unit is not documented; it is read from the hand's size, the median
|wrist − middle MCP| over the kept entries: 0.04–0.16 is metres (× 1000), 40–160 mm (as
is); anything else is refused. ``kp2d`` = the projection of ``kp3d`` with
``intrinsic_matrix`` (so that it is exact on the shard); the file's keypoint2d must agree
with it within ``kp2d_tolerance_px`` on every joint of every kept entry, or the file is
refused (another frame, a transposed K or (y, x) labels move joints by far more). Every
joint is visible (tllib: ``visible = ones``). Joints are tllib's Hand21 = hand21 (identity);
nothing is mirrored (handedness is not documented).

Ids (the name format of H3D_crop is not documented anywhere found): :func:`parse_name`
looks for exactly one camera token (``cam``/``camera``/``view``/``c`` + digits, its own
path or ``_``/``-`` separated part) in the name; the view is its number, the frame the last
number left in the name, and the rest (``partN`` dropped: download chunks, not captures) the
sequence key, ``seq = 2**32 + crc32(key)``. A name without one camera token keeps
``seq`` = its index in annotation.json (< 2**32, so it never meets a parsed id), ``view``
= ``frame`` = 0.
"""

from __future__ import annotations

import json
import random
import re
import zlib
from typing import Any

import numpy as np

from bench.data.convert.base import Converter, Item, register
from bench.data.convert.raw import RawFiles
from bench.data.geometry import project
from bench.errors import DabenchError

ANNOTATION = "annotation.json"
KEYS = ("name", "keypoint2d", "keypoint3d", "intrinsic_matrix")
JOINTS = 21
SEED, TEST_FRACTION, TEST_CAP = 42, 0.2, 3200
UNITS = {1000.0: (0.04, 0.16), 1.0: (40.0, 160.0)}  # to mm: |wrist - middle MCP| range
PARSED = 1 << 32  # parsed seq ids start here; index-based ones stay below
CAMERA = re.compile(r"(?:^|[/_-])(?:camera|cam|view|c)[_-]?(\d+)(?=$|[/_-])", re.IGNORECASE)
PART = re.compile(r"^part\d+$", re.IGNORECASE)


def split_indices(flags: list[int]) -> dict[str, list[int]]:
    """tllib's split of the entries whose ``int(without_object)`` is in ``flags`` order:
    the positions (in annotation.json) of train and test, each in file order."""
    kept = [i for i, flag in enumerate(flags) if flag == 1]
    shuffled = list(kept)
    random.Random(SEED).shuffle(shuffled)
    test = set(shuffled[: min(int(len(kept) * TEST_FRACTION), TEST_CAP)])
    return {
        "train": [i for i in kept if i not in test],
        "test": [i for i in kept if i in test],
    }


def parse_name(name: str) -> tuple[str, int, int] | None:
    """(sequence key, view, frame) from an image name, or None without exactly one camera
    token: ``part1/0007/cam03/000120.jpg`` → ("0007", 3, 120)."""
    stem = re.sub(r"\.[A-Za-z]+$", "", name.replace("\\", "/"))
    cameras = list(CAMERA.finditer(stem))
    if len(cameras) != 1:
        return None
    match = cameras[0]
    rest = stem[: match.start()] + "/" + stem[match.end() :]
    tokens = [t for t in re.split(r"[/_-]", rest) if t and not PART.match(t)]
    numbers = [i for i, t in enumerate(tokens) if t.isdigit()]
    frame = int(tokens.pop(numbers[-1])) if numbers else 0
    return "/".join(tokens), int(match.group(1)), frame


def name_ids(name: str, index: int) -> tuple[int, int, int]:
    """(seq, view, frame) of the entry at ``index`` of annotation.json."""
    parsed = parse_name(name)
    if parsed is None:
        return index, 0, 0
    key, view, frame = parsed
    return PARSED + zlib.crc32(key.encode()), view, frame


@register
class Hand3DStudio(Converter):
    card = "h3d"
    raw_joints = "hand21"
    fields = ("seq", "frame", "view")
    kp2d_tolerance_px: float = 3.0

    def items(self, raw: RawFiles, split: str) -> list[Item]:
        entries = _read_annotation(raw)
        flags = [_flag(raw, e, i) for i, e in enumerate(entries)]
        members = split_indices(flags)[split]
        kept = [i for i, flag in enumerate(flags) if flag == 1]
        if not kept:
            raise DabenchError(
                f"h3d: {raw.root / ANNOTATION} has no entry with without_object == 1 (tllib's "
                f"'noobject' task) among its {len(entries)}"
            )
        scale = _unit(raw, {i: _arrays(raw, entries[i], i) for i in kept})
        out = []
        for i in members:
            name, kp2d_file, xyz, k = _arrays(raw, entries[i], i)
            kp3d = xyz * scale
            kp2d = project(kp3d, k)
            off = np.abs(kp2d - kp2d_file).max()
            if not off <= self.kp2d_tolerance_px:
                raise DabenchError(
                    f"h3d: {raw.root / ANNOTATION} entry {i} ({name}): keypoint2d is up to "
                    f"{off:.3g} px from the projection of keypoint3d with intrinsic_matrix; "
                    f"expected at most {self.kp2d_tolerance_px:g} (keypoint3d in the camera "
                    "frame of the crop, K as [[fx, 0, cx], [0, fy, cy], [0, 0, 1]], (x, y) px)"
                )
            raw.path(name, f"the crop of entry {i} of {ANNOTATION}")
            seq, view, frame = name_ids(name, i)
            out.append(
                Item(
                    image=name,
                    kp2d=kp2d,
                    vis=np.ones(JOINTS, bool),
                    kp3d=kp3d,
                    K=k,
                    seq=seq,
                    frame=frame,
                    view=view,
                )
            )
        return out


def _read_annotation(raw: RawFiles) -> list[Any]:
    if not (raw.root / ANNOTATION).exists():
        inside = raw.root / "H3D_crop" / ANNOTATION
        if inside.exists():
            raise DabenchError(
                f"h3d: {raw.root} is not the H3D_crop folder; pass {inside.parent} (the folder "
                f"holding {ANNOTATION} and part1/ ... part5/)"
            )
        if PART.match(raw.root.name):
            raise DabenchError(
                f"h3d: {raw.root} is a folder inside H3D_crop; pass its parent, which holds "
                f"{ANNOTATION}"
            )
    where = raw.root / ANNOTATION
    data = raw.read_bytes(ANNOTATION, "tllib's H3D_crop annotation list")
    try:
        entries = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DabenchError(f"h3d: {where} is not valid JSON (cut short?): {exc}") from exc
    if not isinstance(entries, list) or not entries:
        raise DabenchError(
            f"h3d: {where} holds a {type(entries).__name__} of {len(entries)}; expected a "
            "non-empty list of {name, keypoint2d, keypoint3d, intrinsic_matrix, without_object}"
        )
    return entries


def _flag(raw: RawFiles, entry: Any, index: int) -> int:
    """``int(entry["without_object"])``, as tllib reads it."""
    if not isinstance(entry, dict) or "without_object" not in entry:
        keys = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
        raise DabenchError(
            f"h3d: {raw.root / ANNOTATION} entry {index} holds {keys}; expected "
            f"{{{', '.join(KEYS)}, without_object}}"
        )
    try:
        return int(entry["without_object"])
    except (TypeError, ValueError) as exc:
        raise DabenchError(
            f"h3d: {raw.root / ANNOTATION} entry {index}: without_object is "
            f"{entry['without_object']!r}; expected 0 or 1"
        ) from exc


def _arrays(
    raw: RawFiles, entry: dict[str, Any], index: int
) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    """(name, keypoint2d [21, 2], keypoint3d [21, 3] in the file's unit, K [3, 3]), checked."""
    where = f"{raw.root / ANNOTATION} entry {index}"
    missing = [k for k in KEYS if k not in entry]
    if missing:
        raise DabenchError(
            f"h3d: {where} lacks {missing}; it holds {sorted(entry)} (expected tllib's H3D_crop)"
        )
    name = entry["name"]
    if not isinstance(name, str) or not name or name.startswith("/") or ".." in name.split("/"):
        raise DabenchError(f"h3d: {where}: name {name!r} is not a path inside H3D_crop")
    out = []
    for key, shape in (("keypoint2d", (JOINTS, 2)), ("keypoint3d", (JOINTS, 3)),
                       ("intrinsic_matrix", (3, 3))):  # fmt: skip
        try:
            arr = np.asarray(entry[key], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise DabenchError(f"h3d: {where} ({name}): {key} is not numeric") from exc
        if arr.shape != shape or not np.isfinite(arr).all():
            raise DabenchError(
                f"h3d: {where} ({name}): {key} has shape {arr.shape} or non-finite values; "
                f"expected {shape[0]} x {shape[1]} numbers"
            )
        out.append(arr)
    kp2d, xyz, k = out
    if k[0, 0] <= 0 or k[1, 1] <= 0 or not np.allclose(k[2], [0, 0, 1]):
        raise DabenchError(
            f"h3d: {where} ({name}): intrinsic_matrix {k.tolist()} is not [[fx, s, cx], "
            "[0, fy, cy], [0, 0, 1]] with positive focal lengths"
        )
    if (xyz[:, 2] <= 0).any():
        raise DabenchError(
            f"h3d: {where} ({name}): a keypoint3d has depth <= 0; expected the camera frame "
            "(z forward)"
        )
    return name, kp2d, xyz, k


def _unit(raw: RawFiles, arrays: dict[int, tuple]) -> float:
    """The factor to mm of keypoint3d, from the median |wrist − middle MCP| of the kept
    entries."""
    palm = float(np.median([np.linalg.norm(a[2][0] - a[2][9]) for a in arrays.values()]))
    for scale, (lo, hi) in UNITS.items():
        if lo <= palm <= hi:
            return scale
    raise DabenchError(
        f"h3d: {raw.root / ANNOTATION}: the median wrist to middle-MCP distance of keypoint3d "
        f"is {palm:.4g}; neither metres (0.04-0.16) nor millimetres (40-160), the two readings "
        "of a human hand (~0.09 m)"
    )
