"""The MVHand converter on a fixture in its authors' toolkit layout (per recording calib.pkl,
mlresults/<date>-joints.npy, rgb/%05d_<v>.jpg, mask/%05d_<v>.jpg): world mm carried into each
camera, the exact pinhole projection with the toolkit's intrinsics, the README's joint order
mapped to hand21, a right hand kept right, pixels with their keypoints, the subject-disjoint
split, multi-view groups, masks all or none, the same bytes twice, and bad input."""

from __future__ import annotations

import inspect
import math
import os
import pickle
import shutil
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_refused
from PIL import Image, ImageDraw

from bench.data.convert import convert, get_converter
from bench.data.convert.crop import square_around
from bench.data.convert.mvhand import MVHand, natural_key
from bench.data.convert.raw import RawFiles
from bench.data.pairs import pair_shards
from bench.data.shards import ShardDataset
from bench.data.views import MultiView
from bench.errors import DabenchError

RECORDINGS = ("7-14-1-2", "9-10-1-2", "9-17-1-2", "9-25-1-2")  # the toolkit's four
SERIALS = ("840412062035", "840412062037", "840412062038", "840412062076")  # view order
# toolkits/globalCamera/camera.py, copied independently of the converter's table
TOOLKIT_K = {
    (640, 480): {
        "840412062035": (619.598, 619.116, 325.345, 245.441),
        "840412062037": (615.85, 615.477, 316.062, 247.156),
        "840412062038": (619.475, 619.189, 313.715, 223.921),
        "840412062076": (615.665, 615.09, 306.514, 240.344),
    },
    (1280, 720): {  # the serial + "10" entries
        "840412062035": (929.397, 928.673, 648.018, 368.161),
        "840412062037": (923.775, 923.215, 634.093, 370.733),
        "840412062038": (929.213, 928.783, 630.572, 335.881),
        "840412062076": (923.497, 922.635, 619.77, 360.516),
    },
}
ROOT_VIEW = 1  # the identity pose: not view 0, so nothing assumes it
SIZE = 64
FRAMES = 3
# hand21 slot <- README slot (the thumb comes last in the README's order)
MV_TO_HAND21 = [0, 17, 18, 19, 20, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]
H_WRIST, H_THUMB_TIP, H_INDEX_MCP, H_MIDDLE_MCP, H_MIDDLE_TIP = 0, 4, 5, 9, 12
H_LITTLE_MCP, H_LITTLE_TIP = 17, 20
MV_THUMB_TIP, MV_PINKY_TIP = 20, 16
# A RIGHT hand in hand21 order, mm, wrist at the origin, fingers towards -y, the thumb out to
# +x and the fingers curling towards -z: its palm faces -z, so (index MCP - wrist) x (little
# MCP - wrist) points the way the fingers curl. A left hand (the mirror) has it the other way.
RIGHT = np.array(
    [
        [0.0, 0.0, 0.0],
        [20, -15, -10], [40, -25, -18], [60, -30, -22], [85, -35, -25],  # thumb
        [25, -80, 0], [27, -105, -8], [28, -120, -16], [29, -135, -24],  # index
        [5, -85, 0], [5, -115, -8], [5, -130, -16], [5, -145, -24],  # middle
        [-15, -80, 0], [-17, -105, -8], [-18, -120, -16], [-19, -132, -24],  # ring
        [-35, -70, 0], [-39, -88, -6], [-41, -100, -12], [-43, -110, -18],  # little
    ]
)  # fmt: skip
RIGHT_MV = RIGHT[np.argsort(MV_TO_HAND21)]  # the README's order: RIGHT_MV[MV_TO_HAND21] = RIGHT
TARGET = np.array([0.0, 0.0, 500.0])  # the cameras look at it (root camera frame, mm)
# Where a hand leaves a view: (recording, frame) -> offset (mm). Frame 2 of the first
# recording mostly leaves view 0's image (5 joints inside: too few) and no other; frame 1
# of the second is cut by an edge of view 2's (13 joints inside: kept).
SHIFTS = {(0, 2): (-250.0, 100.0, 150.0), (1, 1): (150.0, -100.0, 0.0)}
LOST_VIEW = 0
MIN_VISIBLE = 11
RED, BLUE = (235, 25, 25), (25, 25, 235)


def rot(axis: str, degrees: float) -> np.ndarray:
    a = math.radians(degrees)
    c, s = math.cos(a), math.sin(a)
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def poses() -> list[np.ndarray]:
    """Camera -> world 4 x 4 per view: the root camera at the identity, the others turned
    about TARGET (35 deg left and right, 30 deg from above), so each still looks at it."""
    turns = {0: rot("y", 35), 1: np.eye(3), 2: rot("y", -35), 3: rot("x", -30)}
    out = []
    for v in range(4):
        q = turns[v]
        pose = np.eye(4)
        pose[:3, :3] = q
        pose[:3, 3] = TARGET - q @ TARGET
        out.append(pose)
    return out


def world_hand(r: int, f: int) -> np.ndarray:
    """Recording r, frame f: the README-ordered hand in world mm (turned and moved a little
    from frame to frame; SHIFTS move it out of some views)."""
    turn = rot("z", 4.0 * f + 10 * r) @ rot("y", 12.0 * r - 10)
    centre = np.array([10 * math.sin(f) - 20, 60.0, 480 + 25.0 * r])
    return RIGHT_MV @ turn.T + centre + SHIFTS.get((r, f), 0.0)


def intrinsics(size: tuple[int, int], v: int) -> np.ndarray:
    fx, fy, cx, cy = TOOLKIT_K[size][SERIALS[v]]
    return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]])


def pinhole(xyz: np.ndarray, k: np.ndarray) -> np.ndarray:
    uvw = xyz @ k.T
    return uvw[..., :2] / uvw[..., 2:]


@dataclass(frozen=True)
class Truth:
    kp3d: np.ndarray  # [21, 3] camera mm, README order
    K: np.ndarray
    cam_R: np.ndarray
    cam_t: np.ndarray
    vis: np.ndarray  # [21], README order
    subject: int


@dataclass
class Fixture:
    truth: dict[tuple[int, int, int], Truth] = field(default_factory=dict)  # (seq, frame, view)
    rows: dict[str, list[tuple[int, int, int]]] = field(default_factory=dict)
    skipped: list[tuple[int, int, int]] = field(default_factory=list)


def seq_of(name: str) -> int:
    return zlib.crc32(name.encode())


def write_mvhand(
    root: Path,
    *,
    frames: int = FRAMES,
    recordings: tuple[str, ...] = RECORDINGS,
    size: tuple[int, int] = (640, 480),
    masks: bool = True,
) -> Fixture:
    """The recording folders the toolkit reads, and the truth of every sample a converter
    should emit, with each split's (seq, frame, view) rows in order (the first half of the
    recordings train, the rest test)."""
    width, height = size
    cams = poses()
    out = Fixture()
    half = len(recordings) // 2
    for r, name in enumerate(recordings):
        folder = root / name
        for sub in ("rgb", "mlresults", "mask", "depth") if masks else ("rgb", "mlresults"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        with open(folder / "calib.pkl", "wb") as fh:
            pickle.dump({s: p for s, p in zip(SERIALS, cams, strict=True)}, fh)
        world = np.stack([world_hand(r, f) for f in range(frames)])
        homogeneous = np.concatenate([world, np.ones((frames, 21, 1))], axis=-1)
        np.save(folder / "mlresults" / f"{name}-joints.npy", homogeneous)
        split = "train" if r < half else "test"
        rows = out.rows.setdefault(split, [])
        for f in range(frames):
            for v in range(4):
                inv = np.linalg.inv(cams[v])
                xyz = world[f] @ inv[:3, :3].T + inv[:3, 3]
                k = intrinsics(size, v)
                uv = pinhole(xyz, k)
                vis = (
                    (xyz[:, 2] > 0)
                    & (uv >= -0.5).all(axis=1)
                    & (uv[:, 0] < width - 0.5)
                    & (uv[:, 1] < height - 0.5)
                )
                image, mask = draw(uv, size)
                image.save(folder / "rgb" / f"{f:05d}_{v}.jpg", quality=95)
                if masks:
                    mask.save(folder / "mask" / f"{f:05d}_{v}.jpg", quality=95)
                key = (seq_of(name), f, v)
                if vis.sum() < MIN_VISIBLE:
                    out.skipped.append(key)
                    continue
                out.truth[key] = Truth(xyz, k, inv[:3, :3], inv[:3, 3], vis, r + 1)
                rows.append(key)
    return out


def draw(uv: np.ndarray, size: tuple[int, int]) -> tuple[Image.Image, Image.Image]:
    """Grey joints on a dark frame, a red thumb tip and a blue pinky tip; the mask white
    discs around the joints."""
    image = Image.new("RGB", size, (40, 40, 40))
    mask = Image.new("L", size, 0)
    pen, mask_pen = ImageDraw.Draw(image), ImageDraw.Draw(mask)
    for x, y in uv:
        pen.ellipse([x - 6, y - 6, x + 6, y + 6], fill=(170, 170, 170))
        mask_pen.ellipse([x - 16, y - 16, x + 16, y + 16], fill=255)
    for joint, colour in ((MV_THUMB_TIP, RED), (MV_PINKY_TIP, BLUE)):
        x, y = uv[joint]
        pen.ellipse([x - 9, y - 9, x + 9, y + 9], fill=colour)
    return image, mask


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> tuple[Path, Fixture]:
    root = tmp_path_factory.mktemp("mvhand-raw")
    return root, write_mvhand(root)


@pytest.fixture(scope="module")
def converted(raw, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mvhand-out")
    paths = convert("mvhand", raw[0], out, size=SIZE, progress=False)
    assert [p.name for p in paths] == ["train.h5", "test.h5"]
    return out


@pytest.fixture(scope="module")
def shards(converted) -> dict[str, ShardDataset]:
    return {s: ShardDataset(converted / "mvhand" / f"{s}.h5") for s in ("train", "test")}


def samples(shard: ShardDataset) -> list[dict[str, np.ndarray]]:
    return [
        {k: v.numpy() for k, v in shard[i].items() if k != "index"}
        for i in range(shard.info.num_samples)
    ]


def key_of(s: dict[str, np.ndarray]) -> tuple[int, int, int]:
    return int(s["seq"]), int(s["frame"]), int(s["view"])


def copy(raw, tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    shutil.copytree(raw[0], folder)
    return folder


# -- tests ------------------------------------------------------------------------------------


def test_the_fixture_exercises_every_rule(raw):
    _, fixture = raw
    # a view that loses the hand (skipped) and one that sees part of it (kept, some joints
    # not visible), both in the training split
    assert fixture.skipped == [(seq_of(RECORDINGS[0]), 2, LOST_VIEW)]
    lost = world_hand(0, 2) @ np.linalg.inv(poses()[LOST_VIEW])[:3, :3].T
    lost += np.linalg.inv(poses()[LOST_VIEW])[:3, 3]
    uv = pinhole(lost, intrinsics((640, 480), LOST_VIEW))
    assert ((uv >= 0).all(axis=1) & (uv[:, 0] < 639) & (uv[:, 1] < 479)).sum() == 5
    partial = [k for k, t in fixture.truth.items() if not t.vis.all()]
    assert partial == [(seq_of(RECORDINGS[1]), 1, 2)]
    assert fixture.truth[partial[0]].vis.sum() == 13
    # the poses are rigid, the root camera's the identity, the others 300 mm from it
    cams = poses()
    for pose in cams:
        assert np.allclose(pose[:3, :3] @ pose[:3, :3].T, np.eye(3))
        assert np.linalg.det(pose[:3, :3]) == pytest.approx(1.0)
    assert np.allclose(cams[ROOT_VIEW], np.eye(4))
    # the hand is a right hand: the palm normal points the way the fingers curl
    normal = np.cross(RIGHT[H_INDEX_MCP] - RIGHT[H_WRIST], RIGHT[H_LITTLE_MCP] - RIGHT[H_WRIST])
    assert normal @ (RIGHT[H_MIDDLE_TIP] - RIGHT[H_MIDDLE_MCP]) > 0
    assert np.array_equal(RIGHT_MV[MV_TO_HAND21], RIGHT)
    assert natural_key("9-10-1-2") > natural_key("9-9-1-2")


def test_items_is_a_generator_and_the_masks_rule_is_settled_first(raw):
    root, fixture = raw
    converter = get_converter("mvhand")
    with pytest.raises(DabenchError, match="depends on the raw copy; its items must be read"):
        converter.fields_of("train")
    items = converter.items(RawFiles("mvhand", root), "train")
    assert inspect.isgenerator(items)
    assert "masks" in converter.fields_of("train")
    first = next(items)
    assert (first.seq, first.frame, first.view) == fixture.rows["train"][0]
    assert first.image == "7-14-1-2/rgb/00000_0.jpg"
    assert first.mask == "7-14-1-2/mask/00000_0.jpg"
    assert converter.raw_joints == "mvhand21" and MVHand.frame_stride == 1


def test_shards_hold_camera_mm_in_hand21_order_and_the_exact_projection(raw, shards):
    _, fixture = raw
    for shard in shards.values():
        assert shard.info.joint_set == "hand21" and shard.info.image_size == (SIZE, SIZE)
        for s in samples(shard):
            want = fixture.truth[key_of(s)]
            # the README's order mapped to hand21: the thumb (last in the README) first
            assert s["kp3d"] == pytest.approx(want.kp3d[MV_TO_HAND21], abs=1e-2)
            assert np.array_equal(s["vis"], want.vis[MV_TO_HAND21])
            assert int(s["subject"]) == want.subject
            # the toolkit's cameras: X_cam = inv(pose) X_world, K from camera.py
            assert s["cam_R"] == pytest.approx(want.cam_R, abs=1e-6)
            assert s["cam_t"] == pytest.approx(want.cam_t, abs=1e-3)
            uv = pinhole(want.kp3d, want.K)
            crop = square_around(uv, want.vis, SIZE)
            assert s["K"] == pytest.approx(crop.intrinsics(want.K), rel=1e-5)
            assert s["kp2d"] == pytest.approx(crop.points(uv)[MV_TO_HAND21], abs=1e-3)
            kp3d, k = s["kp3d"].astype(np.float64), s["K"].astype(np.float64)
            assert np.abs(pinhole(kp3d, k) - s["kp2d"]).max() < 1e-3


def test_right_hands_stay_right_and_the_pixels_go_with_the_keypoints(shards):
    for shard in shards.values():
        for s in samples(shard):
            kp3d = s["kp3d"].astype(np.float64)
            # chirality survives any rotation, not a mirror or a thumb/little swap
            normal = np.cross(kp3d[H_INDEX_MCP] - kp3d[H_WRIST], kp3d[H_LITTLE_MCP] - kp3d[H_WRIST])
            assert normal @ (kp3d[H_MIDDLE_TIP] - kp3d[H_MIDDLE_MCP]) > 0
            # the red marker is under the thumb tip, the blue one under the little fingertip
            for joint, channel in ((H_THUMB_TIP, 0), (H_LITTLE_TIP, 2)):
                if not s["vis"][joint]:
                    continue
                x, y = np.rint(s["kp2d"][joint]).astype(int)
                pixel = s["images"][y, x].astype(int)
                other = pixel[2 - channel]
                assert pixel[channel] > 150 and pixel[channel] - other > 80, (joint, pixel)


def test_the_split_is_subject_disjoint_halves_and_the_ids(raw, shards):
    _, fixture = raw
    got = {split: [key_of(s) for s in samples(shard)] for split, shard in shards.items()}
    # order: recording, frame, view; the first two recordings train, the last two test
    assert got["train"] == fixture.rows["train"] and got["test"] == fixture.rows["test"]
    for split, names in (("train", RECORDINGS[:2]), ("test", RECORDINGS[2:])):
        assert {k[0] for k in got[split]} == {seq_of(n) for n in names}
        subjects = {int(s["subject"]) for s in samples(shards[split])}
        assert subjects == ({1, 2} if split == "train" else {3, 4})
    # the view that lost the hand is skipped, its other views kept
    assert fixture.skipped[0] not in got["train"]
    assert len(got["train"]) == 2 * FRAMES * 4 - 1 and len(got["test"]) == 2 * FRAMES * 4


def test_views_of_a_frame_form_one_world_pose(raw, shards, converted):
    for shard in shards.values():
        groups: dict[tuple[int, int], list] = {}
        for s in samples(shard):
            groups.setdefault((int(s["seq"]), int(s["frame"])), []).append(s)
        for (seq, frame), group in groups.items():
            views = [int(s["view"]) for s in group]
            full = (seq, frame) != (seq_of(RECORDINGS[0]), 2)
            assert views == ([0, 1, 2, 3] if full else [1, 2, 3])
            # cam_R, cam_t carry every view's kp3d back to one world pose (the root camera's)
            worlds = [
                (s["kp3d"].astype(np.float64) - s["cam_t"]) @ s["cam_R"].astype(np.float64)
                for s in group
            ]
            assert all(np.abs(w - worlds[0]).max() < 0.05 for w in worlds)
            r = RECORDINGS.index(next(n for n in RECORDINGS if seq_of(n) == seq))
            assert worlds[0] == pytest.approx(world_hand(r, frame)[MV_TO_HAND21], abs=0.05)
    pair = pair_shards("mvhand", "mvhand", converted)
    view = MultiView(views=4, fields=("images", "masks"))
    assert view.check(pair) == []
    batch = next(view.stream(pair, batch_size=2, seed=0))
    assert batch["images"].shape == (2, 4, SIZE, SIZE, 3)
    assert batch["cam_R"].shape == (2, 4, 3, 3)


def test_masks_align_with_the_pixels(shards):
    # foreground: the brightest channel above 127
    decoded = np.array([[[0, 0, 0], [127, 127, 127], [128, 128, 128], [255, 255, 255],
                         [200, 0, 0], [0, 0, 140], [100, 120, 127]]], dtype=np.uint8)  # fmt: skip
    fg = get_converter("mvhand").mask_of(decoded)
    assert fg.tolist() == [[False, False, True, True, True, True, False]]
    for shard in shards.values():
        assert "masks" in shard.info.fields
        for s in samples(shard):
            mask, image = s["masks"].astype(bool), s["images"].astype(float)
            assert 0.05 < mask.mean() < 0.9
            assert image[mask].mean() > image[~mask].mean() + 20
            for x, y in np.rint(s["kp2d"][s["vis"]]).astype(int):
                if 0 <= x < SIZE and 0 <= y < SIZE:
                    assert mask[y, x]


def test_reconverting_gives_the_same_bytes(raw, converted, tmp_path):
    # into another folder, on one core (the module's shards: two): byte for byte the same
    again = convert("mvhand", raw[0], tmp_path, size=SIZE, progress=False, workers=1)
    for path in again:
        assert path.read_bytes() == (converted / "mvhand" / path.name).read_bytes()
    kept = convert("mvhand", raw[0], converted, size=SIZE, progress=False)
    assert [p.read_bytes() for p in kept] == [p.read_bytes() for p in again]


def test_masks_in_a_split_all_or_none(raw, tmp_path):
    folder = copy(raw, tmp_path, "raw")
    for name in RECORDINGS[2:]:
        shutil.rmtree(folder / name / "mask")
    # the mask of the view that lost the hand is not needed
    (folder / RECORDINGS[0] / "mask" / f"00002_{LOST_VIEW}.jpg").unlink()
    train, test = convert("mvhand", folder, tmp_path / "out", size=16, progress=False, workers=1)
    assert "masks" in ShardDataset(train).info.fields
    assert "masks" not in ShardDataset(test).info.fields
    (folder / RECORDINGS[1] / "mask" / "00001_2.jpg").unlink()
    assert_refused(
        "mvhand",
        folder,
        tmp_path / "refused",
        r"missing .*9-10-1-2/mask/00001_2\.jpg \(the hand mask of frame 1, view 2\): 22 of the "
        r"split's 23 samples",
    )


def test_stride_recordings_and_another_number_of_recordings(raw, tmp_path, monkeypatch):
    root, fixture = raw
    monkeypatch.setattr(MVHand, "frame_stride", 2)
    path = convert(
        "mvhand", root, tmp_path / "s", splits=["test"], size=16, progress=False, workers=1
    )[0]
    rows = [key_of(s) for s in samples(ShardDataset(path))]
    assert rows == [r for r in fixture.rows["test"] if r[1] % 2 == 0]
    monkeypatch.setattr(MVHand, "frame_stride", 0)
    assert_refused("mvhand", root, tmp_path / "z", r"frame_stride must be a positive integer")
    monkeypatch.setattr(MVHand, "frame_stride", 1)
    # the split named by the class attributes; it must stay subject-disjoint
    monkeypatch.setattr(MVHand, "test_recordings", ("7-14-1-2",))
    assert_refused(
        "mvhand", root, tmp_path / "x", r"train and test share recording\(s\) \['7-14-1-2'\]"
    )
    monkeypatch.setattr(MVHand, "train_recordings", ("9-10-1-2", "9-25-1-2"))
    path = convert(
        "mvhand", root, tmp_path / "n", splits=["test"], size=16, progress=False, workers=1
    )[0]
    shard = ShardDataset(path)
    assert {key_of(s)[0] for s in samples(shard)} == {seq_of("7-14-1-2")}
    assert {int(s["subject"]) for s in samples(shard)} == {1}
    monkeypatch.setattr(MVHand, "test_recordings", ("9-30-1-2",))
    assert_refused("mvhand", root, tmp_path / "m", r"missing .*9-30-1-2 \(the test recording")
    monkeypatch.setattr(MVHand, "test_recordings", None)
    monkeypatch.setattr(MVHand, "train_recordings", None)
    # three recordings: one trains, two test; one recording is refused
    folder = copy(raw, tmp_path, "three")
    shutil.rmtree(folder / RECORDINGS[1])
    train, test = convert("mvhand", folder, tmp_path / "3", size=16, progress=False, workers=1)
    assert {key_of(s)[0] for s in samples(ShardDataset(train))} == {seq_of(RECORDINGS[0])}
    assert {int(s["subject"]) for s in samples(ShardDataset(test))} == {2, 3}
    for name in RECORDINGS[2:]:
        shutil.rmtree(folder / name)
    assert_refused(
        "mvhand", folder, tmp_path / "1", r"holds 1 recording folder \(7-14-1-2\).*at least 2"
    )


def test_1280_x_720_frames_take_the_toolkits_other_intrinsics(tmp_path):
    root = tmp_path / "hd"
    fixture = write_mvhand(root, frames=1, recordings=RECORDINGS[2:], size=(1280, 720), masks=False)
    train, test = convert("mvhand", root, tmp_path / "out", size=16, progress=False, workers=1)
    assert "masks" not in ShardDataset(test).info.fields
    for s in samples(ShardDataset(train)) + samples(ShardDataset(test)):
        want = fixture.truth[key_of(s)]
        assert want.K[0, 0] > 900
        uv = pinhole(want.kp3d, want.K)
        crop = square_around(uv, want.vis, 16)
        assert s["K"] == pytest.approx(crop.intrinsics(want.K), rel=1e-5)


def test_a_foreign_class_in_calib_pkl_is_refused_not_run(raw, tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    folder = copy(raw, tmp_path, "evil")
    calib = folder / RECORDINGS[0] / "calib.pkl"
    with open(calib, "rb") as fh:
        poses_ = pickle.load(fh)
    calib.write_bytes(pickle.dumps({**poses_, SERIALS[0]: Payload()}))
    assert_refused(
        "mvhand", folder, tmp_path / "o", r"7-14-1-2/calib\.pkl pickles posix\.system, which is"
    )
    assert not marker.exists()
    calib.write_bytes(pickle.dumps({**poses_, "note": Fraction(1, 3)}))
    assert_refused("mvhand", folder, tmp_path / "o", r"calib\.pkl pickles fractions\.Fraction")
    # numpy's pickles under the old and the new protocols, and an OrderedDict, are read
    for protocol in (2, 5):
        for calib_dict in (poses_, OrderedDict(poses_)):
            calib.write_bytes(pickle.dumps(calib_dict, protocol=protocol))
            get_converter("mvhand").items(RawFiles("mvhand", folder), "train")


def test_bad_mvhand_copies_are_one_clear_error_and_nothing_is_written(raw, tmp_path, capsys):
    root, _ = raw
    out = tmp_path / "out"
    first = RECORDINGS[0]

    def refused(folder: Path, match: str) -> None:
        assert_refused("mvhand", folder, out, match)

    def calib_of(folder: Path, change) -> None:
        path = folder / first / "calib.pkl"
        with open(path, "rb") as fh:
            data = pickle.load(fh)
        path.write_bytes(pickle.dumps(change(data)))

    def joints_of(folder: Path, change) -> None:
        path = folder / first / "mlresults" / f"{first}-joints.npy"
        np.save(path, change(np.load(path)))

    # wrong folders
    refused(tmp_path / "nowhere", r"raw folder .*nowhere does not exist")
    refused(root / first, r"7-14-1-2 is one recording folder; pass the folder that holds")
    refused(root / first / "rgb", r"rgb is a folder inside a recording; pass the folder")
    folder = tmp_path / "above"  # one level too high
    shutil.copytree(root / first, folder / "dataset" / first)
    refused(folder, r"above holds no recording folder, .*above/dataset does; pass the folder")
    (tmp_path / "empty").mkdir()
    refused(tmp_path / "empty", r"empty holds no MVHand recording folder; expected <date>/calib")
    # missing or cut files
    folder = copy(raw, tmp_path, "no-calib")
    (folder / first / "calib.pkl").unlink()
    refused(folder, r"missing .*7-14-1-2/calib\.pkl \(the camera poses")
    folder = copy(raw, tmp_path, "cut-calib")
    path = folder / first / "calib.pkl"
    path.write_bytes(path.read_bytes()[:200])
    refused(folder, r"7-14-1-2/calib\.pkl is not a readable pickle \(.*cut short\?\)")
    folder = copy(raw, tmp_path, "no-frame")
    (folder / RECORDINGS[3] / "rgb" / "00001_3.jpg").unlink()
    refused(folder, r"missing .*9-25-1-2/rgb/00001_3\.jpg \(frame 1 of view 3; .* has 3 frames")
    folder = copy(raw, tmp_path, "cut-joints")
    path = folder / first / "mlresults" / f"{first}-joints.npy"
    path.write_bytes(path.read_bytes()[:-100])
    refused(folder, r"7-14-1-2-joints\.npy is not a readable \.npy file \(cut short\?\)")
    folder = copy(raw, tmp_path, "no-joints")
    (folder / first / "mlresults" / f"{first}-joints.npy").unlink()
    refused(folder, r"missing .*mlresults/7-14-1-2-joints\.npy \(the joints: \[N, 21, 4\]")
    # calib.pkl's content
    folder = copy(raw, tmp_path, "serial")
    calib_of(folder, lambda d: {k: v for k, v in d.items() if k != SERIALS[3]})
    refused(folder, r"calib\.pkl lacks camera\(s\) \['840412062076'\]; it holds \['8404")
    folder = copy(raw, tmp_path, "list")
    calib_of(folder, lambda d: list(d.values()))
    refused(folder, r"calib\.pkl holds a list; expected a dict camera serial")
    folder = copy(raw, tmp_path, "shape")
    calib_of(folder, lambda d: {**d, SERIALS[2]: d[SERIALS[2]][:3]})
    refused(folder, r"the pose of camera 840412062038 \(\(3, 4\)\) is not a 4 x 4 rigid")
    folder = copy(raw, tmp_path, "mirror")  # a reflection, det -1
    calib_of(folder, lambda d: {**d, SERIALS[0]: d[SERIALS[0]] @ np.diag([-1.0, 1, 1, 1])})
    refused(folder, r"pose of camera 840412062035 .* R a rotation \(R R\^T = I, det \+1\)")
    folder = copy(raw, tmp_path, "two-roots")
    calib_of(folder, lambda d: {**d, SERIALS[3]: np.eye(4)})
    refused(folder, r"2 camera poses are the identity .*; expected exactly one, the root")
    folder = copy(raw, tmp_path, "no-root")
    turn = np.eye(4)
    turn[:3, :3] = rot("z", 5)
    calib_of(folder, lambda d: {k: turn @ v for k, v in d.items()})
    refused(folder, r"0 camera poses are the identity")
    folder = copy(raw, tmp_path, "metres")  # poses' translations in m
    calib_of(folder, lambda d: {k: _metres(v) for k, v in d.items()})
    refused(folder, r"the cameras lie 0\.3.* from the root camera; expected 100-3000 \(mm")
    folder = copy(raw, tmp_path, "aside")  # a camera 400 mm to the side: it misses the hand
    calib_of(folder, lambda d: {**d, SERIALS[0]: _moved(d[SERIALS[0]], [400.0, 0, 0])})
    refused(folder, r"camera 840412062035 \(view 0\) sees the hand .* in 0% of the frames")
    # the joints file's content
    folder = copy(raw, tmp_path, "xyz")
    joints_of(folder, lambda j: j[..., :3])
    refused(folder, r"7-14-1-2-joints\.npy has shape \(3, 21, 3\); expected \[N, 21, 4\]")
    folder = copy(raw, tmp_path, "w")
    joints_of(folder, lambda j: j * 2)
    refused(folder, r"a homogeneous coordinate other than 1; expected \[x, y, z, 1\]")
    folder = copy(raw, tmp_path, "m")
    joints_of(folder, lambda j: np.concatenate([j[..., :3] / 1000, j[..., 3:]], axis=-1))
    refused(folder, r"median wrist to middle-MCP distance is 0\.08.*expected 40-160 \(mm")
    folder = copy(raw, tmp_path, "far")
    joints_of(folder, lambda j: j + np.array([0, 0, 3000.0, 0]))
    refused(folder, r"joints lie a median \d{4} in front of camera 840412062035 \(view 0\)")
    # images of another size
    folder = copy(raw, tmp_path, "size")
    Image.new("RGB", (800, 600)).save(folder / RECORDINGS[2] / "rgb" / "00000_2.jpg")
    refused(folder, r"9-17-1-2/rgb/00000_2\.jpg is 800 x 600 px; the toolkit's intrinsics are for")
    # found while writing (the first split written: nothing is left behind)
    folder = copy(raw, tmp_path, "size-later")
    Image.new("RGB", (1280, 720)).save(folder / first / "rgb" / "00001_0.jpg")
    refused(folder, r"7-14-1-2/rgb/00001_0\.jpg is 1280 x 720 px; the other frames of view 0")
    folder = copy(raw, tmp_path, "mask-size")
    Image.new("L", (320, 240)).save(folder / first / "mask" / "00002_1.jpg")
    refused(folder, r"7-14-1-2/mask/00002_1\.jpg is 320 x 240 px; .* \(a mask of another size\)")
    # the CLI says it in one line, exit status 2
    from bench.cli import main

    assert main(["data", "convert", "mvhand", str(folder), "--out", str(out), "--quiet"]) == 2
    assert "00002_1.jpg" in capsys.readouterr().err


def _metres(pose: np.ndarray) -> np.ndarray:
    out = pose.copy()
    out[:3, 3] /= 1000.0
    return out


def _moved(pose: np.ndarray, by: list[float]) -> np.ndarray:
    out = pose.copy()
    out[:3, 3] += by
    return out
