"""3DPW (3D Poses in the Wild): ``sequenceFiles/{train,test}/<sequence>.pkl`` (Python-2
pickles, read with ``encoding="latin1"``; some zips nest them one level deeper, under
``sequenceFiles/sequenceFiles/``, which is accepted) and the frames
``imageFiles/<sequence>/image_%05d.jpg``, frame ``i`` of a sequence being image ``i``
(0-based, as every 3DPW loader names them). ``sequenceFiles/validation`` is not read.

Per pickle: ``jointPositions`` (per actor ``[T, 72]``, the 24 SMPL joints in the world
frame, m), ``cam_poses`` (``[T, 4, 4]`` world → camera), ``cam_intrinsics`` (3 × 3) and
``campose_valid`` (per actor ``[T]``). One sample per (frame, actor) with
``campose_valid == 1``, in the order sequence (sorted file names), actor, frame.

Units: ``kp3d = (R · X_world + t) · 1000`` mm in the camera frame; ``cam_R = R`` and
``cam_t = 1000 · t`` mm (world in mm → camera in mm); ``kp2d`` is the projection of
``kp3d`` with ``cam_intrinsics``, taken as 0-based pixels with centres at integers (the
OpenPose ``poses2d`` are detections, not labels, and are not read). A joint is visible
when it lies in front of the camera and inside the image (``-0.5 ≤ u < W − 0.5``, same for
``v``); a sample with no joint inside its image is dropped (no box to crop around).

Ids: ``seq = 10 · crc32(sequence name) + actor`` — one id per actor's track, so that frame
pairs never join two people; ``seq // 10`` identifies the sequence and depends on its name
only; ``subject`` = actor index; ``frame`` = image index."""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

from bench.data.convert.base import Converter, Item, register
from bench.data.convert.crop import in_image
from bench.data.convert.raw import RawFiles
from bench.errors import DabenchError

FOLDERS = ("sequenceFiles", "sequenceFiles/sequenceFiles")  # the second: nested zips
KEYS = ("sequence", "jointPositions", "cam_poses", "cam_intrinsics", "campose_valid")
SMPL_JOINTS = 24
MAX_ACTORS = 10  # seq packs the actor into its last decimal digit
M_TO_MM = 1000.0


def sequence_id(name: str, actor: int) -> int:
    """The ``seq`` of one actor of sequence ``name``: a function of the name alone, so a
    partial copy of the dataset numbers its sequences as the full one does."""
    return zlib.crc32(name.encode()) * MAX_ACTORS + actor


@register
class ThreeDPW(Converter):
    card = "3dpw"
    raw_joints = "smpl24"
    fields = ("seq", "frame", "subject", "cam_R", "cam_t")

    def items(self, raw: RawFiles, split: str) -> list[Item]:
        folder = _split_folder(raw, split)
        files = sorted(p.name for p in (raw.root / folder).glob("*.pkl"))
        if not files:
            raise DabenchError(
                f"3dpw: {raw.root / folder} holds no .pkl sequence files; expected the "
                f"official sequenceFiles/{split}/<sequence>.pkl"
            )
        out: list[Item] = []
        seen: dict[int, str] = {}
        for file in files:
            rel = f"{folder}/{file}"
            seq = _read_sequence(raw, rel)
            key = sequence_id(seq["name"], 0)
            if key in seen:
                raise DabenchError(
                    f"3dpw: {raw.root / rel} and {raw.root / seen[key]} hold the same sequence "
                    f"{seq['name']!r} (or names with one id); expected one file per sequence"
                )
            seen[key] = rel
            out.extend(_sequence_items(raw, rel, seq))
        return out


def _split_folder(raw: RawFiles, split: str) -> str:
    for base in FOLDERS:
        if (raw.root / base / split).is_dir():
            return f"{base}/{split}"
    raw.path(f"sequenceFiles/{split}", f"the folder of the {split} sequences' .pkl files")
    raise DabenchError(  # a file where the folder should be
        f"3dpw: {raw.root / 'sequenceFiles' / split} is not a folder; expected the "
        f"{split} sequences' .pkl files in it"
    )


def _read_sequence(raw: RawFiles, rel: str) -> dict[str, Any]:
    """The arrays of one pickle, checked: ``name``, ``joints [A, T, 24, 3]`` m,
    ``poses [T, 4, 4]``, ``K [3, 3]``, ``valid [A, T]`` bool."""
    where = raw.root / rel
    content = raw.load_pickle(rel, "a 3DPW sequence pickle (Python 2)")
    if not isinstance(content, dict):
        raise DabenchError(
            f"3dpw: {where} holds a {type(content).__name__}; expected the dict of a 3DPW "
            "sequence file"
        )
    missing = [k for k in KEYS if k not in content]
    if missing:
        raise DabenchError(
            f"3dpw: {where} lacks {missing}; it holds {sorted(map(str, content))} — expected "
            "a 3DPW v1 sequence file (jointPositions, cam_poses, campose_valid, ...)"
        )
    name = content["sequence"]
    try:
        joints = np.asarray(content["jointPositions"], dtype=np.float64)
        poses = np.asarray(content["cam_poses"], dtype=np.float64)
        k = np.asarray(content["cam_intrinsics"], dtype=np.float64)
        valid = np.asarray(content["campose_valid"])
    except (TypeError, ValueError) as exc:
        raise DabenchError(
            f"3dpw: {where} has jointPositions, cam_poses, cam_intrinsics or campose_valid "
            f"that are not numeric arrays of one shape per actor ({exc})"
        ) from exc
    frames = poses.shape[0] if poses.ndim == 3 else -1
    actors = joints.shape[0] if joints.ndim == 3 else -1
    if (
        not isinstance(name, str)
        or not name
        or "/" in name
        or poses.shape != (frames, 4, 4)
        or joints.shape != (actors, frames, 3 * SMPL_JOINTS)
        or valid.shape != (actors, frames)
        or k.shape != (3, 3)
        or not 1 <= actors <= MAX_ACTORS
    ):
        raise DabenchError(
            f"3dpw: {where} has sequence {name!r}, jointPositions {joints.shape}, cam_poses "
            f"{poses.shape}, campose_valid {valid.shape}, cam_intrinsics {k.shape}; expected "
            f"a name, [A, T, {3 * SMPL_JOINTS}] (A = 1..{MAX_ACTORS} actors, 24 SMPL joints, "
            "m), [T, 4, 4], [A, T] and [3, 3]"
        )
    return {
        "name": name,
        "joints": joints.reshape(actors, frames, SMPL_JOINTS, 3),
        "poses": poses,
        "K": k,
        "valid": valid == 1,
    }


def _sequence_items(raw: RawFiles, rel: str, seq: dict[str, Any]) -> list[Item]:
    name, k = seq["name"], seq["K"]
    valid = seq["valid"]
    if not valid.any():
        return []
    first = int(np.flatnonzero(valid.any(axis=0))[0])
    width, height = _image_size(raw, f"imageFiles/{name}/image_{first:05d}.jpg", rel)
    r = seq["poses"][:, :3, :3]
    t = seq["poses"][:, :3, 3] * M_TO_MM
    out = []
    for actor, frame in zip(*np.nonzero(valid), strict=True):
        image = f"imageFiles/{name}/image_{frame:05d}.jpg"
        raw.path(image, f"frame {frame} of {name}, named by {rel}")
        kp3d = seq["joints"][actor, frame] * M_TO_MM @ r[frame].T + t[frame]
        z = kp3d[:, 2:3]
        kp2d = (kp3d @ k.T)[:, :2] / z
        vis = in_image(kp2d, width, height) & (z[:, 0] > 0)
        if not vis.any():
            continue  # wholly outside the image: nothing to crop around
        out.append(
            Item(
                image=image,
                kp2d=kp2d,
                vis=vis,
                kp3d=kp3d,
                K=k,
                subject=int(actor),
                seq=sequence_id(name, int(actor)),
                frame=int(frame),
                cam_R=r[frame],
                cam_t=t[frame],
            )
        )
    return out


def _image_size(raw: RawFiles, image: str, rel: str) -> tuple[int, int]:
    """(W, H) of a sequence's frames, from one image's header: a video's frames share it,
    and 3DPW has both landscape and portrait sequences."""
    return raw.image_size(image, f"the first valid frame of the sequence in {rel}")
