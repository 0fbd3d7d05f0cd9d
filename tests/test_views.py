"""Views: each checks a pair can feed it (fields and structure) and delivers deterministic,
resumable batches of the right rows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from bench.data.geometry import camera_to_world, projection_matrices, triangulate
from bench.data.joints import get_joint_set
from bench.data.pairs import SYNTH_BACKGROUNDS, PairShards, pair_shards, split_source_val
from bench.data.shards import ShardWriter
from bench.data.synthetic.build import synthesize
from bench.data.views import (
    Backgrounds,
    Extra,
    FramePairs,
    FromArtifact,
    Images,
    Joined,
    Labelled,
    Masked,
    MultiView,
    View,
    check_views,
    extra_cards,
)
from bench.errors import DabenchError
from bench.paths import REPO_ROOT

SIZE = 16  # the custom shards: small images, the structure is what matters


@pytest.fixture(scope="module")
def pair(hand_pair) -> PairShards:
    """synth-hand clean → wild: three 8-frame sequences seen by 4 cameras (96 rows)."""
    return hand_pair(n_train=96, n_test=16, size=32)


def _card(name: str, frames: int, views: int) -> str:
    text = (REPO_ROOT / "datasets" / "synth-hand-wild.yaml").read_text()
    for old, new in (
        ("name: synth-hand-wild", f"name: {name}"),
        ("  frames: 8", f"  frames: {frames}"),
        ("  views: 4", f"  views: {views}"),
    ):
        assert old in text
        text = text.replace(old, new)
    return text


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """Shards of other structure: one-frame sequences, a one-camera rig, 24-frame
    sequences (from temporary cards), backgrounds, and a hand-written target `mini` with
    string sequence ids, gaps in the frame numbers, a duplicate frame and no views."""
    cards = tmp_path_factory.mktemp("cards")
    for name in ("synth-hand-clean", SYNTH_BACKGROUNDS):
        (cards / f"{name}.yaml").write_text((REPO_ROOT / "datasets" / f"{name}.yaml").read_text())
    for name, frames, views in (("f1", 1, 4), ("v1", 8, 1), ("f24", 24, 4)):
        (cards / f"{name}.yaml").write_text(_card(name, frames, views))
    out = tmp_path_factory.mktemp("shards")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DABENCH_DATASET_CARDS", str(cards))
        names = ["synth-hand-clean", "f1", "v1", "f24", SYNTH_BACKGROUNDS]
        synthesize(names, out, n_train=192, n_test=8, size=SIZE, progress=False)
    for split in ("train", "test"):
        _write_mini(out / "mini" / f"{split}.h5")
    return out


MINI_SEQ = ["a"] * 5 + ["b"] * 13
MINI_FRAME = [0, 2, 3, 7, 9, 0, 1, 2, 3, 4, 4, 5, 6, 7, 8, 9, 10, 11]  # b has frame 4 twice


def _write_mini(path: Path) -> None:
    n, k = len(MINI_SEQ), get_joint_set("hand21").num_joints
    rng = np.random.default_rng(0)
    with ShardWriter(
        path,
        dataset="mini",
        joint_set="hand21",
        root_joint="wrist",
        image_size=(SIZE, SIZE),
        num_joints=k,
        fingerprint="mini",
        producer="tests",
        fields=("seq", "frame"),
    ) as w:
        w.append(
            {
                "images": rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8),
                "kp2d": rng.random((n, k, 2)),
                "kp3d": rng.random((n, k, 3)) + 1,
                "vis": np.ones((n, k), bool),
                "K": np.broadcast_to(np.eye(3), (n, 3, 3)),
                "seq": np.array(MINI_SEQ),
                "frame": np.array(MINI_FRAME),
            }
        )


def _ids(path: Path, rows: torch.Tensor, *names: str) -> list[np.ndarray]:
    # without locks, as streams keep shards open (HDF5 refuses mixed lock flags)
    with h5py.File(path, "r", locking=False) as f:
        cols = [f[n].asstr()[()] if f[n].dtype.kind == "O" else f[n][()] for n in names]
    return [c[rows.numpy()] for c in cols]


def _take(stream, n: int) -> list[dict[str, torch.Tensor]]:
    return [next(stream) for _ in range(n)]


def _same(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(
        x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
        for x, y in zip(a, b, strict=True)
    )


STREAMED = [
    Labelled("source"),
    Masked(labels=True),
    FramePairs(stride=(1, 3), fields=("images", "kp2d")),
    MultiView(views=3),
]


def test_views_module_imports_without_torch():
    code = (
        "import sys, bench.data.views; "
        "assert not {'torch', 'h5py', 'bench.data.shards'} & set(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("view", STREAMED, ids=lambda v: v.kind)
def test_same_seed_same_batches_another_seed_others(pair, view):
    a, b, c = (_take(view.stream(pair, 8, seed), 6) for seed in (3, 3, 4))
    assert _same(a, b)
    assert not _same(a, c)
    assert {len(x["index"]) for x in a + c} == {8}
    assert a[0]["images"].dtype == torch.uint8


@pytest.mark.parametrize(
    ("view", "batch"), [(Labelled("target"), 8), (FramePairs(stride=(1, 3)), 12)], ids=str
)
def test_an_epoch_visits_every_unit_once_and_units_say_how_many(pair, view, batch):
    units = view.units(pair)
    stream = view.stream(pair, batch, 0)
    assert units % batch == 0 and stream.batches_per_epoch == units // batch
    seen = torch.cat([b["index"] for b in _take(stream, units // batch)])
    firsts = seen if seen.ndim == 1 else seen[:, 0]  # frame pairs: the anchors
    assert len(set(firsts.tolist())) == units == len(firsts)
    if isinstance(view, FramePairs):  # 3 sequences x 4 views x anchors at frames 0..6
        assert units == 3 * 4 * 7
    else:
        assert sorted(firsts.tolist()) == list(range(96))
    # the next epoch starts over, in another order
    again = torch.cat([b["index"] for b in _take(stream, units // batch)])
    again = again if again.ndim == 1 else again[:, 0]
    assert sorted(again.tolist()) == sorted(firsts.tolist())
    assert not torch.equal(again, firsts)


def test_last_incomplete_batch_is_dropped(pair):
    stream = Labelled("target").stream(pair, 40, 0)  # 96 rows: 2 batches an epoch
    assert stream.batches_per_epoch == 2
    first = _take(stream, 2)
    assert {len(b["index"]) for b in first} == {40}
    assert len(set(torch.cat([b["index"] for b in first]).tolist())) == 80
    assert next(stream)["index"].shape == (40,)


@pytest.mark.parametrize("workers", [0, 1])
@pytest.mark.parametrize("view", STREAMED, ids=lambda v: v.kind)
def test_a_restored_stream_continues_exactly(pair, view, workers):
    train, _ = split_source_val(96, 0.25)
    original = view.stream(pair, 8, 7, source_indices=train, workers=workers)
    per_epoch = original.batches_per_epoch
    _take(original, per_epoch + 1)  # past an epoch boundary
    state = json.loads(json.dumps(original.state_dict()))
    assert state == {"epoch": 1, "position": 1}
    # the other number of reading processes: batches do not depend on it
    restored = view.stream(pair, 8, 7, source_indices=train, workers=1 - workers)
    restored.load_state_dict(state)
    assert _same(_take(original, per_epoch), _take(restored, per_epoch))
    # the state counts batches consumed, not what a reading process fetched ahead
    assert restored.state_dict() == original.state_dict() == {"epoch": 2, "position": 1}
    restored.close()
    original.close()


def test_stream_state_is_checked(pair):
    stream = Images().stream(pair, 8, 0)
    for bad in ({"epoch": 0}, {"epoch": -1, "position": 0}, {"epoch": 0, "position": 12}):
        with pytest.raises(DabenchError, match="state"):
            stream.load_state_dict(bad)


@pytest.mark.parametrize(
    "view", [Labelled("source"), FramePairs("source"), MultiView("source", views=2)], ids=str
)
def test_source_views_read_only_the_source_indices(pair, view):
    allowed = np.r_[0:32, 64:96]  # sequences 0 and 2; sequence 1 is held out
    stream = view.stream(pair, 8, 0, source_indices=allowed)
    seen = torch.cat([b["index"].reshape(-1) for b in _take(stream, 3 * stream.batches_per_epoch)])
    assert set(seen.tolist()) <= set(allowed.tolist())
    assert {r // 32 for r in seen.tolist()} == {0, 2}
    assert view.units(pair, allowed) < view.units(pair)
    # target views ignore them
    assert Images().units(pair, allowed) == 96


def test_frame_pairs_are_two_frames_of_one_sequence_and_view_a_stride_apart(pair):
    view = FramePairs(stride=(1, 3), fields=("images", "kp3d"))
    strides = []
    for b in _take(view.stream(pair, 12, 1), 14):
        seq, frame, cam = _ids(pair.target_train, b["index"], "seq", "frame", "view")
        assert (seq[:, 0] == seq[:, 1]).all() and (cam[:, 0] == cam[:, 1]).all()
        assert np.array_equal(frame[:, 1] - frame[:, 0], b["stride"].numpy())
        assert b["images"].shape == (12, 2, 32, 32, 3) and b["kp3d"].shape == (12, 2, 21, 3)
        strides += b["stride"].tolist()
    assert set(strides) == {1, 2, 3}


def test_a_stride_range_from_zero_may_pair_a_frame_with_itself(pair):
    # Lin et al.'s Table 4 ranges [0, 5] and [0, 15] start at 0
    strides = []
    for b in _take(FramePairs(stride=(0, 2)).stream(pair, 12, 0), 10):
        same = b["stride"].numpy() == 0
        assert np.array_equal(b["index"][same, 0].numpy(), b["index"][same, 1].numpy())
        assert torch.equal(b["images"][same, 0], b["images"][same, 1])
        strides += b["stride"].tolist()
    assert set(strides) == {0, 1, 2}


def test_images_may_carry_unlabelled_fields_but_never_pose_labels(pair):
    b = _take(Images("target", fields=("images", "K")).stream(pair, 4, 0), 1)[0]
    assert set(b) >= {"images", "K"} and "kp2d" not in b and b["K"].shape == (4, 3, 3)
    assert Images(fields=["images", "K"]).describe() == "target images with K"
    with pytest.raises(DabenchError, match=r"kp2d is a pose label; .* Labelled\('target'\)"):
        Images(fields=("images", "kp2d"))


def test_frame_pairs_without_views_group_by_sequence_and_skip_missing_frames(root):
    target = pair_shards("synth-hand-clean", "mini", root)
    view = FramePairs(stride=(2, 5))
    # anchors: a at 0, 2, 3, 7 (2→7 is 5 apart); b at 0..9 (frame 4 twice)
    assert view.units(target) == 4 + 11
    strides = []
    for b in _take(view.stream(target, 5, 0), 30):
        seq, frame = _ids(target.target_train, b["index"], "seq", "frame")
        assert (seq[:, 0] == seq[:, 1]).all()
        assert np.array_equal(frame[:, 1] - frame[:, 0], b["stride"].numpy())
        strides += b["stride"].tolist()
    assert set(strides) == {2, 3, 4, 5}


def test_multi_view_groups_triangulate_to_the_world_joints(pair):
    view = MultiView(views=3, fields=("kp2d", "kp3d"))
    b = next(view.stream(pair, 8, 0))
    assert b["kp2d"].shape == (8, 3, 21, 2) and b["cam_R"].shape == (8, 3, 3, 3)
    assert b["K"].shape == (8, 3, 3, 3) and b["cam_t"].shape == (8, 3, 3)
    seq, frame, cam = _ids(pair.target_train, b["index"], "seq", "frame", "view")
    assert (seq == seq[:, :1]).all() and (frame == frame[:, :1]).all()
    assert all(len(set(c)) == 3 for c in cam)
    k, rot, t, kp2d, kp3d = (b[n].double().numpy() for n in ("K", "cam_R", "cam_t", "kp2d", "kp3d"))
    for i in range(8):
        world = camera_to_world(kp3d[i, 0], rot[i, 0], t[i, 0])
        found = triangulate(kp2d[i], projection_matrices(k[i], rot[i], t[i]))
        assert np.abs(found - world).max() < 1.0  # mm


def test_multi_view_draws_other_views_of_a_group_each_epoch(pair):
    view = MultiView(views=2)
    stream = view.stream(pair, 8, 0)
    assert view.units(pair) == 3 * 8
    picks: dict[int, set[tuple[int, ...]]] = {}
    for b in _take(stream, 4 * stream.batches_per_epoch):
        for rows in b["index"].tolist():
            picks.setdefault(min(rows) // 4, set()).add(tuple(rows))
    assert len(picks) == 24
    assert np.mean([len(p) for p in picks.values()]) > 2


def test_a_shard_with_one_frame_sequences_cannot_give_frame_pairs(root):
    target = pair_shards("synth-hand-clean", "f1", root)
    problems = FramePairs().check(target)
    assert problems == [
        "target frame pairs (stride 1): f1 has no two frames of one sequence and view 1 "
        "apart (its sequences have 1 frame each)"
    ]
    with pytest.raises(DabenchError) as e:
        check_views("temporal", {"pairs": FramePairs(), "target": Images()}, target)
    assert str(e.value) == (
        f"method temporal cannot run on synth-hand-clean → f1: pairs needs {problems[0]}"
    )
    with pytest.raises(DabenchError, match="stride 1.*f1 has no two frames"):
        FramePairs().stream(target, 8, 0)


def test_a_one_camera_shard_cannot_give_multi_view_groups(root):
    target = pair_shards("synth-hand-clean", "v1", root)
    assert MultiView(views=2).check(target) == [
        "target multi-view groups (2 views): v1 has no (seq, frame) seen by 2 calibrated "
        "views (at most 1 per (seq, frame))"
    ]
    assert MultiView(views=4).check(pair_shards("synth-hand-clean", "f1", root)) == []
    assert MultiView(views=5).check(pair_shards("synth-hand-clean", "f1", root)) == [
        "target multi-view groups (5 views): f1 has no (seq, frame) seen by 5 calibrated "
        "views (at most 4 per (seq, frame))"
    ]


def test_frame_pairs_need_sequences_long_enough(pair, root):
    # 8 frames hold strides up to 7 (5–15 is possible, from frames 0–2 only) ...
    assert FramePairs(stride=(5, 15)).check(pair) == []
    assert FramePairs(stride=(8, 15)).check(pair) == [
        "target frame pairs (stride 8–15): synth-hand-wild has no two frames of one "
        "sequence and view 8–15 apart (its sequences have at most 8 frames, at most 7 apart)"
    ]
    # ... a card with 24 frames holds them all
    long = pair_shards("synth-hand-clean", "f24", root)
    assert FramePairs(stride=(8, 15)).check(long) == []


def test_a_24_frame_card_gives_long_frame_pairs_and_moves_throughout(root):
    target = pair_shards("synth-hand-clean", "f24", root)
    seq, frame, cam = _ids(target.target_train, torch.arange(192), "seq", "frame", "view")
    assert np.array_equal(seq, np.repeat([0, 1], 96)) and np.array_equal(
        cam, np.tile([0, 1, 2, 3], 48)
    )
    assert np.array_equal(frame, np.tile(np.repeat(np.arange(24), 4), 2))
    view = FramePairs(stride=(5, 15), fields=("images",))
    assert view.units(target) == 2 * 4 * (24 - 5)
    strides = []
    for b in _take(view.stream(target, 8, 0), 40):
        s, f, c = _ids(target.target_train, b["index"], "seq", "frame", "view")
        assert (s[:, 0] == s[:, 1]).all() and (c[:, 0] == c[:, 1]).all()
        assert np.array_equal(f[:, 1] - f[:, 0], b["stride"].numpy())
        strides += b["stride"].tolist()
    assert min(strides) >= 5 and max(strides) <= 15 and len(set(strides)) >= 8
    # Motion keeps the pace of 8-frame sequences over all 24 frames (keyframes scale with
    # the frame count), smoothly.
    step = _joint_steps(target.target_train, frames=24, views=4)  # [S, F - 1] mm
    short = _joint_steps(root / "v1" / "train.h5", frames=8, views=1)
    assert step.max() < 60.0 and 0.5 < step.mean() / short.mean() < 2.0
    assert step[:, -8:].mean() > 0.3 * step[:, :8].mean()


def _joint_steps(path: Path, frames: int, views: int) -> np.ndarray:
    """Mean world-space joint movement from one frame to the next, per sequence."""
    with h5py.File(path, "r", locking=False) as f:
        kp3d, rot, t = (f[n][()].astype(np.float64) for n in ("kp3d", "cam_R", "cam_t"))
    world = camera_to_world(kp3d, rot, t).reshape(-1, frames, views, kp3d.shape[1], 3)
    return np.linalg.norm(np.diff(world[:, :, 0], axis=1), axis=-1).mean(axis=-1)


def test_missing_fields_are_named(root, pair):
    target = pair_shards("synth-hand-clean", "mini", root)
    assert Masked().check(target) == ["target images with masks: mini has no masks"]
    assert MultiView().check(target) == [
        "target multi-view groups (2 views): mini has no view, cam_R, cam_t"
    ]
    assert FramePairs(fields=("images", "depth")).check(pair) == [
        "target frame pairs (stride 1): synth-hand-wild has no depth"
    ]
    assert Labelled("target").check(target) == []
    with pytest.raises(DabenchError) as e:
        check_views("x", {"a": Masked(), "b": Masked("source"), "c": MultiView()}, target)
    assert str(e.value) == (
        "method x cannot run on synth-hand-clean → mini: a needs target images with masks: "
        "mini has no masks; c needs target multi-view groups (2 views): mini has no view, "
        "cam_R, cam_t"
    )


def test_backgrounds_are_read_from_the_backgrounds_shard(pair, root):
    assert Backgrounds().check(pair) == [
        "background images: there is no synth-backgrounds shard "
        "(run `dabench data synth synth-backgrounds`)"
    ]
    with_bg = pair_shards("synth-hand-clean", "f1", root)
    assert with_bg.backgrounds is not None
    b = next(Backgrounds().stream(with_bg, 8, 0))
    assert set(b) == {"images", "index"} and b["images"].shape == (8, SIZE, SIZE, 3)
    with h5py.File(with_bg.backgrounds, "r", locking=False) as f:
        assert np.array_equal(b["images"].numpy(), f["images"][()][b["index"].numpy()])


def test_from_artifact_joins_an_artifact_by_row(pair, tmp_path):
    view = FromArtifact("segment", "masks.h5")
    assert view.check(pair) == []
    n = pair.info("target_train").num_samples
    with h5py.File(tmp_path / "masks.h5", "w") as f:
        f["masks"] = np.broadcast_to(
            (np.arange(n) % 251).astype(np.uint8)[:, None, None], (n, 5, 5)
        )
    for workers in (0, 1):
        stream = view.stream(pair, 8, 0, artifacts={"segment": tmp_path}, workers=workers)
        for b in _take(stream, 3):
            assert set(b) == {"images", "masks", "index"} and b["masks"].dtype == torch.uint8
            assert (b["masks"] == (b["index"] % 251)[:, None, None]).all()
        stream.close()
    with h5py.File(tmp_path / "short.h5", "w") as f:
        f["masks"] = np.zeros((n - 1, 5, 5), np.uint8)
    for artifacts, file, match in (
        (None, "masks.h5", "no artifacts of stage segment"),
        ({"other": tmp_path}, "masks.h5", "no artifacts of stage segment.*other"),
        ({"segment": tmp_path}, "missing.h5", "missing.h5: artifact not found"),
        (
            {"segment": tmp_path},
            "short.h5",
            f"one row per row of .*\\({n}\\), but masks has {n - 1}",
        ),
    ):
        with pytest.raises(DabenchError, match=match):
            FromArtifact("segment", file).stream(pair, 8, 0, artifacts=artifacts)
    with pytest.raises(DabenchError, match="artifact has no depth.*holds: masks"):
        FromArtifact("segment", "masks.h5", fields=("depth",)).stream(
            pair, 8, 0, artifacts={"segment": tmp_path}
        )


def test_joined_gives_each_row_of_a_multi_view_group_its_own_artifact_row(pair, tmp_path):
    view = Joined(MultiView(views=3, fields=("masks",)), "geodesic", "w.h5", ("weights",))
    assert view.check(pair) == [] and view.domain == "target"
    assert view.units(pair) == MultiView(views=3).units(pair)
    assert view.describe() == "target multi-view groups (3 views) with weights from stage geodesic"
    n = pair.info("target_train").num_samples
    with h5py.File(tmp_path / "w.h5", "w") as f:
        f["weights"] = np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None], (n, 4, 4))
    for workers in (0, 1):
        stream = view.stream(pair, 8, 0, artifacts={"geodesic": tmp_path}, workers=workers)
        b = next(stream)
        assert b["weights"].shape == (8, 3, 4, 4) and b["masks"].shape[:2] == (8, 3)
        assert (b["weights"][..., 0, 0] == b["index"].float()).all()
        stream.close()
    # the same batches as the wrapped view: sampling is the wrapped view's
    plain = next(MultiView(views=3, fields=("masks",)).stream(pair, 8, 0))
    assert torch.equal(plain["index"], b["index"]) and torch.equal(plain["masks"], b["masks"])
    with pytest.raises(DabenchError, match="no artifacts of stage geodesic"):
        view.stream(pair, 8, 0, artifacts={})
    with pytest.raises(DabenchError, match="masks cannot come from both"):
        Joined(Masked("target"), "geodesic", "w.h5", ("masks",))


def test_extra_reads_another_datasets_training_shard_beside_the_pair(tmp_path):
    cards = ["synth-hand-clean", "synth-hand-wild", "synth-hand-video"]
    synthesize(cards, tmp_path, n_train=32, n_test=8, size=32, progress=False)
    view = Extra("synth-hand-video", ("images", "masks"))
    without = pair_shards(*cards[:2], tmp_path)
    assert view.check(without) == [
        "synth-hand-video images with masks: there is no synth-hand-video training shard "
        "beside the pair"
    ]
    pair = pair_shards(*cards[:2], tmp_path, extras=(cards[2],))
    assert view.check(pair) == [] and view.units(pair) == 32
    b = next(view.stream(pair, 4, 0))
    assert set(b) == {"images", "masks", "index"} and b["images"].shape[0] == 4
    assert extra_cards([view, Joined(view, "s", "f.h5", ("weights",)), Images()]) == [cards[2]]
    with pytest.raises(DabenchError, match="kp3d are pose labels"):
        Extra("synth-hand-video", ("images", "kp3d"))
    synthesize(["synth-body-clean"], tmp_path, n_train=32, n_test=8, size=32, progress=False)
    with pytest.raises(DabenchError, match="joint sets do not match"):
        pair_shards(*cards[:2], tmp_path, extras=("synth-body-clean",))


def test_too_few_units_for_a_batch_is_one_error_naming_them(pair):
    with pytest.raises(DabenchError) as e:
        FramePairs(stride=(6, 9)).stream(pair, 64, 0)  # anchors at frames 0, 1: 24
    assert str(e.value) == (
        f"target frame pairs (stride 6–9): {pair.target_train} has 24 usable frame-pair "
        "anchors, fewer than the batch size 64"
    )


def test_views_are_values_and_refuse_bad_settings():
    assert FramePairs(stride=[2, 4], fields=["images"]) == FramePairs(stride=(2, 4))
    assert len({Images(), Images(), Images("source"), Labelled()}) == 3
    assert isinstance(Labelled(), View) and Labelled().kind == "labelled"
    for make, match in (
        (lambda: Images("test"), "unknown domain 'test'; valid: source, target"),
        (lambda: FramePairs(stride=(3, 2)), "0 <= lo <= hi"),
        (lambda: MultiView(views=1), "views must be an integer >= 2"),
        (lambda: FramePairs(fields=("index",)), "reserved: index, stride"),
        (lambda: FromArtifact("seg", "m.h5", base_fields=("masks",)), "both the artifact"),
    ):
        with pytest.raises(DabenchError, match=match):
            make()
