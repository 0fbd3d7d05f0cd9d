"""The Human3.6M converters (cards h36m and h36m-mas) on a fixture of the raw release:
metadata.xml with the cameras in <w0>, CDF poses, mp4 videos and MATLAB v7.3 masks. Camera
frame joints in mm and their exact pinhole projection, the cameras as mmpose builds them,
left and right, splits, strides, truncation and the corrupt S11 video, ids that form
multi-view groups, masks with the pixels, the six-action card, and bad input."""

from __future__ import annotations

import inspect
import math
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pytest
from cdflib import cdfwrite
from conftest import assert_refused, write_video
from PIL import Image, ImageDraw

from bench.cli import main
from bench.data.convert import convert, get_converter
from bench.data.convert.crop import square_around
from bench.data.convert.raw import RawFiles
from bench.data.joints import get_joint_set
from bench.data.pairs import pair_shards
from bench.data.shards import ShardDataset
from bench.data.views import MultiView
from bench.errors import DabenchError

CAMERA_IDS = ("54138969", "55011271", "58860488", "60457274")
# (W, H) per camera: the real sizes, and small ones with the same landscape/square mix
REAL_SIZES = {
    c: (1000, 1002) if c in ("54138969", "60457274") else (1000, 1000) for c in CAMERA_IDS
}
FIXTURE_SIZES = {c: (128, 96) if c in ("54138969", "60457274") else (112, 112) for c in CAMERA_IDS}
# the real rig's camera centres (world mm, z up), all looking at the capture area
CENTRES = np.array(
    [[1841.1, 4955.3, 1563.4], [1761.3, -5078.0, 1606.3], [-1846.8, 5215.0, 1491.6],
     [-1794.8, -3722.7, 1574.9]]
)  # fmt: skip
K_RADIAL = (-0.20, 0.24, -0.0028)
P_TANGENTIAL = (-0.0009, -0.0014)
ACTION_NAMES = (
    "_ALL Directions Discussion Eating Greeting Phoning Posing Purchases Sitting SittingDown "
    "Smoking TakingPhoto Waiting Walking WalkingDog WalkTogether"
).split()
# metadata <mapping> rows (action, subaction, basename): the fixture records two actions
ROWS = ((1, 1, "_ALL 1"), (1, 2, "_ALL"), (2, 1, "Directions 1"), (2, 2, "Directions"),
        (4, 1, "Eating 2"), (4, 2, "Eating"))  # fmt: skip
SUBJECTS = {"train": 1, "test": 11}
STRIDES = {"train": 5, "test": 64}
CORRUPT = (11, "Directions", 0)  # S11's Directions.54138969.mp4
# truncation: (subject, basename, camera index) -> fewer video frames, or fewer pose rows
SHORT_VIDEO = (1, "Directions 1", 1)
SHORT_POSES = (1, "Eating", 2)
SIZE = 48
# the 17 of the 32 raw joints, in h36m17's order (datasets.md §4.3)
H36M17_FROM_RAW = [0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 17, 18, 19, 25, 26, 27]
L_WRIST, R_WRIST = 19, 27  # raw indices
BONES = [(0, 1), (1, 2), (2, 3), (0, 6), (6, 7), (7, 8), (0, 12), (12, 13), (13, 14),
         (14, 15), (13, 17), (17, 18), (18, 19), (13, 25), (25, 26), (26, 27)]  # fmt: skip
# 32 joints, world mm, z up, facing -y (its left is +x). The LEFT wrist is raised above the
# head; the right arm hangs down.
BODY = np.array(
    [
        [0, 0, 950], [-130, 0, 950], [-130, -20, 500], [-130, 0, 80], [-130, -120, 20],
        [-130, -170, 20], [130, 0, 950], [130, -20, 500], [130, 0, 80], [130, -120, 20],
        [130, -170, 20], [0, 0, 950], [0, 10, 1180], [0, 10, 1420], [0, -10, 1510],
        [0, 0, 1650], [0, 10, 1420], [180, 10, 1400], [200, 0, 1650], [210, -10, 1900],
        [215, -30, 1930], [215, -30, 1930], [210, -10, 1950], [210, -10, 1950],
        [0, 10, 1420], [-180, 10, 1400], [-220, 0, 1130], [-240, -10, 870],
        [-245, -30, 850], [-245, -30, 850], [-240, -10, 820], [-240, -10, 820],
    ],
    dtype=np.float64,
)  # fmt: skip
GREY, RED, DARK = (200, 200, 200), (230, 30, 30), (20, 20, 20)


@dataclass(frozen=True)
class Truth:
    mono: np.ndarray  # [32, 3] mm, camera frame
    K: np.ndarray
    cam_R: np.ndarray  # mmpose's R, transposed: world -> camera
    cam_t: np.ndarray
    size: tuple[int, int]  # W, H


@dataclass
class Fixture:
    truth: dict[tuple[int, int, int], Truth] = field(default_factory=dict)  # (seq, view, frame)
    rows: dict[str, list[tuple[int, int, int]]] = field(default_factory=dict)


def seq_id(subject: int, action: int, subaction: int) -> int:
    return 1000 * subject + 10 * action + subaction


def look_at(centre: np.ndarray, target: np.ndarray) -> np.ndarray:
    """World -> camera rotation of a camera at ``centre`` looking at ``target``, z up."""
    forward = (target - centre) / np.linalg.norm(target - centre)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    return np.stack([right, np.cross(forward, right), forward])


def xyz_angles(r: np.ndarray) -> np.ndarray:
    """(a, b, c) with r = Rx(a) Ry(b) Rz(c)."""
    return np.array(
        [math.atan2(-r[1, 2], r[2, 2]), math.asin(r[0, 2]), math.atan2(-r[0, 1], r[0, 0])]
    )


def mmpose_camera(angles: np.ndarray, centre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cam_R, cam_t as mmpose's preprocess_h36m.py builds the camera from <w0> (R
    camera -> world from negated x and z angles, T the centre; X_cam = R^T (X - T))."""
    x, y, z = -angles[0], angles[1], -angles[2]
    r_x = np.array([[1, 0, 0], [0, np.cos(x), np.sin(x)], [0, -np.sin(x), np.cos(x)]])
    r_y = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    r_z = np.array([[np.cos(z), np.sin(z), 0], [-np.sin(z), np.cos(z), 0], [0, 0, 1]])
    r = (r_x @ r_y @ r_z).T
    return r.T, -r.T @ centre


def intrinsics(index: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    w, h = size
    f = np.array([1.1450 * h + 0.7 * index, 1.1437 * h - 0.4 * index])
    c = np.array([w / 2 + 1.25 + 0.6 * index, h / 2 + 1.5 - 0.9 * index])
    return f, c


def pinhole(points: np.ndarray, k: np.ndarray) -> np.ndarray:
    uvw = points @ k.T
    return uvw[..., :2] / uvw[..., 2:]


def distorted(points: np.ndarray, f: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Human3.6M's ProjectPointRadial (Martinez et al.'s cameras.py)."""
    xy = points[..., :2] / points[..., 2:]
    r2 = (xy**2).sum(-1)
    k, p = K_RADIAL, P_TANGENTIAL
    radial = 1 + k[0] * r2 + k[1] * r2**2 + k[2] * r2**3
    tan = p[0] * xy[..., 1] + p[1] * xy[..., 0]
    xy = xy * (radial + tan)[..., None] + r2[..., None] * np.array([p[1], p[0]])
    return xy * f + c


def draw(uv: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The figure (round-capped bones of the 17 joints, a red left wrist) as an RGB frame
    and its mask."""
    w, h = size
    radius = max(3.0, 0.035 * h)
    body = Image.new("L", (w, h), 0)
    pen = ImageDraw.Draw(body)
    for i, j in BONES:
        pen.line([tuple(uv[i]), tuple(uv[j])], fill=255, width=round(2 * radius))
    for x, y in uv[sorted({k for bone in BONES for k in bone})]:
        pen.ellipse([x - radius, y - radius, x + radius, y + radius], fill=255)
    wrist = Image.new("L", (w, h), 0)
    x, y, r = *uv[L_WRIST], 1.6 * radius
    ImageDraw.Draw(wrist).ellipse([x - r, y - r, x + r, y + r], fill=255)
    mask, red = np.asarray(body) > 0, np.asarray(wrist) > 0
    mask = mask | red
    image = np.empty((h, w, 3), np.uint8)
    image[:] = DARK
    image[mask] = GREY
    image[red] = RED
    return image, mask


def write_cdf(path: Path, pose: np.ndarray) -> None:
    """``Pose`` as the release stores it: one record of [N, 32 * dims]."""
    writer = cdfwrite.CDF(str(path), cdf_spec={"Majority": "Row_major"}, delete=True)
    spec = {
        "Variable": "Pose",
        "Data_Type": cdfwrite.CDF.CDF_DOUBLE,
        "Num_Elements": 1,
        "Rec_Vary": True,
        "Dim_Sizes": list(pose.shape),
    }
    writer.write_var(spec, var_attrs={}, var_data=pose[None])
    writer.close()


def write_masks(path: Path, masks: list[np.ndarray], transpose: bool = True) -> None:
    """A MATLAB v7.3 file as MATLAB writes ``Masks`` (a 1 x N cell of H x W logical): HDF5
    behind a 512-byte header, the cell an (N, 1) dataset of object references into
    ``#refs#``, each array stored column-major (W x H as HDF5 reads it)."""
    with h5py.File(path, "w", userblock_size=512) as f:
        group = f.create_group("#refs#")
        refs = []
        for i, mask in enumerate(masks):
            data = (mask.T if transpose else mask).astype(np.uint8)
            d = group.create_dataset(f"m{i}", data=data, compression="gzip")
            d.attrs["MATLAB_class"] = np.bytes_("logical")
            d.attrs["MATLAB_int_decode"] = np.int32(1)
            refs.append(d.ref)
        cell = f.create_dataset("Masks", data=np.array(refs, dtype=h5py.ref_dtype)[:, None])
        cell.attrs["MATLAB_class"] = np.bytes_("cell")
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, HDF5 schema 1.00 ."
    with open(path, "r+b") as fh:
        fh.write(header.ljust(116) + bytes(8) + b"\x00\x02IM")


def write_metadata(path: Path, w0: np.ndarray) -> None:
    subjects = [f"S{s}" for s in range(1, 12)]
    root = ET.Element("metadata")
    mapping = ET.SubElement(root, "mapping")
    for cells in (["action", "subaction", *subjects],
                  *([str(a), str(s), *[b] * len(subjects)] for a, s, b in ROWS)):  # fmt: skip
        tr = ET.SubElement(mapping, "tr")
        for text in cells:
            ET.SubElement(tr, "td").text = text
    names = ET.SubElement(root, "actionnames")
    for name in ACTION_NAMES:
        ET.SubElement(names, "item").text = name
    index2id = ET.SubElement(ET.SubElement(root, "dbcameras"), "index2id")
    for cam in CAMERA_IDS:
        ET.SubElement(index2id, "item").text = cam
    ET.SubElement(root, "w0").text = "[" + " ".join(f"{v:.17g}" for v in w0) + "]"
    ET.ElementTree(root).write(path)


def camera_block(sizes: Mapping[str, tuple[int, int]]) -> np.ndarray:
    """<w0>: per (camera, subject) angles and centre, then per camera f, c, k, p. Each
    subject's rig is moved a little, as the real one was between subjects."""
    w0 = np.zeros(4 * 11 * 6 + 4 * 9)
    for c in range(4):
        for s in range(1, 12):
            centre = CENTRES[c] + np.array([9.0, -6.0, 2.0]) * s
            angles = xyz_angles(look_at(centre, np.array([30.0 * s, 0.0, 1050.0])))
            w0[6 * (11 * c + s - 1) :][:6] = [*angles, *centre]
        f, cc = intrinsics(c, sizes[CAMERA_IDS[c]])
        w0[264 + 9 * c :][:9] = [*f, *cc, *K_RADIAL, *P_TANGENTIAL]
    return w0


def write_h36m(
    root: Path,
    *,
    train_frames: int = 12,
    test_frames: int = 66,
    sizes: Mapping[str, tuple[int, int]] = FIXTURE_SIZES,
    masks: bool = True,
    truncate: bool = True,
) -> Fixture:
    """The raw release for S1 (train) and S11 (test), actions Directions and Eating (two
    subactions each) and the 4 cameras: metadata.xml, D2_Positions (distorted projection),
    D3_Positions_mono, Videos and (``masks``) MySegmentsMat/ground_truth_bs. With
    ``truncate``, one S1 video is 3 frames shorter than its poses and one S1 pose file 2
    rows shorter than its video. Returns the truth of every sample a converter should emit
    and the (seq, view, frame) rows of each split of the h36m card, in order."""
    w0 = camera_block(sizes)
    root.mkdir(parents=True, exist_ok=True)
    write_metadata(root / "metadata.xml", w0)
    out = Fixture()
    for split, subject in SUBJECTS.items():
        frames = train_frames if split == "train" else test_frames
        folders = {
            k: root / f"S{subject}" / k
            for k in (
                "Videos",
                "MyPoseFeatures/D2_Positions",
                "MyPoseFeatures/D3_Positions_mono",
                "MySegmentsMat/ground_truth_bs",
            )
        }
        for folder in folders.values():
            folder.mkdir(parents=True, exist_ok=True)
        rows = []
        for r, (action, subaction, base) in enumerate(ROWS):
            if action == 1:
                continue
            # the figure walks, and its left wrist rises, a little from frame to frame
            lift = np.zeros((32, 3))
            lift[L_WRIST, 2] = 2.0
            world = np.stack([BODY + [15.0 * f + 40 * r, -10.0 * f, 0] + f * lift
                              for f in range(frames)])  # fmt: skip
            for c, cam in enumerate(CAMERA_IDS):
                start = 6 * (11 * c + subject - 1)
                cam_R, cam_t = mmpose_camera(w0[start : start + 3], w0[start + 3 : start + 6])
                f_, c_ = intrinsics(c, sizes[cam])
                k = np.array([[f_[0], 0, c_[0]], [0, f_[1], c_[1]], [0, 0, 1]])
                mono = world @ cam_R.T + cam_t
                n_poses, n_video = frames, frames
                if truncate and (subject, base, c) == SHORT_POSES:
                    n_poses -= 2
                if truncate and (subject, base, c) == SHORT_VIDEO:
                    n_video -= 3
                name = f"{base}.{cam}"
                write_cdf(folders["MyPoseFeatures/D3_Positions_mono"] / f"{name}.cdf",
                          mono[:n_poses].reshape(n_poses, 96))  # fmt: skip
                d2 = distorted(mono[:n_poses], f_, c_)
                write_cdf(folders["MyPoseFeatures/D2_Positions"] / f"{name}.cdf",
                          d2.reshape(n_poses, 64))  # fmt: skip
                # every frame has its mask: the truncations are the video's and the poses'
                drawn = [draw(pinhole(mono[i], k), sizes[cam]) for i in range(frames)]
                if (subject, base, c) == CORRUPT:
                    (folders["Videos"] / f"{name}.mp4").write_bytes(b"corrupt, never read")
                else:
                    write_video(
                        folders["Videos"] / f"{name}.mp4",
                        [im for im, _ in drawn[:n_video]],
                        rate=50,
                        bit_rate=8_000_000,
                    )
                if masks:
                    write_masks(folders["MySegmentsMat/ground_truth_bs"] / f"{name}.mat",
                                [m for _, m in drawn])  # fmt: skip
                if (subject, base, c) == CORRUPT:
                    continue
                seq = seq_id(subject, action, subaction)
                for i in range(0, min(n_poses, n_video), STRIDES[split]):
                    out.truth[(seq, c, i)] = Truth(mono[i], k, cam_R, cam_t, sizes[cam])
                    rows.append((seq, c, i))
        out.rows[split] = rows
    return out


def write_h36m_samples(
    root: Path, n: int, *, sizes: Mapping[str, tuple[int, int]] = REAL_SIZES, masks: bool = True
) -> int:
    """A raw copy whose train split has at least ``n`` samples (16 recording-cameras of S1,
    every 5th frame) at the real image sizes; returns that number. The test split has one
    frame per recording-camera of S11."""
    frames = 5 * math.ceil(n / 16)
    write_h36m(root, train_frames=frames, test_frames=1, sizes=sizes, masks=masks, truncate=False)
    return 16 * (frames // 5)


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> tuple[Path, Fixture]:
    root = tmp_path_factory.mktemp("h36m-raw")
    return root, write_h36m(root)


@pytest.fixture(scope="module")
def converted(raw, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("h36m-out")
    paths = convert("h36m", raw[0], out, size=SIZE, progress=False)
    assert [p.name for p in paths] == ["train.h5", "test.h5"]
    return out


@pytest.fixture(scope="module")
def shards(converted) -> dict[str, ShardDataset]:
    return {s: ShardDataset(converted / "h36m" / f"{s}.h5") for s in ("train", "test")}


def rows_of(shard: ShardDataset) -> list[tuple[int, int, int]]:
    return [
        (int(s["seq"]), int(s["view"]), int(s["frame"]))
        for s in (shard[i] for i in range(shard.info.num_samples))
    ]


def sample(shard: ShardDataset, i: int) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in shard[i].items() if k != "index"}


# -- tests ------------------------------------------------------------------------------------


def test_fixture_cameras_match_their_construction_and_d2_is_distorted():
    """mmpose's reading of <w0> gives back the look-at cameras the fixture placed, and the
    released 2D differs from the pinhole projection (so kp2d cannot be copied from it)."""
    w0 = camera_block(FIXTURE_SIZES)
    for c in range(4):
        centre = CENTRES[c] + np.array([9.0, -6.0, 2.0])
        cam_R, cam_t = mmpose_camera(w0[6 * 11 * c :][:3], centre)
        assert cam_R == pytest.approx(look_at(centre, np.array([30.0, 0, 1050.0])), abs=1e-12)
        mono = BODY @ cam_R.T + cam_t
        assert (mono[:, 2] > 4000).all()
        f, cc = intrinsics(c, FIXTURE_SIZES[CAMERA_IDS[c]])
        k = np.array([[f[0], 0, cc[0]], [0, f[1], cc[1]], [0, 0, 1]])
        gap = np.linalg.norm(distorted(mono, f, cc) - pinhole(mono, k), axis=-1).max()
        assert 0.05 < gap < 3.0


def test_items_is_a_generator_and_the_masks_rule_is_settled_first(raw):
    root, fixture = raw
    converter = get_converter("h36m")
    with pytest.raises(DabenchError, match="depends on the raw copy; its items must be read"):
        converter.fields_of("train")
    items = converter.items(RawFiles("h36m", root), "train")
    assert inspect.isgenerator(items)
    assert "masks" in converter.fields_of("train")
    first = next(items)
    assert (first.seq, first.view, first.frame) == fixture.rows["train"][0]
    assert first.image == "S1/Videos/Directions 1.54138969.mp4" and first.image_frame == 0
    assert first.mask == "S1/MySegmentsMat/ground_truth_bs/Directions 1.54138969.mat"


def test_shards_hold_camera_joints_in_mm_their_projection_and_the_cameras(raw, shards):
    _, fixture = raw
    js = get_joint_set("h36m17")
    j = {name: js.joints.index(name) for name in js.joints}
    for shard in shards.values():
        assert shard.info.joint_set == "h36m17" and shard.info.image_size == (SIZE, SIZE)
        for i in range(shard.info.num_samples):
            s = sample(shard, i)
            want = fixture.truth[(int(s["seq"]), int(s["view"]), int(s["frame"]))]
            # the canonical order: h36m17 slot i holds raw joint H36M17_FROM_RAW[i], in mm
            assert s["kp3d"] == pytest.approx(want.mono[H36M17_FROM_RAW], abs=1e-2)
            assert s["vis"].all()
            # cameras as mmpose reads <w0>: world mm -> camera mm
            assert s["cam_R"] == pytest.approx(want.cam_R, abs=1e-6)
            assert s["cam_t"] == pytest.approx(want.cam_t, abs=1e-2)
            # kp2d: the crop of the pinhole projection (not the distorted D2_Positions)
            uv = pinhole(want.mono, want.K)
            crop = square_around(uv, np.ones(32, bool), SIZE)
            assert s["kp2d"] == pytest.approx(crop.points(uv)[H36M17_FROM_RAW], abs=1e-3)
            assert s["K"] == pytest.approx(crop.intrinsics(want.K), abs=1e-3)
            assert np.abs(pinhole(s["kp3d"], s["K"]) - s["kp2d"]).max() < 1e-3
            # left and right: the raised LEFT wrist is the highest joint in every view, the
            # right one hangs below its elbow; the red marker is under the left wrist
            assert s["kp2d"][:, 1].argmin() == j["l_wrist"]
            assert s["kp2d"][j["r_wrist"], 1] > s["kp2d"][j["r_elbow"], 1]
            x, y = np.rint(s["kp2d"][j["l_wrist"]]).astype(int)
            red = s["images"][y, x].astype(int)
            assert red[0] > 150 and red[0] - red[1] > 80, red
            x, y = np.rint(s["kp2d"][j["r_wrist"]]).astype(int)
            grey = s["images"][y, x].astype(int)
            assert grey.min() > 120 and abs(grey[0] - grey[1]) < 50, grey


def test_splits_strides_truncation_the_corrupt_video_and_ids(raw, shards):
    _, fixture = raw
    train, test = rows_of(shards["train"]), rows_of(shards["test"])
    # order: recording (metadata row), camera, frame; S1 every 5th frame, S11 every 64th
    assert train == fixture.rows["train"] and test == fixture.rows["test"]
    assert {f for _, _, f in train} == {0, 5, 10} and {f for _, _, f in test} == {0, 64}
    assert {int(shards["train"][i]["subject"]) for i in range(len(train))} == {1}
    assert {int(shards["test"][i]["subject"]) for i in range(len(test))} == {11}
    # seq = 1000 subject + 10 action + subaction; "_ALL" (action 1) is not a recording
    assert {s for s, _, _ in train} == {1021, 1022, 1041, 1042}
    assert {s for s, _, _ in test} == {11021, 11022, 11041, 11042}
    # truncated to the shorter of poses and video: frame 10 is gone from both cameras
    assert (seq_id(1, 2, 1), 1, 10) not in train and (seq_id(1, 2, 1), 0, 10) in train
    assert (seq_id(1, 4, 2), 2, 10) not in train and (seq_id(1, 4, 2), 3, 10) in train
    # S11 Directions (subaction 2 is "Directions") has no camera 54138969 sample
    assert {v for s, v, _ in test if s == seq_id(11, 2, 2)} == {1, 2, 3}
    assert {v for s, v, _ in test if s == seq_id(11, 2, 1)} == {0, 1, 2, 3}
    # one seq per recording, shared by the cameras: the views of a frame form a group
    groups: dict[tuple[int, int], set[int]] = {}
    for seq, view, frame in train + test:
        groups.setdefault((seq, frame), set()).add(view)
    full = {k for k, v in groups.items() if v == {0, 1, 2, 3}}
    assert len(full) == len(groups) - 4  # two truncated frames, S11 Directions' 2 frames


def test_multi_view_groups_and_masks_reach_the_views(raw, converted):
    pair = pair_shards("h36m", "h36m", converted)
    view = MultiView(views=4, fields=("images", "masks"))
    assert view.check(pair) == []
    assert view.units(pair) == 4 * 3 - 2  # 4 recordings x frames 0, 5, 10; two truncated
    batch = next(view.stream(pair, batch_size=2, seed=0))
    assert batch["images"].shape == (2, 4, SIZE, SIZE, 3)
    assert batch["cam_R"].shape == (2, 4, 3, 3)


def test_masks_align_with_the_pixels(shards):
    for shard in shards.values():
        assert "masks" in shard.info.fields
        for i in range(shard.info.num_samples):
            s = sample(shard, i)
            mask, image = s["masks"].astype(bool), s["images"].astype(float)
            assert 0.05 < mask.mean() < 0.6
            assert image[mask].mean() > 150 and image[~mask].mean() < 60


def test_the_six_action_card_is_the_same_samples_of_those_actions(raw, shards, tmp_path):
    _, fixture = raw
    paths = convert("h36m-mas", raw[0], tmp_path, size=SIZE, progress=False)
    for path, split in zip(paths, ("train", "test"), strict=True):
        mas = ShardDataset(path)
        assert mas.info.attrs["dataset"] == "h36m-mas" and "masks" in mas.info.fields
        rows = rows_of(mas)
        # Directions (action 2) is one of the six; Eating (4) is not
        assert rows == [r for r in fixture.rows[split] if (r[0] // 10) % 100 == 2]
        full = rows_of(shards[split])
        for i, row in enumerate(rows):
            same = sample(shards[split], full.index(row))
            for key, value in sample(mas, i).items():
                assert np.array_equal(value, same[key]), key


def test_masks_in_a_split_all_or_none_and_truncate_it(raw, tmp_path):
    root, fixture = raw
    folder = tmp_path / "raw"
    shutil.copytree(root, folder)
    # a mask file shorter than its video and poses: the frames past it are dropped
    with h5py.File(root / "S11/MySegmentsMat/ground_truth_bs/Eating.55011271.mat") as f:
        kept = [f[ref][()].T.astype(bool) for ref in f["Masks"][:40, 0]]
    write_masks(folder / "S11/MySegmentsMat/ground_truth_bs/Eating.55011271.mat", kept)
    path = convert("h36m", folder, tmp_path / "short", splits=["test"], size=16,
                   progress=False)[0]  # fmt: skip
    shard = ShardDataset(path)
    assert "masks" in shard.info.fields
    assert rows_of(shard) == [r for r in fixture.rows["test"] if r != (seq_id(11, 4, 2), 1, 64)]
    shutil.rmtree(folder / "S11" / "MySegmentsMat")  # the test subject's masks not unpacked
    path = convert("h36m", folder, tmp_path / "out", splits=["test"], size=16,
                   progress=False)[0]  # fmt: skip
    shard = ShardDataset(path)
    assert "masks" not in shard.info.fields and rows_of(shard) == fixture.rows["test"]
    (folder / "S1" / "MySegmentsMat" / "ground_truth_bs" / "Eating 2.60457274.mat").unlink()
    assert_refused(
        "h36m",
        folder,
        tmp_path / "refused",
        r"missing .*ground_truth_bs/Eating 2\.60457274\.mat .*15 of the split's 16 mask files",
    )


def test_bad_h36m_copies_are_one_clear_error_and_nothing_is_written(raw, tmp_path, capsys):
    root, _ = raw
    out = tmp_path / "out"

    def copy(name: str) -> Path:
        folder = tmp_path / name
        shutil.copytree(root, folder)
        return folder

    def refused(folder: Path, match: str) -> None:
        assert_refused("h36m", folder, out, match)

    s1 = "S1/MyPoseFeatures"
    refused(tmp_path / "nowhere", "raw folder .*nowhere does not exist")
    # a subject folder given as RAW_DIR
    refused(root / "S1", r"missing .*S1/metadata\.xml \(the Human3\.6M metadata")
    folder = copy("no-subjects")  # the subjects one level deeper
    (folder / "extracted").mkdir()
    (folder / "S1").rename(folder / "extracted" / "S1")
    refused(folder, r"no subject folder of the train split \(S1, S5, S6, S7, S8\)")
    folder = copy("cut-xml")
    (folder / "metadata.xml").write_bytes((root / "metadata.xml").read_bytes()[:400])
    refused(folder, r"metadata\.xml is not readable XML \(cut short\?\)")
    folder = copy("no-d2")
    (folder / s1 / "D2_Positions" / "Directions 1.55011271.cdf").unlink()
    refused(folder, r"missing .*D2_Positions/Directions 1\.55011271\.cdf \(the 2D poses")
    folder = copy("cut-d3")
    cdf = folder / s1 / "D3_Positions_mono" / "Eating.58860488.cdf"
    cdf.write_bytes(cdf.read_bytes()[: cdf.stat().st_size // 2])
    refused(folder, r"Eating\.58860488\.cdf is not a readable CDF file .*cut short\?")
    folder = copy("2d-as-3d")  # D2 files where the 3D ones belong
    shutil.copy(folder / s1 / "D2_Positions" / "Directions.54138969.cdf",
                folder / s1 / "D3_Positions_mono" / "Directions.54138969.cdf")  # fmt: skip
    refused(folder, r"Directions\.54138969\.cdf has 'Pose' of shape \(1, 12, 64\); expected")
    folder = copy("short-d2")
    pose = np.zeros((11, 64)) + 50.0
    write_cdf(folder / s1 / "D2_Positions" / "Directions.60457274.cdf", pose)
    refused(folder, r"D2_Positions has 11 frames, D3_Positions_mono 12")
    folder = copy("no-video")
    (folder / "S11" / "Videos" / "Eating.58860488.mp4").unlink()
    refused(folder, r"missing .*S11/Videos/Eating\.58860488\.mp4 \(the video of")
    folder = copy("row-major-masks")  # masks not in MATLAB's column-major order
    mat = folder / "S1" / "MySegmentsMat" / "ground_truth_bs" / "Eating.54138969.mat"
    write_masks(mat, [np.zeros((96, 128), bool)] * 12, transpose=False)
    refused(folder, r"Eating\.54138969\.mat holds masks of 96 x 128 px .*video .* is 128 x 96")
    # a camera file that does not belong to the poses: another camera's principal point,
    # another subject's extrinsics
    w0 = camera_block(FIXTURE_SIZES)
    folder = copy("intrinsics")
    shifted = w0.copy()
    shifted[264 + 9 + 2] += 12.0  # c_x of camera 55011271
    write_metadata(folder / "metadata.xml", shifted)
    refused(folder, r"intrinsics of camera 55011271 for S1 .* a median 12\.\d px from its D2")
    folder = copy("extrinsics")
    moved = w0.copy()
    moved[6 * (11 * 2 + 0) :][:6] = w0[6 * (11 * 2 + 4) :][:6]  # S5's camera 58860488 for S1
    write_metadata(folder / "metadata.xml", moved)
    refused(folder, r"extrinsics of S1 do not carry .*58860488 \(\d+ mm\) off the others")
    # the CLI says it in one line, exit status 2
    assert main(["data", "convert", "h36m", str(folder), "--out", str(out), "--quiet"]) == 2
    assert "58860488" in capsys.readouterr().err
