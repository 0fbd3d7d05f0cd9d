"""MVHand (Yu, Yang, Chen, Yao, BMVC 2021), the real multi-view hand dataset Lin et al. cite
as [39], in the layout its authors' toolkit reads (ShichengChen/multiviewDataset,
``toolkits/toolkit.py``, ``toolkits/globalCamera/camera.py``, README). Nothing here was
checked against released files: the layout is the toolkit's [L].

Raw layout read: RAW_DIR holds the recording folders (four in the release, one subject
each, named by date, e.g. ``7-14-1-2``); per recording ``<date>/``:

* ``calib.pkl``: a pickled dict camera serial (str) → 4 × 4 pose, camera → world; the world
  is the root camera's frame, so its pose is the identity. Read with the restricted
  unpickler of :meth:`RawFiles.load_pickle` (numpy arrays, dtypes and scalars, dicts and
  OrderedDicts; any other class or function is refused, never imported or called).
* ``mlresults/<date>-joints.npy``: ``[N, 21, 4]`` (or ``[N, 84]``) homogeneous joints in the
  world frame, mm (the toolkit divides them by 1000 for MANO's metres); N = the frames.
* ``rgb/%05d_<v>.jpg``: the colour frames, v = 0..3 = the camera's index in the SORTED
  serials 840412062035, 840412062037, 840412062038, 840412062076 (the toolkit's
  ``cam_list.sort()``), 640 × 480.
* ``mask/%05d_<v>.jpg`` (optional): hand masks (the toolkit's ``readMask``). Not read:
  ``depth/``, ``<date>manoParam.pkl``.

Cameras: ``X_cam = inv(pose_v) · X_world`` (the toolkit's ``joints4view``), so ``cam_R`` =
``inv(pose_v)[:3, :3]``, ``cam_t`` = ``inv(pose_v)[:3, 3]`` (mm). ``K`` = the pinhole
intrinsics hard-coded per serial in the toolkit's camera.py (not in the data): the 640 ×
480 set, or the serial + "10" set where a view's frames are 1280 × 720; any other size is
refused. fx, fy, cx, cy are taken as 0-based pixels with centres at integers (the toolkit
draws at ``int(u)``) [U]; no lens distortion (the toolkit projects with the pinhole).

Per sample (recording, frame, view): ``kp3d`` = the joints in that camera's frame, mm,
as floats (the toolkit truncates them to integer mm; not done here); ``kp2d`` = their exact
pinhole projection with ``K``; ``vis`` = in front of the camera and inside the W × H image.
A view that sees fewer than :data:`MIN_VISIBLE` (11 of 21, a majority) joints of a frame is
skipped, as Panoptic's; every other frame of every view is kept (``frame_stride = 1``:
Lin et al.'s 42k/42k use every image). Joints: the README's order (``mvhand21`` in
:mod:`bench.data.joints`: wrist, index, middle, ring, pinky, thumb, base → tip) mapped to
hand21. Right hands (the toolkit fits MANO_RIGHT); nothing is mirrored.

Checks, each one error naming the file: calib.pkl a dict holding the 4 serials, each pose
4 × 4 finite with bottom row (0, 0, 0, 1) and a rotation block (R Rᵀ = I, det +1), exactly
one of them the identity (the root camera), the other cameras :data:`BASELINE_MM` from it
(a rig around a hand; poses in metres would put them within millimetres); the joints file
``[N, 21, 4]`` or ``[N, 84]``, finite, w = 1, a hand's size (median |wrist − middle MCP|
in :data:`PALM_MM`, i.e. mm); in every camera the joints a median :data:`DEPTH_MM` in front
of it, and the hand seen (MIN_VISIBLE joints inside the image) in at least
:data:`MIN_SEEN` of the frames (a pose that does not look at the hand; coarse: with cameras
aimed at one point an exchanged or inverted pose still sees it); every
frame's 4 colour files present; the first frame of each view of a known size, and every
image (and mask) read of its view's size.

Splits (no published split; Lin et al. give only 42k train / 42k test images): subject-
disjoint halves chosen by the harness. The recording folders found, sorted by name with
numbers compared as numbers (``7-14-1-2`` < ``9-10-1-2`` < ``9-17-1-2`` < ``9-25-1-2``),
train = the first ⌊n/2⌋, test = the other ⌈n/2⌉: the first two and the last two of the
release; a copy with fewer than 2 recordings is refused. ``train_recordings`` /
``test_recordings`` (class attributes, folder names) replace the rule; the two must not
share a recording.

Masks: a split's shard has them when every kept sample's mask file exists, none when none
does; some but not all is an error naming a missing one. Foreground = the brightest
channel above 127 (:meth:`Converter.mask_of`; JPEG ringing around a white-on-black mask
stays below it) [U: the mask encoding is not documented].

Ids: ``seq`` = crc32 of the recording's folder name, shared by its 4 views (the views of a
(seq, frame) form a multi-view group; (seq, view) is one camera's video); ``frame`` = the
0-based row of the joints file (the ``%05d`` of the file names); ``view`` = v;
``subject`` = the recording's position (1-based) among the sorted recordings found. Sample
order: recording, frame, view.
"""

from __future__ import annotations

import io
import os
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.data.convert.base import Item, MasksIfPresent, register
from bench.data.convert.crop import in_image
from bench.data.convert.raw import RawFiles
from bench.data.geometry import project
from bench.errors import DabenchError

JOINTS = 21
WRIST, MIDDLE_MCP = 0, 5  # in the raw (README) order
SERIALS = ("840412062035", "840412062037", "840412062038", "840412062076")  # sorted: view v
# toolkits/globalCamera/camera.py: (fx, fy, cx, cy) per serial, by frame size (W, H); the
# 1280 x 720 ones are its serial + "10" entries
INTRINSICS: dict[tuple[int, int], dict[str, tuple[float, float, float, float]]] = {
    (640, 480): {
        "840412062035": (619.598, 619.116, 325.345, 245.441),
        "840412062037": (615.85, 615.477, 316.062, 247.156),
        "840412062038": (619.475, 619.189, 313.715, 223.921),
        "840412062076": (615.665, 615.09, 306.514, 240.344),
    },
    (1280, 720): {
        "840412062035": (929.397, 928.673, 648.018, 368.161),
        "840412062037": (923.775, 923.215, 634.093, 370.733),
        "840412062038": (929.213, 928.783, 630.572, 335.881),
        "840412062076": (923.497, 922.635, 619.77, 360.516),
    },
}
MIN_VISIBLE = 11  # a majority of the 21 joints
MIN_SEEN = 0.5  # of a camera's frames in which it must see the hand
DEPTH_MM = (150.0, 2000.0)  # median joint depth per camera (the toolkit's range 200-2000)
PALM_MM = (40.0, 160.0)  # |wrist - middle MCP| of a human hand, ~90 mm
BASELINE_MM = (100.0, 3000.0)  # non-root camera centres from the root camera
MARKERS = ("calib.pkl", "rgb", "mlresults")  # what makes a folder a recording
INSIDE = ("rgb", "mask", "depth", "mlresults")


@dataclass(frozen=True)
class MVHandItem(Item):
    """An :class:`Item` with the size (W, H) its view's intrinsics are for."""

    size: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class Recording:
    """One recording folder, read and checked; arrays per view v."""

    name: str
    subject: int
    frames: int
    kp3d: np.ndarray  # [4, N, 21, 3] mm, camera frames
    kp2d: np.ndarray  # [4, N, 21, 2] px
    vis: np.ndarray  # [4, N, 21]
    cam_R: np.ndarray  # [4, 3, 3] world -> camera
    cam_t: np.ndarray  # [4, 3] mm
    K: np.ndarray  # [4, 3, 3]
    sizes: tuple[tuple[int, int], ...]  # (W, H) per view

    @property
    def seq(self) -> int:
        return zlib.crc32(self.name.encode())


def rgb_name(recording: str, frame: int, view: int) -> str:
    return f"{recording}/rgb/{frame:05d}_{view}.jpg"


def mask_name(recording: str, frame: int, view: int) -> str:
    return f"{recording}/mask/{frame:05d}_{view}.jpg"


def joints_name(recording: str) -> str:
    return f"{recording}/mlresults/{recording}-joints.npy"


def natural_key(name: str) -> list[Any]:
    """Digit runs compared as numbers: ``9-10-1-2`` after ``9-9-1-2``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def split_recordings(names: list[str]) -> dict[str, list[str]]:
    """The harness's split of the sorted recording names: train the first half, test the
    rest (the larger half when odd)."""
    ordered = sorted(names, key=natural_key)
    half = len(ordered) // 2
    return {"train": ordered[:half], "test": ordered[half:]}


@register
class MVHand(MasksIfPresent):
    card = "mvhand"
    raw_joints = "mvhand21"
    fields = ("seq", "frame", "view", "subject", "cam_R", "cam_t", "masks")
    frame_stride: int = 1  # Lin et al.'s 42k/42k images: every frame
    # None: the rule of split_recordings on the recordings found; names replace it
    train_recordings: tuple[str, ...] | None = None
    test_recordings: tuple[str, ...] | None = None

    def items(self, raw: RawFiles, split: str) -> Iterator[Item]:
        """The recordings of the split read and checked, and whether masks are read, before
        the generator of its samples is returned."""
        stride = self.frame_stride
        if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
            raise DabenchError(f"mvhand: frame_stride must be a positive integer, got {stride!r}")
        found = _recording_folders(raw)
        names = self._split_names(raw, found, split)
        raw.note(f"{split}: {','.join(names)} stride {stride}")
        recordings = [_read_recording(raw, n, found.index(n) + 1, stride) for n in names]
        kept = [(rec, f, v) for rec in recordings for f, v in _kept(rec, stride)]
        return self._stream(kept, self.masks_found(raw, split, _masks_present(raw, kept)))

    def _split_names(self, raw: RawFiles, found: list[str], split: str) -> list[str]:
        if len(found) < 2:
            raise DabenchError(
                f"mvhand: {raw.root} holds {len(found)} recording folder ({', '.join(found)}); "
                "the harness's subject-disjoint split needs at least 2 (the release has 4)"
            )
        rule = split_recordings(found)
        chosen = {}
        for part, asked in (("train", self.train_recordings), ("test", self.test_recordings)):
            if asked is None:
                chosen[part] = rule[part]
                continue
            for name in asked:
                raw.path(name, f"the {part} recording folder {name} (MVHand.{part}_recordings)")
                if name not in found:
                    raise DabenchError(
                        f"mvhand: {raw.root / name} is not a recording folder (no calib.pkl, "
                        "rgb/ or mlresults/)"
                    )
            chosen[part] = list(asked)
        shared = sorted(set(chosen["train"]) & set(chosen["test"]), key=natural_key)
        if shared:
            raise DabenchError(
                f"mvhand: train and test share recording(s) {shared} (train {chosen['train']}, "
                f"test {chosen['test']}); MVHand.train_recordings and test_recordings must "
                "name different subjects"
            )
        return chosen[split]

    def _stream(self, kept: list[tuple[Recording, int, int]], masks: bool) -> Iterator[MVHandItem]:
        for rec, f, v in kept:
            yield MVHandItem(
                image=rgb_name(rec.name, f, v),
                kp2d=rec.kp2d[v, f],
                vis=rec.vis[v, f],
                kp3d=rec.kp3d[v, f],
                K=rec.K[v],
                subject=rec.subject,
                mask=mask_name(rec.name, f, v) if masks else None,
                seq=rec.seq,
                frame=f,
                view=v,
                cam_R=rec.cam_R[v],
                cam_t=rec.cam_t[v],
                size=rec.sizes[v],
            )

    def read_image(self, root: Path, item: Item) -> np.ndarray:
        image = super().read_image(root, item)
        _check_shape(root / item.image, image, item, "frame")
        return image

    def read_mask(self, root: Path, item: Item) -> np.ndarray | None:
        mask = super().read_mask(root, item)
        if mask is not None and item.mask is not None:
            _check_shape(root / item.mask, mask, item, "mask")
        return mask

    def mask_of(self, decoded: np.ndarray) -> np.ndarray:
        """The base rule, the brightest channel above 127, taken over the channel planes:
        numpy's max over a last axis of 3 is ~25 times slower (~10 ms a 640 x 480 mask,
        minutes over the release's 84k)."""
        return np.maximum.reduce(list(np.moveaxis(decoded, -1, 0))) > 127


def _check_shape(path: Path, image: np.ndarray, item: Item, what: str) -> None:
    """An image of its view's size: the intrinsics were chosen for it."""
    width, height = item.size if isinstance(item, MVHandItem) else (0, 0)
    if image.shape[:2] != (height, width):
        raise DabenchError(
            f"mvhand: {path} is {image.shape[1]} x {image.shape[0]} px; the other frames of "
            f"view {item.view} are {width} x {height} (a {what} of another size)"
        )


# -- the folders ------------------------------------------------------------------------------


def _recording_folders(raw: RawFiles) -> list[str]:
    """The recording folders under the root, sorted; the root checked for being a recording
    or a folder inside one."""
    found = sorted((p.name for p in _subfolders(raw.root) if _is_recording(p)), key=natural_key)
    if found:
        raw.note("recordings: " + ",".join(found))
        return found
    deeper = [p for p in _subfolders(raw.root) if any(map(_is_recording, _subfolders(p)))]
    if deeper:
        raise DabenchError(
            f"mvhand: {raw.root} holds no recording folder, {deeper[0]} does; pass the folder "
            "that holds the recording folders <date>/ (calib.pkl, rgb/, mlresults/)"
        )
    if any((raw.root / m).exists() for m in MARKERS):
        raise DabenchError(
            f"mvhand: {raw.root} is one recording folder; pass the folder that holds the "
            f"recording folders ({raw.root.parent})"
        )
    if raw.root.name in INSIDE:
        raise DabenchError(
            f"mvhand: {raw.root} is a folder inside a recording; pass the folder that holds "
            "the recording folders <date>/ (e.g. 7-14-1-2/)"
        )
    raise DabenchError(
        f"mvhand: {raw.root} holds no MVHand recording folder; expected <date>/calib.pkl, "
        "<date>/mlresults/<date>-joints.npy and <date>/rgb/%05d_<v>.jpg (see "
        "datasets/mvhand.yaml)"
    )


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _is_recording(folder: Path) -> bool:
    return any((folder / m).exists() for m in MARKERS)


def _listing(raw: RawFiles, rel: str) -> set[str]:
    folder = raw.root / rel
    try:
        return set(os.listdir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return set()
    except OSError as exc:
        raise DabenchError(f"mvhand: cannot list {folder}: {exc.strerror}") from exc


# -- calib.pkl --------------------------------------------------------------------------------


def _read_calib(raw: RawFiles, rec: str) -> list[np.ndarray]:
    """The 4 poses (camera -> world) in view order, checked."""
    rel = f"{rec}/calib.pkl"
    where = raw.root / rel
    calib = raw.load_pickle(rel, "the camera poses: a pickled dict serial -> 4 x 4 camera -> world")
    if not isinstance(calib, dict):
        raise DabenchError(
            f"mvhand: {where} holds a {type(calib).__name__}; expected a dict camera serial "
            "-> 4 x 4 pose"
        )
    missing = [s for s in SERIALS if s not in calib]
    if missing:
        raise DabenchError(
            f"mvhand: {where} lacks camera(s) {missing}; it holds {sorted(map(str, calib))} "
            f"(expected the serials {', '.join(SERIALS)})"
        )
    poses = []
    for serial in SERIALS:
        try:
            pose = np.asarray(calib[serial], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise DabenchError(f"mvhand: {where}: the pose of {serial} is not numeric") from exc
        rot = pose[:3, :3] if pose.shape == (4, 4) else None
        if (
            rot is None
            or not np.isfinite(pose).all()
            or not np.allclose(pose[3], [0, 0, 0, 1])
            or not np.allclose(rot @ rot.T, np.eye(3), atol=1e-4)
            or np.linalg.det(rot) <= 0
        ):
            raise DabenchError(
                f"mvhand: {where}: the pose of camera {serial} ({pose.shape}) is not a 4 x 4 "
                "rigid transform [[R, t], [0, 0, 0, 1]] with R a rotation (R R^T = I, det +1)"
            )
        poses.append(pose)
    roots = [s for s, p in zip(SERIALS, poses, strict=True) if np.allclose(p, np.eye(4))]
    if len(roots) != 1:
        raise DabenchError(
            f"mvhand: {where}: {len(roots)} camera poses are the identity ({roots}); expected "
            "exactly one, the root camera whose frame is the world"
        )
    root = poses[SERIALS.index(roots[0])]
    distances = [float(np.linalg.norm(p[:3, 3] - root[:3, 3])) for p in poses if p is not root]
    lo, hi = BASELINE_MM
    if not all(lo <= d <= hi for d in distances):
        raise DabenchError(
            f"mvhand: {where}: the cameras lie {', '.join(f'{d:.4g}' for d in distances)} from "
            f"the root camera; expected {lo:g}-{hi:g} (mm: four views around a hand)"
        )
    return poses


# -- the joints -------------------------------------------------------------------------------


def _read_joints(raw: RawFiles, rec: str) -> np.ndarray:
    """``[N, 21, 3]`` world mm, checked."""
    rel = joints_name(rec)
    where = raw.root / rel
    data = raw.read_bytes(rel, "the joints: [N, 21, 4] homogeneous, world (root camera), mm")
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DabenchError(
            f"mvhand: {where} is not a readable .npy file (cut short?): {exc}"
        ) from exc
    if not isinstance(arr, np.ndarray) or not np.issubdtype(arr.dtype, np.number):
        raise DabenchError(f"mvhand: {where} is not a numeric array")
    shape = arr.shape
    if arr.ndim < 2 or not len(arr) or shape[1:] not in ((JOINTS, 4), (JOINTS * 4,)):
        raise DabenchError(
            f"mvhand: {where} has shape {shape}; expected [N, 21, 4] or [N, 84] (21 "
            "homogeneous joints per frame)"
        )
    joints = arr.reshape(len(arr), JOINTS, 4).astype(np.float64)
    if not np.isfinite(joints).all() or not np.allclose(joints[..., 3], 1.0):
        raise DabenchError(
            f"mvhand: {where} has non-finite values or a homogeneous coordinate other than 1; "
            "expected [x, y, z, 1] per joint"
        )
    xyz = joints[..., :3]
    palm = float(np.median(np.linalg.norm(xyz[:, WRIST] - xyz[:, MIDDLE_MCP], axis=-1)))
    if not PALM_MM[0] <= palm <= PALM_MM[1]:
        raise DabenchError(
            f"mvhand: {where}: the median wrist to middle-MCP distance is {palm:.4g}; expected "
            f"{PALM_MM[0]:g}-{PALM_MM[1]:g} (mm, as the toolkit reads the joints)"
        )
    return xyz


# -- one recording ----------------------------------------------------------------------------


def _read_recording(raw: RawFiles, rec: str, subject: int, stride: int) -> Recording:
    poses = _read_calib(raw, rec)
    world = _read_joints(raw, rec)
    n = len(world)
    _check_frames(raw, rec, n)
    calib, joints = raw.root / rec / "calib.pkl", raw.root / joints_name(rec)
    kp3d, kp2d, vis, rs, ts, ks, sizes = [], [], [], [], [], [], []
    for v, serial in enumerate(SERIALS):
        inv = np.linalg.inv(poses[v])
        cam_R, cam_t = inv[:3, :3], inv[:3, 3]
        xyz = world @ cam_R.T + cam_t
        depth = float(np.median(xyz[..., 2]))
        if not DEPTH_MM[0] <= depth <= DEPTH_MM[1]:
            raise DabenchError(
                f"mvhand: {joints}: the joints lie a median {depth:.4g} in front of camera "
                f"{serial} (view {v}) with its pose in {calib}; expected {DEPTH_MM[0]:g}-"
                f"{DEPTH_MM[1]:g} (mm, world = the root camera's frame, poses camera -> world)"
            )
        size = _image_size(raw, rgb_name(rec, 0, v))
        fx, fy, cx, cy = INTRINSICS[size][serial]
        k = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
        with np.errstate(divide="ignore", invalid="ignore"):  # joints on the camera plane
            uv = project(xyz, k)
        width, height = size
        seen = in_image(uv, width, height) & (xyz[..., 2] > 0)
        counted = (seen[::stride].sum(axis=-1) >= MIN_VISIBLE).mean()
        if counted < MIN_SEEN:
            raise DabenchError(
                f"mvhand: {joints}: camera {serial} (view {v}) sees the hand ({MIN_VISIBLE} of "
                f"{JOINTS} joints inside its {width} x {height} image) in {counted:.0%} of the "
                f"frames with its pose in {calib}; expected at least {MIN_SEEN:.0%} (the pose "
                "does not look at the hand: another rig's calibration, or a wrong serial?)"
            )
        kp3d.append(xyz)
        kp2d.append(uv)
        vis.append(seen)
        rs.append(cam_R)
        ts.append(cam_t)
        ks.append(k)
        sizes.append(size)
    return Recording(
        name=rec,
        subject=subject,
        frames=n,
        kp3d=np.stack(kp3d),
        kp2d=np.stack(kp2d),
        vis=np.stack(vis),
        cam_R=np.stack(rs),
        cam_t=np.stack(ts),
        K=np.stack(ks),
        sizes=tuple(sizes),
    )


def _check_frames(raw: RawFiles, rec: str, n: int) -> None:
    """Every frame's 4 colour files, from one listing of rgb/."""
    raw.path(f"{rec}/rgb", f"the colour frames of {rec}")
    names = _listing(raw, f"{rec}/rgb")
    for f in range(n):
        for v in range(len(SERIALS)):
            rel = rgb_name(rec, f, v)
            if rel.rsplit("/", 1)[1] not in names:
                raw.path(rel, f"frame {f} of view {v}; {joints_name(rec)} has {n} frames")
    raw.note(f"{rec}: {n} frames, {len(names)} files in rgb/")


def _image_size(raw: RawFiles, rel: str) -> tuple[int, int]:
    """(W, H) of a frame from its header; a size the toolkit has intrinsics for."""
    path = raw.root / rel
    size = raw.image_size(rel, "a colour frame")
    if size not in INTRINSICS:
        known = " or ".join(f"{w} x {h}" for w, h in INTRINSICS)
        raise DabenchError(
            f"mvhand: {path} is {size[0]} x {size[1]} px; the toolkit's intrinsics are for "
            f"{known} frames"
        )
    raw.note(f"{rel}: {size}")
    return size


def _kept(rec: Recording, stride: int) -> Iterator[tuple[int, int]]:
    """(frame, view) of the samples: every stride-th frame, the views that see the hand."""
    for f in range(0, rec.frames, stride):
        for v in range(len(SERIALS)):
            if rec.vis[v, f].sum() >= MIN_VISIBLE:
                yield f, v


def _masks_present(raw: RawFiles, kept: list[tuple[Recording, int, int]]) -> bool:
    """True when every kept sample has its mask file, False when none has."""
    listings: dict[str, set[str]] = {}
    found = []
    for rec, f, v in kept:
        if rec.name not in listings:
            listings[rec.name] = _listing(raw, f"{rec.name}/mask")
        found.append(mask_name(rec.name, f, v).rsplit("/", 1)[1] in listings[rec.name])
    if all(found):
        return True
    if not any(found):
        return False
    rec, f, v = kept[found.index(False)]
    raise DabenchError(
        f"mvhand: missing {raw.root / mask_name(rec.name, f, v)} (the hand mask of frame {f}, "
        f"view {v}): {sum(found)} of the split's {len(found)} samples have a mask; a shard has "
        "masks for all its samples or none, so provide every mask/ file of the split's "
        "recordings or remove them all"
    )
