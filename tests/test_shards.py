"""Behaviour of the HDF5 shard format: round trips, atomic writes, validation, lazy reading."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import shutil
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from bench.data.schema import validate
from bench.data.shards import ShardDataset, ShardWriteError, ShardWriter, read_shard_info
from bench.errors import DabenchError, ShardError

N, K, H, W = 10, 21, 16, 24  # H != W so that a swapped axis cannot pass
ALL_OPTIONAL = ("masks", "cam_R", "cam_t", "seq", "frame", "view", "subject")


def make_columns(
    n: int = N, *, seed: int = 0, string_ids: bool = True, joints: bool = True
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    cols: dict[str, np.ndarray] = {
        "images": rng.integers(0, 256, (n, H, W, 3), dtype=np.uint8),
        "masks": rng.integers(0, 2, (n, H, W), dtype=np.uint8),
        "cam_R": rng.standard_normal((n, 3, 3)).astype(np.float32),
        "cam_t": rng.standard_normal((n, 3)).astype(np.float32) * 1000,
        "frame": rng.integers(-5, 10_000, n).astype(np.int32),
        "view": rng.integers(0, 8, n).astype(np.int16),
    }
    if joints:
        cols |= {
            "kp2d": rng.uniform(-2, W + 2, (n, K, 2)).astype(np.float32),
            "kp3d": rng.standard_normal((n, K, 3)).astype(np.float32) * 100,
            "vis": rng.random((n, K)) > 0.3,
            "K": rng.standard_normal((n, 3, 3)).astype(np.float32),
        }
    if string_ids:
        cols["seq"] = np.array([f"seq-{i // 3}-é" for i in range(n)])
        cols["subject"] = np.array([f"S{i % 4}" for i in range(n)])
    else:
        cols["seq"] = rng.integers(0, 2**40, n).astype(np.int64)
        cols["subject"] = rng.integers(0, 9, n).astype(np.int32)
    return cols


def writer(path: Path, fields: tuple[str, ...] = ALL_OPTIONAL, **kw: Any) -> ShardWriter:
    args: dict[str, Any] = dict(
        dataset="synth-hand-clean",
        joint_set="hand21",
        root_joint="wrist",
        image_size=(H, W),
        num_joints=K,
        fingerprint="sha256:abc",
        producer="tests 1.0",
        fields=fields,
    )
    args.update(kw)
    return ShardWriter(path, **args)


def write_shard(
    path: Path,
    cols: dict[str, np.ndarray] | None = None,
    fields: tuple[str, ...] = ALL_OPTIONAL,
    step: int = 4,
    **kw: Any,
) -> Path:
    cols = make_columns() if cols is None else cols
    with writer(path, fields, **kw) as w:
        n = len(cols["images"])
        for s in range(0, n, step):
            w.append({k: v[s : s + step] for k, v in cols.items()})
    return path


def as_numpy(value: Any) -> Any:
    return value.numpy() if isinstance(value, torch.Tensor) else value


# -- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("string_ids", [True, False])
def test_every_field_round_trips_bit_exact(tmp_path: Path, string_ids: bool) -> None:
    cols = make_columns(string_ids=string_ids)
    path = write_shard(tmp_path / "a" / "train.h5", cols, attrs={"seed": 7, "note": "x"})
    ds = ShardDataset(path)
    assert len(ds) == N
    assert set(ds.fields) == set(cols)
    for i in range(N):
        sample = ds[i]
        assert sample["index"] == i
        for name, col in cols.items():
            got = sample[name]
            if string_ids and name in ("seq", "subject"):
                assert isinstance(got, str)
                assert got == col[i]
            else:
                assert isinstance(got, torch.Tensor)
                arr = got.numpy()
                assert arr.dtype == col.dtype, name
                assert arr.shape == col[i].shape, name
                assert arr.tobytes() == col[i].tobytes(), name
    info = read_shard_info(path)
    assert info.num_samples == N and info.image_size == (H, W) and info.num_joints == K
    assert info.joint_set == "hand21" and info.root_joint == "wrist"
    assert info.fingerprint == "sha256:abc" and info.producer == "tests 1.0"
    assert info.attrs["seed"] == 7 and info.attrs["note"] == "x"
    assert info.attrs["complete"] is True and info.attrs["schema_version"] == 1
    assert info.attrs["units_kp3d"] == "mm" and info.attrs["units_kp2d"] == "px"


def test_float64_input_is_stored_as_float32(tmp_path: Path) -> None:
    cols = make_columns()
    cols64 = {k: (v.astype(np.float64) if v.dtype == np.float32 else v) for k, v in cols.items()}
    path = write_shard(tmp_path / "t.h5", cols64)
    with h5py.File(path, "r") as f:
        for name in ("kp2d", "kp3d", "K", "cam_R", "cam_t"):
            assert f[name].dtype == np.float32
            np.testing.assert_array_equal(f[name][...], cols[name])


def test_images_only_shard_without_joints_round_trips(tmp_path: Path) -> None:
    cols = {"images": make_columns()["images"]}
    path = write_shard(
        tmp_path / "bg.h5", cols, fields=(), joint_set="none", root_joint="none", num_joints=0
    )
    info = read_shard_info(path)
    assert info.fields == ("images",) and info.num_joints == 0 and info.joint_set == "none"
    ds = ShardDataset(path)
    for i in range(N):
        sample = ds[i]
        assert set(sample) == {"images", "index"}
        assert torch.equal(sample["images"], torch.from_numpy(cols["images"][i]))


def test_batched_reads_equal_single_reads_any_order_with_duplicates(tmp_path: Path) -> None:
    path = write_shard(tmp_path / "t.h5")
    ds = ShardDataset(path)
    order = [7, 2, 2, 9, 0, 5, 7, 1, -1]
    batch = ds.__getitems__(order)
    assert [s["index"] for s in batch] == [i % N for i in order]
    for i, sample in zip(order, batch, strict=True):
        single = ds[i]
        assert set(sample) == set(single)
        for name in sample:
            a, b = as_numpy(sample[name]), as_numpy(single[name])
            assert np.array_equal(a, b), name
    collated = torch.utils.data.default_collate(batch)
    assert collated["images"].shape == (len(order), H, W, 3)
    assert collated["seq"] == [s["seq"] for s in batch]


def test_subset_indices_and_field_selection(tmp_path: Path) -> None:
    cols = make_columns()
    path = write_shard(tmp_path / "t.h5", cols)
    ds = ShardDataset(path, fields=["kp3d", "images"], indices=[8, 3, 3, 0])
    assert len(ds) == 4
    batch = ds.__getitems__([1, 0, 3])
    assert [s["index"] for s in batch] == [1, 0, 3]
    for sample, row in zip(batch, [3, 8, 0], strict=True):
        assert set(sample) == {"kp3d", "images", "index"}
        assert np.array_equal(sample["kp3d"].numpy(), cols["kp3d"][row])
        assert np.array_equal(ds[sample["index"]]["images"].numpy(), cols["images"][row])
    with pytest.raises(IndexError):
        ds[4]


def test_unknown_field_lists_available_fields(tmp_path: Path) -> None:
    cols = {k: v for k, v in make_columns().items() if k in ("images", "kp2d", "kp3d", "vis", "K")}
    path = write_shard(tmp_path / "u.h5", cols, fields=())
    with pytest.raises(ShardError, match=r"'masks'.*available: images, kp2d, kp3d, vis, K") as e:
        ShardDataset(path, fields=["images", "masks"])
    assert str(path) in str(e.value)


# -- atomic, deterministic writing ---------------------------------------------------------


def test_identical_writes_are_byte_identical(tmp_path: Path) -> None:
    a = write_shard(tmp_path / "a.h5", attrs={"seed": 1})
    time.sleep(1.1)  # a stored timestamp would now differ
    b = write_shard(tmp_path / "b.h5", attrs={"seed": 1})
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_exception_inside_with_leaves_nothing(tmp_path: Path, exc: type[BaseException]) -> None:
    cols = make_columns()
    path = tmp_path / "train.h5"
    with pytest.raises(exc), writer(path) as w:
        w.append({k: v[:5] for k, v in cols.items()})
        raise exc("interrupted")
    assert list(tmp_path.iterdir()) == []


def _write_and_die(path: str) -> None:
    w = writer(Path(path))
    w.append({k: v[:5] for k, v in make_columns().items()})
    # make the file readable, so the reader must refuse it for being incomplete
    w._file.flush()  # type: ignore[union-attr]
    os._exit(0)  # like SIGKILL: no close, no cleanup


def test_killed_writer_leaves_only_a_refused_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "train.h5"
    proc = multiprocessing.get_context("fork").Process(target=_write_and_die, args=(str(path),))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0
    assert not path.exists()
    (temp,) = tmp_path.iterdir()
    assert temp.name.startswith("train.h5.partial-")
    with pytest.raises(ShardError, match="temporary file"):
        read_shard_info(temp)
    renamed = tmp_path / "renamed.h5"
    shutil.copy(temp, renamed)
    with pytest.raises(ShardError, match=r"incomplete \(interrupted write\?\)") as e:
        ShardDataset(renamed)
    assert str(renamed) in str(e.value)


def test_existing_file_is_refused_without_overwrite(tmp_path: Path) -> None:
    path = write_shard(tmp_path / "t.h5", make_columns(seed=1))
    before = path.read_bytes()
    with pytest.raises(DabenchError, match="overwrite=True") as e:
        write_shard(path, make_columns(seed=2))
    assert str(path) in str(e.value)
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]
    write_shard(path, make_columns(seed=2), overwrite=True)
    assert path.read_bytes() != before
    assert list(tmp_path.iterdir()) == [path]


def test_unwritable_location_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("not a directory")
    path = tmp_path / "a_file" / "sub" / "train.h5"
    with pytest.raises(DabenchError, match="cannot write a shard there") as e:
        writer(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores permissions")
def test_read_only_directory_is_one_clear_error(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(DabenchError, match="cannot write a shard there"):
            writer(ro / "train.h5")
    finally:
        ro.chmod(0o700)


def test_expected_samples_mismatch_saves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "t.h5"
    with pytest.raises(DabenchError, match="expected 12 samples, 10 were written"):
        write_shard(path, expected_samples=12)
    assert list(tmp_path.iterdir()) == []
    w = writer(path, expected_samples=N + 1)  # without `with`: close() itself cleans up
    w.append(make_columns())
    with pytest.raises(DabenchError, match=f"expected {N + 1} samples, {N} were written"):
        w.close()
    assert list(tmp_path.iterdir()) == []
    write_shard(path, expected_samples=N)
    assert read_shard_info(path).num_samples == N


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c.pop("vis"), "missing field.*vis"),
        (lambda c: c.update(extra=c["frame"]), "undeclared field.*extra"),
        (lambda c: c.update(images=c["images"].astype(np.float32)), "field images: dtype"),
        (lambda c: c.update(kp2d=c["kp2d"][:, :-1]), r"field kp2d: shape \[4, 20, 2\]"),
        (lambda c: c.update(masks=c["masks"] * 255), "field masks: values must be 0/1"),
        (lambda c: c.update(frame=c["frame"][:3]), "differ in length"),
        (lambda c: c.update(view=c["view"].astype(np.int64) + 40_000), "field view: values"),
    ],
)
def test_bad_batches_name_the_field(tmp_path: Path, change: Any, message: str) -> None:
    cols = {k: v[:4] for k, v in make_columns().items()}
    change(cols)
    with pytest.raises(ShardWriteError, match=message), writer(tmp_path / "t.h5") as w:
        w.append(cols)
    assert list(tmp_path.iterdir()) == []


# -- validation ----------------------------------------------------------------------------


def build_raw(
    path: Path,
    *,
    drop: tuple[str, ...] = (),
    attrs: dict[str, Any] | None = None,
    datasets: dict[str, np.ndarray] | None = None,
) -> Path:
    """A shard written directly with h5py, with parts dropped or replaced."""
    cols = make_columns(string_ids=False)
    cols.update(datasets or {})
    root: dict[str, Any] = dict(
        schema_version=1,
        dataset="d",
        joint_set="hand21",
        root_joint="wrist",
        units_kp3d="mm",
        units_kp2d="px",
        fingerprint="fp",
        producer="p",
        num_samples=N,
        complete=True,
    )
    root.update(attrs or {})
    with h5py.File(path, "w") as f:
        for k, v in root.items():
            if k not in drop:
                f.attrs[k] = v
        for k, v in cols.items():
            if k not in drop:
                f.create_dataset(k, data=v)
    return path


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"attrs": {"complete": False}}, r"incomplete \(interrupted write\?\)"),
        ({"drop": ("complete",)}, r"incomplete \(interrupted write\?\)"),
        ({"attrs": {"schema_version": 2}}, r"schema_version 2 is not supported \(supported: 1\)"),
        ({"drop": ("schema_version",)}, r"schema_version is missing \(supported: 1\)"),
        ({"drop": ("dataset", "producer")}, "missing required attributes: dataset, producer"),
        ({"drop": ("kp3d", "K")}, "missing required datasets: kp3d, K"),
        (
            {"datasets": {"kp2d": np.zeros((N, K, 2))}},
            "dataset kp2d has dtype float64, expected float32",
        ),
        (
            {"datasets": {"vis": np.ones((N, K), np.uint8)}},
            "dataset vis has dtype uint8, expected bool",
        ),
        (
            {"datasets": {"vis": np.ones((N - 1, K), bool)}},
            f"dataset vis has {N - 1} samples but num_samples is {N}",
        ),
        ({"attrs": {"num_samples": N + 1}}, f"has {N} samples but num_samples is {N + 1}"),
        (
            {"datasets": {"kp3d": np.zeros((N, K - 1, 3), np.float32)}},
            f"inconsistent number of joints K: kp2d has {K}, kp3d has {K - 1}, vis has {K}",
        ),
        (
            {"datasets": {"images": np.zeros((N, H, W, 4), np.uint8)}},
            r"dataset images has shape \[10,16,24,4\], expected \[N,H,W,3\]",
        ),
        ({"datasets": {"images": np.zeros((N, H, W), np.uint8)}}, "dataset images has shape"),
        (
            {"datasets": {"masks": np.zeros((N, H, W + 1), np.uint8)}},
            r"dataset masks has shape \[10,16,25\], expected \[N,H,W\] = \[10,16,24\]",
        ),
        ({"drop": ("cam_t",)}, r"cam_R is present without cam_t \(both or neither\)"),
        ({"attrs": {"units_kp3d": "m"}}, "attribute units_kp3d is 'm', expected 'mm'"),
        ({"attrs": {"joint_set": "none"}}, "joint_set is 'none' but has keypoint datasets"),
    ],
)
def test_schema_errors_name_the_file_and_the_problem(
    tmp_path: Path, kwargs: dict[str, Any], message: str
) -> None:
    path = build_raw(tmp_path / "bad.h5", **kwargs)
    for check in (read_shard_info, ShardDataset):
        with pytest.raises(ShardError, match=message) as e:
            check(path)
        assert str(e.value).startswith(f"{path}: ")
        assert "\n" not in str(e.value)


def test_a_correct_raw_file_passes_and_unknown_datasets_are_ignored(tmp_path: Path) -> None:
    path = build_raw(tmp_path / "ok.h5", datasets={"my_extra": np.zeros(3)})
    info = read_shard_info(path)
    assert "my_extra" not in info.fields and info.num_joints == K
    assert validate(path, expected_num_joints=K) == info
    with pytest.raises(ShardError, match=f"has {K} joints, expected 17"):
        validate(path, expected_num_joints=17)


def test_not_hdf5_missing_and_truncated_files(tmp_path: Path) -> None:
    text = tmp_path / "text.h5"
    text.write_text("hello")
    with pytest.raises(ShardError, match=r"cannot be read as HDF5 \(truncated or corrupt\?\)"):
        read_shard_info(text)
    with pytest.raises(ShardError, match="not found") as e:
        ShardDataset(tmp_path / "nope.h5")
    assert str(tmp_path / "nope.h5") in str(e.value)

    good = write_shard(tmp_path / "good.h5")
    cut = tmp_path / "cut.h5"
    data = good.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    for check in (read_shard_info, ShardDataset):
        with pytest.raises(ShardError, match=r"cannot be read as HDF5 \(truncated") as e:
            check(cut)
        assert str(cut) in str(e.value) and "\n" not in str(e.value)


def test_corrupt_image_chunk_fails_at_read_naming_the_sample(tmp_path: Path) -> None:
    cols = make_columns()
    path = write_shard(tmp_path / "t.h5", cols)
    bad = 6
    with h5py.File(path, "r") as f:
        chunk = f["images"].id.get_chunk_info_by_coord((bad, 0, 0, 0))
    with open(path, "r+b") as fh:
        fh.seek(chunk.byte_offset + chunk.size // 2)
        middle = fh.read(16)
        fh.seek(chunk.byte_offset + chunk.size // 2)
        fh.write(bytes(b ^ 0xFF for b in middle))
    ds = ShardDataset(path)  # only metadata is checked at open
    assert np.array_equal(ds[bad - 1]["images"].numpy(), cols["images"][bad - 1])
    with pytest.raises(ShardError, match=f"cannot read sample {bad}, dataset images") as e:
        ds[bad]
    assert str(path) in str(e.value)
    with pytest.raises(ShardError, match=f"sample {bad},"):
        ds.__getitems__(list(range(N)))


def test_partial_marker_name_is_refused(tmp_path: Path) -> None:
    good = write_shard(tmp_path / "good.h5")
    temp = tmp_path / "good.h5.partial-123"
    shutil.copy(good, temp)
    with pytest.raises(ShardError, match="temporary file of an unfinished or killed write"):
        ShardDataset(temp)


# -- lazy opening, workers, pickling -------------------------------------------------------


def test_dataset_pickles_before_and_after_reading(tmp_path: Path) -> None:
    cols = make_columns()
    ds = ShardDataset(write_shard(tmp_path / "t.h5", cols))
    fresh = pickle.loads(pickle.dumps(ds))
    assert fresh.info == ds.info
    ds[3]
    used = pickle.loads(pickle.dumps(ds))
    for copy in (fresh, used):
        assert np.array_equal(copy[4]["kp2d"].numpy(), cols["kp2d"][4])
        assert copy[4]["seq"] == cols["seq"][4]


class _ReportsHandleOwner(torch.utils.data.Dataset):
    """Adds to each sample whether the shard handle used was opened by this process."""

    def __init__(self, inner: ShardDataset) -> None:
        self.inner = inner

    def __len__(self) -> int:
        return len(self.inner)

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        samples = self.inner.__getitems__(indices)
        own = self.inner._pid == os.getpid()
        return [s | {"own_handle": own} for s in samples]


def test_dataloader_with_forked_workers_returns_the_stored_data(tmp_path: Path) -> None:
    cols = make_columns(n=37)
    ds = ShardDataset(write_shard(tmp_path / "t.h5", cols, step=8))
    ds[0]  # the parent now holds an open handle that forked workers inherit
    loader = DataLoader(
        _ReportsHandleOwner(ds),
        batch_size=4,
        shuffle=True,
        num_workers=2,
        multiprocessing_context="fork",
        generator=torch.Generator().manual_seed(0),
    )
    seen: list[int] = []
    for batch in loader:
        idx = batch["index"].numpy()
        seen += idx.tolist()
        assert batch["own_handle"].all()  # never a handle shared across fork
        for name, col in cols.items():
            if col.dtype.kind == "U":
                assert batch[name] == [col[i] for i in idx]
            else:
                assert np.array_equal(batch[name].numpy(), col[idx]), name
    assert sorted(seen) == list(range(37))
    assert np.array_equal(ds[36]["images"].numpy(), cols["images"][36])  # parent still reads
