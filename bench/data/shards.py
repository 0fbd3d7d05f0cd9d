"""Writing and reading HDF5 shards (schema: `bench.data.schema`).

- `ShardWriter` writes a shard into ``<name>.partial-<pid>`` beside the final path and renames
  it into place only once complete, so a final path only ever holds a finished shard.
- `read_shard_info` validates a shard and says what it holds.
- `ShardDataset` is a `torch.utils.data.Dataset` over one shard: it opens the file lazily
  in each process and reads batches with a few large reads (`__getitems__`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from bench.data.schema import (
    ATTRIBUTES,
    DATASET_SPECS,
    DATASETS,
    JOINT_DATASETS,
    NO_JOINTS,
    OPTIONAL_DATASETS,
    PARTIAL_MARKER,
    SCHEMA_VERSION,
    STR,
    DatasetSpec,
    ShardInfo,
    check_extra_attrs,
    dtype_tag,
    open_hdf5,
    validate,
)
from bench.errors import DabenchError, ShardError

__all__ = [
    "ShardDataset",
    "ShardInfo",
    "ShardWriteError",
    "ShardWriter",
    "read_shard_info",
]

# Image-like datasets (images, masks): one sample per chunk, gzip level 1. Measured on the
# 2-core dev box, 4,096 samples of 64x64 render-like images (shaded shapes on flat or
# textured, noisy backgrounds) + masks + hand21 labels, ShardWriter in batches of 256, read
# as one shuffled DataLoader pass (batch 256, 0 workers):
#   gzip-1: 7,100 written/s, 11,300 read/s, 6,750 B/sample
#   gzip-4: 6,200 written/s, 11,200 read/s, 6,680 B/sample (gzip-6: 5,600/s, 6,640 B)
#   lzf:    8,800 written/s, 15,600 read/s, 7,810 B/sample
# All meet the targets (>=2,000 written/s, >=5,000 read/s). Higher gzip levels save <2% of
# bytes for slower writes; lzf is faster but only h5py can decode it, and gzip is readable by
# every HDF5 reader, so gzip-1. Growing resizable datasets per append wrote as fast as
# preallocating (within 2%), so there is one code path: append grows.
IMAGE_COMPRESSION = "gzip"
IMAGE_COMPRESSION_LEVEL = 1
# Small per-sample fields (keypoints, intrinsics, ids) stay uncompressed in ~64 KiB chunks:
# random access would otherwise inflate a whole compressed chunk to get one 250-byte row,
# and they are <10% of a shard's bytes next to the images.
SMALL_CHUNK_BYTES = 64 * 1024
# Reading a batch: rows closer than this many bytes are fetched in one read (for small
# fields a batch then costs one read; the skipped rows are cheaper than another call).
MERGE_GAP_BYTES = 64 * 1024
_VLEN_ROW_BYTES = 16  # an HDF5 variable-length reference in a chunk


class ShardWriteError(DabenchError, ValueError):
    """A batch handed to ShardWriter does not fit the declared shard (field, dtype, shape)."""


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _fsync(path: Path, directory: bool = False) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        if directory:  # not every platform / file system can open a directory
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


class ShardWriter:
    """Write one shard; use as a context manager.

    ``fields`` declares the optional datasets ("masks", "cam_R", "cam_t", "seq", "frame",
    "view", "subject") that every `append` then carries, beside "images" and, unless
    ``joint_set`` is "none", "kp2d", "kp3d", "vis" and "K". On success the file appears at
    ``path`` atomically; on any exception inside the ``with`` block nothing is left behind.
    The same data and arguments always give a byte-identical file.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        dataset: str,
        joint_set: str,
        root_joint: str,
        image_size: tuple[int, int],
        num_joints: int,
        fingerprint: str,
        producer: str,
        fields: Iterable[str] = (),
        attrs: Mapping[str, Any] | None = None,
        expected_samples: int | None = None,
        overwrite: bool = False,
    ) -> None:
        self.path = Path(path)
        for name, value in (
            ("dataset", dataset),
            ("joint_set", joint_set),
            ("root_joint", root_joint),
            ("fingerprint", fingerprint),
            ("producer", producer),
        ):
            if not isinstance(value, str) or not value:
                raise ShardWriteError(
                    f"{self.path}: {name} must be a non-empty string, got {value!r}"
                )
        if (
            not isinstance(image_size, Sequence)
            or len(image_size) != 2
            or not all(isinstance(s, int | np.integer) and s > 0 for s in image_size)
        ):
            raise ShardWriteError(
                f"{self.path}: image_size must be (H, W) with positive ints, got {image_size!r}"
            )
        if joint_set == NO_JOINTS:
            if num_joints != 0:
                raise ShardWriteError(
                    f"{self.path}: joint_set 'none' needs num_joints=0, got {num_joints}"
                )
        elif not isinstance(num_joints, int | np.integer) or num_joints < 1:
            raise ShardWriteError(
                f"{self.path}: num_joints must be >= 1 for joint_set "
                f"{joint_set!r}, got {num_joints!r}"
            )
        fields = [fields] if isinstance(fields, str) else list(fields)
        unknown = [f for f in fields if f not in OPTIONAL_DATASETS]
        if unknown:
            raise ShardWriteError(
                f"{self.path}: unknown optional field(s) "
                f"{', '.join(map(repr, unknown))}; valid: "
                f"{', '.join(OPTIONAL_DATASETS)}"
            )
        for f in fields:
            pair = DATASET_SPECS[f].pair
            if pair is not None and pair not in fields:
                raise ShardWriteError(f"{self.path}: field {f} needs {pair} too (both or neither)")
        if expected_samples is not None and expected_samples < 0:
            raise ShardWriteError(
                f"{self.path}: expected_samples must be >= 0, got {expected_samples}"
            )
        extra = check_extra_attrs(attrs or {})

        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.num_joints = int(num_joints)
        self.expected_samples = expected_samples
        wanted = {"images", *fields}
        if joint_set != NO_JOINTS:
            wanted.update(JOINT_DATASETS)
        # schema order, so that files never depend on the order the caller listed fields
        self.fields: tuple[str, ...] = tuple(d.name for d in DATASETS if d.name in wanted)
        self._sizes = {"H": self.image_size[0], "W": self.image_size[1], "K": self.num_joints}
        self._tags: dict[str, str] = {}  # seq/subject: int or str, fixed by the first batch
        self._count = 0
        self._state = "open"
        self._file: h5py.File | None = None
        self._tmp = self.path.with_name(f"{self.path.name}{PARTIAL_MARKER}{os.getpid()}")

        if self.path.is_dir():
            raise DabenchError(f"{self.path}: is a directory, expected a shard file path")
        if self.path.exists() and not overwrite:
            raise DabenchError(f"{self.path}: already exists; pass overwrite=True to replace it")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = h5py.File(self._tmp, "w")
        except Exception as e:
            self._state = "aborted"
            with contextlib.suppress(OSError):
                self._tmp.unlink()
            raise DabenchError(f"{self.path}: cannot write a shard there: {_one_line(e)}") from None

        root = {
            "schema_version": SCHEMA_VERSION,
            "dataset": dataset,
            "joint_set": joint_set,
            "root_joint": root_joint,
            "units_kp3d": "mm",
            "units_kp2d": "px",
            "fingerprint": fingerprint,
            "producer": producer,
            "num_samples": 0,
            "complete": False,
        }
        assert list(root) == [a.name for a in ATTRIBUTES]
        try:
            for key, value in [*root.items(), *sorted(extra.items())]:
                self._file.attrs[key] = _attr_value(value)
        except BaseException:
            self.abort()
            raise

    # -- context manager ------------------------------------------------------------------

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # -- writing --------------------------------------------------------------------------

    @property
    def num_written(self) -> int:
        return self._count

    def append(self, batch: Mapping[str, Any]) -> None:
        """Add a batch of samples: a mapping holding every declared field, same length."""
        if self._state != "open":
            raise DabenchError(f"{self.path}: writer is {self._state}, cannot append")
        missing = [f for f in self.fields if f not in batch]
        extra = [k for k in batch if k not in self.fields]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing field(s) {', '.join(missing)}")
            if extra:
                parts.append(f"undeclared field(s) {', '.join(map(str, extra))}")
            raise ShardWriteError(
                f"{self.path}: batch has {' and '.join(parts)}; "
                f"this shard takes exactly: {', '.join(self.fields)}"
            )
        arrays = {name: self._coerce(name, batch[name]) for name in self.fields}
        lengths = {name: len(a) for name, a in arrays.items()}
        if len(set(lengths.values())) != 1:
            found = ", ".join(f"{k}={v}" for k, v in lengths.items())
            raise ShardWriteError(f"{self.path}: batch fields differ in length: {found}")
        n = lengths["images"]
        if n == 0:
            return
        assert self._file is not None
        try:
            if not self._datasets_created():
                self._create_datasets()
            for name, a in arrays.items():
                d = self._file[name]
                d.resize(self._count + n, axis=0)
                d[self._count : self._count + n] = a
        except Exception as e:
            raise DabenchError(f"{self._tmp}: writing failed: {_one_line(e)}") from e
        self._count += n

    def close(self) -> Path:
        """Finish the shard and move it into place; returns the final path."""
        if self._state == "closed":
            return self.path
        if self._state != "open":
            raise DabenchError(f"{self.path}: writer is {self._state}, cannot close")
        assert self._file is not None
        try:
            if self.expected_samples is not None and self._count != self.expected_samples:
                raise DabenchError(
                    f"{self.path}: expected {self.expected_samples} samples, "
                    f"{self._count} were written; nothing was saved"
                )
            if not self._datasets_created():
                self._create_datasets()
            self._file.attrs["num_samples"] = _attr_value(self._count)
            self._file.attrs["complete"] = _attr_value(True)
            self._file.flush()
            validate(self._file)  # a writer bug must never produce a "complete" bad shard
            self._file.close()
            self._file = None
            _fsync(self._tmp)  # the data must be on disk before the name says "complete"
            os.replace(self._tmp, self.path)
            _fsync(self.path.parent, directory=True)
        except BaseException:
            self.abort()
            raise
        self._state = "closed"
        return self.path

    def abort(self) -> None:
        """Drop everything written so far (removes the temp file). Safe to call twice."""
        if self._state == "closed":
            return
        self._state = "aborted"
        if self._file is not None:
            with contextlib.suppress(Exception):
                self._file.close()
            self._file = None
        with contextlib.suppress(FileNotFoundError):
            self._tmp.unlink()

    # -- internals ------------------------------------------------------------------------

    def _datasets_created(self) -> bool:
        assert self._file is not None
        return "images" in self._file

    def _create_datasets(self) -> None:
        assert self._file is not None
        for name in self.fields:
            spec = DATASET_SPECS[name]
            tag = self._tags.get(name, spec.dtypes[0])
            dtype = h5py.string_dtype("utf-8") if tag == STR else np.dtype(tag)
            shape = self._shape(spec)
            if spec.image_like:
                chunks = (1, *shape)
                compression = {
                    "compression": IMAGE_COMPRESSION,
                    "compression_opts": IMAGE_COMPRESSION_LEVEL,
                }
            else:
                row_bytes = (
                    _VLEN_ROW_BYTES
                    if tag == STR
                    else dtype.itemsize * int(np.prod(shape, dtype=np.int64))
                )
                rows = max(1, SMALL_CHUNK_BYTES // max(1, row_bytes))
                if self.expected_samples:
                    rows = min(rows, self.expected_samples)
                chunks = (rows, *shape)
                compression = {}
            self._file.create_dataset(
                name,
                shape=(0, *shape),
                maxshape=(None, *shape),
                dtype=dtype,
                chunks=chunks,
                track_times=False,
                **compression,
            )

    def _shape(self, spec: DatasetSpec) -> tuple[int, ...]:
        return tuple(self._sizes[s] if isinstance(s, str) else s for s in spec.shape)

    def _coerce(self, name: str, value: Any) -> np.ndarray:
        """The batch column as the stored dtype, or a ShardWriteError naming the field."""
        spec = DATASET_SPECS[name]
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        a = np.asarray(value)

        def bad(problem: str) -> ShardWriteError:
            return ShardWriteError(f"{self.path}: field {name}: {problem}")

        want = (a.shape[0] if a.ndim else "n", *self._shape(spec))
        if a.ndim != len(want) or tuple(a.shape[1:]) != tuple(want[1:]):
            raise bad(f"shape {list(a.shape)}, expected [n,{','.join(map(str, want[1:]))}]")
        kind = a.dtype.kind
        if name == "images":
            if a.dtype != np.uint8:
                raise bad(f"dtype {a.dtype}, expected uint8 (0..255, not normalised)")
            return a
        if name == "masks":
            if kind not in "biu":
                raise bad(f"dtype {a.dtype}, expected uint8 or bool with values 0/1")
            if a.size and (a.min() < 0 or a.max() > 1):
                raise bad(f"values must be 0/1, found range {a.min()}..{a.max()}")
            return a.astype(np.uint8, copy=False)
        if spec.dtypes == ("float32",):
            if kind not in "fiu":
                raise bad(f"dtype {a.dtype}, expected float32")
            return a.astype(np.float32, copy=False)
        if spec.dtypes == ("bool",):
            if kind == "b":
                return a
            if kind in "iu" and (a.size == 0 or (a.min() >= 0 and a.max() <= 1)):
                return a.astype(bool)
            raise bad(f"dtype {a.dtype}, expected bool")
        # id columns: an integer dtype, or (where allowed) strings
        if kind in "USO" and STR in spec.dtypes:
            tag = STR
        elif kind in "iu":
            tag = spec.dtypes[0]
        else:
            allowed = " or ".join("strings" if t == STR else t for t in spec.dtypes)
            raise bad(f"dtype {a.dtype}, expected {allowed}")
        if self._tags.setdefault(name, tag) != tag:
            raise bad(
                f"got {'strings' if tag == STR else 'integers'} but earlier batches had "
                f"{'strings' if self._tags[name] == STR else 'integers'}"
            )
        if tag == STR:
            out = np.empty(a.shape, dtype=object)
            for i, v in enumerate(a.tolist()):
                if isinstance(v, bytes):
                    v = v.decode("utf-8")
                if not isinstance(v, str):
                    raise bad(f"element {i} is {type(v).__name__}, expected str")
                out[i] = v
            return out
        info = np.iinfo(tag)
        if a.size and (a.min() < info.min or a.max() > info.max):
            raise bad(f"values {a.min()}..{a.max()} do not fit {tag}")
        return a.astype(tag, copy=False)


def _attr_value(value: Any) -> Any:
    # fixed numpy types: h5py's choice for bare python values is platform dependent
    if isinstance(value, bool | np.bool_):
        return np.bool_(value)
    if isinstance(value, int | np.integer):
        return np.int64(value)
    if isinstance(value, float | np.floating):
        return np.float64(value)
    return value


def read_shard_info(path: str | os.PathLike[str]) -> ShardInfo:
    """Validate a shard and say what it holds (ShardError if it is missing or invalid)."""
    return validate(path)


# Handles inherited from a parent process across fork: kept referenced and never used or
# closed in the child, because HDF5 state must not be touched from two processes.
_INHERITED: list[h5py.File] = []


class ShardDataset(Dataset):
    """One shard as a map-style dataset of dicts of tensors.

    Sample ``i`` is a dict: ``images`` uint8 [H,W,3] (not normalised), ``masks`` uint8
    [H,W], ``kp2d``/``kp3d``/``K``/``cam_R``/``cam_t`` float32, ``vis`` bool, integer ids as
    0-d int tensors (string ids as python str), and ``index``: ``i``. ``indices`` restricts
    the dataset to those stored rows (sample ``i`` is stored row ``indices[i]``).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        fields: Sequence[str] | None = None,
        indices: Sequence[int] | None = None,
    ) -> None:
        self.path = Path(path)
        self.info: ShardInfo = validate(self.path)
        if fields is None:
            fields = self.info.fields
        elif isinstance(fields, str):
            fields = [fields]
        absent = [f for f in fields if f not in self.info.fields]
        if absent:
            raise ShardError(
                f"{self.path}: field(s) {', '.join(map(repr, absent))} not in this "
                f"shard; available: {', '.join(self.info.fields)}"
            )
        self.fields: tuple[str, ...] = tuple(dict.fromkeys(fields))
        self._rows: np.ndarray | None = None
        if indices is not None:
            rows = np.asarray(indices)
            if rows.ndim != 1 or (rows.size and rows.dtype.kind not in "iu"):
                raise DabenchError(f"{self.path}: indices must be a 1-D sequence of ints")
            rows = rows.astype(np.int64)
            n = self.info.num_samples
            bad = rows[(rows < 0) | (rows >= n)]
            if bad.size:
                raise DabenchError(f"{self.path}: indices must lie in [0, {n}), found {bad[0]}")
            self._rows = rows
        self._string_fields = self._find_string_fields()
        self._file: h5py.File | None = None
        self._pid: int | None = None
        self._dsets: dict[str, Any] = {}

    def _find_string_fields(self) -> frozenset[str]:
        candidates = [f for f in self.fields if STR in DATASET_SPECS[f].dtypes]
        if not candidates:
            return frozenset()
        f = open_hdf5(self.path)
        try:
            return frozenset(c for c in candidates if dtype_tag(f[c].dtype) == STR)
        finally:
            f.close()

    def __len__(self) -> int:
        return self.info.num_samples if self._rows is None else len(self._rows)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_file=None, _pid=None, _dsets={})
        return state

    def close(self) -> None:
        """Release this process's file handle (reopened on the next access)."""
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file, self._pid, self._dsets = None, None, {}

    def _handle(self) -> dict[str, tuple[h5py.Dataset, Any]]:
        pid = os.getpid()
        if self._file is None or self._pid != pid:
            if self._file is not None:
                _INHERITED.append(self._file)
            self._file, self._pid, self._dsets = None, None, {}
            f = open_hdf5(self.path)
            try:
                n = int(f.attrs.get("num_samples", -1))
                fp = f.attrs.get("fingerprint", None)
                if n != self.info.num_samples or fp != self.info.fingerprint:
                    raise ShardError(
                        f"{self.path}: the file changed since the dataset was "
                        "created (num_samples or fingerprint differ)"
                    )
                # string ids come back as python str, not bytes
                dsets = {
                    name: (f[name], f[name].asstr() if name in self._string_fields else f[name])
                    for name in self.fields
                }
            except BaseException:
                f.close()
                raise
            self._file, self._pid, self._dsets = f, pid, dsets
        return self._dsets

    def _position(self, i: Any) -> int:
        n = len(self)
        try:
            j = int(i)
        except TypeError:
            raise TypeError(f"sample index must be an int, got {type(i).__name__}") from None
        if j != i or not -n <= j < n:
            raise IndexError(f"sample index {i} out of range for {n} samples in {self.path}")
        return j + n if j < 0 else j

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """Samples for ``indices`` (any order, duplicates allowed), read with a few big reads.

        Rows are fetched once each in ascending order; a run of adjacent rows (for small
        fields: rows within MERGE_GAP_BYTES) is one read. One h5py fancy selection per dataset
        would read far slower: HDF5 walks an irregular selection over per-sample chunks at
        ~1,200 samples/s here against ~20,000/s for plain slices.
        """
        positions = np.fromiter((self._position(i) for i in indices), dtype=np.int64)
        rows = positions if self._rows is None else self._rows[positions]
        uniq, inverse = np.unique(rows, return_inverse=True)
        dsets = self._handle()
        columns: dict[str, Any] = {}
        for name in self.fields:
            block = self._read_rows(name, *dsets[name], uniq, rows, positions)
            if name in self._string_fields:
                columns[name] = [block[k] for k in inverse.tolist()]
            else:
                in_order = block if np.array_equal(uniq, rows) else block[inverse]
                columns[name] = torch.from_numpy(in_order)
        out = []
        for j, pos in enumerate(positions.tolist()):
            sample = {name: col[j] for name, col in columns.items()}
            sample["index"] = pos
            out.append(sample)
        return out

    def _read_rows(
        self,
        name: str,
        raw: h5py.Dataset,
        d: Any,
        uniq: np.ndarray,
        rows: np.ndarray,
        positions: np.ndarray,
    ) -> np.ndarray:
        dtype = np.dtype(object) if name in self._string_fields else raw.dtype
        if uniq.size == 0:
            return np.empty((0, *raw.shape[1:]), dtype=dtype)
        if DATASET_SPECS[name].image_like:
            gap = 1  # one sample per compressed chunk: skipped rows would be inflated for nothing
        else:
            row_bytes = (
                _VLEN_ROW_BYTES
                if name in self._string_fields
                else raw.dtype.itemsize * int(np.prod(raw.shape[1:], dtype=np.int64))
            )
            gap = max(1, MERGE_GAP_BYTES // max(1, row_bytes))
        cuts = np.flatnonzero(np.diff(uniq) > gap) + 1
        starts = np.concatenate(([0], cuts)).tolist()
        ends = np.concatenate((cuts, [uniq.size])).tolist()
        try:
            if len(starts) == 1:
                lo = int(uniq[0])
                return d[lo : int(uniq[-1]) + 1][uniq - lo]
            out = np.empty((uniq.size, *raw.shape[1:]), dtype=dtype)
            for a, b in zip(starts, ends, strict=True):
                lo = int(uniq[a])
                out[a:b] = d[lo : int(uniq[b - 1]) + 1][uniq[a:b] - lo]
            return out
        except Exception as e:
            raise self._locate_failure(name, d, uniq, rows, positions, e) from e

    def _locate_failure(
        self,
        name: str,
        d: Any,
        uniq: np.ndarray,
        rows: np.ndarray,
        positions: np.ndarray,
        first: Exception,
    ) -> ShardError:
        """The ShardError for the first unreadable row among ``uniq`` (reads row by row)."""
        for r in uniq.tolist():
            try:
                d[r : r + 1]
            except Exception as e:
                pos = int(positions[np.flatnonzero(rows == r)[0]])
                where = f"sample {pos}" + (f" (stored row {r})" if pos != r else "")
                return ShardError(
                    f"{self.path}: cannot read {where}, dataset {name}: {_one_line(e)}"
                )
        return ShardError(
            f"{self.path}: cannot read dataset {name} for samples "
            f"{positions.tolist()[:8]}...: {_one_line(first)}"
        )
