"""The MPI-INF-3DHP converters on fixtures in the official layout: the training release
(annot.mat cells, camera.calibration text, avi videos of frames, FGmasks and ChairMasks) and
the test set (annot_data.mat in HDF5, JPEG frames). Card 3dhp: joints in camera mm and their
exact projection, left and right in place, the vnect cameras and the frame stride, the short
video cut, masks from the red channel, the test set's valid frames and fitted intrinsics.
Card 3dhp-mas: the paper's subjects, strides and cameras, and its per-moment frame filter.
Bad copies: one clear error, nothing written."""

from __future__ import annotations

import importlib
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io as sio
from conftest import assert_refused, write_video
from PIL import Image

from bench.cli import main
from bench.data.convert import convert
from bench.data.convert.crop import square_around
from bench.data.joints import get_joint_set, get_mapping, joint_names
from bench.data.shards import ShardDataset
from bench.data.views import moment_ids

SIZE = 64  # shard crops
IMAGE = 160  # fixture frames, W = H (the real ones are 2048)
VNECT = (0, 1, 2, 4, 5, 6, 7, 8)
CHEST = (0, 2, 4, 7, 8)
FRAMES = {(1, 1): 12, (1, 2): 11, (7, 1): 12}  # (subject, sequence) -> video frames
EXTRA_ROWS = 5  # annot.mat holds more rows than the videos have frames
SHORT = {(1, 2, 2): 9}  # (subject, sequence, camera) -> a video shorter than the others
# 28 joints (mpi_inf_3dhp28 order) in mm, world axes = a camera's (x right, y down, z away),
# the subject facing the cameras: its left is on the image's right (+x). Asymmetric: the
# right arm is raised above the head, the left hangs by the hip; the right knee is nearer.
BODY = np.array(
    [
        [0, -300, 0],  # 0 spine3
        [0, -420, 0],  # 1 spine4
        [0, -180, 0],  # 2 spine2
        [0, -80, 0],  # 3 spine
        [0, 0, 0],  # 4 pelvis
        [0, -520, 0],  # 5 neck
        [0, -620, 10],  # 6 head
        [0, -720, 20],  # 7 head_top
        [80, -480, 0],  # 8 l_clavicle
        [180, -470, 10],  # 9 l_shoulder
        [230, -220, 20],  # 10 l_elbow
        [250, 0, 30],  # 11 l_wrist
        [255, 70, 35],  # 12 l_hand
        [-80, -480, 0],  # 13 r_clavicle
        [-180, -470, -10],  # 14 r_shoulder
        [-330, -620, -20],  # 15 r_elbow
        [-380, -830, -30],  # 16 r_wrist
        [-390, -900, -35],  # 17 r_hand
        [100, 20, 0],  # 18 l_hip
        [110, 440, 40],  # 19 l_knee
        [120, 800, 0],  # 20 l_ankle
        [140, 930, -80],  # 21 l_foot
        [150, 960, -160],  # 22 l_toe
        [-100, 20, 0],  # 23 r_hip
        [-110, 440, -60],  # 24 r_knee
        [-120, 800, 0],  # 25 r_ankle
        [-140, 930, -80],  # 26 r_foot
        [-150, 960, -160],  # 27 r_toe
    ],
    dtype=np.float64,
)
R_WRIST, R_HAND = 16, 17
# Moments the Mask-as-Supervision filter must drop or keep, (subject, sequence, frame[, cam]):
OUT = (1, 1, 10)  # the right wrist and hand leave every image (top edge): dropped
FG_FULL = (1, 1, 5, 4)  # camera 4's foreground covers the whole image: dropped
FG_80 = (1, 2, 5, 0)  # camera 0's covers 80 %: kept
CHAIR_SIX = (1, 2, 0, 7)  # 6 joints on zero chair-mask pixels in camera 7: dropped
CHAIR_FOUR = (1, 2, 5, 2)  # 4 joints on zero chair-mask pixels in camera 2: kept
TESTS = {1: ((128, 128), (1, 1, 0, 1, 0, 1)), 5: ((160, 96), (0, 1, 1, 1, 0))}
MATLAB_ORDER = {5}  # test sequences whose arrays are stored as (d, 17, 1, N)
TEST_SLOTS = (7, 5, 14, 15, 16, 9, 10, 11, 23, 24, 25, 18, 19, 20, 4, 3, 6)


def camera(cam: int, size: int = IMAGE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """K, R, t (mm) of camera ``cam``: on a circle around the subject, turned about the
    vertical by a few degrees each."""
    s = size / IMAGE
    k = np.array(
        [
            [(150.0 + cam) * s, 0.0, (79.3 + 0.1 * cam) * s],
            [0.0, (152.0 + 0.5 * cam) * s, (80.6 - 0.2 * cam) * s],
            [0.0, 0.0, 1.0],
        ]
    )
    a = np.radians(4.0 * (cam - 6))
    r = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    t = np.array([20.0 * (cam % 3) - 20.0, 10.0 * (cam % 2), 2500.0 + 25.0 * cam])
    return k, r, t


def world_pose(subject: int, sequence: int, frame: int) -> np.ndarray:
    pose = BODY + np.array([6.0 * frame - 30.0, 2.0 * subject, 4.0 * sequence])
    if (subject, sequence, frame) == OUT:
        pose[[R_WRIST, R_HAND], 1] = -1750.0
    return pose


def camera_pose(subject: int, sequence: int, frame: int, cam: int) -> np.ndarray:
    _, r, t = camera(cam)
    return world_pose(subject, sequence, frame) @ r.T + t


def project(points: np.ndarray, k: np.ndarray) -> np.ndarray:
    uvw = points @ k.T
    return uvw[..., :2] / uvw[..., 2:]


def inside(uv: np.ndarray, width: int, height: int) -> np.ndarray:
    return (uv >= -0.5).all(axis=-1) & (uv[..., 0] < width - 0.5) & (uv[..., 1] < height - 0.5)


def marker(subject: int, cam: int, frame: int) -> tuple[int, int, int]:
    """The colour of the square drawn at the right wrist: says which video and frame."""
    return 60 + (15 * frame) % 180, 10 + 15 * cam, 255 - 10 * subject


def fg_red(subject: int, sequence: int, frame: int, cam: int, size: int = IMAGE) -> np.ndarray:
    """The foreground (red channel) of a FGmasks frame: the box of the in-image joints."""
    red = np.zeros((size, size), np.uint8)
    if (subject, sequence, frame, cam) == FG_FULL:
        red[:] = 255
        return red
    if (subject, sequence, frame, cam) == FG_80:
        red[: int(0.8 * size)] = 255
        return red
    k, r, t = camera(cam, size)
    uv = project(world_pose(subject, sequence, frame) @ r.T + t, k)
    uv = uv[inside(uv, size, size)]
    x0, y0 = np.floor(uv.min(axis=0)).astype(int) - 3
    x1, y1 = np.ceil(uv.max(axis=0)).astype(int) + 3
    red[max(y0, 0) : y1 + 1, max(x0, 0) : x1 + 1] = 255
    return red


def chair_red(subject: int, sequence: int, frame: int, cam: int, size: int = IMAGE) -> np.ndarray:
    """The red channel of a ChairMasks frame: set everywhere, but for the two chair moments
    a band at the bottom holds exactly the 6 or 4 lowest joints at zero."""
    red = np.full((size, size), 255, np.uint8)
    below = {CHAIR_SIX: 6, CHAIR_FOUR: 4}.get((subject, sequence, frame, cam))
    if below:
        k, r, t = camera(cam, size)
        v = np.sort(np.rint(project(world_pose(subject, sequence, frame) @ r.T + t, k)[:, 1]))
        v = v[::-1]
        assert v[below - 1] - v[below] >= 3, "fixture: joints too close to the band's edge"
        red[int(v[below] + v[below - 1]) // 2 + 1 :] = 0
    return red


def calibration_text(size: int = IMAGE) -> str:
    lines = ["Skeletool Camera Calibration File V1.0"]
    for cam in range(14):
        k, r, t = camera(cam, size)
        intrinsic = np.eye(4)
        intrinsic[:3, :3] = k
        extrinsic = np.eye(4)
        extrinsic[:3, :3], extrinsic[:3, 3] = r, t
        lines += [
            f"name          {cam}",
            "  sensor      10 10",
            f"  size        {size} {size}",
            "  animated    0",
            "  intrinsic   " + " ".join(f"{v:.12g}" for v in intrinsic.ravel()),
            "  extrinsic   " + " ".join(f"{v:.12g}" for v in extrinsic.ravel()),
            "  radial      0",
        ]
    return "\n".join(lines) + "\n"


def cells(arrays: list[np.ndarray]) -> np.ndarray:
    c = np.empty((14, 1), dtype=object)  # np.array(list) would make one numeric array
    for i, a in enumerate(arrays):
        c[i, 0] = a
    return c


def write_sequence(
    root: Path,
    subject: int,
    sequence: int,
    frames: int,
    *,
    size: int = IMAGE,
    cameras: Iterable[int] = VNECT,
    codec: str = "ffv1",
    chairs: bool = True,
) -> None:
    """One ``S<s>/Seq<q>`` folder: annot.mat (14 cells, rows beyond the frames),
    camera.calibration, and for ``cameras`` the image, FGmasks and ChairMasks videos."""
    folder = root / f"S{subject}" / f"Seq{sequence}"
    folder.mkdir(parents=True)
    rows = frames + EXTRA_ROWS
    annot2, annot3 = [], []
    for cam in range(14):
        k, r, t = camera(cam, size)
        a3 = np.zeros((rows, 28, 3))
        for f in range(frames):
            a3[f] = world_pose(subject, sequence, f) @ r.T + t
        a2 = np.zeros((rows, 28, 2))
        # the released 2D differ slightly from the projection: the converter must not store them
        a2[:frames] = project(a3[:frames], k) + np.array([0.3, -0.2])
        annot2.append(a2.reshape(rows, 56))
        annot3.append(a3.reshape(rows, 84))
    sio.savemat(
        folder / "annot.mat",
        {
            "annot2": cells(annot2),
            "annot3": cells(annot3),
            "univ_annot3": cells([0.9 * a for a in annot3]),
            "cameras": np.arange(14)[None],
            "frames": np.arange(rows)[:, None],
        },
    )
    (folder / "camera.calibration").write_text(calibration_text(size))
    side = max(1, round(4 * size / IMAGE))  # half the marker's side
    for cam in cameras:
        n = SHORT.get((subject, sequence, cam), frames)
        k, r, t = camera(cam, size)
        images = []
        for f in range(n):
            image = np.full((size, size, 3), 40, np.uint8)
            u, v = np.rint(project(world_pose(subject, sequence, f) @ r.T + t, k)[R_WRIST])
            u, v = int(u), int(v)
            if 0 <= u < size and 0 <= v < size:
                image[max(v - side, 0) : v + side + 1, max(u - side, 0) : u + side + 1] = marker(
                    subject, cam, f
                )
            images.append(image)
        write_video(folder / "imageSequence" / f"video_{cam}.avi", images, codec)

        key = (subject, sequence, cam)
        fg = mask_frames(fg_red, key, n, size, green=255)
        write_video(folder / "FGmasks" / f"video_{cam}.avi", fg, codec)
        if chairs:
            chair = mask_frames(chair_red, key, n, size, green=0)
            write_video(folder / "ChairMasks" / f"video_{cam}.avi", chair, codec)


def mask_frames(
    red_of, key: tuple[int, int, int], frames: int, size: int, green: int
) -> Iterable[np.ndarray]:
    """Mask video frames: ``red_of``'s red channel; ``green`` in the green one (FGmasks'
    upper-body channel, which must not count as foreground)."""
    subject, sequence, cam = key
    for f in range(frames):
        rgb = np.zeros((size, size, 3), np.uint8)
        rgb[..., 0] = red_of(subject, sequence, f, cam, size)
        rgb[..., 1] = green
        yield rgb


def ts_camera(k: int) -> tuple[np.ndarray, tuple[int, int]]:
    (width, height), _ = TESTS[k]
    kk = np.array([[140.0 + k, 0, width / 2 - 0.7], [0, 143.0 - k, height / 2 + 1.1], [0, 0, 1]])
    return kk, (width, height)


def ts_pose(k: int, frame: int) -> np.ndarray:
    """17 joints (test order) in the test camera's frame, mm."""
    return (BODY + np.array([8.0 * frame, 5.0 * k, 2600.0 + 20.0 * frame]))[list(TEST_SLOTS)]


def write_test_set(root: Path) -> None:
    """mpi_inf_3dhp_test_set/TS<k>/annot_data.mat (HDF5) and imageSequence/img_%06d.jpg."""
    for k, ((width, height), valid) in TESTS.items():
        folder = root / "mpi_inf_3dhp_test_set" / f"TS{k}"
        (folder / "imageSequence").mkdir(parents=True)
        kk, _ = ts_camera(k)
        n = len(valid)
        annot3 = np.stack([ts_pose(k, f) for f in range(n)])
        annot2 = project(annot3, kk)
        arrays = {"annot2": annot2[:, None], "annot3": annot3[:, None]}
        arrays["univ_annot3"] = 0.9 * arrays["annot3"]
        if k in MATLAB_ORDER:
            arrays = {key: a.transpose(3, 2, 1, 0) for key, a in arrays.items()}
        with h5py.File(folder / "annot_data.mat", "w") as f:
            for key, a in arrays.items():
                f[key] = a
            f["valid_frame"] = np.asarray(valid, dtype=np.float64)[:, None]
            f["activity_annotation"] = np.ones((n, 1))
        for frame in range(n):
            image = np.full((height, width, 3), 40, np.uint8)
            u, v = np.rint(annot2[frame, TEST_SLOTS.index(R_WRIST)]).astype(int)
            image[v - 4 : v + 5, u - 4 : u + 5] = 255
            Image.fromarray(image).save(folder / "imageSequence" / f"img_{frame + 1:06d}.jpg")


def write_3dhp(root: Path) -> None:
    """The fixture: S1 (Seq1, Seq2) and S7 (Seq1) of the training release on the 8 vnect
    cameras with both mask folders, and the test sequences TS1 and TS5."""
    for (subject, sequence), frames in FRAMES.items():
        write_sequence(root, subject, sequence, frames)
    write_test_set(root)


def write_3dhp_throughput(root: Path, n: int, size: int = 2048, codec: str = "mpeg4") -> int:
    """A training release of one sequence (S1/Seq1, the 8 vnect cameras, ``size``² frames,
    lossy ``codec`` videos, FGmasks, no ChairMasks) whose ``3dhp`` train split holds at
    least ``n`` samples; returns that number. Convert with ``splits=["train"]``."""
    per_camera = -(-n // len(VNECT))
    stride = importlib.import_module("bench.data.convert.mpi_inf_3dhp").MPIINF3DHP.train_stride
    write_sequence(root, 1, 1, stride * (per_camera - 1) + 1, size=size, codec=codec, chairs=False)
    return per_camera * len(VNECT)


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("3dhp-raw")
    write_3dhp(root)
    return root


@pytest.fixture(scope="module")
def shards(raw, tmp_path_factory) -> dict[str, ShardDataset]:
    out = tmp_path_factory.mktemp("3dhp-out")
    paths = convert("3dhp", raw, out, size=SIZE, progress=False)
    assert [p.name for p in paths] == ["train.h5", "test.h5"]
    return {p.stem: ShardDataset(p) for p in paths}


@pytest.fixture(scope="module")
def mas(raw, tmp_path_factory) -> dict[str, ShardDataset]:
    out = tmp_path_factory.mktemp("3dhp-mas-out")
    paths = convert("3dhp-mas", raw, out, size=SIZE, progress=False)
    return {p.stem: ShardDataset(p) for p in paths}


def samples(shard: ShardDataset) -> Iterable[dict[str, np.ndarray]]:
    for i in range(shard.info.num_samples):
        yield {k: v.numpy() for k, v in shard[i].items() if k != "index"}


def rows_of(shard: ShardDataset) -> list[tuple[int, int, int, int]]:
    """(subject, seq, view, frame) of every sample, in shard order."""
    return [
        (int(s["subject"]), int(s["seq"]), int(s["view"]), int(s["frame"])) for s in samples(shard)
    ]


def expected_rows(
    sequences: Mapping[tuple[int, int], Iterable[int]], cameras: Iterable[int]
) -> list[tuple[int, int, int, int]]:
    return [
        (s, 10 * s + q, cam, f)
        for (s, q), frames in sequences.items()
        for cam in cameras
        for f in frames
        if f < SHORT.get((s, q, cam), FRAMES[(s, q)])
    ]


J = {name: i for i, name in enumerate(get_joint_set("h36m17").joints)}


def check_sample(
    s: dict[str, np.ndarray], cam3d: np.ndarray, k: np.ndarray, size: tuple, facing: bool = True
) -> None:
    """kp3d (mm, camera frame) mapped to h36m17, kp2d the crop of its projection, K the
    crop's, left and right in place (``facing``: a camera the fixture's body faces)."""
    mapping = get_mapping("mpi_inf_3dhp28", "h36m17")
    uv = project(cam3d, k)
    vis = inside(uv, *size) & (cam3d[:, 2] > 0)
    crop = square_around(uv, vis, SIZE)
    names28 = joint_names("mpi_inf_3dhp28")
    for name, raw_name in (
        ("pelvis", "pelvis"),
        ("r_hip", "r_hip"),
        ("l_knee", "l_knee"),
        ("r_ankle", "r_ankle"),
        ("spine", "spine"),
        ("thorax", "neck"),
        ("neck", "head"),
        ("head", "head_top"),
        ("l_shoulder", "l_shoulder"),
        ("r_elbow", "r_elbow"),
        ("l_wrist", "l_wrist"),
        ("r_wrist", "r_wrist"),
    ):
        assert s["kp3d"][J[name]] == pytest.approx(cam3d[names28.index(raw_name)], abs=1e-2)
    assert np.allclose(s["kp3d"], mapping.apply(cam3d), atol=1e-2)
    assert np.allclose(s["kp2d"], mapping.apply(crop.points(uv)), atol=1e-3)
    assert np.array_equal(s["vis"], mapping.apply_vis(vis))
    assert s["K"] == pytest.approx(crop.intrinsics(k), abs=1e-4)
    # the shard invariant: kp2d is the projection of kp3d through the stored K
    assert np.abs(project(s["kp3d"].astype(np.float64), s["K"]) - s["kp2d"]).max() < 1e-3
    if not facing:
        return
    # facing the camera: the right side on the image's left; right wrist raised over the
    # head, left wrist hanging below its elbow; right knee nearer the camera
    v = s["vis"]
    if v[J["r_wrist"]]:
        assert s["kp2d"][J["r_wrist"], 0] < s["kp2d"][J["l_wrist"], 0]
        assert s["kp2d"][J["r_wrist"], 1] < s["kp2d"][J["head"], 1]
    assert s["kp2d"][J["r_hip"], 0] < s["kp2d"][J["l_hip"], 0]
    assert s["kp2d"][J["l_wrist"], 1] > s["kp2d"][J["l_elbow"], 1]
    assert s["kp3d"][J["r_knee"], 2] < s["kp3d"][J["l_knee"], 2]


def check_pixels(s: dict[str, np.ndarray], subject: int, sequence: int, cam: int, f: int) -> None:
    """The image is the camera's video frame f (its marker's colour), and the mask is the
    red channel of its FGmasks frame, both cropped where the keypoints went."""
    k, _, _ = camera(cam)
    uv = project(camera_pose(subject, sequence, f, cam), k)
    crop = square_around(uv, inside(uv, IMAGE, IMAGE), SIZE)
    want = crop.image(fg_red(subject, sequence, f, cam), Image.Resampling.NEAREST) > 127
    assert np.array_equal(s["masks"].astype(bool), want)
    assert 0.05 < s["masks"].mean() < 0.95
    if s["vis"][J["r_wrist"]]:
        x, y = np.rint(s["kp2d"][J["r_wrist"]]).astype(int)
        assert np.abs(s["images"][y, x].astype(int) - marker(subject, cam, f)).max() <= 3


# -- card 3dhp --------------------------------------------------------------------------------


def test_3dhp_train_holds_camera_mm_joints_their_projection_and_masks(shards):
    shard = shards["train"]
    assert shard.info.joint_set == "h36m17" and shard.info.image_size == (SIZE, SIZE)
    assert set(shard.info.fields) >= {"masks", "subject", "seq", "frame", "view", "cam_R"}
    for s in samples(shard):
        subject, sequence = int(s["seq"]) // 10, int(s["seq"]) % 10
        cam, f = int(s["view"]), int(s["frame"])
        k, r, t = camera(cam)
        check_sample(s, camera_pose(subject, sequence, f, cam), k, (IMAGE, IMAGE))
        assert s["cam_R"] == pytest.approx(r, abs=1e-6)
        assert s["cam_t"] == pytest.approx(t, abs=1e-3)
        check_pixels(s, subject, sequence, cam, f)


def test_3dhp_train_split_cameras_stride_short_video_and_hidden_joints(shards):
    stride = importlib.import_module("bench.data.convert.mpi_inf_3dhp").MPIINF3DHP.train_stride
    assert stride == 10
    frames = {key: range(0, n, stride) for key, n in FRAMES.items()}
    # S1 and S7 (both training subjects), the 8 vnect cameras, frames 0 and 10; the short
    # video_2 of S1/Seq2 (9 frames) keeps frame 0 only
    assert rows_of(shards["train"]) == expected_rows(frames, VNECT)
    assert (1, 12, 2, 10) not in rows_of(shards["train"])
    # the moment whose right wrist left the images: kept, that joint not visible
    rows = rows_of(shards["train"])
    for cam in VNECT:
        s = shards["train"][rows.index((1, 11, cam, 10))]
        hidden = {n for n, v in zip(J, s["vis"].numpy(), strict=True) if not v}
        assert hidden == {"r_wrist"}
    assert sum(s["vis"].all() for s in samples(shards["train"])) == len(rows) - len(VNECT)
    # one seq per (subject, sequence) shared by the cameras: 8-view groups per moment
    ids = moment_ids(shards["train"].path)
    assert ids is not None
    counts = np.bincount(ids)
    assert counts.max() == 8 and sorted(set(counts)) == [7, 8]


def test_3dhp_test_set_valid_frames_fitted_intrinsics_and_no_masks(shards):
    shard = shards["test"]
    assert not {"masks", "cam_R", "cam_t"} & set(shard.info.fields)
    want = [
        (100 + k, 100 + k, 0, f)
        for k, (_, valid) in TESTS.items()
        for f, ok in enumerate(valid)
        if ok
    ]
    assert rows_of(shard) == want
    for s in samples(shard):
        k, f = int(s["seq"]) - 100, int(s["frame"])
        kk, size = ts_camera(k)
        cam3d = np.full((28, 3), np.nan)
        cam3d[list(TEST_SLOTS)] = ts_pose(k, f)
        uv = project(cam3d, kk)
        vis = inside(uv, *size)
        crop = square_around(uv, vis, SIZE)
        mapping = get_mapping("mpi_inf_3dhp28", "h36m17")
        assert np.allclose(s["kp3d"], mapping.apply(cam3d), atol=1e-2)
        assert np.isfinite(s["kp3d"]).all() and s["vis"].all()
        # the least-squares intrinsics are the true ones (noise-free annot2)
        assert s["K"] == pytest.approx(crop.intrinsics(kk), abs=1e-3)
        assert np.allclose(s["kp2d"], mapping.apply(crop.points(uv)), atol=1e-3)
        assert np.abs(project(s["kp3d"].astype(np.float64), s["K"]) - s["kp2d"]).max() < 1e-3
        assert s["kp2d"][J["r_wrist"], 0] < s["kp2d"][J["l_wrist"], 0]
        x, y = np.rint(s["kp2d"][J["r_wrist"]]).astype(int)
        assert s["images"][y, x].min() > 150  # the JPEG's marker


def test_a_joint_is_visible_inside_the_image_by_pixel_centres_and_in_front():
    from bench.data.convert.mpi_inf_3dhp import Camera, _visible

    k = np.array([[100.0, 0, 50.0], [0, 100.0, 40.0], [0, 0, 1]])
    cam = Camera(K=k, R=np.eye(3), t=np.zeros(3), width=100, height=80)
    # pixel centres at integers: the image spans [-0.5, W - 0.5) x [-0.5, H - 0.5)
    uv = np.array([[-0.5, 0], [-0.51, 0], [99.49, 0], [99.5, 0], [0, 79.49], [0, 79.5]])
    z = 1000.0
    points = np.concatenate([(uv - k[:2, 2]) / 100.0 * z, np.full((len(uv), 1), z)], axis=1)
    behind = -points[:1]  # projects inside, but behind the camera
    got_uv, vis = _visible(np.concatenate([points, behind]), cam)
    assert got_uv[:6] == pytest.approx(uv, abs=1e-9)
    assert vis.tolist() == [True, False, True, False, True, False, False]


def test_least_squares_intrinsics_recover_the_camera():
    module = importlib.import_module("bench.data.convert.mpi_inf_3dhp")
    kk, _ = ts_camera(1)
    rng = np.random.default_rng(0)
    xyz = rng.uniform([-800, -900, 2000], [800, 900, 4000], size=(50, 17, 3))
    uv = project(xyz, kk)
    assert module.estimate_intrinsics(uv, xyz) == pytest.approx(kk, abs=1e-6)
    noisy = module.estimate_intrinsics(uv + rng.normal(0, 0.5, uv.shape), xyz)
    assert noisy == pytest.approx(kk, rel=5e-3, abs=0.5)
    # points behind the camera or NaN are left out
    xyz[0, 0] = np.nan
    xyz[1, 1, 2] = -5.0
    assert module.estimate_intrinsics(uv, xyz) == pytest.approx(kk, abs=1e-6)


# -- card 3dhp-mas ----------------------------------------------------------------------------


def test_mas_split_subjects_strides_cameras_and_frame_filter(mas):
    train, test = mas["train"], mas["test"]
    # train S1 every 5th frame: Seq1 0, 5, 10 -> 5 (camera 4's mask covers the image) and 10
    # (a joint outside the images) dropped; Seq2 (cut to its short video_2: 0, 5) -> 0 (6
    # joints on the chair mask's zeros in camera 7) dropped, 5 kept (4 joints on zeros in
    # camera 2, an 80 % mask in camera 0). S7 is test only, every 10th frame: 0, 10.
    assert rows_of(train) == expected_rows({(1, 1): [0], (1, 2): [5]}, CHEST)
    assert rows_of(test) == expected_rows({(7, 1): [0, 10]}, CHEST)
    for shard in (train, test):
        assert {"masks", "cam_R", "cam_t", "seq", "frame", "view"} <= set(shard.info.fields)
        # whole moments: every kept frame has all five views
        assert set(np.bincount(moment_ids(shard.path))) == {5}
        for s in samples(shard):
            subject, sequence = int(s["seq"]) // 10, int(s["seq"]) % 10
            cam, f = int(s["view"]), int(s["frame"])
            k, r, _ = camera(cam)
            check_sample(s, camera_pose(subject, sequence, f, cam), k, (IMAGE, IMAGE))
            assert s["vis"].all()
            assert s["cam_R"] == pytest.approx(r, abs=1e-6)
            check_pixels(s, subject, sequence, cam, f)


def test_mas_filter_counts_chair_joints_and_mask_cover_as_specified():
    module = importlib.import_module("bench.data.convert.mpi_inf_3dhp")
    assert (module.MASK_COVER, module.CHAIR_JOINTS, module.THRESHOLD) == (0.85, 4, 127)
    assert module.MPIINF3DHPMaS.cameras == CHEST
    assert dict(module.MPIINF3DHPMaS.strides) == {"train": 5, "test": 10}
    assert dict(module.MPIINF3DHPMaS.subjects) == {"train": (1, 2, 3, 4, 5, 6), "test": (7, 8)}
    # the fixture's chair bands hold what the test above relies on
    for event, count in ((CHAIR_SIX, 6), (CHAIR_FOUR, 4)):
        k, _, _ = camera(event[3])
        px = np.rint(project(camera_pose(*event), k)).astype(int)
        assert (chair_red(*event)[px[:, 1], px[:, 0]] == 0).sum() == count


def test_the_14_camera_card_trains_on_the_whole_rig(tmp_path):
    raw = tmp_path / "raw"
    write_sequence(raw, 2, 1, 11, cameras=range(14), chairs=False)
    path = convert("3dhp-14cam", raw, tmp_path / "out", splits=["train"], size=SIZE, progress=False)
    shard = ShardDataset(path[0])
    assert shard.info.attrs["dataset"] == "3dhp-14cam"
    # frames 0 and 10 of every camera, the ceiling and low views included
    assert rows_of(shard) == [(2, 21, cam, f) for cam in range(14) for f in (0, 10)]
    for s in samples(shard):
        cam, f = int(s["view"]), int(s["frame"])
        facing = cam in VNECT  # the fixture's body faces the vnect cameras
        check_sample(s, camera_pose(2, 1, f, cam), camera(cam)[0], (IMAGE, IMAGE), facing)
    # the 3dhp card reads only the vnect cameras of the same copy
    vnect = convert("3dhp", raw, tmp_path / "v", splits=["train"], size=SIZE, progress=False)
    assert rows_of(ShardDataset(vnect[0])) == [(2, 21, cam, f) for cam in VNECT for f in (0, 10)]


def test_the_throughput_writer_gives_what_it_says(tmp_path):
    n = write_3dhp_throughput(tmp_path / "raw", 20, size=96)
    assert n == 24
    path = convert(
        "3dhp", tmp_path / "raw", tmp_path / "out", splits=["train"], size=32, progress=False
    )
    assert ShardDataset(path[0]).info.num_samples == n


# -- bad input --------------------------------------------------------------------------------


def test_bad_3dhp_copies_are_one_clear_error_and_nothing_is_written(raw, tmp_path, capsys):
    out = tmp_path / "out"

    def refused(folder: Path, match: str, card: str = "3dhp") -> None:
        assert_refused(card, folder, out, match)

    def copy(name: str) -> Path:
        folder = tmp_path / name
        shutil.copytree(raw, folder)
        return folder

    def rewrite_annot(folder: Path, **changes: object) -> None:
        path = folder / "S1" / "Seq1" / "annot.mat"
        content = {k: v for k, v in sio.loadmat(path).items() if not k.startswith("__")}
        for key, value in changes.items():
            if value is None:
                del content[key]
            else:
                content[key] = value
        sio.savemat(path, content)

    def calibration(folder: Path, cam: int, edit) -> None:
        path = folder / "S1" / "Seq1" / "camera.calibration"
        lines = path.read_text().splitlines()
        start = lines.index(f"name          {cam}")
        lines[start : start + 7] = edit(lines[start : start + 7])
        path.write_text("\n".join(lines) + "\n")

    def shift(line: str, index: int, by: float) -> str:
        words = line.split()
        words[index] = str(float(words[index]) + by)
        return "  " + " ".join(words)

    refused(tmp_path / "nowhere", "raw folder .*nowhere does not exist")
    # a sequence folder given as the root
    refused(raw / "S1", r"no S<s>/Seq1 or Seq2 folders of the train subjects S1\.\.S8 under")
    folder = copy("no-annot")
    (folder / "S1" / "Seq1" / "annot.mat").unlink()
    refused(folder, r"missing .*S1/Seq1/annot\.mat \(the sequence's annotations")
    folder = copy("cut")
    path = folder / "S1" / "Seq1" / "annot.mat"
    path.write_bytes(path.read_bytes()[:3000])
    refused(folder, r"S1/Seq1/annot\.mat is not a readable MATLAB file")
    folder = copy("no-annot3")
    rewrite_annot(folder, annot3=None)
    refused(folder, r"S1/Seq1/annot\.mat lacks \['annot3'\]")
    folder = copy("joints17")  # another skeleton: 17 joints per row
    a3 = sio.loadmat(raw / "S1" / "Seq1" / "annot.mat")["annot3"]
    rewrite_annot(folder, annot3=cells([c[0][:, :51] for c in a3]))
    refused(folder, r"annot3 of camera 0 of shape \(17, 51\); expected a \(14, 1\) cell array")
    folder = copy("metres")
    rewrite_annot(folder, annot3=cells([c[0] / 1000.0 for c in a3]))
    refused(folder, r"annot3 of camera 0 puts the pelvis at a median depth of 2\.5.*millimetres")
    folder = copy("rows")
    rewrite_annot(folder, annot3=cells([c[0][:10] for c in a3]))
    refused(folder, r"annot\.mat has 17 annot2 rows and 10 annot3 rows for camera 0")
    folder = copy("short-annot")  # fewer rows than the video has frames
    a2 = sio.loadmat(raw / "S1" / "Seq1" / "annot.mat")["annot2"]
    rewrite_annot(
        folder, annot2=cells([c[0][:10] for c in a2]), annot3=cells([c[0][:10] for c in a3])
    )
    refused(folder, r"annot\.mat has 10 rows for camera 0, but its videos have 12 frames")
    folder = copy("centre")  # another camera's principal point: annot2 is 20 px away
    calibration(folder, 4, lambda block: [*block[:4], shift(block[4], 3, 20.0), *block[5:]])
    refused(folder, r"S1/Seq1/camera\.calibration: camera 4's intrinsics project annot3 .* px")
    folder = copy("extrinsic")  # the translation in metres

    def in_metres(line: str) -> str:
        words = line.split()
        for i in (4, 8, 12):
            words[i] = str(float(words[i]) / 1000.0)
        return "  " + " ".join(words)

    calibration(folder, 5, lambda block: [*block[:5], in_metres(block[5]), *block[6:]])
    refused(folder, r"extrinsics of cameras 0 and 5 carry their annot3 to world poses")
    folder = copy("no-camera")
    calibration(folder, 8, lambda block: [])
    refused(folder, r"camera\.calibration has no camera 8 \(it names \[0, 1, 2, 3, 4, 5, 6, 7, 9")
    folder = copy("no-video")
    (folder / "S7" / "Seq1" / "imageSequence" / "video_4.avi").unlink()
    refused(folder, r"missing .*S7/Seq1/imageSequence/video_4\.avi \(the camera's frames")
    folder = copy("no-masks")
    (folder / "S1" / "Seq2" / "FGmasks" / "video_2.avi").unlink()
    refused(folder, r"missing .*S1/Seq2/FGmasks/video_2\.avi \(its FGmasks video")
    # the test set
    folder = copy("no-test")
    shutil.rmtree(folder / "mpi_inf_3dhp_test_set")
    refused(folder, r"missing .*mpi_inf_3dhp_test_set \(the test set folder")
    folder = copy("v5-test")
    path = folder / "mpi_inf_3dhp_test_set" / "TS1" / "annot_data.mat"
    sio.savemat(path, {"annot2": np.zeros((6, 1, 17, 2))})
    refused(folder, r"TS1/annot_data\.mat is not a readable MATLAB v7\.3 \(HDF5\) file")
    folder = copy("cut-test")
    path = folder / "mpi_inf_3dhp_test_set" / "TS5" / "annot_data.mat"
    path.write_bytes(path.read_bytes()[:1500])
    refused(folder, r"TS5/annot_data\.mat is not a readable MATLAB v7\.3 \(HDF5\) file")
    folder = copy("no-valid")
    with h5py.File(folder / "mpi_inf_3dhp_test_set" / "TS1" / "annot_data.mat", "a") as f:
        del f["valid_frame"]
    refused(folder, r"TS1/annot_data\.mat lacks \['valid_frame'\]")
    folder = copy("test-joints")
    with h5py.File(folder / "mpi_inf_3dhp_test_set" / "TS1" / "annot_data.mat", "a") as f:
        del f["annot3"]
        f["annot3"] = np.zeros((6, 1, 28, 3))
    refused(folder, r"annot3 of shape \(6, 1, 28, 3\); expected \(N, 1, 17, 3\)")
    folder = copy("no-image")
    (folder / "mpi_inf_3dhp_test_set" / "TS1" / "imageSequence" / "img_000004.jpg").unlink()
    refused(folder, r"missing .*TS1/imageSequence/img_000004\.jpg \(frame 4 \(1-based\) of TS1")
    # the Mask-as-Supervision card: chair masks, and its own subjects
    folder = copy("no-chair")
    (folder / "S1" / "Seq1" / "ChairMasks" / "video_7.avi").unlink()
    refused(folder, r"missing .*S1/Seq1/ChairMasks/video_7\.avi", "3dhp-mas")
    folder = copy("test-subjects-only")
    shutil.rmtree(folder / "S1")
    refused(folder, r"no S<s>/Seq1 or Seq2 folders of the train subjects S1\.\.S6", "3dhp-mas")
    # the CLI says the same in one line, exit status 2
    folder = copy("cli")
    (folder / "S1" / "Seq1" / "annot.mat").unlink()
    assert main(["data", "convert", "3dhp", str(folder), "--out", str(out), "--quiet"]) == 2
    assert "S1/Seq1/annot.mat" in capsys.readouterr().err
    assert not list(out.rglob("*.h5*"))
