"""The standard sample and the HDF5 shard schema (version 1), declared in one place.

A shard is one HDF5 file per dataset split holding N samples. Every dataset is indexed by
sample along its first axis. This module says which datasets and root attributes a shard
has, their dtypes and per-sample shapes, which are optional, and checks a file against that
(`validate`). Writing and reading live in `bench.data.shards`.

Per-sample shapes use symbols: ``H``/``W`` (stored image size) and ``K`` (number of joints).
Coordinates: ``kp2d`` is in pixels of the stored image with pixel centres at integer
coordinates; ``kp3d`` is in mm in the camera frame; ``cam_R``/``cam_t`` map world to camera
(``X_cam = R @ X_world + t``, mm); ``K`` holds the intrinsics of the stored image.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from bench.errors import ShardError

SCHEMA_VERSION = 1
SUPPORTED_SCHEMA_VERSIONS = (1,)

#: joint_set / root_joint value of shards without keypoints (e.g. background-only images)
NO_JOINTS = "none"

#: A writer's temporary file is ``<final name>.partial-<pid>``; readers refuse such names.
PARTIAL_MARKER = ".partial-"

#: dtype tag of variable-length UTF-8 strings (ids such as ``seq`` or ``subject``)
STR = "str"


class Presence(enum.Enum):
    ALWAYS = "always"  # every shard
    WITH_JOINTS = "with_joints"  # exactly when joint_set != "none"
    OPTIONAL = "optional"  # writer declares it in `fields`


@dataclass(frozen=True)
class DatasetSpec:
    """One HDF5 dataset of a shard; its full shape is ``(N, *shape)``."""

    name: str
    dtypes: tuple[str, ...]  # allowed numpy dtype names, or STR; the first is the default
    shape: tuple[int | str, ...]
    presence: Presence
    doc: str
    pair: str | None = None  # must be present together with this other dataset
    image_like: bool = False  # one sample per chunk, compressed


DATASETS: tuple[DatasetSpec, ...] = (
    DatasetSpec(
        "images",
        ("uint8",),
        ("H", "W", 3),
        Presence.ALWAYS,
        "RGB image, no normalisation",
        image_like=True,
    ),
    DatasetSpec(
        "masks",
        ("uint8",),
        ("H", "W"),
        Presence.OPTIONAL,
        "foreground mask, values 0/1",
        image_like=True,
    ),
    DatasetSpec(
        "kp2d",
        ("float32",),
        ("K", 2),
        Presence.WITH_JOINTS,
        "2D keypoints, px in the stored image (pixel centres at integers)",
    ),
    DatasetSpec(
        "kp3d", ("float32",), ("K", 3), Presence.WITH_JOINTS, "3D keypoints, mm, camera frame"
    ),
    DatasetSpec("vis", ("bool",), ("K",), Presence.WITH_JOINTS, "joint visible / labelled"),
    DatasetSpec("K", ("float32",), (3, 3), Presence.WITH_JOINTS, "intrinsics of the stored image"),
    DatasetSpec(
        "cam_R", ("float32",), (3, 3), Presence.OPTIONAL, "world->camera rotation", pair="cam_t"
    ),
    DatasetSpec(
        "cam_t",
        ("float32",),
        (3,),
        Presence.OPTIONAL,
        "world->camera translation, mm",
        pair="cam_R",
    ),
    DatasetSpec("seq", ("int64", STR), (), Presence.OPTIONAL, "sequence id"),
    DatasetSpec("frame", ("int32",), (), Presence.OPTIONAL, "frame number in the sequence"),
    DatasetSpec("view", ("int16",), (), Presence.OPTIONAL, "camera / view id"),
    DatasetSpec("subject", ("int32", STR), (), Presence.OPTIONAL, "subject id"),
    DatasetSpec(
        "head_size",
        ("float32",),
        (),
        Presence.OPTIONAL,
        "PCKh normaliser, px of the stored image (MPII: 0.6 x the head-box diagonal)",
    ),
)
DATASET_SPECS: dict[str, DatasetSpec] = {d.name: d for d in DATASETS}
JOINT_DATASETS: tuple[str, ...] = tuple(
    d.name for d in DATASETS if d.presence is Presence.WITH_JOINTS
)
OPTIONAL_DATASETS: tuple[str, ...] = tuple(
    d.name for d in DATASETS if d.presence is Presence.OPTIONAL
)


@dataclass(frozen=True)
class AttrSpec:
    """One attribute of the root group."""

    name: str
    types: tuple[type, ...]
    doc: str
    value: Any = None  # the only valid value, if fixed


ATTRIBUTES: tuple[AttrSpec, ...] = (
    AttrSpec("schema_version", (int,), "shard schema version", value=SCHEMA_VERSION),
    AttrSpec("dataset", (str,), "dataset card name"),
    AttrSpec("joint_set", (str,), "joint set name, or 'none'"),
    AttrSpec("root_joint", (str,), "root joint name, or 'none'"),
    AttrSpec("units_kp3d", (str,), "unit of kp3d and cam_t", value="mm"),
    AttrSpec("units_kp2d", (str,), "unit of kp2d", value="px"),
    AttrSpec("fingerprint", (str,), "identifies the exact inputs (caller provided)"),
    AttrSpec("producer", (str,), "generator/converter name and version (caller provided)"),
    AttrSpec("num_samples", (int,), "N, written at close"),
    AttrSpec("complete", (bool,), "True only once everything is written"),
)
ATTRIBUTE_SPECS: dict[str, AttrSpec] = {a.name: a for a in ATTRIBUTES}
#: types a caller's extra attribute may have (structured values go in as JSON strings)
EXTRA_ATTR_TYPES: tuple[type, ...] = (str, int, float, bool)


@dataclass(frozen=True)
class ShardInfo:
    """What a validated shard holds. ``attrs`` has every root attribute as a python value."""

    path: Path
    num_samples: int
    image_size: tuple[int, int]  # (H, W)
    joint_set: str
    root_joint: str
    num_joints: int  # 0 for joint_set "none"
    fields: tuple[str, ...]  # schema datasets present, in schema order
    fingerprint: str
    producer: str
    attrs: dict[str, Any] = field(compare=False)


def dtype_tag(dtype: np.dtype) -> str:
    """The schema's name for an HDF5 dataset dtype as h5py reports it."""
    if h5py.check_string_dtype(dtype) is not None:
        return STR
    return np.dtype(dtype).name


def decode_attr(value: Any) -> Any:
    """An h5py attribute value as a plain python value."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _fmt_shape(shape: tuple[int | str, ...]) -> str:
    return "[" + ",".join(str(s) for s in shape) + "]"


def validate(
    source: str | os.PathLike[str] | h5py.File,
    *,
    expected_num_joints: int | None = None,
) -> ShardInfo:
    """Check a shard against the schema and return what it holds.

    ``source`` is a path (opened read-only and closed again) or an open h5py.File.
    Raises ShardError with one line naming the file and the problem. Datasets not in the
    schema are allowed and ignored.
    """
    if isinstance(source, h5py.File):
        return _validate_open(source, Path(source.filename), expected_num_joints)
    path = Path(source)
    if PARTIAL_MARKER in path.name:
        raise ShardError(
            f"{path}: is the temporary file of an unfinished or killed write, not a shard"
        )
    if not path.exists():
        raise ShardError(f"{path}: shard file not found")
    if not path.is_file():
        raise ShardError(f"{path}: is not a regular file")
    f = open_hdf5(path)
    try:
        return _validate_open(f, path, expected_num_joints)
    finally:
        f.close()


def open_hdf5(path: Path) -> h5py.File:
    """Open a finished shard read-only, turning any failure into one ShardError line."""
    try:
        # Finished shards are immutable (writers rename complete files into place), so file
        # locks buy nothing and fail on some cluster file systems (NFS, Lustre).
        return h5py.File(path, "r", locking=False)
    except FileNotFoundError:
        raise ShardError(f"{path}: shard file not found") from None
    except PermissionError as e:
        raise ShardError(f"{path}: cannot open shard: {e.strerror or e}") from None
    except Exception as e:  # h5py reports HDF5 failures as OSError (sometimes others)
        reason = " ".join(str(e).split())
        raise ShardError(
            f"{path}: cannot be read as HDF5 (truncated or corrupt?): {reason}"
        ) from None


def _validate_open(f: h5py.File, path: Path, expected_num_joints: int | None) -> ShardInfo:
    def fail(problem: str) -> ShardError:
        return ShardError(f"{path}: {problem}")

    try:
        attrs = {str(k): decode_attr(f.attrs[k]) for k in f.attrs}
        present = {name: f[name] for name in f if name in DATASET_SPECS}
    except Exception as e:
        reason = " ".join(str(e).split())
        raise fail(f"cannot be read as HDF5 (truncated or corrupt?): {reason}") from None
    for name, obj in present.items():
        if not isinstance(obj, h5py.Dataset):
            raise fail(f"'{name}' is a {type(obj).__name__}, expected a dataset")

    if "schema_version" not in attrs and "complete" not in attrs:
        raise fail("is not a dabench shard (no schema_version or complete attribute)")
    if attrs.get("complete") is not True:
        raise fail("incomplete (interrupted write?): attribute complete is not True")
    version = attrs.get("schema_version")
    supported = ", ".join(map(str, SUPPORTED_SCHEMA_VERSIONS))
    if version is None:
        raise fail(f"attribute schema_version is missing (supported: {supported})")
    if version not in SUPPORTED_SCHEMA_VERSIONS or isinstance(version, bool):
        raise fail(f"schema_version {version!r} is not supported (supported: {supported})")
    missing = [a.name for a in ATTRIBUTES if a.name not in attrs]
    if missing:
        raise fail(f"missing required attributes: {', '.join(missing)}")
    for spec in ATTRIBUTES:
        value = attrs[spec.name]
        ok = isinstance(value, spec.types) and not (
            bool not in spec.types and isinstance(value, bool)
        )
        if not ok:
            expected = "/".join(t.__name__ for t in spec.types)
            raise fail(f"attribute {spec.name} must be {expected}, found {value!r}")
        if spec.value is not None and value != spec.value:
            raise fail(f"attribute {spec.name} is {value!r}, expected {spec.value!r}")

    n = attrs["num_samples"]
    if n < 0:
        raise fail(f"attribute num_samples is {n}, expected >= 0")
    has_joints = attrs["joint_set"] != NO_JOINTS
    required = [d.name for d in DATASETS if d.presence is Presence.ALWAYS]
    if has_joints:
        required += JOINT_DATASETS
    missing = [name for name in required if name not in present]
    if missing:
        raise fail(f"missing required datasets: {', '.join(missing)}")
    if not has_joints:
        stray = [name for name in JOINT_DATASETS if name in present]
        if stray:
            raise fail(f"joint_set is 'none' but has keypoint datasets: {', '.join(stray)}")

    for name, d in present.items():
        spec = DATASET_SPECS[name]
        tag = dtype_tag(d.dtype)
        if tag not in spec.dtypes:
            raise fail(f"dataset {name} has dtype {tag}, expected {' or '.join(spec.dtypes)}")
        if tag == STR and h5py.check_string_dtype(d.dtype).encoding != "utf-8":
            raise fail(f"dataset {name} holds ASCII strings, expected UTF-8")
        if d.ndim != 1 + len(spec.shape):
            raise fail(
                f"dataset {name} has shape {_fmt_shape(d.shape)}, "
                f"expected {_fmt_shape(('N', *spec.shape))}"
            )
        if d.shape[0] != n:
            raise fail(f"dataset {name} has {d.shape[0]} samples but num_samples is {n}")
        if spec.pair is not None and spec.pair not in present:
            raise fail(f"dataset {name} is present without {spec.pair} (both or neither)")

    # Bind the symbols H, W, K from the datasets that define them, then check every shape.
    images = present["images"]
    sizes: dict[str, int] = {}
    if images.shape[3] != 3 or images.shape[1] < 1 or images.shape[2] < 1:
        raise fail(f"dataset images has shape {_fmt_shape(images.shape)}, expected [N,H,W,3]")
    sizes["H"], sizes["W"] = int(images.shape[1]), int(images.shape[2])
    if has_joints:
        ks = {name: int(present[name].shape[1]) for name in ("kp2d", "kp3d", "vis")}
        if len(set(ks.values())) != 1:
            found = ", ".join(f"{k} has {v}" for k, v in ks.items())
            raise fail(f"inconsistent number of joints K: {found}")
        sizes["K"] = ks["kp2d"]
        if expected_num_joints is not None and sizes["K"] != expected_num_joints:
            raise fail(
                f"has {sizes['K']} joints, expected {expected_num_joints} "
                f"for joint_set {attrs['joint_set']!r}"
            )
    for name, d in present.items():
        expected_shape = (
            n,
            *(sizes[s] if isinstance(s, str) else s for s in DATASET_SPECS[name].shape),
        )
        if tuple(d.shape) != expected_shape:
            want = _fmt_shape(("N", *DATASET_SPECS[name].shape))
            raise fail(
                f"dataset {name} has shape {_fmt_shape(d.shape)}, expected {want} "
                f"= {_fmt_shape(expected_shape)}"
            )

    return ShardInfo(
        path=path,
        num_samples=n,
        image_size=(sizes["H"], sizes["W"]),
        joint_set=attrs["joint_set"],
        root_joint=attrs["root_joint"],
        num_joints=sizes.get("K", 0),
        fields=tuple(d.name for d in DATASETS if d.name in present),
        fingerprint=attrs["fingerprint"],
        producer=attrs["producer"],
        attrs=attrs,
    )


def check_extra_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Caller attributes as values h5py stores faithfully; reserved names are refused."""
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"attribute names must be non-empty strings, found {key!r}")
        if key in ATTRIBUTE_SPECS:
            raise ValueError(f"attribute {key!r} is set by the writer and cannot be passed")
        if isinstance(value, np.generic):
            value = value.item()
        if not isinstance(value, EXTRA_ATTR_TYPES):
            raise ValueError(
                f"attribute {key!r} has type {type(value).__name__}; allowed: str, int, "
                "float, bool (store structured values as JSON strings)"
            )
        out[key] = value
    return out
