"""The STB converter on a fixture in the STB layout (handPara .mat files in mm, left BB
images): the extrapolated wrist, joints in the canonical order as the projection of their 3D
with the fixed K, the B2-B6 / B1 split, sequence and frame ids, both image-folder layouts, and
bad input one clear error with nothing written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
from conftest import assert_refused
from PIL import Image

from bench.data.convert import convert
from bench.data.convert.crop import square_around
from bench.data.geometry import project
from bench.data.joints import get_joint_set
from bench.data.shards import ShardDataset

FRAMES = 3  # per sequence (1500 in STB)
W, H = 640, 480
K = np.array([[822.79041, 0.0, 318.47345], [0.0, 822.79041, 250.31296], [0.0, 0.0, 1.0]])
SEQUENCES = [f"B{b}{kind}" for b in range(1, 7) for kind in ("Counting", "Random")]
# A left hand in the stb21 order (palm centre, then little, ring, middle, index, thumb, each
# MCP -> tip), mm in the camera frame, fingers up (-y), the thumb on the image's left (-x).
HAND = np.array(
    [
        [0, 0, 400],  # palm centre
        [30, -30, 405], [33, -50, 405], [35, -63, 405], [36, -75, 405],  # little
        [12, -36, 400], [13, -60, 400], [14, -75, 400], [14, -88, 400],  # ring
        [-6, -38, 398], [-7, -64, 398], [-7, -80, 398], [-7, -94, 398],  # middle
        [-24, -34, 402], [-27, -58, 402], [-29, -72, 402], [-30, -84, 402],  # index
        [-30, 10, 410], [-48, -5, 408], [-60, -18, 406], [-70, -30, 404],  # thumb cmc -> tip
    ],
    dtype=np.float64,
)  # fmt: skip


def hand(seq: str, frame: int) -> np.ndarray:
    """The raw joints of a frame: the pose moved per sequence and per frame."""
    return HAND + np.array([5.0 * frame, 4.0 * SEQUENCES.index(seq), 10.0 * frame])


def wrist(raw: np.ndarray) -> np.ndarray:
    """ring_MCP + 2 (palm - ring_MCP), the card's rule, written out independently."""
    return 2.0 * raw[0] - raw[5]


def write_stb(
    root: Path, images: str = "images/", drawn: tuple[str, ...] = tuple(SEQUENCES)
) -> None:
    """The STB layout; images of sequences not in ``drawn`` are empty files (enough where
    the conversion is refused, or not asked, before any image is read)."""
    (root / "labels").mkdir(parents=True)
    for seq in SEQUENCES:
        (root / images / seq).mkdir(parents=True)
        para = np.stack([hand(seq, i).T for i in range(FRAMES)], axis=-1)  # 3 x 21 x F
        scipy.io.savemat(root / "labels" / f"{seq}_BB.mat", {"handPara": para})
        scipy.io.savemat(root / "labels" / f"{seq}_SK.mat", {"handPara": para + 30.0})
        for i in range(FRAMES):
            path = root / images / seq / f"BB_left_{i}.png"
            if seq not in drawn:
                path.touch()
                continue
            img = np.full((H, W, 3), 50, np.uint8)
            # a marker at the wrist, large enough to survive the ~10x downscaling of the crop
            x, y = np.rint(project(wrist(hand(seq, i))[None], K)[0]).astype(int)
            img[y - 12 : y + 13, x - 12 : x + 13] = 255
            Image.fromarray(img).save(path, compress_level=1)


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("stb-raw")
    write_stb(root)
    return root


# hand21 slot -> stb21 index, spelled out by name
STB_OF = {"thumb_cmc": 17, "thumb_tip": 20, "index_mcp": 13, "index_tip": 16, "middle_pip": 10,
          "ring_dip": 7, "ring_mcp": 5, "little_mcp": 1, "little_tip": 4}  # fmt: skip


def test_stb_shards_hold_the_wrist_and_the_canonical_joints(raw, tmp_path):
    train_path, test_path = convert("stb", raw, tmp_path, size=32, progress=False)
    train, test = ShardDataset(train_path), ShardDataset(test_path)
    assert (train.info.num_samples, test.info.num_samples) == (10 * FRAMES, 2 * FRAMES)
    assert train.info.joint_set == "hand21"
    assert {"seq", "frame", "view"} <= set(train.info.fields)
    js = get_joint_set("hand21")
    # split membership: B2-B6 train, B1 test, in sequence then frame order
    ids = {"B1Counting": 10, "B1Random": 11, "B2Counting": 20, "B6Random": 61}
    want = {
        "train": [(seq, i) for seq in SEQUENCES[2:] for i in range(FRAMES)],
        "test": [(seq, i) for seq in SEQUENCES[:2] for i in range(FRAMES)],
    }
    for shard, split in ((train, "train"), (test, "test")):
        for row, (seq, frame) in enumerate(want[split]):
            s = shard[row]
            assert (int(s["frame"]), int(s["view"])) == (frame, 0)
            b, kind = int(seq[1]), seq[2:]
            assert int(s["seq"]) == 10 * b + (kind == "Random")
            if seq in ids:
                assert int(s["seq"]) == ids[seq]
            raw3d = hand(seq, frame)
            full = raw3d.copy()
            full[0] = wrist(raw3d)
            uv = project(full, K)
            crop = square_around(uv, np.ones(21, bool), 32)
            kp2d, kp3d, vis = s["kp2d"].numpy(), s["kp3d"].numpy(), s["vis"].numpy()
            assert vis.all()
            # the wrist is extrapolated from the palm centre, in 3D, before projecting
            assert kp3d[js.index("wrist")] == pytest.approx(wrist(raw3d), abs=1e-3)
            assert kp2d[js.index("wrist")] == pytest.approx(crop.points(uv[0]), abs=1e-4)
            for name, r in STB_OF.items():
                j = js.index(name)
                assert kp3d[j] == pytest.approx(raw3d[r], abs=1e-3), name
                assert kp2d[j] == pytest.approx(crop.points(uv[r]), abs=1e-4), name
            stored_k = s["K"].numpy()
            assert stored_k == pytest.approx(crop.intrinsics(K), rel=1e-5)
            assert np.abs(project(kp3d, stored_k) - kp2d).max() < 1e-3
            # a left hand seen from the back, fingers up: the thumb on the image's left
            assert kp2d[js.index("thumb_tip"), 0] < kp2d[js.index("little_tip"), 0]
            assert kp2d[js.index("middle_tip"), 1] < kp2d[js.index("wrist"), 1]
            # pixels and keypoints moved together: the marked wrist is bright
            x, y = np.rint(kp2d[js.index("wrist")]).astype(int)
            assert s["images"].numpy()[y, x].min() > 150


def test_sequence_folders_at_the_top_level(tmp_path):
    root = tmp_path / "top"
    write_stb(root, images="", drawn=("B1Counting", "B1Random"))
    (path,) = convert("stb", root, tmp_path / "out", splits=["test"], size=16, progress=False)
    s = ShardDataset(path)[FRAMES + 1]
    assert (int(s["seq"]), int(s["frame"])) == (11, 1)


def test_bad_stb_copies_are_one_clear_error_and_nothing_is_written(raw, tmp_path):
    out = tmp_path / "out"

    def refused(folder: Path, match: str) -> None:
        assert_refused("stb", folder, out, match)

    def copy(name: str) -> Path:
        folder = tmp_path / name
        write_stb(folder, drawn=())
        return folder

    empty = tmp_path / "empty"
    empty.mkdir()
    refused(empty, r"no sequence folder .*B1Counting/ … B6Random/")
    # the labels folder instead of the STB folder
    refused(raw / "labels", r"no sequence folder")
    folder = copy("no-labels")
    (folder / "labels" / "B1Random_BB.mat").unlink()
    refused(folder, r"missing .*labels/B1Random_BB\.mat \(the 3 x 21 x 1500 joint array")
    folder = copy("cut")
    path = folder / "labels" / "B4Counting_BB.mat"
    path.write_bytes(path.read_bytes()[:300])
    refused(folder, r"B4Counting_BB\.mat is not a readable MATLAB file")
    folder = copy("transposed")  # 21 x 3 x frames, as some re-packagings store it
    path = folder / "labels" / "B2Random_BB.mat"
    para = scipy.io.loadmat(path)["handPara"]
    scipy.io.savemat(path, {"handPara": para.transpose(1, 0, 2)})
    refused(folder, r"shape \(21, 3, 3\); expected \(3, 21, frames\)")
    folder = copy("named")
    scipy.io.savemat(folder / "labels" / "B3Random_BB.mat", {"joints": para})
    refused(folder, r"lacks \['handPara'\].*holds \['joints'\]")
    folder = copy("metres")
    scipy.io.savemat(folder / "labels" / "B1Counting_BB.mat", {"handPara": para / 1000.0})
    refused(folder, r"look like metres; STB's handPara is in mm")
    folder = copy("behind")
    bad = para.copy()
    bad[2, 3, 1] = -5.0
    scipy.io.savemat(folder / "labels" / "B5Counting_BB.mat", {"handPara": bad})
    refused(folder, r"frame 1 of .*B5Counting_BB\.mat has joints at depth <= 0")
    folder = copy("no-image")
    (folder / "images" / "B1Random" / "BB_left_2.png").unlink()
    refused(folder, r"missing .*B1Random/BB_left_2\.png \(the left BB image of frame 2 of B1Random")
