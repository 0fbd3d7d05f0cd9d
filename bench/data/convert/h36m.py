"""Human3.6M from its raw release, and Mask as Supervision's six-action subset of it.

Raw layout read (the release as mmpose's ``preprocess_h36m.py`` unpacks it):

* ``metadata.xml``: ``<mapping>`` — rows of cells, the first ``[_, _, S1, …, S11]``, the
  next 32 ``[action, subaction, <basename of S1>, …, <basename of S11>]`` (action 1 is
  ``_ALL``, not a recording, and is skipped); ``<actionnames>`` — one element per action id
  (id = position + 1); ``<dbcameras><index2id>`` — the 4 camera ids, in index order;
  ``<w0>`` — ``[n n n …]``: per (camera c, subject s) at ``6 · (11 c + s − 1)`` the
  rotation angles (3) and the camera centre in world mm (3), then per camera at
  ``264 + 9 c`` f (2), c (2), k (3 radial), p (2 tangential). Parsed as mmpose does; the
  file itself is undocumented.
* ``S<n>/MyPoseFeatures/D3_Positions_mono/<basename>.<camid>.cdf``: NASA CDF, ``Pose``
  ``(1, N, 96)`` — 32 joints in that camera's frame, mm.
* ``S<n>/MyPoseFeatures/D2_Positions/<basename>.<camid>.cdf``: ``Pose`` ``(1, N, 64)`` px.
* ``S<n>/Videos/<basename>.<camid>.mp4``: the frames (frame i of the video = pose row i).
* ``S<n>/MySegmentsMat/ground_truth_bs/<basename>.<camid>.mat`` (optional): MATLAB v7.3,
  ``Masks`` a cell of one H × W array per frame (HDF5 object references; each array comes
  out of HDF5 as W × H and is transposed back); foreground where it is 1.

Cameras: ``cam_R = Rx(a0) · Ry(a1) · Rz(a2)`` (right-handed rotations about the axes,
world → camera) and ``cam_t = −cam_R · T`` (mm), so ``X_cam = cam_R X_world + cam_t``:
mmpose's camera-to-world ``R`` (built with negated x and z angles and transposed axis
matrices) is ``cam_Rᵀ`` and its ``T`` the camera centre. ``K`` is the pinhole matrix of
f and c, taken as 0-based pixels with centres at integers. Two checks per sequence catch a
wrong or mismatched camera file: D2_Positions must be the projection of D3_Positions_mono
with (f, c), with or without the lens distortion (median disagreement at most
:data:`PROJECTION_TOLERANCE_PX`), and the 4 cameras' D3_Positions_mono carried back to the
world with their extrinsics must agree (median :data:`WORLD_TOLERANCE_MM`).

Per sample: ``kp3d`` = D3_Positions_mono (mm), ``kp2d`` its exact pinhole projection with
``K`` (the released 2D only checks the camera), all 32 joints visible. Frames are truncated
to the shortest of the poses, the video and (when read) the masks.

Splits: train = S1, S5, S6, S7, S8 every 5th frame; test = S9, S11 every 64th frame
(frames 0, stride, 2·stride, … of each video); S11's ``Directions.54138969`` (a corrupt
video) is skipped. Subjects whose folder is absent are skipped (the listing is in the
fingerprint); a split with none is an error. Within a present subject every sequence the
metadata names must be whole.

Masks: a split's shard has them when every one of its sequences has its
``ground_truth_bs`` file, none when none has; some but not all is an error naming a missing
one (a shard's fields are fixed before it is written).

Ids: ``subject`` = n of ``S<n>``; ``seq`` = 1000 · subject + 10 · action + subaction,
shared by the 4 cameras so that the views of one frame form a multi-view group; ``view`` =
the camera's index (0..3) in ``index2id``; ``frame`` = the 0-based video frame. Sample
order: subject, metadata row (action, subaction), camera, frame.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from bench.data.convert.base import Item, MasksIfPresent, register
from bench.data.convert.raw import RawFiles
from bench.data.convert.video import frame_count
from bench.data.geometry import project
from bench.errors import DabenchError

JOINTS = 32
METADATA = "metadata.xml"
CAMERAS = 4  # the w0 layout is for 4 cameras and 11 subjects
W0_SUBJECTS = 11
EXTRINSICS = 6  # rotation angles (3), camera centre (3)
INTRINSICS = 9  # f (2), c (2), k (3), p (2)
W0_NUMBERS = CAMERAS * W0_SUBJECTS * EXTRINSICS + CAMERAS * INTRINSICS
MAPPING_ROWS = 32  # after the header: 16 actions x 2 subactions, as mmpose reads them
ALL_ACTION = 1  # "_ALL": not a recording
# (subject, basename, camera) whose video is corrupt [V VideoPose3D discards S11 "Directions";
# h36m-fetch substitutes another file for this camera; mks0601 skips only this camera]
CORRUPT = {(11, "Directions", "54138969")}
# The released 2D is the projection of the camera-frame 3D (with lens distortion [U]); a
# camera file of another camera or subject misses by more (the 4 principal points differ
# by 4-14 px).
PROJECTION_TOLERANCE_PX = 3.0
# D3_Positions_mono are the world poses carried by the metadata's extrinsics: the 4 cameras
# agree to rounding; another subject's calibration is off by centimetres (the rig moved
# between subjects).
WORLD_TOLERANCE_MM = 20.0
MAS_ACTIONS = ("Directions", "Discussion", "Posing", "Waiting", "Greeting", "Walking")


@dataclass(frozen=True)
class Camera:
    """One camera as calibrated for one subject."""

    cam_id: str
    index: int
    cam_R: np.ndarray  # world -> camera
    cam_t: np.ndarray  # mm
    f: np.ndarray  # (fx, fy) px
    c: np.ndarray  # (cx, cy) px
    k: np.ndarray  # radial
    p: np.ndarray  # tangential

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.f[0], 0.0, self.c[0]], [0.0, self.f[1], self.c[1]], [0, 0, 1.0]])


@dataclass(frozen=True)
class Metadata:
    """What metadata.xml says: per (action, subaction) row the basename of each subject's
    recording, the action names, the camera ids and the flat camera parameters."""

    subjects: tuple[str, ...]  # the mapping's column names, e.g. "S1"
    rows: tuple[tuple[int, int, tuple[str, ...]], ...]  # action, subaction, basenames
    action_names: dict[int, str]
    camera_ids: tuple[str, ...]
    w0: np.ndarray

    def camera(self, subject: int, index: int) -> Camera:
        start = EXTRINSICS * (index * W0_SUBJECTS + subject - 1)
        angles, centre = self.w0[start : start + 3], self.w0[start + 3 : start + 6]
        at = CAMERAS * W0_SUBJECTS * EXTRINSICS + INTRINSICS * index
        intr = self.w0[at : at + INTRINSICS]
        rot = _rot_x(angles[0]) @ _rot_y(angles[1]) @ _rot_z(angles[2])
        return Camera(
            cam_id=self.camera_ids[index],
            index=index,
            cam_R=rot,
            cam_t=-rot @ centre,
            f=intr[0:2],
            c=intr[2:4],
            k=intr[4:7],
            p=intr[7:9],
        )


@dataclass(frozen=True)
class Recording:
    """One (subject, action, subaction): the 4 cameras' files share its basename."""

    subject: int
    action: int
    subaction: int
    action_name: str
    basename: str

    @property
    def seq(self) -> int:
        return 1000 * self.subject + 10 * self.action + self.subaction

    def file(self, folder: str, cam_id: str, ext: str) -> str:
        return f"S{self.subject}/{folder}/{self.basename}.{cam_id}.{ext}"

    def describe(self, cam_id: str | None = None) -> str:
        where = f"S{self.subject} {self.basename!r}"
        return where if cam_id is None else f"{where}, camera {cam_id}"


@register
class Human36M(MasksIfPresent):
    """The card ``h36m``: every action of the metadata."""

    card = "h36m"
    raw_joints = "h36m32"
    fields = ("seq", "frame", "view", "subject", "cam_R", "cam_t", "masks")
    subjects: ClassVar[dict[str, tuple[int, ...]]] = {"train": (1, 5, 6, 7, 8), "test": (9, 11)}
    strides: ClassVar[dict[str, int]] = {"train": 5, "test": 64}
    actions: ClassVar[tuple[str, ...] | None] = None  # None: every action

    def items(self, raw: RawFiles, split: str) -> Iterator[Item]:
        """A generator over the split's samples, one recording at a time; the metadata,
        the subjects present and whether masks are read are settled before it starts."""
        meta = _read_metadata(raw, self.card)
        recordings = self._recordings(raw, meta, split)
        masks = self.masks_found(raw, split, _masks_present(raw, self.card, meta, recordings))
        return self._stream(raw, meta, recordings, self.strides[split], masks)

    def _stream(
        self,
        raw: RawFiles,
        meta: Metadata,
        recordings: Sequence[Recording],
        stride: int,
        masks: bool,
    ) -> Iterator[Item]:
        for rec in recordings:
            yield from _recording_items(raw, self.card, meta, rec, stride, masks)

    def _recordings(self, raw: RawFiles, meta: Metadata, split: str) -> list[Recording]:
        present = [s for s in self.subjects[split] if (raw.root / f"S{s}").is_dir()]
        raw.note(f"{split} subjects:{','.join(f'S{s}' for s in present)}")
        if not present:
            names = ", ".join(f"S{s}" for s in self.subjects[split])
            raise DabenchError(
                f"{self.card}: no subject folder of the {split} split ({names}) under "
                f"{raw.root}; point RAW_DIR at the folder holding metadata.xml and S1 ... S11"
            )
        wanted = None if self.actions is None else {a.lower() for a in self.actions}
        out = []
        for subject in present:
            column = _subject_column(raw, self.card, meta, subject)
            for action, subaction, basenames in meta.rows:
                name = meta.action_names[action]
                if action == ALL_ACTION or (wanted is not None and name.lower() not in wanted):
                    continue
                basename = basenames[column] if column < len(basenames) else ""
                if not basename:
                    raise DabenchError(
                        f"{self.card}: {raw.root / METADATA} names no recording of S{subject} "
                        f"for action {action} ({name}), subaction {subaction}"
                    )
                out.append(Recording(subject, action, subaction, name, basename))
        if not out:
            raise DabenchError(
                f"{self.card}: {raw.root / METADATA} maps no recording of "
                f"{list(self.actions or ['any action but _ALL'])}; its actions are "
                f"{sorted(set(meta.action_names.values()))}"
            )
        return out

    def read_mask(self, root: Path, item: Item) -> np.ndarray | None:
        if item.mask is None:
            return None
        return _mask_frame(root / item.mask, item.mask_frame or 0, self.card)

    def mask_of(self, decoded: np.ndarray) -> np.ndarray:
        """ground_truth_bs holds 1 on the figure, 0 elsewhere."""
        return decoded > 0.5


@register
class Human36MMaS(Human36M):
    """The card ``h36m-mas``: Mask as Supervision's six actions (methods.md §5.3)."""

    card = "h36m-mas"
    actions = MAS_ACTIONS


# -- metadata.xml -----------------------------------------------------------------------------


def _read_metadata(raw: RawFiles, card: str) -> Metadata:
    where = raw.root / METADATA
    data = raw.read_bytes(METADATA, "the Human3.6M metadata: recording names and cameras")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise DabenchError(f"{card}: {where} is not readable XML (cut short?): {exc}") from exc
    parts = {
        "mapping": root.find("mapping"),
        "actionnames": root.find("actionnames"),
        "dbcameras/index2id": root.find("dbcameras/index2id"),
        "w0": root.find("w0"),
    }
    missing = [k for k, v in parts.items() if v is None]
    if missing:
        raise DabenchError(
            f"{card}: {where} lacks {missing}; expected the release's metadata.xml with "
            "<mapping>, <actionnames>, <dbcameras><index2id> and <w0>"
        )
    table = [[(td.text or "").strip() for td in tr] for tr in parts["mapping"]]
    if len(table) < 2 or len(table[0]) < 3:
        raise DabenchError(
            f"{card}: {where}: <mapping> has no header row [_, _, S1, ..., S11] and rows "
            "[action, subaction, basenames...]"
        )
    rows = []
    for i, cells in enumerate(table[1 : 1 + MAPPING_ROWS], start=1):
        try:
            action, subaction = int(cells[0]), int(cells[1])
        except (IndexError, ValueError):
            raise DabenchError(
                f"{card}: {where}: <mapping> row {i} is {cells[:3]}...; expected an action "
                "number, a subaction number and one basename per subject"
            ) from None
        if not (1 <= action <= 99 and 1 <= subaction <= 9):
            raise DabenchError(
                f"{card}: {where}: <mapping> row {i} has action {action}, subaction "
                f"{subaction}; expected 1..99 and 1..9"
            )
        rows.append((action, subaction, tuple(cells[2:])))
    names = {i + 1: (e.text or "").strip() for i, e in enumerate(parts["actionnames"])}
    unnamed = sorted({a for a, _, _ in rows} - set(names))
    if unnamed:
        raise DabenchError(
            f"{card}: {where}: <actionnames> has {len(names)} names; the mapping uses "
            f"action(s) {unnamed}"
        )
    camera_ids = tuple((e.text or "").strip() for e in parts["dbcameras/index2id"])
    try:
        text = (parts["w0"].text or "").strip()
        w0 = np.array([float(v) for v in text.removeprefix("[").removesuffix("]").split()])
    except ValueError as exc:
        raise DabenchError(f"{card}: {where}: <w0> is not a list of numbers: {exc}") from exc
    if len(camera_ids) != CAMERAS or len(w0) < W0_NUMBERS or not np.isfinite(w0).all():
        raise DabenchError(
            f"{card}: {where} has {len(camera_ids)} camera ids and {len(w0)} numbers in "
            f"<w0>; expected {CAMERAS} ids and at least {W0_NUMBERS} finite numbers (angles "
            f"and centres for {CAMERAS} cameras x {W0_SUBJECTS} subjects, then "
            f"{INTRINSICS} intrinsics per camera)"
        )
    return Metadata(tuple(table[0][2:]), tuple(rows), names, camera_ids, w0)


def _subject_column(raw: RawFiles, card: str, meta: Metadata, subject: int) -> int:
    name = f"S{subject}"
    if name not in meta.subjects:
        raise DabenchError(
            f"{card}: {raw.root / METADATA}: the <mapping> header names {list(meta.subjects)}, "
            f"not {name}"
        )
    return meta.subjects.index(name)


def _rot_x(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0, 0], [0, c, -s], [0, s, c]])


def _rot_y(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1.0, 0], [-s, 0, c]])


def _rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


# -- one recording ----------------------------------------------------------------------------


def _recording_items(
    raw: RawFiles, card: str, meta: Metadata, rec: Recording, stride: int, masks: bool
) -> Iterator[Item]:
    """The 4 cameras' poses read and checked together (the world check needs them all),
    then each camera's frames in order."""
    cameras = [
        meta.camera(rec.subject, i)
        for i, cam_id in enumerate(meta.camera_ids)
        if (rec.subject, rec.basename, cam_id) not in CORRUPT
    ]
    poses = {}
    for cam in cameras:
        what = rec.describe(cam.cam_id)
        d3_file = rec.file("MyPoseFeatures/D3_Positions_mono", cam.cam_id, "cdf")
        d3 = _read_pose(raw, card, d3_file, 3, f"the camera-frame 3D poses (mm) of {what}")
        d2_file = rec.file("MyPoseFeatures/D2_Positions", cam.cam_id, "cdf")
        d2 = _read_pose(raw, card, d2_file, 2, f"the 2D poses (px) of {what}")
        if len(d2) != len(d3):
            raise DabenchError(
                f"{card}: {rec.describe(cam.cam_id)}: D2_Positions has {len(d2)} frames, "
                f"D3_Positions_mono {len(d3)}; expected the same (a file cut short?)"
            )
        _check_projection(raw, card, rec, cam, d3, d2)
        poses[cam.index] = d3
    _check_world(raw, card, rec, cameras, poses)
    for cam in cameras:
        video = rec.file("Videos", cam.cam_id, "mp4")
        path = raw.path(video, f"the video of {rec.describe(cam.cam_id)}")
        frames = min(len(poses[cam.index]), frame_count(path))
        mask = rec.file("MySegmentsMat/ground_truth_bs", cam.cam_id, "mat") if masks else None
        if mask is not None:
            frames = min(frames, _check_masks(raw, card, mask, path))
        kp3d = poses[cam.index]
        k = cam.K
        for f in range(0, frames, stride):
            yield Item(
                image=video,
                image_frame=f,
                kp2d=project(kp3d[f], k),
                vis=np.ones(JOINTS, bool),
                kp3d=kp3d[f],
                K=k,
                subject=rec.subject,
                mask=mask,
                mask_frame=None if mask is None else f,
                seq=rec.seq,
                frame=f,
                view=cam.index,
                cam_R=cam.cam_R,
                cam_t=cam.cam_t,
            )


def _read_pose(raw: RawFiles, card: str, rel: str, dims: int, what: str) -> np.ndarray:
    """``Pose`` of a CDF as ``[N, 32, dims]``."""
    import cdflib

    raw.read_bytes(rel, what)  # the bytes in the fingerprint; cdflib reads from the path
    path = raw.root / rel
    try:
        pose = np.asarray(cdflib.CDF(path).varget("Pose"), dtype=np.float64)
    except Exception as exc:  # cdflib raises many types for a cut or foreign file
        raise DabenchError(
            f"{card}: {path} is not a readable CDF file with a 'Pose' variable ({what}; cut "
            f"short?): {type(exc).__name__}: {exc}"
        ) from exc
    width, shape = JOINTS * dims, pose.shape
    if pose.ndim == 3 and pose.shape[0] == 1:
        pose = pose[0]
    if pose.ndim != 2 or pose.shape[1] != width or not len(pose):
        raise DabenchError(
            f"{card}: {path} has 'Pose' of shape {shape}; expected (1, N, {width}): "
            f"{JOINTS} joints x {dims} per frame ({what})"
        )
    if not np.isfinite(pose).all():
        raise DabenchError(f"{card}: {path} has non-finite values in 'Pose' ({what})")
    return pose.reshape(len(pose), JOINTS, dims)


def _distorted(kp3d: np.ndarray, cam: Camera) -> np.ndarray:
    """Human3.6M's radial-tangential projection (its ProjectPointRadial, as ported by
    Martinez et al.'s cameras.py)."""
    xy = kp3d[..., :2] / kp3d[..., 2:]
    r2 = (xy**2).sum(axis=-1)
    k, p = cam.k, cam.p
    radial = 1 + k[0] * r2 + k[1] * r2**2 + k[2] * r2**3
    tangential = p[0] * xy[..., 1] + p[1] * xy[..., 0]
    xy = xy * (radial + tangential)[..., None] + r2[..., None] * np.array([p[1], p[0]])
    return xy * cam.f + cam.c


def _check_projection(
    raw: RawFiles, card: str, rec: Recording, cam: Camera, d3: np.ndarray, d2: np.ndarray
) -> None:
    """D2_Positions must be the projection of D3_Positions_mono with this camera."""
    where = raw.root / rec.file("MyPoseFeatures/D3_Positions_mono", cam.cam_id, "cdf")
    if not (d3[..., 2] > 0).all():
        raise DabenchError(
            f"{card}: {where} has joints at or behind the camera plane (z <= 0); expected "
            "camera-frame poses in mm (D3_Positions_mono, not D3_Positions)"
        )
    errors = [
        float(np.median(np.linalg.norm(model - d2, axis=-1)))
        for model in (project(d3, cam.K), _distorted(d3, cam))
    ]
    if min(errors) > PROJECTION_TOLERANCE_PX:
        raise DabenchError(
            f"{card}: {raw.root / METADATA}: the intrinsics of camera {cam.cam_id} for "
            f"S{rec.subject} (f {cam.f.round(2).tolist()}, c {cam.c.round(2).tolist()}) put "
            f"{rec.describe(cam.cam_id)}'s D3_Positions_mono a median {min(errors):.1f} px "
            f"from its D2_Positions (at most {PROJECTION_TOLERANCE_PX} expected): the camera "
            "file does not belong to these poses"
        )


def _check_world(
    raw: RawFiles, card: str, rec: Recording, cameras: list[Camera], poses: dict[int, np.ndarray]
) -> None:
    """The cameras' poses carried to the world with their extrinsics are one pose."""
    if len(cameras) < 2:
        return
    n = min(len(poses[c.index]) for c in cameras)
    # X_world = R^T (X_cam - t), for row vectors (X_cam - t) @ R
    world = np.stack([(poses[c.index][:n] - c.cam_t) @ c.cam_R for c in cameras])
    consensus = np.median(world, axis=0)
    off = [float(np.median(np.linalg.norm(w - consensus, axis=-1))) for w in world]
    bad = [
        f"{c.cam_id} ({o:.0f} mm)"
        for c, o in zip(cameras, off, strict=True)
        if o > WORLD_TOLERANCE_MM
    ]
    if bad:
        raise DabenchError(
            f"{card}: {raw.root / METADATA}: the extrinsics of S{rec.subject} do not carry "
            f"{rec.describe()}'s D3_Positions_mono of the cameras to one world pose: "
            f"{', '.join(bad)} off the others (at most {WORLD_TOLERANCE_MM:.0f} mm expected)"
        )


# -- masks ------------------------------------------------------------------------------------


def _masks_present(
    raw: RawFiles, card: str, meta: Metadata, recordings: Sequence[Recording]
) -> bool:
    """True when every recording-camera of the split has its mask file, False when none has."""
    files = [
        rec.file("MySegmentsMat/ground_truth_bs", cam_id, "mat")
        for rec in recordings
        for cam_id in meta.camera_ids
        if (rec.subject, rec.basename, cam_id) not in CORRUPT
    ]
    found = [(raw.root / f).is_file() for f in files]
    if all(found):
        return True
    if not any(found):
        return False
    first = files[found.index(False)]
    raise DabenchError(
        f"{card}: missing {raw.root / first} (the foreground masks of that recording): "
        f"{sum(found)} of the split's {len(files)} mask files exist; a shard has masks for "
        "all its samples or none, so provide every ground_truth_bs file of the split or "
        "remove them all"
    )


def _check_masks(raw: RawFiles, card: str, rel: str, video: Path) -> int:
    """The number of masks in ``rel``; its first mask must have the video's size."""
    import av
    import h5py

    path = raw.path(rel, "the foreground masks of a recording")
    try:
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            size = (stream.height, stream.width)
    except (av.FFmpegError, IndexError, OSError) as exc:
        raise DabenchError(f"{video} is not a readable video: {exc}") from exc
    try:
        with h5py.File(path, "r") as f:
            refs = _mask_refs(f, path, card)
            first = _deref(f, refs, 0, path, card)
    except OSError as exc:
        raise DabenchError(
            f"{card}: {path} is not a readable MATLAB v7.3 (HDF5) file: {exc}"
        ) from exc
    if first.shape != size:
        raise DabenchError(
            f"{card}: {path} holds masks of {first.shape[1]} x {first.shape[0]} px (W x H, "
            f"after transposing MATLAB's order); its video {video.name} is {size[1]} x "
            f"{size[0]}"
        )
    return len(refs)


def _mask_refs(f: Any, path: Path, card: str) -> np.ndarray:
    import h5py

    if "Masks" not in f:
        raise DabenchError(f"{card}: {path} lacks 'Masks'; it holds {sorted(f)}")
    cell = f["Masks"]
    if (
        not isinstance(cell, h5py.Dataset)
        or h5py.check_dtype(ref=cell.dtype) is not h5py.Reference
        or cell.ndim != 2
        or 1 not in cell.shape
    ):
        raise DabenchError(
            f"{card}: {path}: 'Masks' is not a MATLAB cell vector of per-frame masks (object "
            f"references); it is {cell!r}"
        )
    return cell[()].reshape(-1)


def _deref(f: Any, refs: np.ndarray, index: int, path: Path, card: str) -> np.ndarray:
    if index >= len(refs):
        raise DabenchError(f"{card}: {path} has {len(refs)} masks; frame {index} was asked for")
    try:
        mask = np.asarray(f[refs[index]][()])
    except (ValueError, KeyError, OSError) as exc:
        raise DabenchError(f"{card}: {path}: mask {index} cannot be read: {exc}") from exc
    if mask.ndim != 2:
        raise DabenchError(f"{card}: {path}: mask {index} has shape {mask.shape}; expected 2D")
    return mask.T  # MATLAB's column-major H x W reads as W x H


class _MaskFile:
    def __init__(self, path: Path, card: str) -> None:
        import h5py

        self.path = path
        try:
            self.file = h5py.File(path, "r")
        except OSError as exc:
            raise DabenchError(
                f"{card}: {path} is not a readable MATLAB v7.3 (HDF5) file: {exc}"
            ) from exc
        self.refs = _mask_refs(self.file, path, card)


_open: tuple[int, _MaskFile] | None = None  # (process id, file): one open file per process


def _mask_frame(path: Path, index: int, card: str) -> np.ndarray:
    """Mask ``index`` of a ground_truth_bs file as ``[H, W]``; the last file stays open in
    each process (a conversion asks for a file's masks in a row)."""
    global _open
    if _open is None or _open[0] != os.getpid() or _open[1].path != path:
        if _open is not None and _open[0] == os.getpid():
            _open[1].file.close()
        _open = None  # a failed open must not leave the old one behind
        _open = (os.getpid(), _MaskFile(path, card))
    return _deref(_open[1].file, _open[1].refs, index, path, card)
