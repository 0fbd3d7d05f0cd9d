"""The FreiHAND converter on a fixture in the release layout: the four colour versions of a
pose found by id = pose + N·version, the crop carrying joints, intrinsics, pixels and the
shared masks together, kp2d the projection of kp3d, the thumb where it was, the splits (the
test shard without masks), and every bad input one clear error with nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_refused
from PIL import Image

import bench.data.convert.run as run
from bench.data.convert import convert, get_converter
from bench.data.convert.crop import square_around
from bench.data.joints import get_joint_set
from bench.data.shards import ShardDataset, read_shard_info

SIDE = 32  # raw images (the real ones are 224 x 224)
# A right hand (C21 order), palm to the camera, fingers up, in metres: the thumb on the
# image's left (small x), the little finger on its right; depth varies per joint.
HAND = np.array(
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
TRAIN, TEST = 3, 2  # poses


def pose(i: int, evaluation: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Pose i's joints [21, 3] (m) and K: shifted, nearer and seen with another focal per
    pose, so that a pose read for another shows."""
    xyz = np.zeros((21, 3))
    xyz[:, :2] = HAND + np.array([0.006 * i - (0.01 if evaluation else 0.0), 0.0])
    xyz[:, 2] = 0.5 - 0.02 * i + 0.001 * np.arange(21)
    k = np.array([[60.0 + 2 * i, 0.0, 16.0], [0.0, 60.0 + 2 * i, 18.0], [0.0, 0.0, 1.0]])
    return xyz, k


def project(xyz: np.ndarray, k: np.ndarray) -> np.ndarray:
    uvw = xyz @ k.T
    return uvw[..., :2] / uvw[..., 2:]


def background(version: int) -> int:
    return 30 + 40 * version


def write_image(path: Path, value: int, marker: np.ndarray) -> None:
    """A flat image with a bright 3 x 3 marker at ``marker`` (PNG bytes: no JPEG blur on
    the marker; the reader decodes by content, as for the real JPEGs)."""
    img = np.full((SIDE, SIDE, 3), value, np.uint8)
    x, y = np.rint(marker).astype(int)
    img[y - 1 : y + 2, x - 1 : x + 2] = 255
    Image.fromarray(img).save(path, format="PNG")


def write_freihand(root: Path, train: int = TRAIN, test: int = TEST) -> None:
    """FreiHAND_pub_v2 with the evaluation zip unpacked into it: JSON lists, 4 x ``train``
    training images, ``train`` JPEG masks (a box around the pose's joints), ``test``
    evaluation images. The thumb tip is marked in every image."""
    for sub in ("training/rgb", "training/mask", "evaluation/rgb"):
        (root / sub).mkdir(parents=True)
    for prefix, n, evaluation in (("training", train, False), ("evaluation", test, True)):
        poses = [pose(i, evaluation) for i in range(n)]
        (root / f"{prefix}_K.json").write_text(json.dumps([k.tolist() for _, k in poses]))
        (root / f"{prefix}_xyz.json").write_text(json.dumps([x.tolist() for x, _ in poses]))
        mano = [[[0.0] * 61] for _ in range(n)]
        (root / f"{prefix}_mano.json").write_text(json.dumps(mano))
        for i, (xyz, k) in enumerate(poses):
            uv = project(xyz, k)
            for version in range(4 if not evaluation else 1):
                name = f"{prefix}/rgb/{i + n * version:08d}.jpg"
                write_image(root / name, background(version), uv[THUMB_TIP])
            if not evaluation:
                mask = np.zeros((SIDE, SIDE), np.uint8)
                (x0, y0), (x1, y1) = np.floor(uv.min(0)).astype(int), np.ceil(uv.max(0))
                mask[y0 : int(y1) + 1, x0 : int(x1) + 1] = 255
                Image.fromarray(mask).save(root / f"training/mask/{i:08d}.jpg", quality=90)


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("FreiHAND_pub_v2")
    write_freihand(root)
    return root


def expected_mask(root: Path, i: int, crop) -> np.ndarray:
    """The raw JPEG mask of pose i, thresholded and cropped as the card says."""
    grey = np.asarray(Image.open(root / f"training/mask/{i:08d}.jpg").convert("L"))
    fg = (grey > 127).astype(np.uint8) * 255
    return crop.image(fg, Image.Resampling.NEAREST) > 127


def test_freihand_shards_hold_the_joints_versions_and_masks(raw, tmp_path):
    train_path, test_path = convert("freihand", raw, tmp_path, size=32, progress=False)
    train, test = ShardDataset(train_path), ShardDataset(test_path)
    assert (train.info.num_samples, test.info.num_samples) == (4 * TRAIN, TEST)
    assert train.info.joint_set == "hand21" and train.info.image_size == (32, 32)
    # masks where the release has them: the training split only
    assert {"seq", "masks"} <= set(train.info.fields)
    assert "seq" in test.info.fields and "masks" not in test.info.fields
    js = get_joint_set("hand21")
    assert (js.index("wrist"), js.index("thumb_tip"), js.index("little_tip")) == (0, 4, 20)
    for shard, n, evaluation in ((train, TRAIN, False), (test, TEST, True)):
        for j in range(shard.info.num_samples):
            s = shard[j]
            i, version = j % n, j // n  # image id = pose + N * version
            xyz, k = pose(i, evaluation)
            crop = square_around(project(xyz, k), np.ones(21, bool), 32)
            kp2d, kp3d, kk = s["kp2d"].numpy(), s["kp3d"].numpy(), s["K"].numpy()
            assert int(s["seq"]) == i
            assert s["vis"].numpy().all()
            # metres to mm, the C21 order kept, and the crop of the projection
            assert kp3d == pytest.approx(xyz * 1000, abs=1e-3)
            assert kp2d == pytest.approx(crop.points(project(xyz, k)), abs=1e-3)
            assert kk == pytest.approx(crop.intrinsics(k), rel=1e-6)
            # the shard invariant: kp2d is the projection of kp3d with the stored K
            assert (
                np.abs(project(kp3d.astype(np.float64), kk.astype(np.float64)) - kp2d).max() < 1e-3
            )
            # a right hand, not mirrored: the thumb on the image's left, the little finger
            # on its right, the wrist below the fingertips
            assert kp2d[THUMB_TIP, 0] < kp2d[WRIST, 0] < kp2d[LITTLE_TIP, 0]
            assert kp2d[WRIST, 1] > kp2d[js.index("middle_tip"), 1]
            # pixels moved with the joints: the thumb tip's marker is bright; the rest is
            # the colour version's background
            image = s["images"].numpy()
            x, y = np.rint(kp2d[THUMB_TIP]).astype(int)
            assert image[y, x].min() > 200
            assert np.median(image) == pytest.approx(background(version), abs=3)
            if not evaluation:
                # the pose's mask, shared by its four versions, cropped with the image
                mask = s["masks"].numpy()
                assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
                assert np.array_equal(mask.astype(bool), expected_mask(raw, i, crop))
                x, y = np.rint(kp2d[js.index("middle_mcp")]).astype(int)
                assert mask[y, x] == 1 and mask[0, 0] == 0 and mask[-1, 0] == 0


def test_the_per_split_fields_hold_with_worker_processes_and_one_split(raw, tmp_path, monkeypatch):
    monkeypatch.setattr(run, "CHUNK", 1)  # several chunks in both splits: workers prepare them
    (test_path,) = convert("freihand", raw, tmp_path, splits=["test"], workers=2, progress=False)
    (train_path,) = convert("freihand", raw, tmp_path, splits=["train"], workers=2, progress=False)
    assert "masks" in read_shard_info(train_path).fields
    assert "masks" not in read_shard_info(test_path).fields
    masks = np.stack([ShardDataset(train_path)[j]["masks"].numpy() for j in range(4 * TRAIN)])
    assert np.array_equal(masks[:TRAIN], masks[TRAIN : 2 * TRAIN])  # one mask per pose
    assert read_shard_info(train_path).fingerprint.startswith("convert-freihand-v1:")
    # outside the framework's calls the converter names everything it can write
    assert set(get_converter("freihand").fields) == {"seq", "masks"}


def test_bad_freihand_copies_are_one_clear_error_and_nothing_is_written(raw, tmp_path):
    out = tmp_path / "out"

    def refused(folder: Path, match: str) -> None:
        assert_refused("freihand", folder, out, match)

    def copy(name: str) -> Path:
        folder = tmp_path / name / "FreiHAND_pub_v2"
        write_freihand(folder)
        return folder

    folder = copy("no-xyz")
    (folder / "training_xyz.json").unlink()
    refused(folder, r"missing .*training_xyz\.json \(the training 3D joints")
    # the parent of the release folder, or a folder inside it
    refused(folder.parent, r"not the release folder; pass .*FreiHAND_pub_v2")
    refused(raw / "training", r"training is a folder inside the release")
    folder = copy("cut")
    text = (folder / "evaluation_xyz.json").read_text()
    (folder / "evaluation_xyz.json").write_text(text[: len(text) // 2])
    refused(folder, r"evaluation_xyz\.json is not valid JSON \(cut short\?\)")
    # FreiHAND v1, or v2 without the evaluation zip: no evaluation labels
    folder = copy("v1")
    (folder / "evaluation_xyz.json").unlink()
    refused(folder, r"missing .*evaluation_xyz\.json .*FreiHAND_pub_v2_eval\.zip")
    folder = copy("mm")
    xyz = np.array(json.loads((folder / "training_xyz.json").read_text())) * 1000
    (folder / "training_xyz.json").write_text(json.dumps(xyz.tolist()))
    refused(folder, r"training_xyz\.json: the median wrist to middle-MCP distance is 90.*metres")
    folder = copy("verts")  # the 778-vertex list where the joints belong
    (folder / "training_xyz.json").write_text(json.dumps(np.zeros((TRAIN, 778, 3)).tolist()))
    refused(folder, r"shape \(3, 778, 3\); expected \(N, 21, 3\)")
    folder = copy("lengths")
    ks = json.loads((folder / "training_K.json").read_text())
    (folder / "training_K.json").write_text(json.dumps(ks[:-1]))
    refused(folder, r"differ in length \{'training_K\.json': 2, 'training_xyz\.json': 3\}")
    folder = copy("one-version")  # only the green-screen version copied
    for f in (folder / "training/rgb").glob("*.jpg"):
        if int(f.stem) >= TRAIN:
            f.unlink()
    refused(folder, r"missing .*rgb/00000003\.jpg \(training pose 0 in colour version 1 'hom'")
    folder = copy("no-mask")
    (folder / "training/mask/00000001.jpg").unlink()
    refused(folder, r"missing .*mask/00000001\.jpg \(the hand mask of training pose 1 of 3\)")
    folder = copy("behind")
    xyz = np.array(json.loads((folder / "evaluation_xyz.json").read_text()))
    xyz[1, 7, 2] = -0.1
    (folder / "evaluation_xyz.json").write_text(json.dumps(xyz.tolist()))
    refused(folder, r"pose 1 joint 7 has depth -0\.1 <= 0")
