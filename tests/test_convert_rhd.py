"""The RHD converter on a fixture in the RHD v1.1 layout (protocol-2 pickles, part-label
masks): the hand with more mask pixels is the sample, its joints in the canonical order as
the projection of its 3D, the mask its parts only, the official split folders, and bad input
one clear error with nothing written."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_refused
from PIL import Image

from bench.data.convert import convert
from bench.data.convert.crop import square_around
from bench.data.geometry import project
from bench.data.joints import get_joint_set
from bench.data.shards import ShardDataset

SIDE = 64  # raw renders: 64 x 64 px (RHD: 320), principal point at SIDE / 2 like RHD
DEPTH = 0.5  # m
# One hand in the rhd21 order (wrist, then each finger tip -> base: thumb, index, middle,
# ring, little), in renderer pixels (edge convention) of a hand pointing up: the thumb
# (tip at x = 4) on the image's left, the little finger (tip at x = 26) on the right.
HAND_UV = np.array(
    [
        [15, 28],  # wrist
        [4, 14], [6, 17], [8, 21], [11, 24],  # thumb tip -> cmc
        [10, 4], [10, 8], [11, 12], [12, 17],  # index
        [15, 2], [15, 7], [15, 11], [15, 16],  # middle
        [20, 4], [19, 8], [19, 12], [18, 17],  # ring
        [26, 8], [24, 11], [23, 14], [21, 18],  # little
    ],
    dtype=np.float64,
)  # fmt: skip
RIGHT_OFFSET = np.array([30.0, 30.0])  # the right hand sits below right of the left one
# part-label boxes (x0, y0, x1, y1) of the left and right hands; sizes set the choice
LEFT_BOX = (2, 2, 28, 30)
RIGHT_BOX = (32, 32, 58, 60)
MARKED = 0  # the chosen hand's wrist: a bright square is drawn there

# sample id -> (left-hand pixels, right-hand pixels, focal length); "dominant" follows
SAMPLES = {
    "training": {0: ("big", "small", 60.0), 1: ("small", "big", 70.0), 2: ("tie", "tie", 65.0),
                 5: ("big", "none", 60.0)},
    "evaluation": {3: ("small", "big", 62.0), 4: ("big", "small", 66.0)},
}  # fmt: skip
CHOSEN = {0: 0, 1: 1, 2: 1, 3: 1, 4: 0}  # 0 left block, 1 right block; 5 has nothing visible


def camera(f: float) -> np.ndarray:
    return np.array([[f, 0.0, SIDE / 2], [0.0, f, SIDE / 2], [0.0, 0.0, 1.0]])


def both_hands(sample: int, f: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """xyz (m) of both blocks, their uv_vis as the file stores them, and K."""
    k = camera(f)
    uv = np.concatenate([HAND_UV, HAND_UV + RIGHT_OFFSET]) + sample % 3
    z = DEPTH + 0.002 * np.arange(42)  # not planar, so 3D and 2D are distinct checks
    xyz = np.stack([(uv[:, 0] - k[0, 2]) * z / f, (uv[:, 1] - k[1, 2]) * z / f, z], axis=1)
    vis = np.ones(42)
    vis[20] = vis[41] = 0  # little MCPs hidden
    if sample == 5:
        vis[:21] = 0  # the chosen (left) hand has no visible joint: left out
    # the file rounds: its uv are a few hundredths of a pixel off the projection
    stored = np.round(project(np.round(xyz, 4), k), 1)
    return np.round(xyz, 4), np.concatenate([stored, vis[:, None]], axis=1), k


def write_rhd(root: Path, samples: dict = SAMPLES) -> None:
    for folder, entries in samples.items():
        for sub in ("color", "mask", "depth"):
            (root / folder / sub).mkdir(parents=True)
        anno = {}
        for sample, (left, right, f) in entries.items():
            xyz, uv_vis, k = both_hands(sample, f)
            anno[sample] = {"xyz": xyz.astype(np.float32), "uv_vis": uv_vis, "K": k}
            labels = np.zeros((SIDE, SIDE), np.uint8)
            labels[40:, :20] = 1  # the person
            for box, size, first in ((LEFT_BOX, left, 2), (RIGHT_BOX, right, 18)):
                x0, y0, x1, y1 = box
                rows = {"big": y1 - y0, "small": 6, "tie": 10, "none": 0}[size]
                labels[y0 : y0 + rows, x0:x1] = first + np.arange(x1 - x0) % 16
            Image.fromarray(labels).save(root / folder / "mask" / f"{sample:05d}.png")
            img = np.full((SIDE, SIDE, 3), 30, np.uint8)
            block = 21 * CHOSEN.get(sample, 0)
            x, y = np.rint(uv_vis[block + MARKED, :2] - 0.5).astype(int)
            img[y - 1 : y + 2, x - 1 : x + 2] = 255
            Image.fromarray(img).save(root / folder / "color" / f"{sample:05d}.png")
        with open(root / folder / f"anno_{folder}.pickle", "wb") as fo:
            pickle.dump(anno, fo, protocol=2)


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rhd-raw")
    write_rhd(root)
    return root


# hand21 slot -> rhd21 index (tllib left_hand_index), spelled out by name
RHD_OF = {"wrist": 0, "thumb_tip": 1, "thumb_cmc": 4, "index_tip": 5, "index_mcp": 8,
          "middle_pip": 11, "ring_dip": 14, "little_tip": 17, "little_mcp": 20}  # fmt: skip


def test_rhd_shards_hold_the_dominant_hand_in_the_canonical_order(raw, tmp_path):
    train_path, test_path = convert("rhd", raw, tmp_path, size=32, progress=False)
    train, test = ShardDataset(train_path), ShardDataset(test_path)
    # split membership: the official folders, sorted ids; sample 5 (nothing visible) left out
    assert (train.info.num_samples, test.info.num_samples) == (3, 2)
    assert train.info.joint_set == "hand21" and "masks" in train.info.fields
    js = get_joint_set("hand21")
    for shard, ids, folder in ((train, (0, 1, 2), "training"), (test, (3, 4), "evaluation")):
        for row, sample in enumerate(ids):
            s = shard[row]
            xyz, uv_vis, k = both_hands(sample, SAMPLES[folder][sample][2])
            block = slice(0, 21) if CHOSEN[sample] == 0 else slice(21, 42)
            kp3d_raw = xyz[block] * 1000.0
            # pixel centres at integers: the renderer's principal point SIDE/2 becomes -0.5
            k_centre = k.copy()
            k_centre[:2, 2] -= 0.5
            uv_raw = project(kp3d_raw, k_centre)
            vis_raw = uv_vis[block, 2] == 1
            crop = square_around(uv_raw, vis_raw, 32)
            kp2d, kp3d, vis = s["kp2d"].numpy(), s["kp3d"].numpy(), s["vis"].numpy()
            for name, r in RHD_OF.items():
                j = js.index(name)
                assert kp2d[j] == pytest.approx(crop.points(uv_raw[r]), abs=1e-4), name
                assert kp3d[j] == pytest.approx(kp3d_raw[r], abs=1e-3), name
                assert vis[j] == vis_raw[r], name
            assert not vis[js.index("little_mcp")] and vis.sum() == 20
            stored_k = s["K"].numpy()
            assert stored_k == pytest.approx(crop.intrinsics(k_centre), abs=1e-4)
            # the shard invariant: kp2d is the projection of kp3d with the stored K
            assert np.abs(project(kp3d, stored_k) - kp2d).max() < 1e-3
            # the file's rounded 2D labels are close to it but are not what is stored
            assert np.abs(uv_vis[block, :2] - 0.5 - uv_raw).max() < 0.1
            # the chosen block: the right hand is 30 px below right of the left one
            offset = 30.0 * CHOSEN[sample]
            assert uv_raw[0] == pytest.approx(HAND_UV[0] + sample % 3 + offset - 0.5, abs=0.05)
            # an asymmetric pose: thumb on the image's left of the little finger
            assert kp2d[js.index("thumb_tip"), 0] < kp2d[js.index("little_tip"), 0]
            # the mask is the chosen hand's parts only (no person, no other hand)
            labels = np.asarray(Image.open(raw / folder / "mask" / f"{sample:05d}.png"))
            low, high = (2, 17) if CHOSEN[sample] == 0 else (18, 33)
            fg = ((labels >= low) & (labels <= high)).astype(np.uint8) * 255
            want = (crop.image(fg, Image.Resampling.NEAREST) > 127).astype(np.uint8)
            assert want.any() and (s["masks"].numpy() == want).all()
            # pixels and keypoints moved together: the marked wrist is bright
            x, y = np.rint(kp2d[js.index("wrist")]).astype(int)
            assert s["images"].numpy()[y, x].min() > 150


def test_mask_of_applies_the_same_rule_as_the_choice():
    from bench.data.convert.rhd import RHD, chosen_hand

    labels = np.zeros((8, 8), np.uint8)
    labels[:3, :] = 5  # 24 left pixels
    labels[5:, :] = 20  # 24 right pixels: a tie goes to the right hand, as hand3d
    labels[4, :] = 1
    assert chosen_hand(labels) == 1
    decoded = np.repeat(labels[..., None], 3, axis=-1)
    assert (RHD().mask_of(decoded) == (labels == 20)).all()
    labels[3, 0] = 17  # one more left pixel
    decoded = np.repeat(labels[..., None], 3, axis=-1)
    assert chosen_hand(labels) == 0
    assert (RHD().mask_of(decoded) == ((labels == 5) | (labels == 17))).all()


class Trap:
    """Unpickled by a plain unpickler, it makes a folder."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        import os

        return (os.mkdir, (self.path,))


def test_bad_rhd_copies_are_one_clear_error_and_nothing_is_written(raw, tmp_path):
    out = tmp_path / "out"

    def refused(folder: Path, match: str) -> None:
        assert_refused("rhd", folder, out, match)

    def copy(name: str) -> Path:
        folder = tmp_path / name
        write_rhd(folder)
        return folder

    def rewrite(folder: Path, split: str, change) -> None:
        path = folder / split / f"anno_{split}.pickle"
        anno = pickle.loads(path.read_bytes())
        change(anno)
        path.write_bytes(pickle.dumps(anno, protocol=2))

    empty = tmp_path / "empty"
    empty.mkdir()
    refused(empty, r"missing .*training/anno_training\.pickle \(the train annotations")
    # the split folder instead of RHD_published_v2/
    refused(raw / "training", r"missing .*training/training/anno_training\.pickle")
    folder = copy("no-eval")
    (folder / "evaluation" / "anno_evaluation.pickle").unlink()
    refused(folder, r"missing .*evaluation/anno_evaluation\.pickle \(the test annotations")
    folder = copy("cut")
    path = folder / "evaluation" / "anno_evaluation.pickle"
    path.write_bytes(path.read_bytes()[:200])
    refused(folder, r"anno_evaluation\.pickle is not a readable pickle \(.*cut short\?\)")
    # a pickle that names anything but numpy's arrays is refused, never run
    folder = copy("foreign")
    ran = folder / "ran"
    (folder / "training" / "anno_training.pickle").write_bytes(
        pickle.dumps({0: Trap(str(ran))}, protocol=2)
    )
    refused(
        folder,
        r"anno_training\.pickle pickles posix\.mkdir, which is not allowed \(refused, not run\)",
    )
    assert not ran.exists()
    pickle.loads((folder / "training" / "anno_training.pickle").read_bytes())
    assert ran.is_dir()  # the trap is real
    folder = copy("one-hand")  # a layout with a single 21-joint hand per sample
    rewrite(folder, "training", lambda a: a[1].update(xyz=a[1]["xyz"][:21]))
    refused(folder, r"sample 1 of .*anno_training\.pickle has xyz \(21, 3\).*expected \(42, 3\)")
    folder = copy("no-k")
    rewrite(folder, "evaluation", lambda a: a[4].pop("K"))
    refused(folder, r"sample 4 of .*anno_evaluation\.pickle lacks a readable 'xyz', 'uv_vis'")
    folder = copy("keys")
    rewrite(folder, "training", lambda a: a.update({"00007": a.pop(2)}))
    refused(folder, r"keys such as '00007'; expected int sample ids")
    folder = copy("mm")

    def to_mm(anno: dict) -> None:
        for entry in anno.values():
            entry["xyz"] = entry["xyz"] * 1000.0

    rewrite(folder, "training", to_mm)
    refused(folder, r"xyz look like mm; RHD v1\.1 stores metres")
    folder = copy("uv")

    def swap_uv(anno: dict) -> None:
        for entry in anno.values():
            entry["uv_vis"] = entry["uv_vis"][:, [1, 0, 2]]

    rewrite(folder, "evaluation", swap_uv)
    refused(folder, r"2D labels of .*anno_evaluation\.pickle differ from the projection")
    folder = copy("no-mask")
    (folder / "training" / "mask" / "00002.png").unlink()
    refused(folder, r"missing .*mask/00002\.png \(the part-label mask of sample 2 of")
    folder = copy("no-color")
    (folder / "evaluation" / "color" / "00003.png").unlink()
    refused(folder, r"missing .*color/00003\.png \(the colour image of sample 3 of")
    folder = copy("rgb-mask")
    Image.fromarray(np.full((SIDE, SIDE, 3), (200, 10, 10), np.uint8)).save(
        folder / "training" / "mask" / "00001.png"
    )
    refused(folder, r"mask/00001\.png is not a grey part-label mask .*found mode RGB")
    folder = copy("labels-40")
    Image.fromarray(np.full((SIDE, SIDE), 40, np.uint8)).save(
        folder / "evaluation" / "mask" / "00004.png"
    )
    refused(folder, r"mask/00004\.png is not a grey part-label mask .*values up to 40")
    folder = copy("cut-mask")
    path = folder / "training" / "mask" / "00000.png"
    path.write_bytes(path.read_bytes()[:20])
    refused(folder, r"mask/00000\.png is not a readable image")
