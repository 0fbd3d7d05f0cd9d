"""SURREAL (Varol et al., CVPR 2017): clips under ``data/cmu/<folder>/run{0,1,2}/<seq>/``
(also accepted: ``cmu/...`` or RAW_DIR being the ``cmu`` folder itself), each clip
``<seq>_c%04d`` being ``.mp4`` (320 × 240 RGB), ``_info.mat`` (``joints2D`` (2, 24, T) px,
``joints3D`` (3, 24, T) m world, ``camLoc`` (3, 1) m) and ``_segm.mat`` (``segm_1`` …
``segm_T``, uint8 240 × 320, 0 = background, 1 … 24 SMPL parts). train = the ``train``
folder, test = the official ``val`` folder (the card's split decision); ``test`` is not read.

Camera (SURREAL's ``misc/3Dto2D``): ``K = [[600, 0, 160], [0, 600, 120], [0, 0, 1]]``,
``R = [[0, 0, -1], [0, 1, 0], [-1, 0, 0]]``, ``t = -R · camLoc``, ``kp3d = (R X + t) · 1000``
mm and ``kp2d`` = its projection with ``K`` (0-based pixels, as SURREAL's own loader reads
``joints2D``). The released ``joints2D`` are that projection rounded to whole pixels: they
are a check (0.5 px + :data:`TOLERANCE_PX`), not stored. ``det R = −1`` (Blender's camera
``matrix_world`` is itself a reflection), so no ``cam_R``/``cam_t`` are written, and the
camera-frame skeleton is the mirror image of the world one: every frame runs the anatomical
test (``cross(l_hip − r_hip, neck − pelvis)`` points along the toes on a correctly labelled
body) and, where it fails, the left/right labels are swapped with smpl24's flip
permutation (coordinates untouched, so kp2d and the pixels still agree).

Samples: clips in sorted order (run, sequence folder, clip name); frames ``0, s, 2s, …`` of
each clip (``s`` = :attr:`Surreal.frame_stride`) below ``T`` = the fewer frames of the
annotations and of the video (the video's header count; the segmentation, written in the
same loop as the annotations, must have all ``T``); frames whose ``joints3D`` are all zero (the
release's placeholders, which SURREAL's own loader skips) are left out.

Ids: ``seq`` = :func:`clip_id` of the clip's path below ``cmu`` (a 56-bit hash: it depends on
that path alone, and the same clip name in two runs or folders gets two ids); ``frame`` =
0-based frame index in the clip; ``subject`` = the CMU subject number of the sequence name
(``01_01`` and ``ung_01_01`` → 1)."""

from __future__ import annotations

import hashlib
import io
import re
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from bench.data.convert.base import Converter, Item, register
from bench.data.convert.raw import RawFiles
from bench.data.convert.video import frame_count
from bench.data.geometry import project
from bench.data.joints import get_joint_set
from bench.errors import DabenchError

SPLIT_FOLDERS = {"train": "train", "test": "val"}
RUNS = ("run0", "run1", "run2")
BASES = ("data/cmu", "cmu", "")  # RAW_DIR = SURREAL, SURREAL/data or the cmu folder
KEYS = ("joints2D", "joints3D", "camLoc")
JOINTS = 24
WIDTH, HEIGHT = 320, 240
K = np.array([[600.0, 0.0, 160.0], [0.0, 600.0, 120.0], [0.0, 0.0, 1.0]])
R = np.array([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
M_TO_MM = 1000.0
# joints2D are rounded to whole pixels (datasets.md §7); the margin covers float32 storage
TOLERANCE_PX = 0.01
CLIP = re.compile(r"^(?P<seq>.+)_c(?P<no>\d{4})(?P<kind>\.mp4|_info\.mat)$")
# CMU sequence names: <subject>_<trial>, or the same with SURREAL's "ung_" prefix (a second
# MoSh fit of the same CMU trial: SURREAL's create_idx_info.py takes its subject alike)
SEQUENCE = re.compile(r"^(?:ung_)?(?P<subject>\d+)_\d+$")

_SMPL = get_joint_set("smpl24")
FLIP = _SMPL.flip_permutation()


def clip_id(clip: str) -> int:
    """The ``seq`` of the clip at ``clip`` (``<folder>/run<k>/<seq>_c%04d``, below ``cmu``):
    a function of that path alone, so a partial copy numbers its clips as the full one does;
    56 bits keep the ids of ~68,000 clips apart (a clash is refused, not merged)."""
    return int.from_bytes(hashlib.blake2b(clip.encode(), digest_size=7).digest(), "big")


def mirrored(kp3d: np.ndarray) -> np.ndarray:
    """``[..., 24, 3]`` → ``[...]`` bool: the labels are left/right mirrored, i.e. the
    "forward" of the labelled hips and spine, ``cross(l_hip − r_hip, neck − pelvis)``,
    points against the toes (datasets.md §2.4's test: a correctly labelled body passes it in
    any right-handed frame, a mirrored one fails it)."""
    j = {n: _SMPL.index(n) for n in ("pelvis", "l_hip", "r_hip", "neck")}
    hips = kp3d[..., j["l_hip"], :] - kp3d[..., j["r_hip"], :]
    forward = np.cross(hips, kp3d[..., j["neck"], :] - kp3d[..., j["pelvis"], :])
    toes = sum(
        kp3d[..., _SMPL.index(f"{s}_foot"), :] - kp3d[..., _SMPL.index(f"{s}_ankle"), :]
        for s in ("l", "r")
    )
    return (forward * toes).sum(axis=-1) < 0


@register
class Surreal(Converter):
    card = "surreal"
    raw_joints = "smpl24"
    fields = ("masks", "seq", "frame", "subject")
    # Consecutive frames of a 30 fps clip are near duplicates and the train folder holds
    # ~5M frames; every 10th keeps ~530k train samples, and frame pairs 10 apart lie in
    # Lin et al.'s best stride range [5, 15]. No paper states a stride.
    frame_stride: int = 10

    def items(self, raw: RawFiles, split: str) -> Iterator[Item]:
        base = _base(raw, split)
        folder = SPLIT_FOLDERS[split]
        raw.note(f"stride {self.frame_stride}")
        ids: dict[int, str] = {}
        any_clip = False
        for run in RUNS:
            rel = f"{base}{folder}/{run}"
            path = raw.path(
                rel, f"the {split} clips of {run}: <seq>/<seq>_c%04d.mp4, _info.mat, _segm.mat"
            )
            if not path.is_dir():
                raise DabenchError(f"surreal: {path} is not a folder; expected {run}'s clips")
            clips = _clips(path)
            raw.note(f"{rel}: {','.join(f'{s}/{c}' for s, c in clips)}")
            for sequence, clip in clips:
                any_clip = True
                key = f"{folder}/{run}/{clip}"
                seq = clip_id(key)
                if seq in ids:
                    raise DabenchError(
                        f"surreal: clips {key} and {ids[seq]} get one seq id; rename one"
                    )
                ids[seq] = key
                yield from self._clip_items(raw, f"{rel}/{sequence}/{clip}", sequence, seq)
        if not any_clip:
            raise DabenchError(
                f"surreal: {raw.root / base / folder}/run0..2 hold no clips "
                "(<seq>/<seq>_c%04d.mp4 with _info.mat); see datasets/surreal.yaml"
            )

    def _clip_items(self, raw: RawFiles, rel: str, sequence: str, seq: int) -> Iterator[Item]:
        match = SEQUENCE.match(sequence)
        if match is None:
            raise DabenchError(
                f"surreal: {raw.root / rel} is in folder {sequence!r}; expected a CMU "
                "sequence name such as 01_01 or ung_01_01"
            )
        joints3d, joints2d, cam_loc = _read_info(raw, f"{rel}_info.mat")
        video = raw.path(f"{rel}.mp4", "the clip's RGB video")
        frames = min(len(joints3d), frame_count(video))
        segm = raw.path(f"{rel}_segm.mat", "the clip's segmentation (segm_1 .. segm_T)")
        _check_segm(segm, frames)
        raw.note(f"{rel}: {len(joints3d)} annotated, {frames} converted")

        # camera frame, mm: X_cam = R X_world + t, t = -R camLoc
        kp3d = (joints3d @ R.T - R @ cam_loc) * M_TO_MM
        placeholder = (joints3d == 0).all(axis=(1, 2))
        _check_projection(raw.root / f"{rel}_info.mat", kp3d, joints2d, ~placeholder)
        swap = mirrored(kp3d)
        for frame in range(0, frames, self.frame_stride):
            if placeholder[frame]:
                continue
            points = kp3d[frame][FLIP] if swap[frame] else kp3d[frame]
            yield Item(
                image=f"{rel}.mp4",
                image_frame=frame,
                kp2d=project(points, K),
                vis=np.ones(JOINTS, bool),
                kp3d=points,
                K=K,
                subject=int(match["subject"]),
                mask=f"{rel}_segm.mat",
                mask_frame=frame,
                seq=seq,
                frame=frame,
            )

    def read_image(self, root: Path, item: Item) -> np.ndarray:
        image = super().read_image(root, item)
        if image.shape[:2] != (HEIGHT, WIDTH):
            raise DabenchError(
                f"surreal: {root / item.image} has {image.shape[1]} x {image.shape[0]} frames; "
                f"SURREAL's are {WIDTH} x {HEIGHT}, which its fixed intrinsics assume"
            )
        return image

    def read_mask(self, root: Path, item: Item) -> np.ndarray | None:
        """The part labels ``[H, W]`` of the item's frame, ``segm_<frame + 1>``."""
        if item.mask is None or item.mask_frame is None:
            return None
        return _segm(root / item.mask, item.mask_frame)

    def mask_of(self, decoded: np.ndarray) -> np.ndarray:
        return decoded > 0  # any of the 24 body parts


def _base(raw: RawFiles, split: str) -> str:
    """Where the ``cmu`` folder is below RAW_DIR, as a prefix ending in "/" (or "")."""
    folder = SPLIT_FOLDERS[split]
    for base in BASES:
        if (raw.root / base / folder).is_dir():
            return f"{base}/" if base else ""
    raw.path(f"data/cmu/{folder}", f"SURREAL's {folder} folder (the {split} split)")
    raise DabenchError(  # a file where the folder should be
        f"surreal: {raw.root / 'data/cmu' / folder} is not a folder; expected run0..2 in it"
    )


def _clips(run: Path) -> list[tuple[str, str]]:
    """(sequence folder, clip name) of every clip with a video or an _info.mat in it, sorted;
    the other files (depth, flow) are not read."""
    out = set()
    for sequence in sorted(p for p in run.iterdir() if p.is_dir()):
        for file in sequence.iterdir():
            match = CLIP.match(file.name)
            if match and match["seq"] == sequence.name:
                out.add((sequence.name, f"{match['seq']}_c{match['no']}"))
    return sorted(out)


def _read_info(raw: RawFiles, rel: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``joints3D [T, 24, 3]`` m world, ``joints2D [T, 24, 2]`` px, ``camLoc [3]`` m."""
    where = raw.root / rel
    info = raw.loadmat(rel, "the clip's annotations (joints2D, joints3D, camLoc)", KEYS)
    try:
        arrays = [np.asarray(info[k], dtype=np.float64) for k in KEYS]
    except (TypeError, ValueError) as exc:
        raise DabenchError(f"surreal: {where} has non-numeric {', '.join(KEYS)}: {exc}") from exc
    joints2d, joints3d, cam_loc = arrays
    if joints3d.ndim == 2:  # MATLAB drops the trailing axis of a one-frame clip
        joints2d, joints3d = joints2d[..., None], joints3d[..., None]
    frames = joints3d.shape[-1]
    if (
        joints3d.shape != (3, JOINTS, frames)
        or joints2d.shape != (2, JOINTS, frames)
        or cam_loc.size != 3
        or not frames
    ):
        raise DabenchError(
            f"surreal: {where} has joints3D {info['joints3D'].shape}, joints2D "
            f"{info['joints2D'].shape}, camLoc {info['camLoc'].shape}; expected (3, 24, T), "
            "(2, 24, T) and (3, 1): the SURREAL v1 _info.mat"
        )
    return joints3d.transpose(2, 1, 0), joints2d.transpose(2, 1, 0), cam_loc.reshape(3)


def _check_projection(
    where: Path, kp3d: np.ndarray, joints2d: np.ndarray, frames: np.ndarray
) -> None:
    """The released joints2D are the projection rounded to whole pixels: a larger gap means
    another camera convention or a different release, and every kp2d would be wrong."""
    if not frames.any():
        return
    depth = kp3d[frames, :, 2]
    if (depth <= 0).any():
        raise DabenchError(
            f"surreal: {where}: joints3D lie behind the camera built from camLoc; expected "
            "SURREAL's camera (R = [[0, 0, -1], [0, 1, 0], [-1, 0, 0]], t = -R camLoc)"
        )
    gap = np.abs(project(kp3d[frames], K) - joints2d[frames]).max(axis=(1, 2))
    worst = int(np.argmax(gap))
    if gap[worst] > 0.5 + TOLERANCE_PX:
        frame = int(np.flatnonzero(frames)[worst])
        raise DabenchError(
            f"surreal: {where}: joints2D differ from the projection of joints3D by "
            f"{gap[worst]:.2f} px in frame {frame} (at most 0.5 px expected, their rounding): "
            "a different camera convention or dataset version"
        )


MI_MATRIX, MI_COMPRESSED = 14, 15  # MATLAB v5 element types


def _check_segm(path: Path, frames: int) -> None:
    """The segmentation holds ``segm_1 … segm_<frames>``, each HEIGHT × WIDTH: read from the
    variables' headers (their pixels are read with the images), so that a damaged file is
    refused before any shard is written."""
    shapes = _mat_shapes(path)
    for frame in range(frames):
        name = f"segm_{frame + 1}"
        if name not in shapes:
            raise DabenchError(
                f"surreal: {path} lacks {name}, the part labels of frame {frame} (0-based), "
                f"which the annotations and the video have; it holds {len(shapes)} variables"
            )
        if shapes[name] != (HEIGHT, WIDTH):
            raise DabenchError(
                f"surreal: {path}: {name} is {shapes[name]}; expected ({HEIGHT}, {WIDTH}) "
                "part labels"
            )


def _mat_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Name → shape of every variable of a MATLAB v5 file, from the first bytes of each
    element: scipy's ``whosmat`` decompresses much more of every element, several times the
    cost of the rest of a clip's annotations."""
    data = path.read_bytes()
    if len(data) < 128 or data[126:128] not in (b"IM", b"MI"):
        raise DabenchError(f"surreal: {path} is not a MATLAB v5 file (segm_1 .. segm_T)")
    order = "<" if data[126:128] == b"IM" else ">"
    shapes = {}
    pos = 128
    try:
        while pos < len(data):
            kind, size = struct.unpack_from(order + "II", data, pos)
            body = data[pos + 8 : pos + 8 + size]
            if len(body) < size:
                raise ValueError("the file ends inside a variable")
            if kind == MI_COMPRESSED:  # a zlib stream of one miMATRIX element
                body = zlib.decompressobj().decompress(body, 512)
                kind, _ = struct.unpack_from(order + "II", body, 0)
                body = body[8:]
            if kind != MI_MATRIX:
                raise ValueError(f"element of type {kind} at byte {pos}")
            _, at = _subelement(body, 0, order)  # array flags
            dims, at = _subelement(body, at, order)
            name, _ = _subelement(body, at, order)
            shapes[name.decode("ascii")] = tuple(struct.unpack(f"{order}{len(dims) // 4}i", dims))
            pos += 8 + size
    except (struct.error, zlib.error, ValueError, UnicodeDecodeError) as exc:
        raise DabenchError(f"surreal: {path} is not a readable MATLAB file: {exc}") from exc
    return shapes


def _subelement(body: bytes, at: int, order: str) -> tuple[bytes, int]:
    """The data of the element at ``at`` and where the next one starts (8-byte aligned)."""
    kind, size = struct.unpack_from(order + "II", body, at)
    if kind >> 16:  # the small format: up to 4 bytes packed into the tag
        return body[at + 4 : at + 4 + (kind >> 16)], at + 8
    return body[at + 8 : at + 8 + size], at + 8 + size + (-size % 8)


# The segmentation of the last clip read in this process: consecutive samples are frames of
# one clip, and finding one variable in a file costs about as much as decoding all of its
# (small, well compressed) frames, so a clip is read once.
_segm_clip: tuple[Path, dict[str, Any]] | None = None


def _segm(path: Path, frame: int) -> np.ndarray:
    global _segm_clip
    from scipy.io import loadmat

    if _segm_clip is None or _segm_clip[0] != path:
        _segm_clip = None  # a failed read must not leave the last clip behind
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DabenchError(f"cannot read {path}: {exc.strerror}") from exc
        try:
            content = loadmat(io.BytesIO(data))
        except Exception as exc:  # scipy raises several types for a cut or foreign file
            raise DabenchError(f"surreal: {path} is not a readable MATLAB file: {exc}") from exc
        _segm_clip = (path, content)
    name = f"segm_{frame + 1}"
    if name not in _segm_clip[1]:  # checked with the annotations: changed since
        raise DabenchError(f"surreal: {path} lacks {name}, the part labels of frame {frame}")
    return np.asarray(_segm_clip[1][name])
