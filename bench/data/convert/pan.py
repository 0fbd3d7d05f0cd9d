"""CMU Panoptic Studio 3D hands (the card ``pan``): the toolbox's per-sequence folders under
one root, ``<seq>/calibration_<seq>.json``, ``<seq>/hdHand3d/handRecon3D_hd%08d.json`` and the
HD frames ``<seq>/hdImgs/<panel>_<node>/<panel>_<node>_%08d.jpg`` extracted from
``hdVideos/hd_<panel>_<node>.mp4`` with the toolbox (frame i of the video = HD index i).

Calibration: ``cameras[]`` of ``{name, type, resolution [W, H], K, distCoef [k1, k2, p1, p2,
k3], R, t [3 x 1]}``; only ``type == "hd"`` cameras are used (VGA and Kinect are not read).
``X_cam = R · X_world + t`` in cm: ``t`` is in cm like the landmarks (mmpose's real
calibration file of 160906_band1 puts the HD cameras 2.4–3.8 m from the dome centre with
``|t|`` ≈ 240–380), and both are checked for it.

Hands: ``people[]`` of ``{id, left_hand, right_hand}`` (a hand may be absent), each hand
``landmarks`` (63 floats: 21 × xyz, cm, dome world frame, OpenPose hand order = hand21) with
per-joint ``validity`` (1/0) and ``averageScore`` [L]. A joint is labelled when its validity
is 1 and its average score above 0 (whichever of the two the file has; a hand with neither is
refused as another layout). People with ``id < 0`` (the reconstruction's untracked
detections [L]) are skipped.

One sample per (sequence, frame, HD camera, person, hand), in that order. ``kp3d`` =
``(R · landmarks + t) · 10`` mm in the camera frame, ``cam_R = R``, ``cam_t = 10 · t`` mm;
``kp2d`` = the PINHOLE projection of ``kp3d`` with the calibration's ``K``. The HD lenses
distort strongly (k1 ≈ −0.28: a point a third of the way to the frame edge moves by ~10 px,
the corners by >100 px), so the images are undistorted instead: :meth:`Panoptic.read_image`
resamples the frame (bilinear) onto the pinhole camera with the same ``K`` and size, the
OpenCV distortion model that the toolbox's ``projectPoints`` implements; kp2d is then exact
on the stored pixels. Only the crop's window is resampled (the rest of the frame is never
stored). A joint is visible when labelled, in front of the camera and inside the W × H
pinhole image; a hand with fewer than :data:`MIN_VISIBLE` (11 of 21, a majority) visible
joints in a camera is skipped for that camera.

Ids: ``seq`` = :func:`hand_id` (sequence, person, hand): the same hand seen by every camera
shares seq and frame (a multi-view group), one camera's frames of that hand form the videos of
frame pairs (seq, view); ``frame`` = HD frame index, ``view`` = camera node (00_NN → NN),
``subject`` = person id (a track id within its sequence). Nothing is mirrored: left hands
stay left.

Splits (the card's): test = ``test_sequences`` (171204_pose3), train = ``train_sequences``
or, by default, every other sequence folder with ``hdHand3d/``. Defaults of the class
attributes: every HD camera of the calibration whose frame folder exists
(``hd_nodes = None``), every 10th HD frame (``frame_stride``, HD index % 10 == 0).
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.data.convert.base import Converter, Item, register
from bench.data.convert.crop import in_image, square_around
from bench.data.convert.raw import RawFiles, decode_image, read_file
from bench.errors import DabenchError

HANDS_DIR = "hdHand3d"
HAND_FILE = re.compile(r"^handRecon3D_hd(\d{8})\.json$")
HD_NAME = re.compile(r"^(\d{2})_(\d{2})$")
SIDES = ("left_hand", "right_hand")  # side index 0, 1 in hand_id
JOINTS = 21
CM_TO_MM = 10.0
MAX_PEOPLE = 1000  # person ids per sequence that hand_id can hold
MIN_VISIBLE = 11  # a majority of the 21 joints
PALM_CM = (4.0, 16.0)  # |wrist - middle MCP| of a human hand, ~9 cm
DOME_CM = (100.0, 1000.0)  # HD camera centres from the dome centre: 2.4-3.8 m
CAMERA_KEYS = ("name", "type", "resolution", "K", "distCoef", "R", "t")


def hand_id(sequence: str, person: int, side: int) -> int:
    """The ``seq`` of one hand (``side`` 0 left, 1 right) of one person of ``sequence``: a
    function of the names alone, so a partial copy numbers hands as the full one does;
    ``seq // (2 · MAX_PEOPLE)`` is the crc32 of the sequence name."""
    return (zlib.crc32(sequence.encode()) * MAX_PEOPLE + person) * 2 + side


@dataclass(frozen=True)
class PanopticItem(Item):
    """An :class:`Item` with what :meth:`Panoptic.read_image` needs to undistort its frame."""

    dist: tuple[float, ...] = ()  # OpenCV k1, k2, p1, p2, k3
    resolution: tuple[int, int] = (0, 0)  # W, H of the calibration


@dataclass(frozen=True)
class Camera:
    name: str
    node: int
    k: np.ndarray
    dist: tuple[float, ...]
    r: np.ndarray
    t_mm: np.ndarray
    width: int
    height: int


@register
class Panoptic(Converter):
    card = "pan"
    raw_joints = "hand21"
    fields = ("seq", "frame", "view", "subject", "cam_R", "cam_t")
    test_sequences: tuple[str, ...] = ("171204_pose3",)
    train_sequences: tuple[str, ...] | None = None  # None: every other sequence with hands
    hd_nodes: tuple[int, ...] | None = None  # None: every HD camera with a frame folder
    frame_stride: int = 10  # HD frames whose index is a multiple of it

    def items(self, raw: RawFiles, split: str) -> Iterator[Item]:
        stride = self.frame_stride
        if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
            raise DabenchError(f"pan: frame_stride must be a positive integer, got {stride!r}")
        sequences = self._sequences(raw, split)
        raw.note(f"{split}: {','.join(sequences)} stride {self.frame_stride} nodes {self.hd_nodes}")
        return self._generate(raw, sequences)

    def _sequences(self, raw: RawFiles, split: str) -> list[str]:
        found = _sequence_folders(raw)
        if split == "test":
            asked = list(self.test_sequences)
        elif self.train_sequences is not None:
            asked = list(self.train_sequences)
        else:
            asked = [s for s in found if s not in self.test_sequences]
            if not asked:
                raise DabenchError(
                    f"pan: {raw.root} holds no training sequence: every sequence folder with "
                    f"{HANDS_DIR}/ ({', '.join(found)}) is a test sequence "
                    f"({', '.join(self.test_sequences)})"
                )
        for seq in asked:
            raw.path(f"{seq}/{HANDS_DIR}", f"the 3D hands of the {split} sequence {seq}")
        return asked

    def _generate(self, raw: RawFiles, sequences: list[str]) -> Iterator[Item]:
        for seq in sequences:
            yield from self._sequence(raw, seq)

    def _sequence(self, raw: RawFiles, seq: str) -> Iterator[Item]:
        cameras = self._cameras(raw, seq)
        frames = _hand_frames(raw, seq, self.frame_stride)
        palms = []
        sized: set[str] = set()
        for frame, rel in frames:
            hands = _read_hands(raw, rel)
            palms += [np.linalg.norm(lm[0] - lm[9]) for _, _, lm, ok in hands if ok[0] and ok[9]]
            for cam in cameras:
                for person, side, landmarks, labelled in hands:
                    world = landmarks * CM_TO_MM
                    item = _item(raw, seq, frame, cam, person, side, world, labelled)
                    if item is None:
                        continue
                    if cam.name not in sized:  # a camera's frames share one size
                        _check_size(raw, item.image, cam)
                        sized.add(cam.name)
                    yield item
        if palms and not PALM_CM[0] <= np.median(palms) <= PALM_CM[1]:
            raise DabenchError(
                f"pan: {raw.root / seq / HANDS_DIR}: the median wrist to middle-MCP distance is "
                f"{np.median(palms):.4g}; expected {PALM_CM[0]:g}-{PALM_CM[1]:g} (cm, as the "
                "Panoptic release stores landmarks): the files are in another unit"
            )

    def _cameras(self, raw: RawFiles, seq: str) -> list[Camera]:
        hd = _read_calibration(raw, seq)
        if self.hd_nodes is not None:
            by_node = {c.node: c for c in hd}
            missing = [n for n in self.hd_nodes if n not in by_node]
            if missing:
                raise DabenchError(
                    f"pan: {raw.root / seq / f'calibration_{seq}.json'} has no HD camera with "
                    f"node(s) {missing}; it has {sorted(by_node)}"
                )
            chosen = [by_node[n] for n in sorted(self.hd_nodes)]
            for cam in chosen:
                raw.path(f"{seq}/hdImgs/{cam.name}", f"the frames of HD camera {cam.name}")
        else:
            chosen = [c for c in hd if (raw.root / seq / "hdImgs" / c.name).is_dir()]
            if not chosen:
                raise DabenchError(
                    f"pan: {raw.root / seq / 'hdImgs'} holds no HD frame folder "
                    f"({hd[0].name} ... {hd[-1].name}); extract the frames of "
                    "hdVideos/hd_00_XX.mp4 into hdImgs/00_XX/00_XX_%08d.jpg with the toolbox"
                )
        raw.note(f"{seq} cameras: {','.join(c.name for c in chosen)}")
        return chosen

    def read_image(self, root: Path, item: Item) -> np.ndarray:
        """The frame undistorted onto the pinhole camera of its ``K`` (same size) within the
        sample's crop window; zeros elsewhere (never stored)."""
        if not isinstance(item, PanopticItem):
            raise DabenchError(f"pan: {item.image}: not a Panoptic sample (no distortion known)")
        image = _decode(root, item.image)
        width, height = item.resolution
        if image.shape[:2] != (height, width):
            raise DabenchError(
                f"{root / item.image} is {image.shape[1]} x {image.shape[0]} px; its camera's "
                f"calibration says {width} x {height}"
            )
        if not any(item.dist):
            return image
        # the very window run.py crops (it depends on the joints, not on the output size)
        crop = square_around(item.kp2d, item.vis, 16)
        box = (crop.x0 - 1, crop.y0 - 1, crop.x0 + crop.side + 1, crop.y0 + crop.side + 1)
        return undistort(image, item.K, item.dist, box)


def distort_pixels(uv: np.ndarray, k: np.ndarray, dist: tuple[float, ...]) -> np.ndarray:
    """Pinhole pixel coordinates ``[..., 2]`` → where the lens with OpenCV distortion ``dist``
    (k1, k2, p1, p2, k3) images the same ray, for the same ``K``."""
    k1, k2, p1, p2, k3 = dist
    (fx, s, cx), (_, fy, cy) = k[0], k[1]  # K = [[fx, s, cx], [0, fy, cy], [0, 0, 1]]
    y = (uv[..., 1] - cy) / fy
    x = (uv[..., 0] - cx - s * y) / fx
    r2 = x * x + y * y
    radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return np.stack([fx * xd + s * yd + cx, fy * yd + cy], axis=-1)


def undistort(
    image: np.ndarray,
    k: np.ndarray,
    dist: tuple[float, ...],
    box: tuple[int, int, int, int] | None = None,
) -> np.ndarray:
    """``image [H, W, 3]`` taken through distortion ``dist`` → the pinhole image with the same
    ``K`` and size, resampled bilinearly within ``box`` = (x0, y0, x1, y1) (all of it by
    default); pixels outside the box, or whose ray misses the frame, are 0."""
    height, width = image.shape[:2]
    x0, y0, x1, y1 = box or (0, 0, width, height)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    out = np.zeros_like(image)
    if x0 >= x1 or y0 >= y1:
        return out
    u, v = np.meshgrid(np.arange(x0, x1, dtype=np.float64), np.arange(y0, y1, dtype=np.float64))
    src = distort_pixels(np.stack([u, v], axis=-1), np.asarray(k, np.float64), dist)
    out[y0:y1, x0:x1] = _bilinear(image, src[..., 0], src[..., 1])
    return out


def _bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``image`` sampled at pixel coordinates (centres at integers); 0 outside the frame."""
    height, width = image.shape[:2]
    inside = (x >= -0.5) & (x < width - 0.5) & (y >= -0.5) & (y < height - 0.5)
    x, y = np.clip(x, 0, width - 1), np.clip(y, 0, height - 1)
    xa, ya = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    xb, yb = np.minimum(xa + 1, width - 1), np.minimum(ya + 1, height - 1)
    fx, fy = (x - xa).astype(np.float32)[..., None], (y - ya).astype(np.float32)[..., None]
    flat = image.reshape(height * width, -1)  # only the sampled pixels become floats

    def at(row: np.ndarray, col: np.ndarray) -> np.ndarray:
        return flat[row * width + col].astype(np.float32)

    top = at(ya, xa) * (1 - fx) + at(ya, xb) * fx
    bottom = at(yb, xa) * (1 - fx) + at(yb, xb) * fx
    out = np.rint(top * (1 - fy) + bottom * fy).clip(0, 255).astype(np.uint8)
    out[~inside] = 0
    return out


# consecutive samples are the hands of one frame and camera: decode it once per process
_LAST: dict[str, np.ndarray] = {}


def _decode(root: Path, image: str) -> np.ndarray:
    key = str(root / image)
    if key not in _LAST:
        _LAST.clear()
        _LAST[key] = decode_image(read_file(root, image), key)
    return _LAST[key]


def _sequence_folders(raw: RawFiles) -> list[str]:
    """The sequence folders under the root (those with 3D hands), sorted; the root checked
    for being a sequence or a folder inside one."""
    found = sorted(p.parent.name for p in raw.root.glob(f"*/{HANDS_DIR}") if p.is_dir())
    if found:
        raw.note("sequences: " + ",".join(found))
        return found
    if (raw.root / HANDS_DIR).is_dir():
        raise DabenchError(
            f"pan: {raw.root} is one sequence folder; pass the folder that holds the "
            f"sequence folders ({raw.root.parent})"
        )
    if raw.root.name in (HANDS_DIR, "hdImgs", "hdVideos"):
        raise DabenchError(
            f"pan: {raw.root} is a folder inside a sequence; pass the folder that holds the "
            "sequence folders <seq>/hdHand3d/"
        )
    raise DabenchError(
        f"pan: {raw.root} holds no Panoptic sequence folder with 3D hands; expected "
        f"<seq>/{HANDS_DIR}/handRecon3D_hd%08d.json, <seq>/calibration_<seq>.json and "
        "<seq>/hdImgs/ (see datasets/pan.yaml)"
    )


def _hand_frames(raw: RawFiles, seq: str, stride: int) -> list[tuple[int, str]]:
    """(HD frame, relative path) of the sequence's hand files whose frame is a multiple of
    ``stride``, in frame order."""
    folder = raw.root / seq / HANDS_DIR
    frames = sorted(
        (int(m.group(1)), f"{seq}/{HANDS_DIR}/{p.name}")
        for p in folder.iterdir()
        if (m := HAND_FILE.match(p.name))
    )
    if not frames:
        raise DabenchError(
            f"pan: {folder} holds no handRecon3D_hd%08d.json file; expected the Panoptic "
            "hdHand3d.tar unpacked there"
        )
    kept = [(f, rel) for f, rel in frames if f % stride == 0]
    raw.note(f"{seq} hand frames: " + ",".join(str(f) for f, _ in kept))
    return kept


def _json(raw: RawFiles, rel: str, what: str) -> Any:
    try:
        return json.loads(raw.read_bytes(rel, what))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DabenchError(
            f"pan: {raw.root / rel} is not valid JSON (cut short?): {exc}; expected {what}"
        ) from exc


def _array(value: Any, shape: tuple[int, ...], where: str, what: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DabenchError(f"pan: {where}: {what} is not a numeric array") from exc
    if arr.size == int(np.prod(shape)):  # t is stored as 3 x 1, landmarks flat
        arr = arr.reshape(shape)
    if arr.shape != shape or not np.isfinite(arr).all():
        raise DabenchError(
            f"pan: {where}: {what} has shape {arr.shape} or non-finite values; expected "
            f"{' x '.join(map(str, shape))} numbers"
        )
    return arr


def _read_calibration(raw: RawFiles, seq: str) -> list[Camera]:
    """The sequence's HD cameras in node order, checked (t in cm, R a rotation)."""
    rel = f"{seq}/calibration_{seq}.json"
    where = raw.root / rel
    data = _json(raw, rel, "the camera calibration {cameras: [{name, type, K, R, t, ...}]}")
    if not isinstance(data, dict) or not isinstance(data.get("cameras"), list):
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise DabenchError(
            f"pan: {where} holds {keys}; expected a dict with a 'cameras' list (the Panoptic "
            "calibration file)"
        )
    out = []
    for i, cam in enumerate(data["cameras"]):
        missing = [k for k in CAMERA_KEYS if not isinstance(cam, dict) or k not in cam]
        if missing:
            raise DabenchError(
                f"pan: {where}: camera {i} lacks {missing}; expected {{{', '.join(CAMERA_KEYS)}}}"
            )
        if cam["type"] != "hd":
            continue
        name = str(cam["name"])
        match = HD_NAME.match(name)
        if not match:
            raise DabenchError(f"pan: {where}: HD camera {name!r} is not named <panel>_<node>")
        at = f"{where} camera {name}"
        width, height = (int(v) for v in _array(cam["resolution"], (2,), at, "resolution"))
        r = _array(cam["R"], (3, 3), at, "R")
        if not np.allclose(r @ r.T, np.eye(3), atol=1e-3) or np.linalg.det(r) < 0:
            raise DabenchError(f"pan: {at}: R is not a rotation (R Rᵀ ≠ I or det < 0)")
        k = _array(cam["K"], (3, 3), at, "K")
        if k[0, 0] <= 0 or k[1, 1] <= 0 or k[1, 0] != 0 or not np.allclose(k[2], [0, 0, 1]):
            raise DabenchError(
                f"pan: {at}: K {k.tolist()} is not [[fx, s, cx], [0, fy, cy], [0, 0, 1]] with "
                "positive focal lengths"
            )
        out.append(
            Camera(
                name=name,
                node=int(match.group(2)),
                k=k,
                dist=tuple(float(v) for v in _array(cam["distCoef"], (5,), at, "distCoef")),
                r=r,
                t_mm=_array(cam["t"], (3,), at, "t") * CM_TO_MM,
                width=width,
                height=height,
            )
        )
    if not out:
        raise DabenchError(f"pan: {where} has no camera of type 'hd'")
    centres = [np.linalg.norm(c.r.T @ c.t_mm) / CM_TO_MM for c in out]
    if not DOME_CM[0] <= np.median(centres) <= DOME_CM[1]:
        raise DabenchError(
            f"pan: {where}: the HD cameras lie a median {np.median(centres):.4g} from the "
            f"origin; expected {DOME_CM[0]:g}-{DOME_CM[1]:g} (t in cm, as in the Panoptic "
            "release): the file is in another unit"
        )
    return sorted(out, key=lambda c: c.node)


def _read_hands(raw: RawFiles, rel: str) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
    """(person id, side, landmarks [21, 3] cm, labelled [21]) of every tracked hand."""
    where = raw.root / rel
    data = _json(raw, rel, "the frame's 3D hands {people: [{id, left_hand, right_hand}]}")
    if not isinstance(data, dict) or not isinstance(data.get("people"), list):
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise DabenchError(
            f"pan: {where} holds {keys}; expected a dict with a 'people' list (the Panoptic "
            "hdHand3d file)"
        )
    out = []
    for i, person in enumerate(data["people"]):
        pid = person.get("id") if isinstance(person, dict) else None
        if not isinstance(pid, int) or isinstance(pid, bool):
            raise DabenchError(
                f"pan: {where}: person {i} has no integer 'id'; expected {{id, left_hand, "
                "right_hand}"
            )
        if pid < 0:
            continue  # an untracked detection
        if pid >= MAX_PEOPLE:
            raise DabenchError(f"pan: {where}: person id {pid} >= {MAX_PEOPLE}")
        for side, key in enumerate(SIDES):
            hand = person.get(key)
            if hand is None:
                continue
            at = f"{where} person {pid} {key}"
            if not isinstance(hand, dict) or "landmarks" not in hand:
                raise DabenchError(f"pan: {at} has no 'landmarks' (63 numbers: 21 x xyz, cm)")
            landmarks = _array(hand["landmarks"], (JOINTS, 3), at, "landmarks")
            out.append((pid, side, landmarks, _labelled(hand, at)))
    return out


def _labelled(hand: dict[str, Any], at: str) -> np.ndarray:
    masks = []
    if "validity" in hand:
        masks.append(_array(hand["validity"], (JOINTS,), at, "validity") == 1)
    if "averageScore" in hand:
        masks.append(_array(hand["averageScore"], (JOINTS,), at, "averageScore") > 0)
    if not masks:
        raise DabenchError(
            f"pan: {at} has neither 'validity' nor 'averageScore' (per-joint labels); "
            f"it holds {sorted(hand)}"
        )
    return np.logical_and.reduce(masks)


def _check_size(raw: RawFiles, image: str, cam: Camera) -> None:
    """The frame's header against the calibration: a copy extracted at another resolution is
    refused before anything is written."""
    path = raw.root / image
    size = raw.image_size(image, f"an HD frame of camera {cam.name}")
    if size != (cam.width, cam.height):
        raise DabenchError(
            f"{path} is {size[0]} x {size[1]} px; its camera's calibration says "
            f"{cam.width} x {cam.height} (frames extracted at another resolution?)"
        )


def _item(
    raw: RawFiles,
    seq: str,
    frame: int,
    cam: Camera,
    person: int,
    side: int,
    world: np.ndarray,
    labelled: np.ndarray,
) -> PanopticItem | None:
    """One hand in one camera, or None when too few of its joints are visible there."""
    kp3d = world @ cam.r.T + cam.t_mm
    z = kp3d[:, 2]
    uvw = kp3d @ cam.k.T
    kp2d = uvw[:, :2] / np.where(np.abs(uvw[:, 2:]) > 1e-9, uvw[:, 2:], 1e-9)
    vis = labelled & (z > 0) & in_image(kp2d, cam.width, cam.height)
    if vis.sum() < MIN_VISIBLE:
        return None
    image = f"{seq}/hdImgs/{cam.name}/{cam.name}_{frame:08d}.jpg"
    raw.path(image, f"HD frame {frame} of camera {cam.name}, which sees a hand in {seq}")
    return PanopticItem(
        image=image,
        kp2d=kp2d,
        vis=vis,
        kp3d=kp3d,
        K=cam.k,
        subject=person,
        seq=hand_id(seq, person, side),
        frame=frame,
        view=cam.node,
        cam_R=cam.r,
        cam_t=cam.t_mm,
        dist=cam.dist,
        resolution=(cam.width, cam.height),
    )
