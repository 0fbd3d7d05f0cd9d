"""The HumanEva-I converter on a fixture in the layout of datasets/humaneva.yaml (VideoPose3D's
humaneva15 npz files, its detections file for the chunk lengths, the original videos and
.cal files): world metres carried into each camera's frame in mm, kp2d the pinhole
projection of kp3d, frames undistorted, the approximate HumanEva → H36M mapping with left
and right in place, chunks placed in the videos with VideoPose3D's frame ranges and sync
offsets, the Train/Validate splits, multi-view ids, and bad input."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_refused, write_video

from bench.cli import main
from bench.data.convert import convert, get_converter
from bench.data.convert.crop import square_around
from bench.data.convert.raw import RawFiles
from bench.data.joints import get_joint_set, get_mapping, joint_names
from bench.data.shards import ShardDataset

WIDTH, HEIGHT = 160, 120
SIZE = 80
CAMERAS = ("C1", "C2", "C3")
# VideoPose3D's frame ranges and sync offsets (copied into the converter) for the fixture's
# sequences: [start, end) and the 1-based video frame of synchronised frame 0 per camera
RANGES = {
    ("Train", "S1", "Jog 1"): (367, 740),
    ("Validate", "S1", "Jog 1"): (5, 367),
    ("Validate", "S3", "Box 1"): (5, 512),
}
SYNC = {("S1", "Jog 1"): (51, 51, 50), ("S3", "Box 1"): (1, 1, 1)}
# Chunks of each sequence from its range start: (length, labelled). Chunks after an
# unlabelled one can only be placed with the detections file's lengths.
LAYOUT = {
    ("Train", "S1", "Jog 1"): ((4, True), (2, False), (3, True), (364, False)),
    ("Validate", "S1", "Jog 1"): ((2, False), (3, True), (357, False)),
    ("Validate", "S3", "Box 1"): ((4, True), (503, False)),
}
SPLIT_OF = {"train": "Train", "test": "Validate"}
# humaneva15 (bench/data/joints.py) in metres around the pelvis, in the subject's axes:
# left = +x, up = +z, facing -y (towards C1). Asymmetric: the right arm is raised above the
# head, the left hangs down.
BODY = np.array(
    [
        [0.00, 0.00, 0.00],  # 0 pelvis
        [0.00, 0.00, 0.50],  # 1 thorax
        [0.18, 0.00, 0.45],  # 2 l_shoulder
        [0.22, -0.02, 0.20],  # 3 l_elbow
        [0.24, -0.05, -0.02],  # 4 l_wrist
        [-0.18, 0.00, 0.45],  # 5 r_shoulder
        [-0.30, -0.05, 0.65],  # 6 r_elbow
        [-0.35, -0.05, 0.95],  # 7 r_wrist
        [0.10, 0.00, -0.05],  # 8 l_hip
        [0.11, -0.03, -0.45],  # 9 l_knee
        [0.11, 0.00, -0.85],  # 10 l_ankle
        [-0.10, 0.00, -0.05],  # 11 r_hip
        [-0.10, -0.05, -0.45],  # 12 r_knee
        [-0.10, 0.02, -0.85],  # 13 r_ankle
        [0.00, 0.00, 0.75],  # 14 head
    ]
)
R_WRIST = 7  # a bright square is drawn where the lens shows it, in every video frame
# camera centre (mm), the point it looks at, Bouguet's kc; C2's strong distortion moves the
# right wrist by several pixels (its tangential terms too), so pixels only match kp2d if the
# frames are undistorted
RIG = {
    "C1": ((0, -4000, 1000), (0, 0, 1000), (-0.25, 0.1, 0.001, -0.002, 0.0)),
    "C2": ((4000, 300, 1100), (0, -900, 950), (0.9, 0.3, -0.03, 0.04, 0.0)),
    "C3": ((-4000, 500, 900), (100, 0, 1000), (-0.1, 0.0, 0.0, 0.0, 0.05)),
}


def camera(cam: str, width: int = WIDTH, height: int = HEIGHT) -> dict[str, np.ndarray]:
    """K (with a skew), kc, R, t (mm) of a camera of the rig, upright, looking level-ish."""
    centre, target, kc = (np.asarray(v, dtype=np.float64) for v in RIG[cam])
    z = (target - centre) / np.linalg.norm(target - centre)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    r = np.stack([x, np.cross(z, x), z])
    fx, fy = 1.06 * width, 1.07 * width
    k = np.array([[fx, 0.002 * fx, width / 2 - 0.7], [0, fy, height / 2 + 0.6], [0, 0, 1]])
    return {"K": k, "kc": kc, "R": r, "t": -r @ centre}


def cal_text(c: dict[str, np.ndarray]) -> str:
    k = c["K"]
    values = [k[0, 0], k[1, 1], k[0, 2], k[1, 2], k[0, 1] / k[0, 0], *c["kc"], *c["R"].ravel()]
    return "".join(f"{v:.12g}\n" for v in (*values, *c["t"]))


def world_pose(subject: str, frame: int) -> np.ndarray:
    """[15, 3] m: the pelvis a metre up, jumping between three places from frame to frame
    (so a frame read one off shows the marker elsewhere)."""
    s = int(subject[1:])
    offset = [0.15 * (frame % 3) - 0.05 + 0.01 * s, 0.15 * ((frame + 1) % 3) - 0.1, 1.0]
    return BODY + offset


def in_camera(subject: str, frame: int, cam: str, **size: int) -> np.ndarray:
    c = camera(cam, **size)
    return world_pose(subject, frame) * 1000.0 @ c["R"].T + c["t"]


def pinhole(points: np.ndarray, k: np.ndarray) -> np.ndarray:
    uvw = points @ k.T
    return uvw[..., :2] / uvw[..., 2:]


def distorted(points: np.ndarray, c: dict[str, np.ndarray]) -> np.ndarray:
    """Bouguet's projection (what the lens shows, and what the toolkit's 2D holds)."""
    x, y = points[..., 0] / points[..., 2], points[..., 1] / points[..., 2]
    k1, k2, p1, p2, k3 = c["kc"]
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2**2 + k3 * r2**3
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return pinhole(np.stack([xd, yd, np.ones_like(xd)], axis=-1), c["K"])


def chunks(
    key: tuple[str, str, str], layout: dict | None = None
) -> list[tuple[int, int, int, bool]]:
    """(chunk number, first synchronised frame, length, labelled) of a sequence."""
    out, first = [], RANGES[key][0]
    for n, (length, labelled) in enumerate((layout or LAYOUT)[key]):
        out.append((n, first, length, labelled))
        first += length
    return out


def video_frames(
    subject: str, sequence: str, view: int, count: int, width: int, height: int
) -> Iterable[np.ndarray]:
    c = camera(CAMERAS[view], width, height)
    skip = SYNC[(subject, sequence)][view] - 1
    for j in range(count):
        image = np.full((height, width, 3), 40, np.uint8)
        if j >= skip:
            cam = world_pose(subject, j - skip) * 1000.0 @ c["R"].T + c["t"]
            u, v = np.rint(distorted(cam[R_WRIST], c)).astype(int)
            image[max(v - 2, 0) : v + 3, max(u - 2, 0) : u + 3] = 255
        yield image


def write_humaneva(
    root: Path,
    layout: dict[tuple[str, str, str], tuple[tuple[int, bool], ...]] | None = None,
    width: int = WIDTH,
    height: int = HEIGHT,
    codec: str = "ffv1",
    damaged: bool = True,
) -> None:
    """The raw layout: the three npz files, per subject the .cal files of C1-C3 and the
    videos of its sequences (long enough for their chunks and sync offsets). ``damaged``
    adds Validate/S3 "ThrowCatch 1 chunk0" to the npz (no videos): it must be skipped."""
    layout = LAYOUT if layout is None else layout
    poses_3d: dict[str, dict] = {}
    poses_2d: dict[str, dict] = {}
    detections: dict[str, dict] = {}
    needed: dict[tuple[str, str], int] = {}
    for (split, subject, sequence), _ in layout.items():
        for n, first, length, labelled in chunks((split, subject, sequence), layout):
            name = f"{sequence} chunk{n}"
            det = [np.zeros((length, 17, 2), np.float32) for _ in CAMERAS]
            group = f"{split}/{subject}" if labelled else f"Unlabeled/{split}/{subject}"
            detections.setdefault(group, {})[name] = det
            if not labelled:
                continue
            frames = range(first, first + length)
            world = np.stack([world_pose(subject, f) for f in frames]).astype(np.float32)
            views = []
            for cam in CAMERAS:
                c = camera(cam, width, height)
                views.append(distorted(world * 1000.0 @ c["R"].T + c["t"], c))
            poses_3d.setdefault(f"{split}/{subject}", {})[name] = world
            poses_2d.setdefault(f"{split}/{subject}", {})[name] = [
                v.astype(np.float32) for v in views
            ]
            end = first + length + max(SYNC[(subject, sequence)])
            needed[(subject, sequence)] = max(needed.get((subject, sequence), 0), end + 2)
    if damaged:
        poses_3d["Validate/S3"]["ThrowCatch 1 chunk0"] = np.zeros((3, 15, 3), np.float32)
        poses_2d["Validate/S3"]["ThrowCatch 1 chunk0"] = [np.zeros((3, 15, 2), np.float32)] * 3
    root.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(root / "data_3d_humaneva15.npz", positions_3d=poses_3d)
    metadata = {"layout_name": "humaneva15", "num_joints": 15, "keypoints_symmetry": []}
    np.savez_compressed(
        root / "data_2d_humaneva15_gt.npz", positions_2d=poses_2d, metadata=metadata
    )
    np.savez_compressed(root / "data_2d_humaneva15_detectron_pt_coco.npz", positions_2d=detections)
    for subject in sorted({s for _, s, _ in layout}):
        (root / subject / "Calibration_Data").mkdir(parents=True)
        for cam in CAMERAS:
            text = cal_text(camera(cam, width, height))
            (root / subject / "Calibration_Data" / f"{cam}.cal").write_text(text)
    for (subject, sequence), count in needed.items():
        action, trial = sequence.split(" ")
        for view, cam in enumerate(CAMERAS):
            path = root / subject / "Image_Data" / f"{action}_{trial}_({cam}).avi"
            write_video(
                path, video_frames(subject, sequence, view, count, width, height), codec, rate=60
            )


def write_humaneva_throughput(
    root: Path, n: int, width: int = 640, height: int = 480, codec: str = "mpeg4"
) -> int:
    """A copy whose test split (Validate/S3 "Box 1", one labelled chunk seen by the three
    cameras, ``width`` × ``height`` lossy videos) holds at least ``n`` samples; returns that
    number. Convert with ``splits=["test"]``."""
    span = RANGES[("Validate", "S3", "Box 1")]
    per_camera = -(-n // len(CAMERAS))
    if per_camera >= span[1] - span[0]:
        raise ValueError(f"at most {3 * (span[1] - span[0] - 1)} samples")
    rest = span[1] - span[0] - per_camera
    layout = {("Validate", "S3", "Box 1"): ((per_camera, True), (rest, False))}
    write_humaneva(root, layout, width, height, codec, damaged=False)
    return per_camera * len(CAMERAS)


def sequence_id(split: str, subject: str, sequence: str, chunk: int) -> int:
    action, trial = sequence.split(" ")
    actions = ("Walking", "Jog", "Gestures", "ThrowCatch", "Box", "Combo")
    code = {"Train": 1, "Validate": 2}[split]
    return int(f"{code}{subject[1:]}{actions.index(action)}{trial}{chunk:03d}")


def expected_rows(split: str) -> list[tuple[int, int, int, int, str, str]]:
    """(seq, frame, view, subject, subject name, sequence) in the converter's order."""
    rows = []
    for (sp, subject, sequence), _ in sorted(LAYOUT.items(), key=lambda kv: kv[0][1]):
        if sp != SPLIT_OF[split]:
            continue
        for n, first, length, labelled in chunks((sp, subject, sequence)):
            if labelled:
                seq = sequence_id(sp, subject, sequence, n)
                for view in range(len(CAMERAS)):
                    for f in range(first, first + length):
                        rows.append((seq, f, view, int(subject[1:]), subject, sequence))
    return rows


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("humaneva-raw")
    write_humaneva(root)
    return root


@pytest.fixture(scope="module")
def shards(raw, tmp_path_factory) -> dict[str, ShardDataset]:
    out = tmp_path_factory.mktemp("humaneva-out")
    paths = convert("humaneva", raw, out, size=SIZE, progress=False)
    assert [p.name for p in paths] == ["train.h5", "test.h5"]
    return {p.stem: ShardDataset(p) for p in paths}


def samples(shard: ShardDataset) -> list[dict[str, np.ndarray]]:
    return [
        {k: v.numpy() for k, v in shard[i].items() if k != "index"}
        for i in range(shard.info.num_samples)
    ]


def test_humaneva_shards_hold_camera_mm_joints_their_projection_and_pixels(shards):
    js = get_joint_set("h36m17")
    mapping = get_mapping("humaneva15", "h36m17")
    raw_names = joint_names("humaneva15")
    j = {name: js.joints.index(name) for name in js.joints}
    for split, shard in shards.items():
        assert shard.info.joint_set == "h36m17" and shard.info.image_size == (SIZE, SIZE)
        rows = expected_rows(split)
        got = samples(shard)
        assert len(got) == len(rows)
        for s, (_, frame, view, _, subject, _) in zip(got, rows, strict=True):
            cam = CAMERAS[view]
            c = camera(cam)
            cam_mm = in_camera(subject, frame, cam)
            # camera frame, mm, canonical order, joint by joint by name
            for name in js.joints:
                if name in raw_names:
                    assert s["kp3d"][j[name]] == pytest.approx(
                        cam_mm[raw_names.index(name)], abs=0.05
                    ), name
            for name in ("spine", "neck"):  # no HumanEva counterpart
                assert np.isnan(s["kp3d"][j[name]]).all() and not s["vis"][j[name]]
            assert s["vis"].sum() == 15
            assert s["cam_R"] == pytest.approx(c["R"], abs=1e-6)
            assert s["cam_t"] == pytest.approx(c["t"], abs=1e-2)
            # kp2d: the crop of the pinhole projection (the lens distortion is undone)
            uv = pinhole(cam_mm, c["K"])
            crop = square_around(uv, np.ones(15, bool), SIZE)
            assert np.allclose(s["kp2d"], mapping.apply(crop.points(uv)), atol=2e-3, equal_nan=True)
            assert s["K"] == pytest.approx(crop.intrinsics(c["K"]), rel=1e-5, abs=1e-4)
            mapped = ~np.isnan(s["kp3d"]).any(axis=1)
            assert np.abs(pinhole(s["kp3d"][mapped], s["K"]) - s["kp2d"][mapped]).max() < 1e-3
            # left and right: the raised right wrist above the head in every view, the left
            # hanging below its elbow; facing C1, the right side on the image's left
            assert s["kp2d"][j["r_wrist"], 1] < s["kp2d"][j["head"], 1]
            assert s["kp2d"][j["l_wrist"], 1] > s["kp2d"][j["l_elbow"], 1]
            if cam == "C1":
                assert s["kp2d"][j["r_wrist"], 0] < s["kp2d"][j["l_wrist"], 0]
                assert s["kp2d"][j["r_hip"], 0] < s["kp2d"][j["l_hip"], 0]
            # pixels: the marker the lens put on the right wrist is at kp2d after undistortion,
            # in the video frame this chunk frame maps to (a frame off shows it elsewhere)
            x, y = np.rint(s["kp2d"][j["r_wrist"]]).astype(int)
            assert s["images"][y, x].min() > 150, (split, subject, frame, cam)


def test_the_fixture_makes_the_pixel_check_sensitive():
    """Without the undistortion C2's marker would lie pixels away from kp2d, and the marker
    jumps between consecutive frames: the pixel check above can fail."""
    c = camera("C2")
    for f in range(3):
        cam = in_camera("S1", f, "C2")[R_WRIST]
        assert np.linalg.norm(distorted(cam, c) - pinhole(cam, c["K"])) > 4
    for cam in CAMERAS:
        a, b = (pinhole(in_camera("S1", f, cam)[R_WRIST], camera(cam)["K"]) for f in (0, 1))
        assert np.linalg.norm(a - b) > 4


def test_splits_ids_chunk_placement_and_multi_view_groups(shards):
    for split, shard in shards.items():
        got = samples(shard)
        rows = [(int(s["seq"]), int(s["frame"]), int(s["view"]), int(s["subject"])) for s in got]
        assert rows == [r[:4] for r in expected_rows(split)]
    # Train -> train, Validate -> test; the damaged S3 ThrowCatch is not converted
    train = {int(s["seq"]) for s in samples(shards["train"])}
    test = {int(s["seq"]) for s in samples(shards["test"])}
    assert train == {1111000, 1111002}
    assert test == {2111001, 2341000}
    # chunk2 of Train/S1 Jog starts after chunk0 (4) and the unlabelled chunk1 (2)
    frames = sorted({int(s["frame"]) for s in samples(shards["train"]) if s["seq"] == 1111002})
    assert frames == [373, 374, 375]
    # every (seq, frame) is seen by the three cameras, which agree on the world joints
    groups: dict[tuple[int, int], list[dict]] = {}
    for s in samples(shards["test"]) + samples(shards["train"]):
        groups.setdefault((int(s["seq"]), int(s["frame"])), []).append(s)
    for group in groups.values():
        assert sorted(int(s["view"]) for s in group) == [0, 1, 2]
        world = [(s["kp3d"] - s["cam_t"]) @ s["cam_R"] for s in group]
        for w in world[1:]:
            assert np.allclose(w, world[0], atol=0.05, equal_nan=True)


def test_the_npz_2d_may_be_with_or_without_the_distortion(raw, tmp_path):
    folder = tmp_path / "pinhole"
    shutil.copytree(raw, folder, copy_function=os.link)
    path = folder / "data_2d_humaneva15_gt.npz"
    with np.load(path, allow_pickle=True) as npz:
        poses = npz["positions_2d"].item()
    for name in list(poses["Validate/S3"]):
        if name.startswith("Box"):
            with np.load(folder / "data_3d_humaneva15.npz", allow_pickle=True) as world:
                xyz = world["positions_3d"].item()["Validate/S3"][name] * 1000.0
            poses["Validate/S3"][name] = [
                pinhole(xyz @ camera(cam)["R"].T + camera(cam)["t"], camera(cam)["K"])
                for cam in CAMERAS
            ]
    path.unlink()
    np.savez_compressed(path, positions_2d=poses)
    converter = get_converter("humaneva")
    assert len(list(converter.items(RawFiles("humaneva", folder), "test"))) == 21


def test_sequence_ids_and_the_humaneva_to_h36m_mapping():
    module = type(get_converter("humaneva"))
    assert module.__module__ == "bench.data.convert.humaneva"
    from bench.data.convert.humaneva import sequence_id as converter_id

    assert converter_id("Validate", "S3", "Walking 1", 4) == 2301004
    assert converter_id("Train", "S2", "Box 1", 12) == sequence_id("Train", "S2", "Box 1", 12)
    mapping = get_mapping("humaneva15", "h36m17")
    src, tgt = joint_names("humaneva15"), joint_names("h36m17")
    # every mapped joint is the joint of that name, except the approximate head
    for i, s in enumerate(mapping.index):
        if s is not None and i not in mapping.approximate:
            assert src[s] == tgt[i], tgt[i]
    assert [tgt[i] for i in mapping.missing] == ["spine", "neck"]
    assert [tgt[i] for i in mapping.approximate] == ["head"]
    assert src[mapping.index[tgt.index("head")]] == "head"
    # left stays left through the mapping: the raised right wrist stays the right one
    mapped = mapping.apply(BODY)
    assert mapped[tgt.index("r_wrist"), 2] > mapped[tgt.index("head"), 2]
    assert mapped[tgt.index("l_wrist"), 2] < mapped[tgt.index("l_elbow"), 2]


def test_the_throughput_writer_gives_what_it_says(tmp_path):
    n = write_humaneva_throughput(tmp_path / "raw", 10, width=96, height=72)
    assert n == 12
    path = convert(
        "humaneva", tmp_path / "raw", tmp_path / "out", splits=["test"], size=32, progress=False
    )
    assert ShardDataset(path[0]).info.num_samples == n


def test_bad_humaneva_copies_are_one_clear_error_and_nothing_is_written(raw, tmp_path, capsys):
    out = tmp_path / "out"

    def refused(folder: Path, match: str) -> None:
        assert_refused("humaneva", folder, out, match)

    def copy(name: str) -> Path:
        folder = tmp_path / name
        shutil.copytree(raw, folder, copy_function=os.link)  # rewrite files by replacing
        return folder

    def rewrite(folder: Path, file: str, key: str, change) -> None:
        path = folder / file
        with np.load(path, allow_pickle=True) as npz:
            content = {k: npz[k] for k in npz.files}
        value = content[key].item()
        change(value)
        content[key] = value
        path.unlink()
        np.savez_compressed(path, **content)

    def replace(path: Path, data: bytes) -> None:
        path.unlink()
        path.write_bytes(data)

    refused(tmp_path / "nowhere", "raw folder .*nowhere does not exist")
    # a subject's folder given as the root
    refused(raw / "S1", r"missing .*S1/data_3d_humaneva15\.npz \(VideoPose3D's 3D poses")
    folder = copy("no-2d")
    (folder / "data_2d_humaneva15_gt.npz").unlink()
    refused(folder, r"missing .*data_2d_humaneva15_gt\.npz \(VideoPose3D's ground-truth 2D")
    folder = copy("no-detections")
    (folder / "data_2d_humaneva15_detectron_pt_coco.npz").unlink()
    refused(folder, r"missing .*detectron_pt_coco\.npz \(VideoPose3D's detections, read for")
    folder = copy("cut")
    path = folder / "data_3d_humaneva15.npz"
    replace(path, path.read_bytes()[:300])
    refused(folder, r"data_3d_humaneva15\.npz is not a readable \.npz .*\(cut short\?\)")
    folder = copy("twenty")  # ConvertHumanEva.m with N_JOINTS = 20
    rewrite(
        folder,
        "data_3d_humaneva15.npz",
        "positions_3d",
        lambda d: d["Train/S1"].update({"Jog 1 chunk0": np.zeros((4, 20, 3))}),
    )
    refused(folder, r"Train/S1 'Jog 1 chunk0' shape \(4, 20, 3\).*expected finite \[4, 15, 3\]")
    folder = copy("meta20")
    rewrite(folder, "data_2d_humaneva15_gt.npz", "metadata", lambda m: m.update(num_joints=20))
    refused(folder, r"gt\.npz has metadata .*expected the 15-joint layout humaneva15")
    folder = copy("keys")
    rewrite(
        folder,
        "data_3d_humaneva15.npz",
        "positions_3d",
        lambda d: d.update({"Test/S1": {}}),
    )
    refused(folder, r"has entries \['Test/S1'\]; expected only Train/S<k> and Validate/S<k>")
    folder = copy("gap")  # the unlabelled chunk that places chunk2 is gone
    rewrite(
        folder,
        "data_2d_humaneva15_detectron_pt_coco.npz",
        "positions_2d",
        lambda d: d["Unlabeled/Train/S1"].pop("Jog 1 chunk1"),
    )
    refused(folder, r"chunks \[0, 2, 3\] of Train/S1 'Jog 1' .*covering 371 frames; expected")
    folder = copy("wrong-camera")  # another calibration of C2: focal length off by 5 %
    c = camera("C2")
    c["K"] = c["K"] * np.array([[1.05], [1.05], [1.0]])
    replace(folder / "S1" / "Calibration_Data" / "C2.cal", cal_text(c).encode())
    refused(folder, r"S1/Calibration_Data/C2\.cal does not reproduce .*C2 2D of Train/S1")
    folder = copy("metres")  # Tc in m instead of mm
    c = camera("C1")
    c["t"] = c["t"] / 1000.0
    replace(folder / "S1" / "Calibration_Data" / "C1.cal", cal_text(c).encode())
    refused(folder, r"C1\.cal does not reproduce .* off by up to")
    folder = copy("cal-short")
    path = folder / "S3" / "Calibration_Data" / "C3.cal"
    replace(path, b"".join(path.read_bytes().splitlines(keepends=True)[:21]))
    refused(folder, r"C3\.cal holds 21 numbers .*expected 22: fc\(2\) cc\(2\) alpha_c kc\(5\)")
    folder = copy("no-video")
    (folder / "S3" / "Image_Data" / "Box_1_(C2).avi").unlink()
    refused(folder, r"missing .*S3/Image_Data/Box_1_\(C2\)\.avi \(the video of camera C2")
    folder = copy("short-video")
    path = folder / "S1" / "Image_Data" / "Jog_1_(C3).avi"
    path.unlink()
    write_video(path, video_frames("S1", "Jog 1", 2, 300, WIDTH, HEIGHT), "ffv1", rate=60)
    refused(folder, r"Jog_1_\(C3\)\.avi has 300 frames; Train/S1 'Jog 1 chunk0' needs")
    # the CLI says the same in one line, exit status 2
    assert main(["data", "convert", "humaneva", str(folder), "--out", str(out), "--quiet"]) == 2
    assert "Jog_1_(C3).avi has 300 frames" in capsys.readouterr().err
