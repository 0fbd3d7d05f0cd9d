"""The LSP converter on a raw-format fixture the test writes: joints in the canonical order,
the crop carrying keypoints and pixels together, left and right where they belong, the
split membership, re-conversion, and every bad input one clear error with nothing written."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from conftest import assert_refused
from PIL import Image

from bench.cli import main
from bench.data.convert import convert
from bench.data.convert.crop import square_around
from bench.data.joints import get_joint_set
from bench.data.shards import ShardDataset, read_shard_info
from bench.errors import DabenchError

SIDE = 40  # raw images: 40 x 40 px
# LSP-14 (common14) order: r_ankle r_knee r_hip l_hip l_knee l_ankle r_wrist r_elbow
# r_shoulder l_shoulder l_elbow l_wrist neck head_top. A person facing the camera: the
# subject's right side on the image's left (small x).
POSE = np.array(
    [
        [14, 36], [15, 28], [16, 21], [24, 21], [25, 28], [26, 36],  # legs
        [8, 20], [11, 15], [15, 10], [25, 10], [29, 15], [32, 20],  # arms
        [20, 8], [20, 3],  # neck, head top
    ],
    dtype=np.float64,
)  # fmt: skip
MARKED = 6  # the right wrist: a bright square is drawn there in every image


def write_lsp(root: Path, images: int = 2000) -> np.ndarray:
    """The LSP layout: joints.mat (3 x 14 x 2000, 1-based x, y, invisibility) and
    images/im%04d.jpg. Sample i is the pose shifted by i % 5 px; joint 13 (head top)
    is invisible in odd samples. Returns the 0-based joints [2000, 14, 2]."""
    (root / "images").mkdir(parents=True)
    shift = (np.arange(2000) % 5)[:, None, None].astype(np.float64)
    uv = POSE[None] + shift  # 0-based
    joints = np.zeros((3, 14, 2000))
    joints[:2] = (uv + 1.0).transpose(2, 1, 0)
    joints[2, 13, 1::2] = 1.0
    scipy.io.savemat(root / "joints.mat", {"joints": joints})
    for i in range(images):
        img = np.full((SIDE, SIDE, 3), 40, np.uint8)
        x, y = uv[i, MARKED].astype(int)
        img[y - 1 : y + 2, x - 1 : x + 2] = 255
        Image.fromarray(img).save(root / "images" / f"im{i + 1:04d}.png", format="PNG")
        (root / "images" / f"im{i + 1:04d}.png").rename(root / "images" / f"im{i + 1:04d}.jpg")
    return uv


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> tuple[Path, np.ndarray]:
    root = tmp_path_factory.mktemp("lsp-raw")
    return root, write_lsp(root)


def test_lsp_shards_hold_the_canonical_joints_with_the_crop(raw, tmp_path):
    root, uv = raw
    paths = convert("lsp", root, tmp_path, size=32, progress=False)
    assert [p.name for p in paths] == ["train.h5", "test.h5"]
    js = get_joint_set("h36m17")
    train, test = (ShardDataset(p) for p in paths)
    assert (train.info.num_samples, test.info.num_samples) == (1000, 1000)
    assert train.info.joint_set == "h36m17" and train.info.image_size == (32, 32)
    # split membership: images 1-1000 train, 1001-2000 test
    assert [int(train[i]["subject"]) for i in (0, 999)] == [0, 999]
    assert [int(test[i]["subject"]) for i in (0, 999)] == [1000, 1999]
    for shard, first in ((train, 0), (test, 1000)):
        for i in (0, 1, 7):
            s = shard[i]
            kp2d, vis = s["kp2d"].numpy(), s["vis"].numpy()
            # joints without an LSP counterpart: NaN and not visible; no 3D at all
            for name in ("pelvis", "spine", "neck"):
                j = js.joints.index(name)
                assert np.isnan(kp2d[j]).all() and not vis[j]
            assert np.isnan(s["kp3d"].numpy()).all()
            # exactly the crop of the 0-based raw labels, in the canonical order
            raw_uv = uv[first + i]
            raw_vis = np.ones(14, bool)
            raw_vis[13] = (first + i) % 2 == 0
            crop = square_around(raw_uv, raw_vis, 32)
            lsp_to_h36m = {0: "r_ankle", 5: "l_ankle", 6: "r_wrist", 11: "l_wrist", 13: "head"}
            for k, name in lsp_to_h36m.items():
                got = kp2d[js.joints.index(name)]
                assert got == pytest.approx(crop.points(raw_uv[k]), abs=1e-4), name
            # the crop is a similarity: distances between joints scale by one factor
            r_wrist, l_wrist = js.joints.index("r_wrist"), js.joints.index("l_wrist")
            scale = np.linalg.norm(kp2d[r_wrist] - kp2d[l_wrist]) / np.linalg.norm(
                raw_uv[6] - raw_uv[11]
            )
            r_ankle, head = js.joints.index("r_ankle"), js.joints.index("head")
            assert np.linalg.norm(kp2d[r_ankle] - kp2d[head]) == pytest.approx(
                scale * np.linalg.norm(raw_uv[0] - raw_uv[13]), rel=1e-4
            )
            # left and right where they belong: the subject's right on the image's left
            assert kp2d[r_wrist, 0] < kp2d[l_wrist, 0]
            assert kp2d[js.joints.index("r_ankle"), 0] < kp2d[js.joints.index("l_ankle"), 0]
            # visibility follows the invisibility flag (head top hidden in odd images)
            assert vis[head] == ((first + i) % 2 == 0) and vis[r_wrist]
            # pixels and keypoints moved together: the marked wrist is bright
            x, y = np.rint(kp2d[r_wrist]).astype(int)
            assert s["images"].numpy()[y, x].min() > 150


def test_reconverting_keeps_the_shards_and_settings_are_checked(raw, tmp_path):
    root, _ = raw
    first = convert("lsp", root, tmp_path, splits=["test"], size=24, progress=False)[0]
    before = first.read_bytes()
    again = convert("lsp", root, tmp_path, splits=["test"], size=24, progress=False)[0]
    assert again.read_bytes() == before  # same input: kept as it is
    with pytest.raises(DabenchError, match="made from other raw files or settings"):
        convert("lsp", root, tmp_path, splits=["test"], size=28, progress=False)
    convert("lsp", root, tmp_path, splits=["test"], size=24, overwrite=True, progress=False)
    assert first.read_bytes() == before  # rewritten byte for byte
    assert read_shard_info(first).fingerprint.startswith("convert-lsp-v1:")
    with pytest.raises(DabenchError, match=r"unknown split\(s\) \['val'\]; valid: \['train'"):
        convert("lsp", root, tmp_path, splits=["val"], progress=False)
    with pytest.raises(
        DabenchError,
        match="no converter for dataset card 'synth-hand-clean'.*lsp.*dabench data synth",
    ):
        convert("synth-hand-clean", root, tmp_path, progress=False)


def test_bad_raw_copies_are_one_clear_error_and_nothing_is_written(raw, tmp_path, capsys):
    root, _ = raw
    out = tmp_path / "out"

    def refused(folder: Path, match: str) -> None:
        assert_refused("lsp", folder, out, match)

    refused(tmp_path / "nowhere", "raw folder .*nowhere does not exist")
    empty = tmp_path / "empty"
    empty.mkdir()
    refused(empty, r"missing .*joints\.mat \(the 3 x 14 x 2000 joint array")
    cut = tmp_path / "cut"
    (cut / "images").mkdir(parents=True)
    (cut / "joints.mat").write_bytes((root / "joints.mat").read_bytes()[:300])
    refused(cut, r"joints\.mat is not a readable MATLAB file")
    other = tmp_path / "extended"
    (other / "images").mkdir(parents=True)
    scipy.io.savemat(other / "joints.mat", {"joints": np.zeros((14, 3, 10000))})
    refused(other, r"shape \(14, 3, 10000\); expected \(3, 14, 2000\)")
    named = tmp_path / "named"
    (named / "images").mkdir(parents=True)
    scipy.io.savemat(named / "joints.mat", {"pose": np.zeros((3, 14, 2000))})
    refused(named, r"lacks \['joints'\].*holds \['pose'\]")
    gaps = tmp_path / "gaps"
    write_lsp(gaps, images=1500)  # the test split's last 500 images are missing
    refused(gaps, r"missing .*im1501\.jpg \(image 1501 of 2000\)")
    # the CLI says the same in one line, exit status 2
    assert main(["data", "convert", "lsp", str(gaps), "--out", str(out), "--quiet"]) == 2
    assert "im1501.jpg" in capsys.readouterr().err


def test_progress_bars_count_the_annotations_files_and_samples(raw, tmp_path, capsys):
    root, _ = raw
    convert("lsp", root, tmp_path, splits=["test"], size=24, progress=True)
    err = capsys.readouterr().err
    # the first pass: 1,000 samples read, one image file each; then the written samples
    assert re.search(r"lsp/test annotations: .*1000 ?sample.*files=1000", err), err[-400:]
    assert re.search(r"lsp/test: 100%.*1000/1000", err), err[-400:]
