"""The MPII converter on a fixture in the HRNet/mmpose JSON layout: canonical joints, the
crop, head sizes for PCKh carried into the crop, left and right, the splits, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from conftest import assert_refused
from PIL import Image

from bench.data.convert import convert
from bench.data.convert.crop import square_around
from bench.data.joints import get_joint_set
from bench.data.shards import ShardDataset
from bench.metrics import evaluate

# MPII-16: r_ankle r_knee r_hip l_hip l_knee l_ankle pelvis thorax upper_neck head_top
# r_wrist r_elbow r_shoulder l_shoulder l_elbow l_wrist; frontal: the right on the left.
POSE = np.array(
    [
        [16, 44], [17, 35], [18, 27], [30, 27], [31, 35], [32, 44], [24, 27], [24, 14],
        [24, 11], [24, 4], [10, 26], [13, 20], [17, 14], [31, 14], [35, 20], [38, 26],
    ],
    dtype=np.float64,
)  # fmt: skip
HEAD_BOX = np.array([[20.0, 2.0], [28.0, 12.0]])  # corners (x, y), 1-based like the file


def write_mpii(root: Path, train: int = 3, val: int = 4) -> None:
    (root / "images").mkdir(parents=True)
    (root / "annot").mkdir()
    for split, n in (("train", train), ("val", val)):
        entries = []
        for i in range(n):
            name = f"{split}{i:03d}.jpg"
            uv = POSE + i  # 0-based
            vis = np.ones(16, int)
            vis[9] = i % 2  # head top unlabelled in even entries
            entries.append(
                {
                    "image": name,
                    "center": (uv.mean(axis=0) + 1).tolist(),
                    "scale": 0.3,
                    "joints": (uv + 1).tolist(),
                    "joints_vis": vis.tolist(),
                }
            )
            Image.fromarray(np.full((48, 48, 3), 60 + i, np.uint8)).save(
                root / "images" / name, format="PNG"
            )
        (root / "annot" / f"mpii_{split}.json").write_text(json.dumps(entries))
    boxes = np.stack([HEAD_BOX + i for i in range(val)], axis=-1)  # 2 x 2 x N
    scipy.io.savemat(root / "annot" / "mpii_gt_val.mat", {"headboxes_src": boxes})


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mpii-raw")
    write_mpii(root)
    return root


def test_mpii_shards_carry_joints_and_head_sizes_into_the_crop(raw, tmp_path):
    train_path, test_path = convert("mpii", raw, tmp_path, size=32, progress=False)
    train, test = ShardDataset(train_path), ShardDataset(test_path)
    assert (train.info.num_samples, test.info.num_samples) == (3, 4)
    js = get_joint_set("h36m17")
    index = {name: js.joints.index(name) for name in js.joints}
    mpii_of = {"r_ankle": 0, "pelvis": 6, "thorax": 8 - 1, "neck": 8, "head": 9, "r_wrist": 10}
    for i in range(4):
        s = test[i]
        kp2d, vis = s["kp2d"].numpy(), s["vis"].numpy()
        raw_uv, raw_vis = POSE + i, np.ones(16, bool)
        raw_vis[9] = i % 2 == 1
        crop = square_around(raw_uv, raw_vis, 32)
        for name, k in mpii_of.items():
            assert kp2d[index[name]] == pytest.approx(crop.points(raw_uv[k]), abs=1e-4), name
        assert np.isnan(kp2d[index["spine"]]).all() and not vis[index["spine"]]
        assert vis[index["head"]] == (i % 2 == 1) and np.isnan(s["kp3d"].numpy()).all()
        assert kp2d[index["r_wrist"], 0] < kp2d[index["l_wrist"], 0]
        diagonal = np.linalg.norm(HEAD_BOX[1] - HEAD_BOX[0])
        assert float(s["head_size"]) == pytest.approx(crop.lengths(0.6 * diagonal), rel=1e-5)
        assert int(s["subject"]) == i
    # the training list has no head boxes: no PCKh normaliser there
    assert all(np.isnan(float(train[i]["head_size"])) for i in range(3))


def test_pckh_on_a_converted_split(raw, tmp_path):
    (path,) = convert("mpii", raw, tmp_path, splits=["test"], size=32, progress=False)
    shard = ShardDataset(path)
    rows = [shard[i] for i in range(4)]
    gt = np.stack([r["kp2d"].numpy() for r in rows])
    vis = np.stack([r["vis"].numpy() for r in rows])
    heads = np.array([float(r["head_size"]) for r in rows])
    gt3d = np.stack([r["kp3d"].numpy() for r in rows])

    def pckh_of(pred: np.ndarray) -> float:
        return evaluate(pred, gt, pred3d, gt3d, vis, "h36m17", 32, head_size=heads).overall[
            "pckh_50"
        ]

    pred3d = np.zeros_like(gt3d)
    safe = np.nan_to_num(gt)
    assert pckh_of(safe) == 100.0
    shifted = safe.copy()
    shifted[..., 0] += 0.6 * heads[:, None]  # beyond half a head everywhere
    assert pckh_of(shifted) == 0.0


def test_bad_mpii_copies_are_one_clear_error_and_nothing_is_written(raw, tmp_path):
    out = tmp_path / "out"

    def refused(folder: Path, match: str) -> None:
        assert_refused("mpii", folder, out, match)

    def copy(name: str) -> Path:
        folder = tmp_path / name
        write_mpii(folder)
        return folder

    folder = copy("no-val")
    (folder / "annot" / "mpii_val.json").unlink()
    refused(folder, r"missing .*mpii_val\.json \(the test annotation list\)")
    folder = copy("cut-json")
    text = (folder / "annot" / "mpii_val.json").read_text()
    (folder / "annot" / "mpii_val.json").write_text(text[: len(text) // 2])
    refused(folder, r"mpii_val\.json is not valid JSON \(cut short\?\)")
    folder = copy("boxes")
    scipy.io.savemat(folder / "annot" / "mpii_gt_val.mat", {"headboxes_src": np.zeros((2, 2, 9))})
    refused(folder, r"shape \(2, 2, 9\); expected \(2, 2, 4\), one box per entry")
    folder = copy("entry")
    entries = json.loads((folder / "annot" / "mpii_train.json").read_text())
    del entries[1]["joints"]
    (folder / "annot" / "mpii_train.json").write_text(json.dumps(entries))
    refused(folder, r"entry 1 of .*mpii_train\.json lacks a readable image, joints")
    folder = copy("image")
    (folder / "images" / "val002.jpg").unlink()
    refused(folder, r"missing .*val002\.jpg \(the image of entry 2 of annot/mpii_val\.json\)")
