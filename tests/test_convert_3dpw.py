"""The 3DPW converter on a fixture in the official layout (protocol-2 pickles per sequence,
image_%05d.jpg frames): world joints carried into the camera frame in mm, kp2d the
projection of kp3d, the approximate SMPL → H36M mapping with left and right in place, the
split folders and valid frames, joints outside the image, per-track ids, and bad input."""

from __future__ import annotations

import importlib
import pickle
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import SMPL24_BODY, assert_refused
from PIL import Image

from bench.cli import main
from bench.data.convert import convert
from bench.data.convert.crop import square_around
from bench.data.joints import get_joint_set, get_mapping
from bench.data.shards import ShardDataset, read_shard_info
from bench.errors import DabenchError

SEQUENCES = {
    "train": ("courtyard_box_00", "outdoors_climbing_01"),
    "validation": ("courtyard_drinking_00", "downtown_rampAndStairs_00"),
    "test": ("downtown_walkUphill_00", "office_phoneCall_00"),
}
FRAMES = 4
ACTORS = 2
BODY = SMPL24_BODY
R_WRIST = 21  # a bright square is drawn there in every frame
INVALID = {0: 2, 1: 0}  # actor -> the frame whose camera pose is not valid for it
OUTSIDE = ("downtown_walkUphill_00", 1, 3)  # its left wrist and hand leave the image
GONE = ("courtyard_box_00", 1, 3)  # wholly outside the image: dropped
SIZE = 32


@dataclass(frozen=True)
class Truth:
    cam: np.ndarray  # [24, 3] m, camera frame
    k: np.ndarray
    r: np.ndarray
    t: np.ndarray  # m
    width: int
    height: int


def seq_id(name: str, actor: int) -> int:
    return zlib.crc32(name.encode()) * 10 + actor


def rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    a = axis / np.linalg.norm(axis)
    cross = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


def project(points: np.ndarray, k: np.ndarray) -> np.ndarray:
    uvw = points @ k.T
    return uvw[:, :2] / uvw[:, 2:]


def write_3dpw(root: Path, nested: bool = False) -> dict[tuple[int, int], Truth]:
    """The 3DPW layout with 2 sequences per split folder, 2 actors, 4 frames; returns the
    truth of every (seq id, frame) a converter should emit."""
    truth = {}
    base = root / "sequenceFiles" / ("sequenceFiles" if nested else "")
    for s, (split, name) in enumerate((sp, n) for sp, names in SEQUENCES.items() for n in names):
        width, height = (96, 72) if s % 2 == 0 else (72, 96)  # landscape and portrait
        k = np.array([[100.0, 0, width / 2 - 1.0], [0, 104.0, height / 2 + 0.5], [0, 0, 1]])
        poses = np.tile(np.eye(4), (FRAMES, 1, 1))
        joints = np.zeros((ACTORS, FRAMES, 72))
        valid = np.ones((ACTORS, FRAMES))
        for actor, frame in INVALID.items():
            valid[actor, frame] = 0
        images = [np.full((height, width, 3), 40, np.uint8) for _ in range(FRAMES)]
        for f in range(FRAMES):
            r = rotation(np.array([0.3, 1.0, 0.2]), 0.4 + 0.1 * f + 0.05 * s)
            t = np.array([0.1 * f, -0.2, 0.3])
            poses[f, :3, :3], poses[f, :3, 3] = r, t
            for actor in range(ACTORS):
                depth = 4.5 + 0.1 * s
                x = (-0.6 if actor == 0 else 0.6) + 0.05 * f
                if (name, actor, f) == OUTSIDE:  # past the right edge: l_wrist, l_hand
                    x = (width - 0.5 - k[0, 2]) * depth / k[0, 0] - 0.21
                if (name, actor, f) == GONE:
                    x = 20.0
                cam = BODY + np.array([x, 0.0, depth])
                joints[actor, f] = ((cam - t) @ r).reshape(-1)  # world = R^T (cam - t)
                truth[(seq_id(name, actor), f)] = Truth(cam, k, r, t, width, height)
                if valid[actor, f]:
                    u, v = np.rint(project(cam, k)[R_WRIST]).astype(int)
                    images[f][max(v - 2, 0) : v + 3, max(u - 2, 0) : u + 3] = 255
        folder = base / split
        folder.mkdir(parents=True, exist_ok=True)
        content = {
            "sequence": name,
            "betas": [np.zeros(10)] * ACTORS,
            "poses": [np.zeros((FRAMES, 72))] * ACTORS,
            "trans": [np.zeros((FRAMES, 3))] * ACTORS,
            "genders": ["m", "f"],
            "poses2d": [np.zeros((FRAMES, 3, 18))] * ACTORS,
            "jointPositions": list(joints),
            "cam_poses": poses,
            "cam_intrinsics": k,
            "campose_valid": list(valid),
            "img_frame_ids": np.arange(FRAMES) * 2,
        }
        with open(folder / f"{name}.pkl", "wb") as fh:
            pickle.dump(content, fh, protocol=2)
        (root / "imageFiles" / name).mkdir(parents=True)
        for f, img in enumerate(images):  # PNG bytes: no JPEG blur on the marker
            path = root / "imageFiles" / name / f"image_{f:05d}.jpg"
            Image.fromarray(img).save(path, format="PNG")
    return truth


def expected_rows(split: str) -> list[tuple[int, int, int]]:
    """(seq, subject, frame) of the samples of ``split``, in the converter's order."""
    return [
        (seq_id(name, actor), actor, f)
        for name in SEQUENCES[split]
        for actor in range(ACTORS)
        for f in range(FRAMES)
        if INVALID[actor] != f and (name, actor, f) != GONE
    ]


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("3dpw-raw")
    return root, write_3dpw(root)


@pytest.fixture(scope="module")
def shards(raw, tmp_path_factory) -> dict[str, ShardDataset]:
    out = tmp_path_factory.mktemp("3dpw-out")
    paths = convert("3dpw", raw[0], out, size=SIZE, progress=False)
    assert [p.name for p in paths] == ["train.h5", "test.h5"]
    return {p.stem: ShardDataset(p) for p in paths}


def rows_of(shard: ShardDataset) -> list[tuple[int, int, int]]:
    return [
        (int(s["seq"]), int(s["subject"]), int(s["frame"]))
        for s in (shard[i] for i in range(shard.info.num_samples))
    ]


def test_3dpw_shards_hold_camera_joints_in_mm_and_their_projection(raw, shards):
    _, truth = raw
    js = get_joint_set("h36m17")
    smpl = get_mapping("smpl24", "h36m17")
    j = {name: js.joints.index(name) for name in js.joints}
    for shard in shards.values():
        assert shard.info.joint_set == "h36m17" and shard.info.image_size == (SIZE, SIZE)
        for i in range(shard.info.num_samples):
            s = {k: v.numpy() for k, v in shard[i].items() if k != "index"}
            want = truth[(int(s["seq"]), int(s["frame"]))]
            # camera frame, mm, in the canonical order (compared joint by joint by name)
            cam_mm = want.cam * 1000.0
            for name, raw_name in (
                ("pelvis", "pelvis"),
                ("r_hip", "r_hip"),
                ("l_knee", "l_knee"),
                ("r_ankle", "r_ankle"),
                ("spine", "spine2"),
                ("thorax", "neck"),
                ("neck", "head"),
                ("l_shoulder", "l_shoulder"),
                ("r_elbow", "r_elbow"),
                ("l_wrist", "l_wrist"),
                ("r_wrist", "r_wrist"),
            ):
                raw_index = get_joint_set("smpl24").joints.index(raw_name)
                assert s["kp3d"][j[name]] == pytest.approx(cam_mm[raw_index], abs=1e-3), name
            assert np.allclose(s["kp3d"], smpl.apply(cam_mm), atol=1e-3, equal_nan=True)
            # the head top has no SMPL counterpart
            assert np.isnan(s["kp3d"][j["head"]]).all() and np.isnan(s["kp2d"][j["head"]]).all()
            assert not s["vis"][j["head"]]
            # extrinsics: world mm -> camera mm
            assert s["cam_R"] == pytest.approx(want.r, abs=1e-6)
            assert s["cam_t"] == pytest.approx(want.t * 1000.0, abs=1e-3)
            # kp2d: the crop (around the joints inside the image) of the projection
            uv = project(want.cam, want.k)
            inside = (
                (uv >= -0.5).all(axis=1)
                & (uv[:, 0] < want.width - 0.5)
                & (uv[:, 1] < want.height - 0.5)
            )
            crop = square_around(uv, inside, SIZE)
            assert np.allclose(s["kp2d"], smpl.apply(crop.points(uv)), atol=1e-3, equal_nan=True)
            assert s["K"] == pytest.approx(crop.intrinsics(want.k), abs=1e-4)
            # the shard invariant: kp2d is the projection of kp3d with the stored K
            mapped = ~np.isnan(s["kp3d"]).any(axis=1)
            assert np.abs(project(s["kp3d"][mapped], s["K"]) - s["kp2d"][mapped]).max() < 1e-3
            # left and right where they belong: facing the camera, the right on the left,
            # and the raised right wrist above the head while the left one hangs by the hip
            assert s["kp2d"][j["r_wrist"], 0] < s["kp2d"][j["l_wrist"], 0]
            assert s["kp2d"][j["r_hip"], 0] < s["kp2d"][j["l_hip"], 0]
            assert s["kp2d"][j["r_wrist"], 1] < s["kp2d"][j["neck"], 1]
            assert s["kp2d"][j["l_wrist"], 1] > s["kp2d"][j["l_elbow"], 1]
            assert s["kp3d"][j["r_knee"], 2] < s["kp3d"][j["l_knee"], 2]
            # pixels moved with the keypoints: the marked right wrist is bright
            x, y = np.rint(s["kp2d"][j["r_wrist"]]).astype(int)
            assert s["images"][y, x].min() > 150


def test_splits_valid_frames_ids_and_joints_outside_the_image(shards):
    js = get_joint_set("h36m17")
    # official folders; validation unused; frames with campose_valid == 1; one sample per
    # (frame, actor) in the order sequence, actor, frame; wholly-outside samples dropped
    assert rows_of(shards["train"]) == expected_rows("train")
    assert rows_of(shards["test"]) == expected_rows("test")
    assert shards["train"].info.num_samples == 2 * 2 * 3 - 1
    names = {zlib.crc32(n.encode()): n for names in SEQUENCES.values() for n in names}
    for split, shard in shards.items():
        assert {names[seq // 10] for seq, _, _ in rows_of(shard)} == set(SEQUENCES[split])
    # the actor whose left wrist leaves the image: kept, but not visible
    name, actor, frame = OUTSIDE
    i = rows_of(shards["test"]).index((seq_id(name, actor), actor, frame))
    s = shards["test"][i]
    vis, kp2d = s["vis"].numpy(), s["kp2d"].numpy()
    hidden = {"l_wrist"}
    assert {n for n, v in zip(js.joints, vis, strict=True) if not v} == hidden | {"head"}
    assert np.isfinite(kp2d[[js.joints.index(n) for n in hidden]]).all()
    # elsewhere every mapped joint is visible
    assert all(
        shards["test"][k]["vis"].numpy().sum() == 16
        for k in range(shards["test"].info.num_samples)
        if k != i
    )


def test_nested_sequence_files_give_the_same_shards_and_reconversion(raw, tmp_path):
    root, _ = raw
    nested = tmp_path / "nested"
    write_3dpw(nested, nested=True)
    flat = convert("3dpw", root, tmp_path / "a", splits=["test"], size=SIZE, progress=False)[0]
    other = convert("3dpw", nested, tmp_path / "b", splits=["test"], size=SIZE, progress=False)[0]
    a, b = ShardDataset(flat), ShardDataset(other)
    assert a.info.num_samples == b.info.num_samples
    for i in range(a.info.num_samples):
        for key, value in a[i].items():
            if key == "index":
                continue
            assert np.array_equal(value.numpy(), b[i][key].numpy(), equal_nan=True), key
    # the same raw copy again: kept; another annotation byte: refused without --overwrite
    before = flat.read_bytes()
    convert("3dpw", root, tmp_path / "a", splits=["test"], size=SIZE, progress=False)
    assert flat.read_bytes() == before
    assert read_shard_info(flat).fingerprint.startswith("convert-3dpw-v1:")
    pkl = nested / "sequenceFiles" / "sequenceFiles" / "test" / "office_phoneCall_00.pkl"
    content = pickle.loads(pkl.read_bytes(), encoding="latin1")
    content["cam_poses"][0, 0, 3] += 0.001
    pkl.write_bytes(pickle.dumps(content, protocol=2))
    with pytest.raises(DabenchError, match="made from other raw files or settings"):
        convert("3dpw", nested, tmp_path / "b", splits=["test"], size=SIZE, progress=False)


def test_sequence_ids_depend_on_the_name_alone():
    module = importlib.import_module("bench.data.convert.pw3d")
    assert module.sequence_id("office_phoneCall_00", 1) == seq_id("office_phoneCall_00", 1)
    assert module.sequence_id("a", 0) // 10 == module.sequence_id("a", 1) // 10


def test_bad_3dpw_copies_are_one_clear_error_and_nothing_is_written(raw, tmp_path, capsys):
    root, _ = raw
    out = tmp_path / "out"

    def refused(folder: Path, match: str) -> None:
        assert_refused("3dpw", folder, out, match)

    def copy(name: str) -> Path:
        folder = tmp_path / name
        shutil.copytree(root, folder)
        return folder

    def rewrite(folder: Path, seq: str, **changes: object) -> None:
        pkl = folder / "sequenceFiles" / "test" / f"{seq}.pkl"
        content = pickle.loads(pkl.read_bytes(), encoding="latin1")
        for key, value in changes.items():
            if value is None:
                del content[key]
            else:
                content[key] = value
        pkl.write_bytes(pickle.dumps(content, protocol=2))

    refused(tmp_path / "nowhere", "raw folder .*nowhere does not exist")
    # the images folder given as the root: no sequenceFiles
    refused(root / "imageFiles", r"missing .*imageFiles/sequenceFiles/train \(the folder of the")
    folder = copy("no-test")
    shutil.rmtree(folder / "sequenceFiles" / "test")
    refused(folder, r"missing .*sequenceFiles/test \(the folder of the test sequences")
    folder = copy("empty-test")
    for pkl in (folder / "sequenceFiles" / "test").glob("*.pkl"):
        pkl.unlink()
    refused(folder, r"sequenceFiles/test holds no \.pkl sequence files")
    folder = copy("cut")
    pkl = folder / "sequenceFiles" / "test" / "office_phoneCall_00.pkl"
    pkl.write_bytes(pkl.read_bytes()[:500])
    refused(
        folder, r"office_phoneCall_00\.pkl is not a readable pickle \(.*Python 2.*cut short\?\)"
    )
    folder = copy("no-joints")  # a release without the joint positions
    rewrite(folder, "office_phoneCall_00", jointPositions=None, campose_valid=None)
    refused(folder, r"office_phoneCall_00\.pkl lacks \['jointPositions', 'campose_valid'\]")
    folder = copy("reshaped")  # joints as [T, 24, 3] per actor
    rewrite(folder, "office_phoneCall_00", jointPositions=[np.zeros((FRAMES, 24, 3))] * 2)
    refused(folder, r"jointPositions \(2, 4, 24, 3\).*expected a name, \[A, T, 72\]")
    folder = copy("short-valid")
    rewrite(folder, "office_phoneCall_00", campose_valid=[np.ones(FRAMES - 1)] * 2)
    refused(folder, r"campose_valid \(2, 3\)")
    folder = copy("list")
    (folder / "sequenceFiles" / "test" / "office_phoneCall_00.pkl").write_bytes(
        pickle.dumps([1, 2], protocol=2)
    )
    refused(folder, r"holds a list; expected the dict of a 3DPW sequence file")
    folder = copy("twice")
    shutil.copy(
        folder / "sequenceFiles" / "test" / "office_phoneCall_00.pkl",
        folder / "sequenceFiles" / "test" / "zz_copy.pkl",
    )
    refused(folder, r"zz_copy\.pkl and .*office_phoneCall_00\.pkl hold the same sequence")
    folder = copy("frame")
    (folder / "imageFiles" / "downtown_walkUphill_00" / "image_00003.jpg").unlink()
    refused(folder, r"missing .*downtown_walkUphill_00/image_00003\.jpg \(frame 3 of")
    folder = copy("images")
    shutil.rmtree(folder / "imageFiles" / "courtyard_box_00")
    refused(folder, r"missing .*courtyard_box_00/image_00000\.jpg \(the first valid frame")
    # the CLI says the same in one line, exit status 2
    assert main(["data", "convert", "3dpw", str(folder), "--out", str(out), "--quiet"]) == 2
    assert "courtyard_box_00/image_00000.jpg" in capsys.readouterr().err
