"""The CMU Panoptic hands converter on a fixture in the toolbox's layout (per sequence a
calibration JSON, hdHand3d/handRecon3D_hd%08d.json, hdImgs/<cam>/<cam>_%08d.jpg): world cm to
camera mm, the pinhole projection on undistorted frames, left and right hands where they
belong, one seq per hand so that cameras group into views of one hand, the sequence split,
the frame stride and camera choice, the skipping rules, and bad input."""

from __future__ import annotations

import json
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_refused
from PIL import Image

from bench.cli import main
from bench.data.convert import convert
from bench.data.convert.crop import square_around
from bench.data.convert.pan import Panoptic, undistort
from bench.data.geometry import look_at
from bench.data.shards import ShardDataset, read_shard_info

SEQUENCES = {"test": ("171204_pose3",), "train": ("170221_haggling_b1", "171026_pose1")}
SIZE = 48
THUMB_TIP, INDEX_TIP, WRIST, MIDDLE_MCP = 4, 8, 0, 9
# A right hand (hand21 order) in cm, wrist at the origin, fingers towards -y (up in the
# images), the thumb stretched out sideways to +x: asymmetric. A left hand is its mirror.
RIGHT = np.array(
    [
        [0.0, 0.0, 0.0],
        [2.0, -1.5, 0.5], [4.0, -2.5, 0.8], [6.0, -3.0, 1.0], [8.5, -3.5, 1.2],  # thumb
        [2.5, -8.0, 0.0], [2.7, -10.5, -0.3], [2.8, -12.0, -0.5], [2.9, -13.5, -0.7],  # index
        [0.5, -8.5, 0.0], [0.5, -11.5, -0.4], [0.5, -13.0, -0.6], [0.5, -14.5, -0.8],  # middle
        [-1.5, -8.0, 0.0], [-1.7, -10.5, -0.3], [-1.8, -12.0, -0.5], [-1.9, -13.2, -0.7],
        [-3.5, -7.0, 0.0], [-3.9, -8.8, -0.2], [-4.1, -10.0, -0.4], [-4.3, -11.0, -0.6],
    ]
)  # fmt: skip
LEFT = RIGHT * np.array([-1.0, 1.0, 1.0])
COLOURS = {0: (255, 30, 30), 1: (30, 30, 255)}  # thumb-tip markers: left red, right blue
# HD cameras: node -> (eye, target) in cm, distortion. 00_00 distorts strongly (its markers
# move ~8 px), 00_03 not at all; 00_07 is calibrated but its frames were not extracted.
CAMERAS = {
    0: ((-10.0, -2.0, -80.0), (-10.0, -2.0, 0.0), (-0.8, 0.2, 0.001, -0.002, 0.0)),
    3: ((55.0, -2.0, -60.0), (0.0, -2.0, 0.0), (0.0, 0.0, 0.0, 0.0, 0.0)),
    7: ((0.0, -80.0, -40.0), (0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 0.0, 0.0)),
    16: ((-50.0, -25.0, -60.0), (0.0, -2.0, 0.0), (-0.2, 0.05, 0.0, 0.0, 0.0)),
}
# The scene sits 1.5 m from the dome's origin, so the cameras lie 1.7-2.3 m from it (the
# real HD cameras: 2.4-3.8 m), as the converter checks.
OFFSET = np.array([0.0, -150.0, 0.0])
EXTRACTED = (0, 3, 16)
STRIDE = 10  # the converter's default


@dataclass(frozen=True)
class Hand:
    person: int
    side: int  # 0 left, 1 right
    cm: np.ndarray  # [21, 3] world
    validity: np.ndarray  # [21]
    score: np.ndarray  # [21]


@dataclass(frozen=True)
class Cam:
    k: np.ndarray
    dist: tuple[float, ...]
    r: np.ndarray
    t: np.ndarray  # cm


def cameras(width: int, height: int) -> dict[int, Cam]:
    scale = width / 160
    out = {}
    for node, (eye, target, dist) in CAMERAS.items():
        r, t = look_at(np.add(eye, OFFSET), np.add(target, OFFSET), np.array([0.0, -1.0, 0.0]))
        k = np.array(
            [[200.0 * scale, 0, width / 2 + 1.3], [0, 201.0 * scale, height / 2 - 0.7], [0, 0, 1]]
        )
        out[node] = Cam(k, dist, r, t)
    return out


def hands(seq_index: int, frame: int) -> list[Hand]:
    """The people of one frame: person 0 (both hands), person 3 (its left hand badly
    triangulated in frame 0, its right hand absent in frame 10), an untracked person -1."""
    ones = np.ones(21)
    drift = OFFSET + np.array([0.3 * frame + seq_index, 0.2 * frame, 0.0])

    def at(template: np.ndarray, x: float, y: float, z: float) -> np.ndarray:
        return template + np.array([x, y, z]) + drift

    out = []
    score = ones.copy()
    score[20] = 0.0  # person 0's left little fingertip: no score, so not labelled
    shift = 13.0 if frame == 10 else 0.0  # person 0's right hand leaves 00_00's view
    out.append(Hand(0, 0, at(LEFT, -12, 0, 0), ones, score))
    out.append(Hand(0, 1, at(RIGHT, 12 + shift, 0, 0), ones, ones))
    valid = ones.copy()
    if frame == 0:
        valid[8:] = 0  # 8 labelled joints: never enough
    out.append(Hand(3, 0, at(LEFT, -6, 10, 12), valid, ones))
    if frame != 10:
        out.append(Hand(3, 1, at(RIGHT, 6, 10, 12), ones, ones))
    out.append(Hand(-1, 1, at(RIGHT, 0, -5, 5), ones, ones))
    return out


def distort(uv: np.ndarray, cam: Cam) -> np.ndarray:
    """Where the lens images a pinhole pixel (the toolbox's projectPoints model)."""
    k1, k2, p1, p2, k3 = cam.dist
    x = (uv[:, 0] - cam.k[0, 2]) / cam.k[0, 0]
    y = (uv[:, 1] - cam.k[1, 2]) / cam.k[1, 1]
    r2 = x**2 + y**2
    radial = 1 + k1 * r2 + k2 * r2**2 + k3 * r2**3
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x**2)
    yd = y * radial + p1 * (r2 + 2 * y**2) + 2 * p2 * x * y
    return np.stack([xd * cam.k[0, 0] + cam.k[0, 2], yd * cam.k[1, 1] + cam.k[1, 2]], axis=1)


def to_camera(hand: Hand, cam: Cam) -> tuple[np.ndarray, np.ndarray]:
    """kp3d in mm and its pinhole projection."""
    mm = (hand.cm @ cam.r.T + cam.t) * 10.0
    uvw = mm @ cam.k.T
    return mm, uvw[:, :2] / uvw[:, 2:]


def write_pan(root: Path, frames: int = 5, width: int = 160, height: int = 120) -> dict:
    """Three sequences in the toolbox's layout with hand files for HD frames 0, 5, ...,
    5 (frames - 1) and JPEG frames of ``width`` x ``height`` from three HD cameras (the
    thumb tips marked where the distorting lens images them). Returns the truth:
    {"cameras": {node: Cam}, "hands": {(sequence, frame): [Hand]}}."""
    cams = cameras(width, height)
    truth: dict = {"cameras": cams, "hands": {}, "size": (width, height)}
    for s, seq in enumerate(n for names in SEQUENCES.values() for n in names):
        folder = root / seq
        (folder / "hdHand3d").mkdir(parents=True)
        calib = [
            {"name": "01_01", "type": "vga", "resolution": [640, 480], "panel": 1, "node": 1,
             "K": np.eye(3).tolist(), "distCoef": [0.0] * 5, "R": np.eye(3).tolist(),
             "t": [[0.0], [0.0], [300.0]]},
        ]  # fmt: skip
        for node, cam in cams.items():
            calib.append(
                {
                    "name": f"00_{node:02d}",
                    "type": "hd",
                    "resolution": [width, height],
                    "panel": 0,
                    "node": node,
                    "K": cam.k.tolist(),
                    "distCoef": list(cam.dist),
                    "R": cam.r.tolist(),
                    "t": [[v] for v in cam.t],
                }
            )
        calib.append(dict(calib[-1], name="50_01", type="kinect-color", panel=50, node=1))
        (folder / f"calibration_{seq}.json").write_text(
            json.dumps({"calibDataSource": "fixture", "cameras": calib})
        )
        for frame in range(0, 5 * frames, 5):
            people: dict[int, dict] = {}
            for hand in hands(s, frame):
                entry = {
                    "landmarks": hand.cm.ravel().tolist(),
                    "averageScore": hand.score.tolist(),
                    "averageReproError": [1.0] * 21,
                    "validity": hand.validity.astype(int).tolist(),
                    "visibility": [[0, 1]] * 21,
                }
                key = ("left_hand", "right_hand")[hand.side]
                people.setdefault(hand.person, {"id": hand.person})[key] = entry
            (folder / "hdHand3d" / f"handRecon3D_hd{frame:08d}.json").write_text(
                json.dumps({"version": 0.7, "people": list(people.values())})
            )
            truth["hands"][(seq, frame)] = hands(s, frame)
            for node in EXTRACTED:
                cam, name = cams[node], f"00_{node:02d}"
                img = np.full((height, width, 3), 40, np.uint8)
                for hand in hands(s, frame):
                    if hand.person < 0:
                        continue
                    _, uv = to_camera(hand, cam)
                    u, v = np.rint(distort(uv, cam)[THUMB_TIP]).astype(int)
                    if 2 <= u < width - 2 and 2 <= v < height - 2:
                        img[v - 2 : v + 3, u - 2 : u + 3] = COLOURS[hand.side]
                (folder / "hdImgs" / name).mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(
                    folder / "hdImgs" / name / f"{name}_{frame:08d}.jpg", quality=95, subsampling=0
                )
    return truth


def seq_id(sequence: str, person: int, side: int) -> int:
    return zlib.crc32(sequence.encode()) * 2000 + 2 * person + side


def expected(truth: dict, split: str, stride: int = STRIDE, nodes=EXTRACTED) -> list[tuple]:
    """(seq, frame, view, vis) of every sample of ``split`` in the converter's order: a hand
    in a camera needs 11 joints labelled, in front and inside the image."""
    rows = []
    for seq in SEQUENCES[split]:
        frames = sorted(f for s, f in truth["hands"] if s == seq and f % stride == 0)
        for frame in frames:
            for node in nodes:
                cam = truth["cameras"][node]
                for hand in truth["hands"][(seq, frame)]:
                    if hand.person < 0:
                        continue
                    mm, uv = to_camera(hand, cam)
                    w, h = truth["size"]
                    inside = (uv >= -0.5).all(1) & (uv[:, 0] < w - 0.5) & (uv[:, 1] < h - 0.5)
                    vis = (hand.validity == 1) & (hand.score > 0) & (mm[:, 2] > 0) & inside
                    if vis.sum() >= 11:
                        rows.append((seq_id(seq, hand.person, hand.side), frame, node, vis))
    return rows


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("panoptic")
    return root, write_pan(root)


@pytest.fixture(scope="module")
def shards(raw, tmp_path_factory) -> dict[str, ShardDataset]:
    out = tmp_path_factory.mktemp("pan-out")
    paths = convert("pan", raw[0], out, size=SIZE, progress=False)
    assert [p.name for p in paths] == ["train.h5", "test.h5"]
    return {p.stem: ShardDataset(p) for p in paths}


def samples(shard: ShardDataset) -> list[dict[str, np.ndarray]]:
    return [
        {k: v.numpy() for k, v in shard[i].items() if k != "index"}
        for i in range(shard.info.num_samples)
    ]


def find_hand(truth: dict, seq: int, frame: int) -> tuple[str, Hand]:
    for (name, f), people in truth["hands"].items():
        for hand in people:
            if f == frame and hand.person >= 0 and seq_id(name, hand.person, hand.side) == seq:
                return name, hand
    raise AssertionError(f"no hand with seq {seq} in frame {frame}")


def test_the_fixture_exercises_every_rule(raw):
    _, truth = raw
    rows = {r[:3]: r[3] for r in expected(truth, "test")}
    # person 0's right hand: seen by 00_00 in frame 0, partly outside it in frame 20 (kept,
    # its outer joints not visible), wholly outside it in frame 10 (skipped), seen by 00_03
    right0 = seq_id("171204_pose3", 0, 1)
    assert rows[(right0, 0, 0)].all()
    assert 11 <= rows[(right0, 20, 0)].sum() < 21
    assert (right0, 10, 0) not in rows and (right0, 10, 3) in rows


def test_pan_shards_hold_camera_mm_on_undistorted_frames(raw, shards):
    _, truth = raw
    for split, shard in shards.items():
        assert shard.info.joint_set == "hand21" and shard.info.image_size == (SIZE, SIZE)
        for s in samples(shard):
            seq, frame, view = int(s["seq"]), int(s["frame"]), int(s["view"])
            name, hand = find_hand(truth, seq, frame)
            assert name in SEQUENCES[split]
            cam = truth["cameras"][view]
            mm, uv = to_camera(hand, cam)
            # hand21 order kept, world cm -> camera mm with the calibration's R, t
            assert s["kp3d"] == pytest.approx(mm, abs=2e-3)
            assert s["cam_R"] == pytest.approx(cam.r, abs=1e-6)
            assert s["cam_t"] == pytest.approx(cam.t * 10.0, abs=1e-3)
            world = (s["kp3d"].astype(np.float64) - s["cam_t"]) @ s["cam_R"].astype(np.float64)
            assert world == pytest.approx(hand.cm * 10.0, abs=0.05)
            # kp2d: the crop of the pinhole projection; the invariant with the stored K
            vis = next(r[3] for r in expected(truth, split) if r[:3] == (seq, frame, view))
            assert np.array_equal(s["vis"], vis)
            crop = square_around(uv, vis, SIZE)
            assert s["kp2d"] == pytest.approx(crop.points(uv), abs=1e-3)
            assert s["K"] == pytest.approx(crop.intrinsics(cam.k), rel=1e-5)
            uvw = s["kp3d"].astype(np.float64) @ s["K"].astype(np.float64).T
            assert np.abs(uvw[:, :2] / uvw[:, 2:] - s["kp2d"]).max() < 1e-3
            # the thumb is stretched out: its tip lies far from the index tip
            span = np.linalg.norm(mm[THUMB_TIP] - mm[INDEX_TIP])
            assert span > 80.0 and s["kp3d"][THUMB_TIP] == pytest.approx(mm[THUMB_TIP], abs=2e-3)
            # the marker at the thumb tip is where kp2d says (undistorted), in the hand's
            # colour: left hands red, right blue, nothing mirrored
            if vis[THUMB_TIP]:
                x, y = np.rint(s["kp2d"][THUMB_TIP]).astype(int)
                r, _, b = s["images"][y, x].astype(int)
                assert (r > 150 and b < 110) if hand.side == 0 else (b > 150 and r < 110), (
                    seq,
                    frame,
                    view,
                )
    assert read_shard_info(shards["test"].path).fingerprint.startswith("convert-pan-v1:")


def test_without_undistortion_the_markers_would_miss(raw):
    """The strongly distorting camera moves the thumb-tip markers by several pixels: the
    check above has teeth."""
    _, truth = raw
    cam = truth["cameras"][0]
    _, uv = to_camera(truth["hands"][("171204_pose3", 0)][1], cam)
    assert np.linalg.norm(distort(uv, cam)[THUMB_TIP] - uv[THUMB_TIP]) > 5.0


def test_undistort_is_the_identity_without_distortion_and_keeps_the_window():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    k = np.array([[50.0, 0, 20], [0, 50, 15], [0, 0, 1]])
    assert np.array_equal(undistort(image, k, (0.0,) * 5), image)
    window = undistort(image, k, (0.0,) * 5, (5, 6, 12, 40))
    assert np.array_equal(window[6:30, 5:12], image[6:30, 5:12])
    window[6:30, 5:12] = 0
    assert not window.any()


def test_splits_ids_skipped_hands_and_multi_view_groups(raw, shards):
    _, truth = raw
    for split, shard in shards.items():
        rows = [(int(s["seq"]), int(s["frame"]), int(s["view"])) for s in samples(shard)]
        assert rows == [r[:3] for r in expected(truth, split)]
        names = {zlib.crc32(n.encode()): n for n in SEQUENCES[split]}
        for s in samples(shard):
            seq = int(s["seq"])
            assert seq // 2000 in names  # the split's sequences only
            assert int(s["subject"]) == (seq % 2000) // 2 in (0, 3)  # never the untracked -1
            assert int(s["frame"]) % STRIDE == 0 and int(s["view"]) in EXTRACTED
    test = samples(shards["test"])
    # person 3's badly triangulated left hand (frame 0) and absent right hand (frame 10)
    assert not any(
        int(s["frame"]) == 0 and int(s["seq"]) == seq_id("171204_pose3", 3, 0) for s in test
    )
    assert not any(
        int(s["frame"]) == 10 and int(s["seq"]) == seq_id("171204_pose3", 3, 1) for s in test
    )
    # the unscored little fingertip of person 0's left hand is never visible
    left0 = [s for s in test if int(s["seq"]) == seq_id("171204_pose3", 0, 0)]
    assert left0 and not any(s["vis"][20] for s in left0)
    # a (seq, frame) is one hand seen by several cameras: one world pose, distinct views
    groups: dict[tuple[int, int], list] = {}
    for s in test:
        groups.setdefault((int(s["seq"]), int(s["frame"])), []).append(s)
    assert max(len(g) for g in groups.values()) == 3
    for group in groups.values():
        assert len({int(s["view"]) for s in group}) == len(group)
        worlds = [(s["kp3d"] - s["cam_t"]) @ s["cam_R"] for s in group]
        assert all(np.abs(w - worlds[0]).max() < 0.1 for w in worlds)


def test_stride_and_cameras_are_class_attributes(raw, tmp_path, monkeypatch):
    root, truth = raw
    monkeypatch.setattr(Panoptic, "frame_stride", 5)
    monkeypatch.setattr(Panoptic, "hd_nodes", (16, 0))
    path = convert("pan", root, tmp_path, splits=["test"], size=16, progress=False)[0]
    shard = ShardDataset(path)
    rows = [(int(s["seq"]), int(s["frame"]), int(s["view"])) for s in samples(shard)]
    assert rows == [r[:3] for r in expected(truth, "test", stride=5, nodes=(0, 16))]
    assert {f for _, f, _ in rows} == {0, 5, 10, 15, 20}
    # a camera whose frames were not extracted, asked for by node
    monkeypatch.setattr(Panoptic, "hd_nodes", (7,))
    assert_refused(
        "pan", root, tmp_path / "n", r"missing .*_b1/hdImgs/00_07 \(the frames of HD camera 00_07"
    )
    monkeypatch.setattr(Panoptic, "hd_nodes", (5,))
    assert_refused("pan", root, tmp_path / "n", r"has no HD camera with node\(s\) \[5\]")


def test_bad_panoptic_copies_are_one_clear_error_and_nothing_is_written(raw, tmp_path, capsys):
    root, _ = raw
    out = tmp_path / "out"
    test_seq = root / "171204_pose3"

    def refused(folder: Path, match: str) -> None:
        assert_refused("pan", folder, out, match)

    def copy(name: str) -> Path:
        folder = tmp_path / name
        shutil.copytree(root, folder)
        return folder

    def edit_hands(folder: Path, frame: int, change) -> None:
        path = folder / "171204_pose3" / "hdHand3d" / f"handRecon3D_hd{frame:08d}.json"
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data))

    def edit_calibration(folder: Path, change) -> None:
        path = folder / "171204_pose3" / "calibration_171204_pose3.json"
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data))

    refused(tmp_path / "nowhere", r"raw folder .*nowhere does not exist")
    (tmp_path / "empty").mkdir()
    refused(tmp_path / "empty", r"holds no Panoptic sequence folder with 3D hands")
    refused(test_seq, r"171204_pose3 is one sequence folder; pass the folder that holds")
    refused(test_seq / "hdHand3d", r"hdHand3d is a folder inside a sequence")
    refused(test_seq / "hdImgs", r"hdImgs is a folder inside a sequence")
    folder = copy("no-test")
    shutil.rmtree(folder / "171204_pose3")
    refused(folder, r"missing .*171204_pose3/hdHand3d \(the 3D hands of the test sequence")
    folder = copy("only-test")
    for name in SEQUENCES["train"]:
        shutil.rmtree(folder / name)
    refused(folder, r"holds no training sequence: .*171204_pose3.* is a test sequence")
    folder = copy("no-calibration")
    (folder / "171204_pose3" / "calibration_171204_pose3.json").unlink()
    refused(folder, r"missing .*calibration_171204_pose3\.json \(the camera calibration")
    folder = copy("cut-calibration")
    path = folder / "171204_pose3" / "calibration_171204_pose3.json"
    path.write_text(path.read_text()[:700])
    refused(folder, r"calibration_171204_pose3\.json is not valid JSON \(cut short\?\)")
    folder = copy("cut-hands")
    path = folder / "171204_pose3" / "hdHand3d" / "handRecon3D_hd00000010.json"
    path.write_text(path.read_text()[:300])
    refused(folder, r"handRecon3D_hd00000010\.json is not valid JSON \(cut short\?\)")
    folder = copy("no-hand-files")
    for path in (folder / "171204_pose3" / "hdHand3d").glob("*.json"):
        path.unlink()
    refused(folder, r"171204_pose3/hdHand3d holds no handRecon3D_hd%08d\.json file")
    folder = copy("bodies")  # a body file where the hands should be
    edit_hands(folder, 10, lambda d: d.update(people=None, bodies=[]))
    refused(folder, r"handRecon3D_hd00000010\.json holds \['bodies', 'people', 'version'\]; exp")
    folder = copy("no-landmarks")
    edit_hands(folder, 20, lambda d: d["people"][0]["right_hand"].pop("landmarks"))
    refused(folder, r"hd00000020\.json person 0 right_hand has no 'landmarks'")
    folder = copy("no-labels")
    edit_hands(
        folder,
        20,
        lambda d: [d["people"][1]["left_hand"].pop(k) for k in ("validity", "averageScore")],
    )
    refused(folder, r"person 3 left_hand has neither 'validity' nor 'averageScore'")
    folder = copy("short")
    edit_hands(folder, 0, lambda d: d["people"][0]["left_hand"].update(landmarks=[0.0] * 42))
    refused(folder, r"hd00000000\.json person 0 left_hand: landmarks has shape \(42,\)")
    folder = copy("no-id")
    edit_hands(folder, 0, lambda d: d["people"][1].pop("id"))
    refused(folder, r"hd00000000\.json: person 1 has no integer 'id'")
    folder = copy("no-dist")
    edit_calibration(folder, lambda d: d["cameras"][2].pop("distCoef"))
    refused(folder, r"calibration_171204_pose3\.json: camera 2 lacks \['distCoef'\]")
    folder = copy("k")  # a 3 x 3 that is not an intrinsic matrix
    edit_calibration(folder, lambda d: d["cameras"][1]["K"].__setitem__(2, [0, 0, 2]))
    refused(folder, r"calibration_171204_pose3\.json camera 00_00: K .* is not \[\[fx, s, cx\]")
    folder = copy("mm-calibration")  # t in mm
    edit_calibration(
        folder, lambda d: [c.update(t=[[10 * v[0]] for v in c["t"]]) for c in d["cameras"]]
    )
    refused(folder, r"HD cameras lie a median \d+ from the origin; expected 100-1000 \(t in cm")
    folder = copy("mm-hands")  # landmarks in mm
    for path in (folder / "171204_pose3" / "hdHand3d").glob("*.json"):
        data = json.loads(path.read_text())
        for person in data["people"]:
            for key in ("left_hand", "right_hand"):
                if key in person:
                    person[key]["landmarks"] = [v * 10 for v in person[key]["landmarks"]]
        path.write_text(json.dumps(data))
    refused(folder, r"hdHand3d: the median wrist to middle-MCP distance is 8\d\.\d+; expected 4-16")
    folder = copy("no-frames")
    shutil.rmtree(folder / "171204_pose3" / "hdImgs")
    refused(folder, r"171204_pose3/hdImgs holds no HD frame folder \(00_00 \.\.\. 00_16\)")
    folder = copy("frame")
    (folder / "171204_pose3" / "hdImgs" / "00_03" / "00_03_00000010.jpg").unlink()
    refused(folder, r"missing .*00_03_00000010\.jpg \(HD frame 10 of camera 00_03, which sees")
    # frames extracted at another size (a camera's first frame tells)
    folder = copy("size")
    path = folder / "171204_pose3" / "hdImgs" / "00_16" / "00_16_00000000.jpg"
    Image.new("RGB", (80, 60)).save(path)
    refused(folder, r"00_16_00000000\.jpg is 80 x 60 px; its camera's calibration says 160 x 120")
    # the CLI says it in one line, exit status 2
    assert main(["data", "convert", "pan", str(test_seq), "--out", str(out), "--quiet"]) == 2
    assert "is one sequence folder" in capsys.readouterr().err
