"""The GANerated Hands converter on a fixture in the release layout: the crop's K from the
fixed K and crop_params, kp2d the projection of kp3d (checked against joint2D.txt), the
joints in the C21 order and not mirrored, the card's random split, pixels moved with the
joints, and every bad input one clear error with nothing written."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_refused
from PIL import Image

from bench.data.convert import convert
from bench.data.convert.crop import square_around
from bench.data.convert.gan import split_frames
from bench.data.shards import ShardDataset, read_shard_info

SIDE = 32  # stored crops (the real ones are 256 x 256)
K_FIXED = np.array([[617.173, 0.0, 315.453], [0.0, 617.173, 242.259], [0.0, 0.0, 1.0]])
# A hand (C21 order) in mm, fingers up: the thumb at small x, the little finger at large x.
HAND = 1000 * np.array(
    [
        [0.0, 0.05],
        [-0.02, 0.035], [-0.035, 0.02], [-0.045, 0.005], [-0.05, -0.01],  # thumb
        [-0.018, -0.035], [-0.02, -0.06], [-0.021, -0.075], [-0.022, -0.088],  # index
        [0.0, -0.04], [0.0, -0.065], [0.0, -0.08], [0.0, -0.095],  # middle
        [0.018, -0.035], [0.02, -0.058], [0.021, -0.072], [0.022, -0.084],  # ring
        [0.033, -0.028], [0.037, -0.045], [0.04, -0.055], [0.042, -0.065],  # little
    ]
)  # fmt: skip
THUMB_TIP, LITTLE_TIP, WRIST = 4, 20, 0
# (folder, partition, frames): 16 frames, partitions of unequal size
PARTITIONS = (("noObject", "0001", 5), ("noObject", "0002", 3), ("withObject", "0001", 6),
              ("withObject", "0002", 2))  # fmt: skip
BACKGROUND = {"noObject": 40, "withObject": 90}


def project(xyz: np.ndarray, k: np.ndarray) -> np.ndarray:
    uvw = xyz @ k.T
    return uvw[..., :2] / uvw[..., 2:]


def frame(g: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frame g's joints [21, 3] (mm; the wrist's depth 400 + 7 g names the frame), its crop
    parameters (u, v, scale) and its 2D labels in crop pixels."""
    xyz = np.zeros((21, 3))
    xyz[:, :2] = HAND + np.array([3.0 * g - 20, 2.0 * g - 10])
    xyz[:, 2] = 400.0 + 7 * g + np.arange(21)
    uv = project(xyz, K_FIXED)
    lo, hi = uv.min(0), uv.max(0)
    side = (hi - lo).max() + 40
    u, v = lo - 20 + (g % 3)
    scale = SIDE / side
    return xyz, np.array([u, v, scale]), (uv - [u, v]) * scale


def k_crop(params: np.ndarray) -> np.ndarray:
    u, v, s = params
    f, cx, cy = K_FIXED[0, 0], K_FIXED[0, 2], K_FIXED[1, 2]
    return np.array([[f * s, 0, (cx - u) * s], [0, f * s, (cy - v) * s], [0, 0, 1.0]])


def line(values: np.ndarray) -> str:
    return ",".join(f"{x:.6f}" for x in values.ravel())


def write_gan(root: Path) -> list[str]:
    """GANeratedHands_Release: per frame the crop (a flat PNG with the thumb tip marked)
    and its four text files. Returns the image paths, frame g at index g."""
    for name in ("README.txt", "license.txt"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("fixture\n")
    images, g = [], 0
    for folder, partition, n in PARTITIONS:
        where = root / "data" / folder / partition
        where.mkdir(parents=True)
        for f in range(1, n + 1):
            xyz, params, uv = frame(g)
            stem = where / f"{f:04d}"
            (Path(f"{stem}_joint2D.txt")).write_text(line(uv) + "\n")
            (Path(f"{stem}_joint_pos_global.txt")).write_text(line(xyz) + "\n")
            (Path(f"{stem}_joint_pos.txt")).write_text(line(xyz / 90.0) + "\n")
            (Path(f"{stem}_crop_params.txt")).write_text(line(params) + "\n")
            img = np.full((SIDE, SIDE, 3), BACKGROUND[folder], np.uint8)
            x, y = np.rint(uv[THUMB_TIP]).astype(int)
            img[y - 1 : y + 2, x - 1 : x + 2] = 255
            Image.fromarray(img).save(f"{stem}_color_composed.png")
            images.append(f"data/{folder}/{partition}/{f:04d}_color_composed.png")
            g += 1
    return images


def read_frame(root: Path, image: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What the text files of a frame say: joints [21, 3], (u, v, scale), labels [21, 2]."""
    stem = root / image.removesuffix("_color_composed.png")

    def values(suffix: str) -> np.ndarray:
        return np.array([float(x) for x in Path(f"{stem}_{suffix}.txt").read_text().split(",")])

    xyz, params = values("joint_pos_global").reshape(21, 3), values("crop_params")
    return xyz, params, values("joint2D").reshape(21, 2)


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("GANeratedHands_Release")
    return root, write_gan(root)


def tllib_split(images: list[str]) -> tuple[set[str], set[str]]:
    """The card's rule as tllib writes it: global seed, shuffle, first 20 % capped."""
    samples = sorted(images)
    random.seed(42)
    random.shuffle(samples)
    n = min(int(0.2 * len(samples)), 3200)
    return set(samples[n:]), set(samples[:n])


def test_split_rule_is_the_cards():
    names = [f"data/noObject/{i // 1024 + 1:04d}/{i % 1024 + 1:04d}" for i in range(20000)]
    split = split_frames(list(reversed(names)))  # the input order does not matter
    assert (len(split["train"]), len(split["test"])) == (16800, 3200)  # capped
    assert (set(split["train"]), set(split["test"])) == tllib_split(names)
    assert split["train"] == sorted(split["train"]) and split["test"] == sorted(split["test"])
    small = split_frames(names[:99])
    assert len(small["test"]) == 19 and set(small["train"]) | set(small["test"]) == set(names[:99])


def test_gan_shards_hold_the_projection_with_the_crops_k(raw, tmp_path):
    root, images = raw
    train_path, test_path = convert("gan", root, tmp_path, size=32, progress=False)
    train, test = ShardDataset(train_path), ShardDataset(test_path)
    want_train, want_test = tllib_split(images)
    assert (train.info.num_samples, test.info.num_samples) == (13, 3)
    assert train.info.joint_set == "hand21"
    seen = {}
    for name, shard in (("train", train), ("test", test)):
        frames = []
        for j in range(shard.info.num_samples):
            s = shard[j]
            kp2d, kp3d, kk = (s[f].numpy().astype(np.float64) for f in ("kp2d", "kp3d", "K"))
            g = round((kp3d[WRIST, 2] - 400) / 7)  # which frame this is
            frames.append(g)
            xyz, params, labels = read_frame(root, images[g])
            assert labels == pytest.approx(frame(g)[2], abs=1e-4)
            uv = project(xyz, k_crop(params))  # the labels, to the files' precision
            assert uv == pytest.approx(labels, abs=1e-3)
            crop = square_around(uv, np.ones(21, bool), 32)
            # kp3d as stored (mm), the C21 order kept; K of the crop; kp2d its projection
            assert kp3d == pytest.approx(xyz, abs=1e-3)
            assert kk == pytest.approx(crop.intrinsics(k_crop(params)), rel=1e-5)
            assert kp2d == pytest.approx(crop.points(uv), abs=1e-3)
            assert np.abs(project(kp3d, kk) - kp2d).max() < 1e-3
            assert s["vis"].numpy().all()
            # not mirrored: the thumb stays on the image's left
            assert kp2d[THUMB_TIP, 0] < kp2d[WRIST, 0] < kp2d[LITTLE_TIP, 0]
            # pixels moved with the joints; the background is the frame's folder's
            image = s["images"].numpy()
            x, y = np.rint(kp2d[THUMB_TIP]).astype(int)
            assert image[y, x].min() > 200
            assert np.median(image) == pytest.approx(BACKGROUND[images[g].split("/")[1]], abs=2)
        seen[name] = frames
        assert frames == sorted(frames)  # path order within a split
    assert {images[g] for g in seen["train"]} == want_train
    assert {images[g] for g in seen["test"]} == want_test
    assert read_shard_info(test_path).fingerprint.startswith("convert-gan-v1:")


def test_bad_gan_copies_are_one_clear_error_and_nothing_is_written(tmp_path):
    out = tmp_path / "out"

    def refused(folder: Path, match: str) -> None:
        assert_refused("gan", folder, out, match)

    def copy(name: str) -> Path:
        folder = tmp_path / name / "GANeratedHands_Release"
        write_gan(folder)
        return folder

    def frame_file(folder: Path, suffix: str) -> Path:
        return folder / "data/withObject/0001" / f"0003_{suffix}.txt"

    folder = copy("half")
    for f in (folder / "data/withObject").rglob("*"):
        if f.is_file():
            f.unlink()
    for d in sorted((folder / "data/withObject").glob("*"), reverse=True):
        d.rmdir()
    (folder / "data/withObject").rmdir()
    refused(folder, r"missing .*data/withObject \(frames in <partition %04d>")
    folder = copy("wrong")
    refused(folder.parent, r"not the release folder; pass .*GANeratedHands_Release")
    refused(folder / "data", r"is the release's data folder; pass its parent")
    folder = copy("cut")
    text = frame_file(folder, "joint_pos_global").read_text()
    frame_file(folder, "joint_pos_global").write_text(text[: len(text) // 2].rsplit(",", 1)[0])
    refused(folder, r"0003_joint_pos_global\.txt holds \d+ values; expected 63 finite numbers")
    folder = copy("text")
    frame_file(folder, "crop_params").write_text("u,v,scale\n")
    refused(folder, r"0003_crop_params\.txt is not a list of numbers \(the crop's u, v, scale\)")
    folder = copy("missing")
    frame_file(folder, "crop_params").unlink()
    refused(folder, r"missing .*0003_crop_params\.txt \(the crop's u, v, scale\)")
    # a layout without partition folders
    folder = copy("flat")
    for f in list((folder / "data/noObject").rglob("*.*")):
        f.rename(folder / "data/noObject" / f"{f.parent.name}_{f.name}")
    refused(folder, r"noObject holds no <partition>/<frame>.*\(8 frames lie directly in it")
    # joint_pos_global in metres
    folder = copy("metres")
    for f in (folder / "data").rglob("*_joint_pos_global.txt"):
        values = np.array([float(x) for x in f.read_text().split(",")]) / 1000
        f.write_text(line(values))
    refused(folder, r"median wrist to middle-MCP distance of the train frames.* is 0\.09.*mm")
    # crop_params read otherwise (u, v the box's centre): the 2D labels disagree
    folder = copy("centre")
    u, v, s = (float(x) for x in frame_file(folder, "crop_params").read_text().split(","))
    frame_file(folder, "crop_params").write_text(f"{u + 16 / s},{v + 16 / s},{s}")
    refused(folder, r"0003_joint2D\.txt is up to 16 px from the projection")
