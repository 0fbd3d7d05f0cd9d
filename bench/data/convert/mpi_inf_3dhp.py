"""MPI-INF-3DHP: two cards from one raw copy.

Training release, per ``S<s>/Seq<q>/``: ``annot.mat`` (MATLAB v5; ``annot2`` / ``annot3``
are (14, 1) cells, one per camera, of ``[R, 56]`` px and ``[R, 84]`` mm in that camera's
frame, 28 joints, with more rows R than the video has frames), ``camera.calibration``
(Skeletool text: per camera ``name``, ``size W H``, ``intrinsic`` and ``extrinsic`` as 16
numbers, 4 × 4 row-major, the extrinsic world → camera with its translation in mm),
``imageSequence/video_<cam>.avi`` (the frames), ``FGmasks/video_<cam>.avi`` (chroma-key
masks, foreground in the red channel) and, for the Mask-as-Supervision split,
``ChairMasks/video_<cam>.avi`` (red channel). The mask folders are taken to hold one video per
camera named as in ``imageSequence/`` (the README only names the folders; third-party
loaders open ``video_<cam>.avi`` in them — an assumption the cards state).

Test release, ``mpi_inf_3dhp_test_set/TS<k>/``: ``annot_data.mat`` (MATLAB v7.3 = HDF5,
read with h5py: ``annot2`` / ``annot3`` of 17 joints, ``valid_frame``) and
``imageSequence/img_%06d.jpg`` (1-based). Its intrinsics are not in the files: they are
fitted per sequence by least squares to annot2 / annot3 (:func:`estimate_intrinsics`, as
mmpose does).

Per sample: ``kp3d = annot3`` (mm, camera frame) and ``kp2d`` its exact pinhole projection
with ``K`` (annot2 only checks the calibration: a median disagreement above
:data:`ANNOT2_TOLERANCE_PX` is an error naming the file); a joint is visible when it lies in
front of the camera and inside the image (``-0.5 ≤ u < W − 0.5``, the same for ``v``).
The 17 test joints are placed at their slots of the 28-joint training order (the others
NaN, not visible), so that one raw order, ``mpi_inf_3dhp28``, maps both splits onto the
card's joint set.

Ids: ``subject`` = s (1..8), test sequence TS k → 100 + k; ``seq`` = 10 · s + q for
``S<s>/Seq<q>`` (11..82), shared by the cameras so that the views of a moment form a
multi-view group, and 100 + k for TS k; ``view`` = the camera index (0 for the test set's
single camera); ``frame`` = the 0-based frame of the video (test: of ``img_%06d.jpg``, its
number minus 1).

A raw copy missing some subjects, sequences or test sequences converts those it has (the
listing is in the fingerprint); a split with none of them is an error.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from bench.data.convert.base import Converter, Item, register
from bench.data.convert.crop import in_image
from bench.data.convert.raw import RawFiles
from bench.data.convert.video import frame_count, read_frame
from bench.data.geometry import project as pinhole
from bench.data.joints import get_mapping
from bench.errors import DabenchError

JOINTS = 28
TEST_JOINTS = 17
CAMERAS_IN_FILES = 14  # annot.mat cells and camera.calibration entries
SEQUENCES = (1, 2)
VNECT_CAMERAS = (0, 1, 2, 4, 5, 6, 7, 8)  # the "vnect" set most papers train on
CHEST_CAMERAS = (0, 2, 4, 7, 8)  # the chest-height cameras (Mask as Supervision, mm3d_chest)
TEST_FOLDER = "mpi_inf_3dhp_test_set"
TEST_SEQUENCES = range(1, 7)
TEST_SUBJECT = 100  # TS k -> subject and seq 100 + k
PELVIS = 4  # in the 28-joint order
# The 17 test joints' slots in the 28-joint order (mpi_inf_3dhp28 -> mpi_inf_3dhp17).
TEST_SLOTS = tuple(get_mapping("mpi_inf_3dhp28", "mpi_inf_3dhp17").index)
# annot2 against the projection of annot3: a calibration of the right camera agrees to a
# pixel or so; another camera's or a sequence's other calibration is off by tens or hundreds.
ANNOT2_TOLERANCE_PX = 4.0
# The cameras' extrinsics must carry each camera's annot3 to one world pose (median, mm).
WORLD_TOLERANCE_MM = 50.0
# A human pelvis seen by these cameras lies metres away: a median depth outside this range
# (mm) means another unit or frame.
DEPTH_MM = (300.0, 30000.0)
# The Mask-as-Supervision frame filter (methods.md M.10, the authors' loader).
MASK_COVER = 0.85  # a foreground mask covering more of the image drops the moment
CHAIR_JOINTS = 4  # more joints on zero chair-mask pixels drop the moment
THRESHOLD = 127  # a mask channel is set above this value (cv2.threshold 127 in their loader)

TRAIN_FIELDS = ("masks", "subject", "seq", "frame", "view", "cam_R", "cam_t")
TEST_FIELDS = ("subject", "seq", "frame", "view")


@dataclass(frozen=True)
class Camera:
    """One camera of ``camera.calibration``: ``K`` 3 × 3, world → camera ``R``, ``t`` (mm),
    image size."""

    K: np.ndarray
    R: np.ndarray
    t: np.ndarray
    width: int
    height: int


@dataclass(frozen=True)
class _Sequence:
    """What one ``S<s>/Seq<q>`` folder gives for the cameras asked: per camera its
    calibration and the rows of annot3 that are frames, ``[F, 28, 3]`` mm."""

    subject: int
    sequence: int
    folder: str
    cameras: dict[int, Camera]
    kp3d: dict[int, np.ndarray]

    @property
    def seq(self) -> int:
        return 10 * self.subject + self.sequence

    def video(self, kind: str, cam: int) -> str:
        return f"{self.folder}/{kind}/video_{cam}.avi"


class _ThreeDHP(Converter):
    """The shared reading; a registered subclass says which subjects, cameras, strides and
    filter make its splits."""

    raw_joints = "mpi_inf_3dhp28"
    cameras: tuple[int, ...] = VNECT_CAMERAS
    mask_folders: tuple[str, ...] = ("FGmasks",)  # mask videos the training split reads

    def mask_of(self, decoded: np.ndarray) -> np.ndarray:
        """The chroma-key foreground: the red channel (green and blue carry upper- and
        lower-body masks in some sequences)."""
        return decoded[..., 0] > THRESHOLD

    def _sequences(self, raw: RawFiles, subjects: Sequence[int], split: str) -> list[tuple]:
        found = [
            (s, q) for s in subjects for q in SEQUENCES if (raw.root / f"S{s}/Seq{q}").is_dir()
        ]
        raw.note(f"{split}:" + ",".join(f"S{s}/Seq{q}" for s, q in found))
        if not found:
            raise DabenchError(
                f"{self.card}: no S<s>/Seq1 or Seq2 folders of the {split} subjects "
                f"S{subjects[0]}..S{subjects[-1]} under {raw.root}; point RAW_DIR at the "
                "folder holding S1..S8 (and mpi_inf_3dhp_test_set)"
            )
        return found

    def _read_sequence(
        self, raw: RawFiles, subject: int, sequence: int, masks: Sequence[str]
    ) -> _Sequence:
        folder = f"S{subject}/Seq{sequence}"
        rel = f"{folder}/annot.mat"
        annot = raw.loadmat(
            rel,
            "the sequence's annotations: annot2 and annot3, (14, 1) cells",
            ("annot2", "annot3"),
        )
        calibration = read_calibration(raw, f"{folder}/camera.calibration", self.cameras)
        kp3d: dict[int, np.ndarray] = {}
        for cam in self.cameras:
            a2 = _cell(raw, rel, annot, "annot2", cam, 2)
            a3 = _cell(raw, rel, annot, "annot3", cam, 3)
            if len(a2) != len(a3):
                raise DabenchError(
                    f"{self.card}: {raw.root / rel} has {len(a2)} annot2 rows and {len(a3)} "
                    f"annot3 rows for camera {cam}; expected one of each per frame"
                )
            frames = self._frames(raw, folder, cam, masks)
            if frames > len(a3):
                raise DabenchError(
                    f"{self.card}: {raw.root / rel} has {len(a3)} rows for camera {cam}, but "
                    f"its videos have {frames} frames; expected a row for every frame (an "
                    "annot.mat of another sequence?)"
                )
            # annot.mat holds more rows than there are frames: only the first ones are
            # frames (S6/Seq2's video_2 is shorter than the others: cut to the video)
            kp3d[cam] = a3[:frames]
            _check_camera(raw, self.card, rel, cam, a3[:frames], a2[:frames], calibration[cam])
        _check_world(raw, self.card, folder, calibration, kp3d)
        return _Sequence(subject, sequence, folder, calibration, kp3d)

    def _frames(self, raw: RawFiles, folder: str, cam: int, masks: Sequence[str]) -> int:
        """Frames of camera ``cam``: of its video, or of its shortest mask video."""
        counts = []
        for kind in ("imageSequence", *masks):
            rel = f"{folder}/{kind}/video_{cam}.avi"
            what = "the camera's frames" if kind == "imageSequence" else f"its {kind} video"
            counts.append(frame_count(raw.path(rel, f"{what} (camera {cam})")))
            raw.note(f"{rel}:{counts[-1]}")
        return min(counts)

    def _plain(self, seq: _Sequence, stride: int, masks: bool) -> Iterator[Item]:
        """Every ``stride``-th frame of every camera; a frame without a joint in its image
        is skipped (nothing to crop around)."""
        for cam in self.cameras:
            camera = seq.cameras[cam]
            for f in range(0, len(seq.kp3d[cam]), stride):
                kp3d = seq.kp3d[cam][f]
                kp2d, vis = _visible(kp3d, camera)
                if vis.any():
                    yield _item(seq, cam, f, kp3d, kp2d, vis, masks)

    def _test(self, raw: RawFiles) -> Iterator[Item]:
        raw.path(TEST_FOLDER, "the test set folder (get_testset.sh)")
        found = [k for k in TEST_SEQUENCES if (raw.root / TEST_FOLDER / f"TS{k}").is_dir()]
        raw.note("test:" + ",".join(f"TS{k}" for k in found))
        if not found:
            raise DabenchError(
                f"{self.card}: {raw.root / TEST_FOLDER} holds no TS1..TS6 folders; expected the "
                "official test set"
            )
        for k in found:
            yield from _test_sequence(raw, self.card, k)


@register
class MPIINF3DHP(_ThreeDHP):
    """The card ``3dhp``: train = S1–S8 on the 8 "vnect" cameras, every
    :attr:`train_stride`-th frame, with foreground masks; test = the official test set."""

    card = "3dhp"
    fields = TRAIN_FIELDS
    cameras = VNECT_CAMERAS
    train_subjects = tuple(range(1, 9))
    # No paper states one: consecutive 25/50 fps frames are near duplicates, and every 10th
    # frame of the 8 cameras still gives about 115,000 training samples.
    train_stride = 10

    def fields_of(self, split: str) -> tuple[str, ...]:
        """The test set has no masks and no extrinsics."""
        return TRAIN_FIELDS if split == "train" else TEST_FIELDS

    def items(self, raw: RawFiles, split: str) -> Iterator[Item]:
        return self._train(raw) if split == "train" else self._test(raw)

    def _train(self, raw: RawFiles) -> Iterator[Item]:
        for s, q in self._sequences(raw, self.train_subjects, "train"):
            seq = self._read_sequence(raw, s, q, self.mask_folders)
            yield from self._plain(seq, self.train_stride, masks=True)


@register
class MPIINF3DHPAllCameras(MPIINF3DHP):
    """The card ``3dhp-14cam``: as ``3dhp`` with the training split on all 14 cameras (the
    chest-height ring, the low and the ceiling views), for methods that train on the full
    rig; the test set is the same."""

    card = "3dhp-14cam"
    cameras = tuple(range(CAMERAS_IN_FILES))


@register
class MPIINF3DHPMaS(_ThreeDHP):
    """The card ``3dhp-mas`` (Mask as Supervision's split of the training release): train =
    S1–S6 every 5th frame, test = S7–S8 every 10th frame, the 5 chest-height cameras, masks
    in both; a moment (a frame of all five cameras) is dropped when, in any camera, a joint
    projects outside the image, the foreground mask covers more than 85 % of the image, or
    more than 4 joints fall on zero pixels of the chair mask."""

    card = "3dhp-mas"
    fields = TRAIN_FIELDS
    cameras = CHEST_CAMERAS
    subjects: ClassVar[Mapping[str, tuple[int, ...]]] = {
        "train": (1, 2, 3, 4, 5, 6),
        "test": (7, 8),
    }
    strides: ClassVar[Mapping[str, int]] = {"train": 5, "test": 10}
    mask_folders = ("FGmasks", "ChairMasks")

    def items(self, raw: RawFiles, split: str) -> Iterator[Item]:
        for s, q in self._sequences(raw, self.subjects[split], split):
            seq = self._read_sequence(raw, s, q, self.mask_folders)
            yield from self._filtered(raw, seq, self.strides[split])

    def _filtered(self, raw: RawFiles, seq: _Sequence, stride: int) -> Iterator[Item]:
        # a moment needs all five views: the frames every camera has
        frames = np.arange(0, min(len(seq.kp3d[c]) for c in self.cameras), stride)
        keep = self._kept(raw, seq, frames)
        for cam in self.cameras:
            camera = seq.cameras[cam]
            for f in frames[keep]:
                kp3d = seq.kp3d[cam][f]
                kp2d, vis = _visible(kp3d, camera)
                yield _item(seq, cam, int(f), kp3d, kp2d, vis, masks=True)

    def _kept(self, raw: RawFiles, seq: _Sequence, frames: np.ndarray) -> np.ndarray:
        """Which of ``frames`` pass the filter in every camera. The masks are decoded once
        per conversion: the conversion reads the items twice, the result is remembered by
        the mask videos' names, sizes and times."""
        videos = [raw.root / seq.video(k, c) for c in self.cameras for k in self.mask_folders]
        key = (
            self.card,
            tuple(self.cameras),
            tuple(frames.tolist()),
            tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in videos),
            hash(
                tuple(
                    (
                        seq.kp3d[c].tobytes(),
                        seq.cameras[c].K.tobytes(),
                        seq.cameras[c].width,
                        seq.cameras[c].height,
                    )
                    for c in self.cameras
                )
            ),
        )
        if key not in _KEPT:
            _KEPT[key] = self._filter(raw, seq, frames)
        return _KEPT[key]

    def _filter(self, raw: RawFiles, seq: _Sequence, frames: np.ndarray) -> np.ndarray:
        keep = np.ones(len(frames), bool)
        uv = {}
        for cam in self.cameras:  # every joint inside every image (the cheap test first)
            camera = seq.cameras[cam]
            uv[cam], vis = _visible(seq.kp3d[cam][frames], camera)
            keep &= vis.all(axis=-1)
        for cam in self.cameras:
            rows = np.flatnonzero(keep)
            if not rows.size:
                break
            camera = seq.cameras[cam]
            fg_video = raw.root / seq.video("FGmasks", cam)
            chair_video = raw.root / seq.video("ChairMasks", cam)
            for row in rows:
                f = int(frames[row])
                red = read_frame(fg_video, f)[..., 0]
                seat = read_frame(chair_video, f)[..., 0]
                for name, got in (("FGmasks", red), ("ChairMasks", seat)):
                    if got.shape != (camera.height, camera.width):
                        raise DabenchError(
                            f"{self.card}: {raw.root / seq.video(name, cam)} has frames of "
                            f"{got.shape[1]} x {got.shape[0]} px; camera.calibration says "
                            f"{camera.width} x {camera.height}"
                        )
                if (red > THRESHOLD).mean() > MASK_COVER:
                    keep[row] = False
                    continue
                px = np.rint(uv[cam][row]).astype(int)
                px[:, 0] = px[:, 0].clip(0, camera.width - 1)
                px[:, 1] = px[:, 1].clip(0, camera.height - 1)
                if (seat[px[:, 1], px[:, 0]] <= THRESHOLD).sum() > CHAIR_JOINTS:
                    keep[row] = False
        return keep


_KEPT: dict[tuple, np.ndarray] = {}


def _item(
    seq: _Sequence,
    cam: int,
    frame: int,
    kp3d: np.ndarray,
    kp2d: np.ndarray,
    vis: np.ndarray,
    masks: bool,
) -> Item:
    camera = seq.cameras[cam]
    return Item(
        image=seq.video("imageSequence", cam),
        image_frame=frame,
        kp2d=kp2d,
        vis=vis,
        kp3d=kp3d,
        K=camera.K,
        subject=seq.subject,
        seq=seq.seq,
        frame=frame,
        view=cam,
        cam_R=camera.R,
        cam_t=camera.t,
        mask=seq.video("FGmasks", cam) if masks else None,
        mask_frame=frame if masks else None,
    )


# -- annotations ------------------------------------------------------------------------------


def project(xyz: np.ndarray, k: np.ndarray) -> np.ndarray:
    """``[..., 3]`` camera-frame points → ``[..., 2]`` pixels through ``k`` (pinhole); the
    test set's unannotated joints are NaN."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return pinhole(xyz, k)


def _visible(kp3d: np.ndarray, camera: Camera) -> tuple[np.ndarray, np.ndarray]:
    """The projection of ``kp3d [..., J, 3]`` and whether each joint is in front of the
    camera and inside the image."""
    uv = project(kp3d, camera.K)
    with np.errstate(invalid="ignore"):
        vis = (kp3d[..., 2] > 0) & in_image(uv, camera.width, camera.height)
    return uv, vis


def _cell(
    raw: RawFiles, rel: str, annot: dict[str, Any], key: str, cam: int, dim: int
) -> np.ndarray:
    """Camera ``cam``'s cell of ``annot[key]`` as ``[R, 28, dim]``."""
    cells = annot[key]
    expected = (
        f"expected a (14, 1) cell array of [F, {JOINTS * dim}] arrays (28 joints, "
        f"{'x y' if dim == 2 else 'x y z'} per joint)"
    )
    if not isinstance(cells, np.ndarray) or cells.dtype != object or cells.size != CAMERAS_IN_FILES:
        shape = getattr(cells, "shape", type(cells).__name__)
        raise DabenchError(f"{raw.card}: {raw.root / rel} holds {key} of shape {shape}; {expected}")
    try:
        cell = np.asarray(cells.reshape(-1)[cam], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DabenchError(
            f"{raw.card}: {raw.root / rel}: {key} of camera {cam} is not numeric; {expected}"
        ) from exc
    if cell.ndim != 2 or cell.shape[1] != JOINTS * dim:
        raise DabenchError(
            f"{raw.card}: {raw.root / rel} holds {key} of camera {cam} of shape {cell.shape}; "
            f"{expected}"
        )
    return cell.reshape(len(cell), JOINTS, dim)


def _check_camera(
    raw: RawFiles,
    card: str,
    rel: str,
    cam: int,
    kp3d: np.ndarray,
    annot2: np.ndarray,
    camera: Camera,
) -> None:
    """annot3 in mm in front of the camera, and reprojecting onto annot2 through K."""
    where = raw.root / rel
    if not len(kp3d):
        return
    depth = _median(kp3d[:, PELVIS, 2])
    if not DEPTH_MM[0] <= depth <= DEPTH_MM[1]:
        raise DabenchError(
            f"{card}: {where}: annot3 of camera {cam} puts the pelvis at a median depth of "
            f"{depth:g}; expected millimetres in the camera's frame ({DEPTH_MM[0]:g} to "
            f"{DEPTH_MM[1]:g})"
        )
    front = kp3d[..., 2] > 0
    error = np.linalg.norm(project(kp3d, camera.K) - annot2, axis=-1)[front]
    median = _median(error)
    if not median <= ANNOT2_TOLERANCE_PX:
        raise DabenchError(
            f"{card}: {where.parent / 'camera.calibration'}: camera {cam}'s intrinsics project "
            f"annot3 of {where} {median:.1f} px away from annot2 (median; expected at most "
            f"{ANNOT2_TOLERANCE_PX:g}): the calibration is not this sequence's"
        )


def _median(values: np.ndarray) -> float:
    """The median of the finite values; NaN where there are none (which fails every
    check)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(np.median(values)) if values.size else float("nan")


def _check_world(
    raw: RawFiles,
    card: str,
    folder: str,
    cameras: dict[int, Camera],
    kp3d: dict[int, np.ndarray],
) -> None:
    """The extrinsics carry every camera's annot3 to one world pose (multi-view groups
    triangulate with them)."""
    first = next(iter(kp3d))
    rows = min(len(v) for v in kp3d.values())
    if not rows:
        return
    world = {c: (kp3d[c][:rows] - cameras[c].t) @ cameras[c].R for c in kp3d}
    for cam, points in world.items():
        gap = _median(np.linalg.norm(points - world[first], axis=-1))
        if not gap <= WORLD_TOLERANCE_MM:
            raise DabenchError(
                f"{card}: {raw.root / folder / 'camera.calibration'}: the extrinsics of cameras "
                f"{first} and {cam} carry their annot3 to world poses {gap:.0f} mm apart "
                f"(median; expected at most {WORLD_TOLERANCE_MM:g}): expected 4 x 4 world -> "
                "camera matrices with the translation in mm"
            )


def read_calibration(raw: RawFiles, rel: str, cameras: Sequence[int]) -> dict[int, Camera]:
    """The ``cameras`` of a Skeletool ``camera.calibration`` file (the radial distortion
    entry is not read: the cameras are used as pinholes, as every 3DHP loader does)."""
    where = raw.root / rel
    text = raw.read_bytes(rel, "the cameras' calibration (Skeletool text)")
    try:
        lines = text.decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DabenchError(f"{raw.card}: {where} is not a text calibration file: {exc}") from exc
    entries: dict[int, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for line in lines:
        words = line.split()
        if not words:
            continue
        if words[0] == "name":
            if len(words) != 2 or not re.fullmatch(r"\d+", words[1]):
                raise DabenchError(f"{raw.card}: {where}: bad camera line {line.strip()!r}")
            current = entries.setdefault(int(words[1]), {})
        elif current is not None:
            current[words[0]] = words[1:]
    out = {}
    for cam in cameras:
        if cam not in entries:
            raise DabenchError(
                f"{raw.card}: {where} has no camera {cam} (it names {sorted(entries)}); "
                f"expected the {CAMERAS_IN_FILES} cameras of a 3DHP sequence"
            )
        out[cam] = _camera(raw, where, cam, entries[cam])
    return out


def _camera(raw: RawFiles, where: Path, cam: int, entry: dict[str, list[str]]) -> Camera:
    def numbers(key: str, count: int) -> np.ndarray:
        try:
            values = np.array([float(v) for v in entry[key]])
        except (KeyError, ValueError):
            values = np.zeros(0)
        if values.shape != (count,) or not np.isfinite(values).all():
            raise DabenchError(
                f"{raw.card}: {where}: camera {cam} has {key} {' '.join(entry.get(key, []))!r}; "
                f"expected {count} numbers"
            )
        return values

    width, height = numbers("size", 2)
    intrinsic = numbers("intrinsic", 16).reshape(4, 4)
    extrinsic = numbers("extrinsic", 16).reshape(4, 4)
    k = intrinsic[:3, :3]
    pinhole = (
        k[0, 0] > 0
        and k[1, 1] > 0
        and k[1, 0] == 0
        and np.allclose(k[2], [0, 0, 1])
        and np.allclose(intrinsic[:3, 3], 0)
        and np.allclose(intrinsic[3], [0, 0, 0, 1])
    )
    r, t = extrinsic[:3, :3], extrinsic[:3, 3]
    rigid = (
        np.allclose(r @ r.T, np.eye(3), atol=1e-3)
        and np.linalg.det(r) > 0
        and np.allclose(extrinsic[3], [0, 0, 0, 1])
    )
    if not pinhole or not rigid or width < 1 or height < 1:
        raise DabenchError(
            f"{raw.card}: {where}: camera {cam} is not a pinhole (intrinsic [[fx 0 cx 0] [0 fy "
            "cy 0] [0 0 1 0] [0 0 0 1]]) with a rigid extrinsic ([R t; 0 0 0 1], R a rotation) "
            "and a positive size"
        )
    return Camera(k.copy(), r.copy(), t.copy(), int(width), int(height))


# -- test set ---------------------------------------------------------------------------------


def estimate_intrinsics(uv: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    """``K`` 3 × 3 fitted by least squares to pixels ``uv [..., 2]`` and camera-frame points
    ``xyz [..., 3]``: ``u·z = fx·x + cx·z`` and ``v·z = fy·y + cy·z`` (mmpose's estimate for
    the test set, whose intrinsics are not in the files). Non-finite points and points not
    in front of the camera are left out."""
    from scipy.linalg import lstsq

    p2 = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
    p3 = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    ok = np.isfinite(p2).all(axis=1) & np.isfinite(p3).all(axis=1) & (p3[:, 2] > 0)
    p2, p3 = p2[ok], p3[ok]
    if len(p2) < 2:
        raise DabenchError("too few points to fit intrinsics to")
    z = p3[:, 2]
    fx, cx = lstsq(np.stack([p3[:, 0], z], axis=1), p2[:, 0] * z)[0]
    fy, cy = lstsq(np.stack([p3[:, 1], z], axis=1), p2[:, 1] * z)[0]
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def _test_sequence(raw: RawFiles, card: str, k: int) -> Iterator[Item]:
    folder = f"{TEST_FOLDER}/TS{k}"
    rel = f"{folder}/annot_data.mat"
    annot2, annot3, valid = read_test_annotations(raw, rel)
    rows = np.flatnonzero(valid)
    if not rows.size:
        return
    try:
        kk = estimate_intrinsics(annot2[rows], annot3[rows])
    except DabenchError as exc:
        raise DabenchError(f"{card}: {raw.root / rel}: {exc}") from exc
    error = np.linalg.norm(project(annot3[rows], kk) - annot2[rows], axis=-1)
    median = _median(error)
    if not median <= ANNOT2_TOLERANCE_PX:
        raise DabenchError(
            f"{card}: {raw.root / rel}: annot2 is not a pinhole projection of annot3 (median "
            f"residual {median:.1f} px after fitting the intrinsics; expected at most "
            f"{ANNOT2_TOLERANCE_PX:g})"
        )
    first = f"{folder}/imageSequence/img_{rows[0] + 1:06d}.jpg"
    width, height = _image_size(raw, first, rel)
    camera = Camera(kk, np.eye(3), np.zeros(3), width, height)
    for f in rows:
        image = f"{folder}/imageSequence/img_{f + 1:06d}.jpg"
        raw.path(image, f"frame {f + 1} (1-based) of TS{k}, valid in {rel}")
        kp3d = np.full((JOINTS, 3), np.nan)
        kp3d[list(TEST_SLOTS)] = annot3[f]
        kp2d, vis = _visible(kp3d, camera)
        if not vis.any():
            continue
        yield Item(
            image=image,
            kp2d=kp2d,
            vis=vis,
            kp3d=kp3d,
            K=kk,
            subject=TEST_SUBJECT + k,
            seq=TEST_SUBJECT + k,
            frame=int(f),
            view=0,
        )


def read_test_annotations(raw: RawFiles, rel: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``annot2 [N, 17, 2]``, ``annot3 [N, 17, 3]`` (mm) and ``valid [N]`` bool of a test
    sequence's ``annot_data.mat``. MATLAB v7.3 stores arrays in column-major order, so h5py
    shows MATLAB's (2, 17, 1, N) as (N, 1, 17, 2), the shape the real files read with; an
    array stored in MATLAB's own axis order, (2, 17, 1, N), is read as well."""
    import h5py

    where = raw.root / rel
    data = raw.read_bytes(rel, "the test sequence's annotations (MATLAB v7.3)")
    try:
        with h5py.File(io.BytesIO(data), "r") as f:
            missing = [k for k in ("annot2", "annot3", "valid_frame") if k not in f]
            if missing:
                raise DabenchError(
                    f"{raw.card}: {where} lacks {missing}; it holds {sorted(f)} — expected "
                    "annot2, annot3 and valid_frame"
                )
            annot2 = _test_array(raw, where, np.asarray(f["annot2"]), "annot2", 2)
            annot3 = _test_array(raw, where, np.asarray(f["annot3"]), "annot3", 3)
            valid = np.asarray(f["valid_frame"]).reshape(-1)
    except (OSError, TypeError, ValueError, KeyError) as exc:
        raise DabenchError(
            f"{raw.card}: {where} is not a readable MATLAB v7.3 (HDF5) file (cut short, or "
            f"saved in another MATLAB format?): {exc}"
        ) from exc
    if not len(annot2) == len(annot3) == len(valid):
        raise DabenchError(
            f"{raw.card}: {where} has {len(annot2)} annot2, {len(annot3)} annot3 and "
            f"{len(valid)} valid_frame entries; expected one of each per frame"
        )
    return annot2, annot3, valid == 1


def _test_array(raw: RawFiles, where: Path, a: np.ndarray, key: str, dim: int) -> np.ndarray:
    if a.ndim == 4 and a.shape[1:] == (1, TEST_JOINTS, dim):
        return a[:, 0].astype(np.float64)
    if a.ndim == 4 and a.shape[:3] == (dim, TEST_JOINTS, 1):
        return a[:, :, 0].transpose(2, 1, 0).astype(np.float64)
    raise DabenchError(
        f"{raw.card}: {where} holds {key} of shape {a.shape}; expected (N, 1, 17, {dim}) as "
        f"h5py reads MATLAB v7.3, or ({dim}, 17, 1, N) in MATLAB's axis order"
    )


def _image_size(raw: RawFiles, image: str, rel: str) -> tuple[int, int]:
    """(W, H) of a test sequence's frames, from its first valid image's header (TS1–TS4
    are 2048 × 2048, TS5–TS6 1920 × 1080)."""
    return raw.image_size(image, f"the first valid frame of {rel}")
