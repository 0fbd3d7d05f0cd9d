"""HumanEva-I through VideoPose3D's conversion (``datasets/humaneva.yaml``): the 15-joint
poses of ``data_3d_humaneva15.npz`` (``positions_3d[<Split>/<Subject>][<Action> <trial>
chunk<k>]``, ``[N, 15, 3]`` m, world frame) and ``data_2d_humaneva15_gt.npz`` (the same
keys, one ``[N, 15, 2]`` array per camera C1, C2, C3), the original colour videos
``S<k>/Image_Data/<Action>_<trial>_(C<c>).avi`` and the calibration files
``S<k>/Calibration_Data/C<c>.cal``.

Where a chunk lies in its video: VideoPose3D cuts each sequence's Train or Validate frame
range (its ``index`` table, copied below) into chunks at the frames the mocap could not
reconstruct and stores only the valid chunks, so the npz alone does not say where chunk
``k > 0`` starts. VideoPose3D's public detections file
``data_2d_humaneva15_detectron_pt_coco.npz`` keeps every chunk (the invalid ones under
``Unlabeled/<Split>/<Subject>``); its chunk lengths, checked against the range and the
ground-truth chunks, place every chunk. Synchronised frame ``f`` (0-based) is frame
``f + sync − 1`` (0-based) of camera C<c>'s video, ``sync`` being VideoPose3D's per-camera
``sync_data`` (copied below): the alignment VideoPose3D gives its detections.

Cameras: a ``.cal`` file is 22 numbers (Bouguet's calibration toolbox: ``fc[2] cc[2]
alpha_c kc[5] Rc[9] (row-major) Tc[3]``, Tc in mm [L: third-party readers]). ``kp3d =
Rc · (1000 · X) + Tc`` (mm, camera frame); ``kp2d`` is its pinhole projection with
``K = [[fc1, alpha_c·fc1, cc1], [0, fc2, cc2], [0, 0, 1]]``, and the frames are undistorted
with ``kc`` (Bouguet's model) so that the pinhole ``kp2d`` lands on the joints' pixels. The
npz's 2D must equal the projection of its 3D through each camera, with or without the
distortion, within :data:`TOLERANCE_PX`; otherwise the camera files are not the ones the
npz were made with and the conversion is refused.

Ids: ``seq`` per (split, subject, action, trial, chunk), shared by the three cameras (see
:func:`sequence_id`); ``view`` = camera index (C1 → 0); ``frame`` = the synchronised frame
(shared by the cameras, so multi-view groups form); ``subject`` = the subject number."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.data.convert.base import Converter, Item, register
from bench.data.convert.crop import in_image
from bench.data.convert.raw import RawFiles
from bench.data.convert.video import frame_count
from bench.errors import DabenchError

POSES_3D = "data_3d_humaneva15.npz"
POSES_2D = "data_2d_humaneva15_gt.npz"
CHUNKS = "data_2d_humaneva15_detectron_pt_coco.npz"
SPLITS = {"train": "Train", "test": "Validate"}  # VideoPose3D uses Validate as the test set
SPLIT_CODES = {"Train": 1, "Validate": 2}
CAMERAS = ("C1", "C2", "C3")
ACTIONS = ("Walking", "Jog", "Gestures", "ThrowCatch", "Box", "Combo")
JOINTS = 15
CAL_NUMBERS = 22
M_TO_MM = 1000.0
# The npz's 2D against this converter's projection of its 3D: float32 rounding plus a
# one-pixel difference of origin in either axis (MATLAB's 1-based pixels) stay under it; a
# camera of another subject or calibration is off by tens of pixels.
TOLERANCE_PX = 2.0
# The mocap of S3's ThrowCatch is damaged: VideoPose3D's ConvertHumanEva.m skips it.
DAMAGED = {("S3", "ThrowCatch 1")}

CHUNK_NAME = re.compile(r"^(?P<action>[A-Za-z]+) (?P<trial>\d) chunk(?P<chunk>\d+)$")
SUBJECT_KEY = re.compile(r"^(?P<split>Train|Validate)/(?P<subject>S\d)$")
VIDEO = re.compile(r"^(?P<subject>S\d)/Image_Data/.+_\((?P<camera>C\d)\)\.avi$")

# VideoPose3D data/prepare_data_humaneva.py `index`: [start, end) of each sequence's Train
# and Validate frames, 0-based in the synchronised numbering (ConvertHumanEva.m's FrameStart
# - 1 .. FrameEnd).
FRAME_RANGES: dict[str, dict[str, dict[str, tuple[int, int]]]] = {
    "Train": {
        "S1": {
            "Walking 1": (590, 1203),
            "Jog 1": (367, 740),
            "ThrowCatch 1": (473, 945),
            "Gestures 1": (395, 801),
            "Box 1": (385, 789),
        },
        "S2": {
            "Walking 1": (438, 876),
            "Jog 1": (398, 795),
            "ThrowCatch 1": (550, 1128),
            "Gestures 1": (500, 901),
            "Box 1": (382, 734),
        },
        "S3": {
            "Walking 1": (448, 939),
            "Jog 1": (401, 842),
            "ThrowCatch 1": (493, 1027),
            "Gestures 1": (533, 1102),
            "Box 1": (512, 1021),
        },
    },
    "Validate": {
        "S1": {
            "Walking 1": (5, 590),
            "Jog 1": (5, 367),
            "ThrowCatch 1": (5, 473),
            "Gestures 1": (5, 395),
            "Box 1": (5, 385),
        },
        "S2": {
            "Walking 1": (5, 438),
            "Jog 1": (5, 398),
            "ThrowCatch 1": (5, 550),
            "Gestures 1": (5, 500),
            "Box 1": (5, 382),
        },
        "S3": {
            "Walking 1": (5, 448),
            "Jog 1": (5, 401),
            "ThrowCatch 1": (5, 493),
            "Gestures 1": (5, 533),
            "Box 1": (5, 512),
        },
    },
}

# VideoPose3D `sync_data` ("frames to skip for each video"): per sequence and camera C1, C2,
# C3, the 1-based video frame that shows synchronised frame 0.
SYNC: dict[str, dict[str, tuple[int, int, int]]] = {
    "S1": {
        "Walking 1": (82, 81, 82),
        "Jog 1": (51, 51, 50),
        "ThrowCatch 1": (61, 61, 60),
        "Gestures 1": (45, 45, 44),
        "Box 1": (57, 57, 56),
    },
    "S2": {
        "Walking 1": (115, 115, 114),
        "Jog 1": (100, 100, 99),
        "ThrowCatch 1": (127, 127, 127),
        "Gestures 1": (122, 122, 121),
        "Box 1": (119, 119, 117),
    },
    "S3": {
        "Walking 1": (80, 80, 80),
        "Jog 1": (65, 65, 65),
        "ThrowCatch 1": (79, 79, 79),
        "Gestures 1": (83, 83, 82),
        "Box 1": (1, 1, 1),
    },
}


@dataclass(frozen=True)
class Camera:
    """One ``.cal`` file: ``X_cam = R X_world + t`` (mm) and Bouguet's lens model."""

    K: np.ndarray  # [3, 3], skew alpha_c * fc1 at [0, 1]
    kc: np.ndarray  # [5] k1, k2, p1, p2, k3
    R: np.ndarray  # [3, 3]
    t: np.ndarray  # [3] mm

    def project(self, cam: np.ndarray, distort: bool = False) -> np.ndarray:
        """Camera-frame points ``[..., 3]`` → pixels ``[..., 2]``, through the lens
        distortion or not."""
        xy = cam[..., :2] / cam[..., 2:3]
        if distort:
            xy = distort_normalised(xy, self.kc)
        return xy @ self.K[:2, :2].T + self.K[:2, 2]


def distort_normalised(xy: np.ndarray, kc: np.ndarray) -> np.ndarray:
    """Bouguet's (and OpenCV's) radial + tangential model on normalised coordinates."""
    x, y = xy[..., 0], xy[..., 1]
    r2 = x * x + y * y
    radial = 1 + kc[0] * r2 + kc[1] * r2**2 + kc[4] * r2**3
    dx = 2 * kc[2] * x * y + kc[3] * (r2 + 2 * x * x)
    dy = kc[2] * (r2 + 2 * y * y) + 2 * kc[3] * x * y
    return np.stack([x * radial + dx, y * radial + dy], axis=-1)


def parse_cal(text: str, where: str) -> Camera:
    """A HumanEva ``.cal`` file: ``fc[2] cc[2] alpha_c kc[5] Rc[9] Tc[3]``, whitespace
    separated (one number per line in the release)."""
    try:
        values = np.array([float(v) for v in text.split()])
    except ValueError as exc:
        raise DabenchError(
            f"humaneva: {where} is not a HumanEva calibration file ({exc}); expected "
            f"{CAL_NUMBERS} numbers: fc(2) cc(2) alpha_c kc(5) Rc(9, row-major) Tc(3, mm)"
        ) from None
    if len(values) != CAL_NUMBERS or not np.isfinite(values).all():
        raise DabenchError(
            f"humaneva: {where} holds {len(values)} numbers (finite: "
            f"{bool(np.isfinite(values).all())}); expected {CAL_NUMBERS}: fc(2) cc(2) "
            "alpha_c kc(5) Rc(9, row-major) Tc(3, mm)"
        )
    fc, cc, alpha = values[0:2], values[2:4], values[4]
    r = values[10:19].reshape(3, 3)
    if np.abs(r @ r.T - np.eye(3)).max() > 1e-3 or np.linalg.det(r) < 0:
        raise DabenchError(
            f"humaneva: {where} has an Rc (numbers 11-19) that is not a rotation; expected "
            f"{CAL_NUMBERS} numbers: fc(2) cc(2) alpha_c kc(5) Rc(9, row-major) Tc(3, mm)"
        )
    if (fc <= 0).any():
        raise DabenchError(f"humaneva: {where} has focal lengths {fc.tolist()}; expected > 0")
    k = np.array([[fc[0], alpha * fc[0], cc[0]], [0.0, fc[1], cc[1]], [0.0, 0.0, 1.0]])
    return Camera(K=k, kc=values[5:10], R=r, t=values[19:22])


def sequence_id(split: str, subject: str, sequence: str, chunk: int) -> int:
    """``seq`` of a chunk, its digits readable: split (1 Train, 2 Validate), subject,
    action (Walking 0, Jog 1, Gestures 2, ThrowCatch 3, Box 4, Combo 5), trial, then the
    chunk in three digits; e.g. Validate/S3 "Walking 1 chunk4" → 2301004."""
    action, trial = sequence.split(" ")
    return (
        SPLIT_CODES[split] * 1_000_000
        + int(subject[1:]) * 100_000
        + ACTIONS.index(action) * 10_000
        + int(trial) * 1_000
        + chunk
    )


@register
class HumanEva(Converter):
    card = "humaneva"
    raw_joints = "humaneva15"
    fields = ("seq", "frame", "view", "subject", "cam_R", "cam_t")

    def items(self, raw: RawFiles, split: str) -> Iterator[Item]:
        return _items(raw, SPLITS[split])

    def read_image(self, root: Path, item: Item) -> np.ndarray:
        """The video frame, undistorted with its camera's ``kc`` (the pinhole ``K`` then
        maps ``kp3d`` onto the joints' pixels)."""
        return undistort(super().read_image(root, item), _camera_of_video(root, item.image))


def _items(raw: RawFiles, split: str) -> Iterator[Item]:
    poses_3d = _load_npz(raw, POSES_3D, "VideoPose3D's 3D poses (positions_3d)")
    poses_2d = _load_npz(raw, POSES_2D, "VideoPose3D's ground-truth 2D poses (positions_2d)")
    chunks = _load_npz(raw, CHUNKS, "VideoPose3D's detections, read for their chunk lengths")
    _check_keys(raw, poses_3d, POSES_3D)
    _check_keys(raw, poses_2d, POSES_2D)
    keys = sorted((k for k in poses_3d if k.startswith(f"{split}/")), key=lambda k: k[-1])
    if not keys:
        raise DabenchError(
            f"humaneva: {raw.root / POSES_3D} holds no {split}/<subject> entries (it holds "
            f"{sorted(poses_3d)}); expected VideoPose3D's Train/S1..S3 and Validate/S1..S3"
        )
    for key in keys:
        subject = key.split("/")[1]
        if key not in poses_2d:
            raise DabenchError(
                f"humaneva: {raw.root / POSES_2D} has no {key!r}, which {POSES_3D} has; "
                "expected the 2D and 3D files of one VideoPose3D conversion"
            )
        cameras = [_read_camera(raw, subject, cam) for cam in CAMERAS]
        for sequence, chunk_ids in _sequences(raw, poses_3d[key], key):
            if (subject, sequence) in DAMAGED:
                continue
            yield from _sequence_items(
                raw, split, subject, sequence, chunk_ids, poses_3d, poses_2d, chunks, cameras
            )


def _sequence_items(
    raw: RawFiles,
    split: str,
    subject: str,
    sequence: str,
    chunk_ids: list[int],
    poses_3d: dict[str, Any],
    poses_2d: dict[str, Any],
    chunks: dict[str, Any],
    cameras: list[Camera],
) -> Iterator[Item]:
    key = f"{split}/{subject}"
    span = FRAME_RANGES[split].get(subject, {}).get(sequence)
    if span is None:
        known = ", ".join(f"{s}/{q}" for s, seqs in FRAME_RANGES[split].items() for q in seqs)
        raise DabenchError(
            f"humaneva: {raw.root / POSES_3D} has {key} {sequence!r}, which VideoPose3D's "
            f"frame table (prepare_data_humaneva.py `index`) does not have; expected one of "
            f"{known}"
        )
    layout = _chunk_layout(raw, chunks, split, subject, sequence, span)
    action, trial = sequence.split(" ")
    videos = [f"{subject}/Image_Data/{action}_{trial}_({cam}).avi" for cam in CAMERAS]
    sizes = [
        _video_size(raw, v, f"camera {cam} of {subject} {sequence}")
        for v, cam in zip(videos, CAMERAS, strict=True)
    ]
    for chunk in chunk_ids:
        name = f"{sequence} chunk{chunk}"
        if chunk not in layout:
            raise DabenchError(
                f"humaneva: {raw.root / POSES_3D} has {key} {name!r}, which {CHUNKS} does not "
                f"have (its chunks of {sequence!r}: {sorted(layout)}); expected the "
                "detections file of the same VideoPose3D conversion"
            )
        first, length = layout[chunk]
        world = _array(raw, POSES_3D, poses_3d[key].get(name), (length, JOINTS, 3), key, name)
        views = poses_2d[key].get(name)
        if not isinstance(views, (list, tuple)) or len(views) != len(CAMERAS):
            raise DabenchError(
                f"humaneva: {raw.root / POSES_2D} has no 2D of {key} {name!r} for the three "
                f"cameras (found {type(views).__name__}); expected a list of "
                f"{len(CAMERAS)} [N, {JOINTS}, 2] arrays (C1, C2, C3)"
            )
        seq = sequence_id(split, subject, sequence, chunk)
        for view, camera in enumerate(cameras):
            uv_npz = _array(raw, POSES_2D, views[view], (length, JOINTS, 2), key, name)
            kp3d = world * M_TO_MM @ camera.R.T + camera.t
            kp2d = camera.project(kp3d)
            _check_projection(raw, camera, kp3d, kp2d, uv_npz, key, name, CAMERAS[view])
            skip = SYNC[subject][sequence][view] - 1
            width, height, frames = sizes[view]
            if first + length + skip > frames:
                raise DabenchError(
                    f"humaneva: {raw.root / videos[view]} has {frames} frames; {key} {name!r} "
                    f"needs frames {first + skip}..{first + length + skip - 1} (0-based): "
                    "expected the full original video"
                )
            z = kp3d[..., 2]
            vis = in_image(kp2d, width, height) & (z > 0)
            for i in range(length):
                if not vis[i].any():
                    continue  # wholly outside the image: nothing to crop around
                yield Item(
                    image=videos[view],
                    image_frame=first + i + skip,
                    kp2d=kp2d[i],
                    vis=vis[i],
                    kp3d=kp3d[i],
                    K=camera.K,
                    subject=int(subject[1:]),
                    seq=seq,
                    frame=first + i,
                    view=view,
                    cam_R=camera.R,
                    cam_t=camera.t,
                )


def _load_npz(raw: RawFiles, rel: str, what: str) -> dict[str, Any]:
    """The dict pickled in the npz's ``positions_3d`` or ``positions_2d``."""
    where = raw.root / rel
    data = raw.read_bytes(rel, what)
    key = "positions_3d" if rel == POSES_3D else "positions_2d"
    try:
        with np.load(io.BytesIO(data), allow_pickle=True) as npz:
            files = list(npz.files)
            if key not in files:
                raise DabenchError(
                    f"humaneva: {where} lacks {key!r}; it holds {files} — expected "
                    f"VideoPose3D's {rel} ({what})"
                )
            content = npz[key].item()
            metadata = npz["metadata"].item() if "metadata" in files else None
    except DabenchError:
        raise
    except Exception as exc:  # a cut or foreign file raises one of many types
        raise DabenchError(
            f"humaneva: {where} is not a readable .npz with a pickled {key} dict (cut "
            f"short?): {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(content, dict) or not all(isinstance(v, dict) for v in content.values()):
        raise DabenchError(
            f"humaneva: {where} holds a {key} of type {type(content).__name__}; expected "
            f"VideoPose3D's dict <Split>/<Subject> -> {{<Action> <trial> chunk<k>: array}}"
        )
    if rel == POSES_2D and isinstance(metadata, dict) and metadata.get("num_joints") != JOINTS:
        raise DabenchError(
            f"humaneva: {where} has metadata {metadata}; expected the {JOINTS}-joint "
            "layout humaneva15 (ConvertHumanEva.m with N_JOINTS = 15)"
        )
    return content


def _check_keys(raw: RawFiles, content: dict[str, Any], rel: str) -> None:
    bad = sorted(k for k in content if not SUBJECT_KEY.match(str(k)))
    if bad:
        raise DabenchError(
            f"humaneva: {raw.root / rel} has entries {bad}; expected only Train/S<k> and "
            "Validate/S<k> (VideoPose3D's humaneva15 ground truth)"
        )


def _sequences(raw: RawFiles, entries: dict[str, Any], key: str) -> list[tuple[str, list[int]]]:
    """(``"<Action> <trial>"``, its chunk numbers ascending) in HumanEva's action order."""
    found: dict[str, list[int]] = {}
    for name in entries:
        match = CHUNK_NAME.match(str(name))
        if not match or match["action"] not in ACTIONS:
            raise DabenchError(
                f"humaneva: {raw.root / POSES_3D} has {key} {name!r}; expected names "
                f"'<Action> <trial> chunk<k>' with an action of {', '.join(ACTIONS)}"
            )
        sequence = f"{match['action']} {match['trial']}"
        found.setdefault(sequence, []).append(int(match["chunk"]))

    def order(sequence: str) -> tuple[int, str]:
        action, trial = sequence.split(" ")
        return ACTIONS.index(action), trial

    return [(s, sorted(found[s])) for s in sorted(found, key=order)]


def _chunk_layout(
    raw: RawFiles,
    chunks: dict[str, Any],
    split: str,
    subject: str,
    sequence: str,
    span: tuple[int, int],
) -> dict[int, tuple[int, int]]:
    """chunk number → (first synchronised frame, length), from the detections file's
    labelled and unlabelled chunks of the sequence, which together must tile ``span``."""
    where = raw.root / CHUNKS
    lengths: dict[int, int] = {}
    for key in (f"{split}/{subject}", f"Unlabeled/{split}/{subject}"):
        for name, views in chunks.get(key, {}).items():
            match = CHUNK_NAME.match(str(name))
            if not match or f"{match['action']} {match['trial']}" != sequence:
                continue
            sizes = {len(v) for v in views} if isinstance(views, (list, tuple)) else set()
            chunk = int(match["chunk"])
            if len(sizes) != 1 or len(views) != len(CAMERAS) or chunk in lengths:
                raise DabenchError(
                    f"humaneva: {where} has {key} {name!r} twice or without one array of one "
                    f"length per camera C1, C2, C3; expected VideoPose3D's detections file"
                )
            lengths[chunk] = sizes.pop()
    total = sum(lengths.values())
    if sorted(lengths) != list(range(len(lengths))) or total != span[1] - span[0]:
        raise DabenchError(
            f"humaneva: {where} has chunks {sorted(lengths)} of {split}/{subject} {sequence!r} "
            f"(under {split}/{subject} and Unlabeled/{split}/{subject}) covering {total} "
            f"frames; expected chunk0, chunk1, ... covering VideoPose3D's {span[1] - span[0]} "
            f"frames {span[0]}..{span[1] - 1}: every chunk, labelled or not, places the next"
        )
    out, first = {}, span[0]
    for chunk in range(len(lengths)):
        out[chunk] = (first, lengths[chunk])
        first += lengths[chunk]
    return out


def _array(
    raw: RawFiles, rel: str, value: Any, shape: tuple[int, int, int], key: str, name: str
) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        array = np.zeros(0)
    if array.shape != shape or not np.isfinite(array).all():
        found = "missing" if value is None else f"shape {array.shape}"
        raise DabenchError(
            f"humaneva: {raw.root / rel} has {key} {name!r} {found} (finite: "
            f"{bool(np.isfinite(array).all())}); expected finite {list(shape)} — {shape[1]} "
            f"joints, and {shape[0]} frames as the detections file's chunk of that name"
        )
    return array


def _read_camera(raw: RawFiles, subject: str, cam: str) -> Camera:
    rel = f"{subject}/Calibration_Data/{cam}.cal"
    text = raw.read_bytes(rel, f"the calibration of camera {cam} of {subject}")
    return parse_cal(text.decode("latin-1"), str(raw.root / rel))


def _check_projection(
    raw: RawFiles,
    camera: Camera,
    kp3d: np.ndarray,
    kp2d: np.ndarray,
    uv_npz: np.ndarray,
    key: str,
    name: str,
    cam: str,
) -> None:
    """The npz's 2D is the projection of its 3D through this camera, with the lens
    distortion (as the toolkit's projection is believed to apply it) or without."""
    with np.errstate(divide="ignore", invalid="ignore"):
        off = min(
            np.nanmax(np.abs(camera.project(kp3d, distort=True) - uv_npz), initial=0.0),
            np.nanmax(np.abs(kp2d - uv_npz), initial=0.0),
        )
    if not (off <= TOLERANCE_PX) or (kp3d[..., 2] <= 0).any():
        subject = key.split("/")[1]
        raise DabenchError(
            f"humaneva: {raw.root / subject / 'Calibration_Data' / f'{cam}.cal'} does not "
            f"reproduce {POSES_2D}'s {cam} 2D of {key} {name!r} from its 3D: off by up to "
            f"{off:.1f} px (allowed {TOLERANCE_PX}), or joints behind the camera; expected the "
            "calibration the npz files were made with (Tc in mm)"
        )


def _video_size(raw: RawFiles, rel: str, what: str) -> tuple[int, int, int]:
    """(W, H, frames) from the video's header."""
    import av

    path = raw.path(rel, f"the video of {what}")
    frames = frame_count(path)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return stream.codec_context.width, stream.codec_context.height, frames


# -- undistortion (in the worker processes) --------------------------------------------------

_CAMERAS: dict[Path, Camera] = {}
_MAPS: dict[tuple[bytes, bytes, int, int], tuple[np.ndarray, np.ndarray]] = {}


def _camera_of_video(root: Path, image: str) -> Camera:
    match = VIDEO.match(image)
    if match is None:
        raise DabenchError(f"humaneva: {image} is not a video S<k>/Image_Data/*_(C<c>).avi")
    path = root / match["subject"] / "Calibration_Data" / f"{match['camera']}.cal"
    if path not in _CAMERAS:
        try:
            text = path.read_text(encoding="latin-1")
        except OSError as exc:
            raise DabenchError(f"cannot read {path}: {exc.strerror}") from exc
        _CAMERAS[path] = parse_cal(text, str(path))
    return _CAMERAS[path]


def undistort(image: np.ndarray, camera: Camera) -> np.ndarray:
    """``image [H, W, 3]`` as the pinhole camera ``camera.K`` would see it: each pixel
    sampled (bilinearly) where the lens put it; pixels the lens shows nothing for are 0."""
    if not camera.kc.any():
        return image
    h, w = image.shape[:2]
    key = (camera.K.tobytes(), camera.kc.tobytes(), h, w)
    if key not in _MAPS:
        if len(_MAPS) >= 9:  # HumanEva-I has 3 subjects x 3 colour cameras
            _MAPS.clear()
        _MAPS[key] = _undistortion_map(camera, h, w)
    index, weight = _MAPS[key]
    flat = np.concatenate([image.reshape(-1, 3), np.zeros((1, 3), image.dtype)]).astype(np.float32)
    out = sum(flat[index[n]] * weight[n, :, None] for n in range(4))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8).reshape(h, w, 3)


def _undistortion_map(camera: Camera, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """For every output pixel, the flat indices of its 4 source neighbours (``h * w`` =
    outside: black) and their bilinear weights."""
    (fx, skew, cx), (_, fy, cy) = camera.K[0], camera.K[1]
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    y = (v - cy) / fy
    x = (u - cx - skew * y) / fx
    xd = distort_normalised(np.stack([x, y], axis=-1), camera.kc)
    us = fx * xd[..., 0] + skew * xd[..., 1] + cx
    vs = fy * xd[..., 1] + cy
    u0, v0 = np.floor(us), np.floor(vs)
    fu, fv = us - u0, vs - v0
    index = np.empty((4, h * w), np.int32)
    weight = np.empty((4, h * w), np.float32)
    for n, (du, dv) in enumerate(((0, 0), (1, 0), (0, 1), (1, 1))):
        uu, vv = u0 + du, v0 + dv
        inside = (uu >= 0) & (uu < w) & (vv >= 0) & (vv < h)
        flat = np.where(inside, vv * w + uu, h * w).astype(np.int32)
        index[n] = flat.ravel()
        weight[n] = ((fu if du else 1 - fu) * (fv if dv else 1 - fv)).ravel()
    return index, weight
