"""The H3D converter on a fixture in tllib's H3D_crop layout (annotation.json + part*/ crops):
tllib's seeded split reproduced exactly, keypoint3d in metres or millimetres to mm, kp2d the
projection of kp3d (checked against keypoint2d), the hand21 order kept and nothing mirrored,
ids from the image names, and bad input."""

from __future__ import annotations

import json
import random
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_refused
from PIL import Image

from bench.data.convert import convert
from bench.data.convert.crop import square_around
from bench.data.convert.h3d import parse_name, split_indices
from bench.data.shards import ShardDataset

SIZE = 32
THUMB_TIP, INDEX_TIP, WRIST = 4, 8, 0
# A hand (hand21) in metres, wrist at the origin, fingers towards -y (up in the image), the
# thumb stretched out to +x (the image's right): asymmetric.
HAND = np.array(
    [
        [0.0, 0.0, 0.0],
        [0.02, -0.015, 0.005], [0.04, -0.025, 0.008], [0.06, -0.03, 0.01],  # thumb
        [0.085, -0.035, 0.012],
        [0.025, -0.08, 0.0], [0.027, -0.105, -0.003], [0.028, -0.12, -0.005],  # index
        [0.029, -0.135, -0.007],
        [0.005, -0.085, 0.0], [0.005, -0.115, -0.004], [0.005, -0.13, -0.006],  # middle
        [0.005, -0.145, -0.008],
        [-0.015, -0.08, 0.0], [-0.017, -0.105, -0.003], [-0.018, -0.12, -0.005],  # ring
        [-0.019, -0.132, -0.007],
        [-0.035, -0.07, 0.0], [-0.039, -0.088, -0.002], [-0.041, -0.1, -0.004],  # little
        [-0.043, -0.11, -0.006],
    ]
)  # fmt: skip
UNMATCHED = {5: "part2/img_000123.jpg", 13: "part1/s02/shot.jpg"}  # no camera token
WITH_OBJECT = (2, 9, 17, 22)  # entries with without_object == 0


def entry_name(i: int) -> str:
    """Subject folder, camera folder, frame file: e.g. part2/s01/cam02/000003.jpg."""
    if i in UNMATCHED:
        return UNMATCHED[i]
    return f"part{1 + i % 2}/s{1 + i // 12:02d}/cam{i % 3:02d}/{i // 3:06d}.jpg"


def hand_of(i: int) -> np.ndarray:
    """Entry i's joints in metres; its wrist depth 0.5 + 0.01 i names it."""
    return HAND + np.array([0.01 * (i % 4) - 0.02, 0.06 + 0.005 * (i % 3), 0.5 + 0.01 * i])


def k_of(i: int, size: int) -> np.ndarray:
    f = (110.0 + i) * size / 64
    return np.array([[f, 0, size / 2 - 2.3 + 0.1 * i], [0, f * 1.01, size / 2 + 1.7], [0, 0, 1]])


def project(xyz: np.ndarray, k: np.ndarray) -> np.ndarray:
    uvw = xyz @ k.T
    return uvw[:, :2] / uvw[:, 2:]


def write_h3d(root: Path, n: int = 24, unit: str = "m", size: int = 64) -> list[dict]:
    """H3D_crop/: annotation.json with ``n`` entries (without_object 0 for WITH_OBJECT, "1"
    as a string for some), keypoint3d in ``unit`` ("m", "mm" or "cm"), keypoint2d the
    projection rounded to 0.01 px, and one ``size`` x ``size`` JPEG crop per entry with the
    thumb tip marked. Returns the entries."""
    scale = {"m": 1.0, "mm": 1000.0, "cm": 100.0}[unit]
    entries = []
    for i in range(n):
        xyz, k = hand_of(i), k_of(i, size)
        uv = project(xyz, k)
        flag: int | str = 0 if i in WITH_OBJECT else ("1" if i % 4 == 1 else 1)
        entries.append(
            {
                "name": entry_name(i),
                "keypoint2d": np.round(uv, 2).tolist(),
                "keypoint3d": (xyz * scale).tolist(),
                "intrinsic_matrix": k.tolist(),
                "without_object": flag,
                "hand_type": "right",
            }
        )
        img = np.full((size, size, 3), 60, np.uint8)
        x, y = np.rint(uv[THUMB_TIP]).astype(int)
        img[y - 1 : y + 2, x - 1 : x + 2] = 255
        path = root / entry_name(i)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(path, quality=95)
    (root / "annotation.json").write_text(json.dumps(entries))
    return entries


def tllib_test_names(root: Path) -> set[str]:
    """tllib's Hand3DStudio.__init__, task 'noobject', split 'test': the kept entries in file
    order, shuffled by the seeded global generator (restored afterwards), the first 20 %."""
    with open(root / "annotation.json") as f:
        samples = list(json.load(f))
    return tllib_test_names_of([s["name"] for s in samples if int(s["without_object"]) == 1])


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> tuple[Path, list[dict]]:
    root = tmp_path_factory.mktemp("H3D_crop")
    return root, write_h3d(root)


@pytest.fixture(scope="module")
def shards(raw, tmp_path_factory) -> dict[str, ShardDataset]:
    out = tmp_path_factory.mktemp("h3d-out")
    paths = convert("h3d", raw[0], out, size=SIZE, progress=False)
    return {p.stem: ShardDataset(p) for p in paths}


def samples(shard: ShardDataset) -> list[dict[str, np.ndarray]]:
    return [
        {k: v.numpy() for k, v in shard[i].items() if k != "index"}
        for i in range(shard.info.num_samples)
    ]


def entry_of(s: dict) -> int:
    """Which entry a sample is: its wrist lies 500 + 10 i mm deep."""
    return round((float(s["kp3d"][WRIST, 2]) - 500.0) / 10.0)


def test_split_is_tllibs_seeded_shuffle(raw, shards):
    root, entries = raw
    test_names = tllib_test_names(root)
    assert len(test_names) == 4  # int(0.2 * 20) of the 20 kept entries
    got = {split: [entry_of(s) for s in samples(shard)] for split, shard in shards.items()}
    assert {entries[i]["name"] for i in got["test"]} == test_names
    kept = [i for i in range(len(entries)) if i not in WITH_OBJECT]
    assert sorted(got["train"] + got["test"]) == kept
    assert got["train"] == sorted(got["train"]) and got["test"] == sorted(got["test"])
    # the cap, and the order of the entries in the file (not their names) decides
    flags = [1] * 20000
    split = split_indices(flags)
    names = [f"e{i}" for i in range(20000)]
    want = tllib_test_names_of(names)
    assert len(split["test"]) == 3200 and {names[i] for i in split["test"]} == want


def tllib_test_names_of(names: list[str]) -> set[str]:
    samples = list(names)
    state = random.getstate()
    try:
        random.seed(42)
        random.shuffle(samples)
    finally:
        random.setstate(state)
    return set(samples[: min(int(len(samples) * 0.2), 3200)])


def test_h3d_shards_hold_mm_and_the_projection(shards):
    for shard in shards.values():
        assert shard.info.joint_set == "hand21" and shard.info.image_size == (SIZE, SIZE)
        for s in samples(shard):
            i = entry_of(s)
            xyz, k = hand_of(i), k_of(i, 64)
            uv = project(xyz, k)
            crop = square_around(uv, np.ones(21, bool), SIZE)
            # metres -> mm, the hand21 order kept (the stretched-out thumb stays joint 4)
            assert s["kp3d"] == pytest.approx(xyz * 1000, abs=1e-3)
            assert np.linalg.norm(s["kp3d"][THUMB_TIP] - s["kp3d"][INDEX_TIP]) > 80
            assert s["K"] == pytest.approx(crop.intrinsics(k), rel=1e-5)
            assert s["kp2d"] == pytest.approx(crop.points(uv), abs=1e-3)
            uvw = s["kp3d"].astype(np.float64) @ s["K"].astype(np.float64).T
            assert np.abs(uvw[:, :2] / uvw[:, 2:] - s["kp2d"]).max() < 1e-3
            assert s["vis"].all()
            # not mirrored: the thumb on the image's right of the wrist and the little finger
            assert s["kp2d"][THUMB_TIP, 0] > s["kp2d"][WRIST, 0] > s["kp2d"][20, 0]
            x, y = np.rint(s["kp2d"][THUMB_TIP]).astype(int)
            assert s["images"][y, x].min() > 150


def test_ids_from_the_names(shards):
    for shard in shards.values():
        for s in samples(shard):
            i = entry_of(s)
            seq, view, frame = int(s["seq"]), int(s["view"]), int(s["frame"])
            if i in UNMATCHED:
                assert (seq, view, frame) == (i, 0, 0)
            else:
                subject = f"s{1 + i // 12:02d}"
                assert seq == (1 << 32) + zlib.crc32(subject.encode())
                assert (view, frame) == (i % 3, i // 3)
    assert parse_name("part1/0007/cam03/000120.jpg") == ("0007", 3, 120)
    assert parse_name("part3/0007_c12_000045.png") == ("0007", 12, 45)
    assert parse_name("part2/subject1/capture_05/Camera-7.jpg") == ("subject1/capture", 7, 5)
    assert parse_name("part2/img_000123.jpg") is None
    assert parse_name("part2/cam1/cam2/000001.jpg") is None  # two camera tokens
    assert parse_name("part2/scam1/000001.jpg") is None  # not a token of its own


def test_keypoint3d_in_millimetres_gives_the_same_shard(raw, shards, tmp_path):
    root = tmp_path / "mm"
    root.mkdir()
    write_h3d(root, unit="mm")
    path = convert("h3d", root, tmp_path / "out", splits=["test"], size=SIZE, progress=False)[0]
    other = samples(ShardDataset(path))
    mine = samples(shards["test"])
    assert len(other) == len(mine) == 4
    for a, b in zip(mine, other, strict=True):
        for key in ("kp2d", "kp3d", "K", "seq", "view", "frame"):
            assert np.allclose(a[key], b[key], atol=1e-3), key


def test_bad_h3d_copies_are_one_clear_error_and_nothing_is_written(raw, tmp_path):
    root, _ = raw
    out = tmp_path / "out"

    def refused(folder: Path, match: str) -> None:
        assert_refused("h3d", folder, out, match)

    def copy(name: str) -> Path:
        folder = tmp_path / name / "H3D_crop"
        shutil.copytree(root, folder)
        return folder

    def edit(folder: Path, change) -> None:
        path = folder / "annotation.json"
        data = json.loads(path.read_text())
        path.write_text(json.dumps(change(data)))

    refused(tmp_path / "nowhere", r"raw folder .*nowhere does not exist")
    folder = copy("parent")
    refused(folder.parent, r"parent is not the H3D_crop folder; pass .*parent/H3D_crop")
    refused(folder / "part1", r"part1 is a folder inside H3D_crop; pass its parent")
    (tmp_path / "empty").mkdir()
    refused(tmp_path / "empty", r"missing .*empty/annotation\.json \(tllib's H3D_crop annotation")
    folder = copy("cut")
    path = folder / "annotation.json"
    path.write_text(path.read_text()[:2000])
    refused(folder, r"annotation\.json is not valid JSON \(cut short\?\)")
    folder = copy("dict")
    edit(folder, lambda d: {"samples": d})
    refused(folder, r"annotation\.json holds a dict of 1; expected a non-empty list")
    folder = copy("no-3d")  # another layout: 2D only
    edit(folder, lambda d: [{k: v for k, v in e.items() if k != "keypoint3d"} for e in d])
    refused(folder, r"annotation\.json entry 0 lacks \['keypoint3d'\]")
    folder = copy("no-flag")
    edit(folder, lambda d: [d[0], {k: v for k, v in d[1].items() if k != "without_object"}])
    refused(folder, r"entry 1 holds \['hand_type', 'intrinsic_matrix', .*\]; expected \{name")
    folder = copy("flag")
    edit(folder, lambda d: [dict(d[0], without_object="yes"), *d[1:]])
    refused(folder, r"entry 0: without_object is 'yes'; expected 0 or 1")
    folder = copy("objects")
    edit(folder, lambda d: [dict(e, without_object=0) for e in d])
    refused(folder, r"has no entry with without_object == 1 .* among its 24")
    folder = copy("short")
    edit(folder, lambda d: [dict(d[0], keypoint3d=d[0]["keypoint3d"][:20]), *d[1:]])
    refused(folder, r"entry 0 \(part1/s01/cam00/000000\.jpg\): keypoint3d has shape \(20, 3\)")
    folder = copy("behind")
    edit(
        folder, lambda d: [dict(d[0], keypoint3d=(-np.array(d[0]["keypoint3d"])).tolist()), *d[1:]]
    )
    refused(folder, r"entry 0 .*: a keypoint3d has depth <= 0; expected the camera frame")
    folder = copy("k")
    transposed = lambda e: np.array(e["intrinsic_matrix"]).T.tolist()  # noqa: E731
    edit(folder, lambda d: [dict(d[0], intrinsic_matrix=transposed(d[0])), *d[1:]])
    refused(folder, r"entry 0 .*: intrinsic_matrix .* is not \[\[fx, s, cx\]")
    # keypoint2d (y, x): far from the projection
    folder = copy("yx")
    edit(
        folder,
        lambda d: [dict(e, keypoint2d=np.array(e["keypoint2d"])[:, ::-1].tolist()) for e in d],
    )
    refused(folder, r"entry \d+ \(.*\): keypoint2d is up to \d+(\.\d+)? px from the projection")
    # keypoint3d in cm: neither reading fits
    folder = tmp_path / "cm" / "H3D_crop"
    folder.mkdir(parents=True)
    write_h3d(folder, unit="cm")
    refused(folder, r"median wrist to middle-MCP distance of keypoint3d is 8\.5.*neither metres")
    folder = copy("image")
    (folder / entry_name(3)).unlink()
    refused(folder, r"missing .*part2/s01/cam00/000001\.jpg \(the crop of entry 3 of annotation")


def test_small_offsets_of_keypoint2d_are_accepted(raw, tmp_path):
    root, _ = raw
    folder = tmp_path / "H3D_crop"
    shutil.copytree(root, folder)
    path = folder / "annotation.json"
    data = json.loads(path.read_text())
    for e in data:
        e["keypoint2d"] = (np.array(e["keypoint2d"]) + np.array([1.5, -1.0])).tolist()
    path.write_text(json.dumps(data))
    convert("h3d", folder, tmp_path / "out", splits=["test"], size=16, progress=False)
    for e in data:
        e["keypoint2d"] = (np.array(e["keypoint2d"]) + np.array([2.0, 0.0])).tolist()
    path.write_text(json.dumps(data))
    assert_refused("h3d", folder, tmp_path / "o2", r"keypoint2d is up to 3\.5 px .* at most 3")
