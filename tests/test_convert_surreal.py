"""The SURREAL converter on a fixture in the release layout (data/cmu/<folder>/run<k>/<seq>/
with 320 x 240 mp4 clips, _info.mat and _segm.mat as MATLAB v5 files): world joints carried
into the mirrored camera frame of SURREAL's own code, labels swapped where they are mirrored
(as in the one public real file), kp2d the projection of kp3d, masks from the part labels
aligned with the pixels, the train / val folders, the frame stride, ids, and bad input."""

from __future__ import annotations

import inspect
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from conftest import SMPL24_BODY, assert_refused, write_video

import bench.data.convert.surreal as surreal
from bench.cli import main
from bench.data.convert import convert, get_converter
from bench.data.convert.crop import square_around
from bench.data.convert.raw import RawFiles
from bench.data.joints import get_joint_set, get_mapping
from bench.data.shards import ShardDataset

W, H = 320, 240  # SURREAL's frame size: the fixture is at the real size
K = np.array([[600.0, 0.0, 160.0], [0.0, 600.0, 120.0], [0.0, 0.0, 1.0]])
R = np.array([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])  # det -1
SMPL = get_joint_set("smpl24")
FLIP = SMPL.flip_permutation()
BODY = SMPL24_BODY  # anatomically labelled, facing the camera (see conftest.py)
R_WRIST = 21  # a bright square marks the anatomical right wrist in every frame
TURN = np.diag([-1.0, 1.0, -1.0])  # 180 degrees about the vertical: facing away
PERSON, MARKER = 150, 255  # grey levels of the body's box and of the wrist marker
FRAMES = 12  # annotated frames per clip: the default stride of 10 keeps frames 0 and 10
SIZE = 64


def background(frame: int) -> int:
    """The grey level outside the body in frame ``frame``: which frame was read shows (frames
    12 apart look alike: the test clips have 12)."""
    return 16 + 8 * (frame % 12)


@dataclass(frozen=True)
class Clip:
    folder: str  # train / val / test
    run: str
    sequence: str
    number: int
    cam_loc: tuple[float, float, float]  # m, world
    x: float = 0.0  # m, the body's offset right of the optical axis in frame 0
    depth: float = 6.5
    away: bool = False  # facing away from the camera
    mirror_until: int = 1 << 30  # frames below it store mirrored labels, as the real data
    video_short: int = 0  # the video has that many frames fewer than the annotations
    placeholders: tuple[int, ...] = ()  # frames whose joints are all zero

    @property
    def name(self) -> str:
        return f"{self.sequence}_c{self.number:04d}"

    @property
    def key(self) -> str:
        return f"{self.folder}/{self.run}/{self.name}"


CLIPS = (
    Clip("train", "run0", "01_01", 1, (6.75, -0.98, -1.93)),
    Clip("train", "run0", "ung_90_10", 2, (7.1, -0.5, -1.6), x=0.2, depth=7.0, away=True),
    # the same clip name in another run is another clip (other stride through the mocap);
    # from frame 5 on its labels are stored anatomically already: left as they are
    Clip("train", "run1", "01_01", 1, (6.2, -1.2, -2.2), x=-0.3, depth=6.0, mirror_until=5),
    # a video two frames shorter than its annotations: frame 10 has no image
    Clip("train", "run2", "143_21", 1, (6.5, -0.9, -1.8), video_short=2),
    Clip("val", "run0", "02_03", 1, (6.8, -1.0, -2.0), placeholders=(10,)),
    Clip("val", "run0", "02_03", 2, (6.9, -1.1, -1.7), x=0.1, away=True),
)
EMPTY_RUNS = ("val/run1", "val/run2")


@dataclass(frozen=True)
class Truth:
    cam: np.ndarray  # [24, 3] m, camera frame, anatomically labelled
    forward: np.ndarray  # [3] the body's facing direction in the camera frame
    stored_mirrored: bool
    subject: int
    clip: Clip = field(repr=False)


def project(points: np.ndarray, k: np.ndarray = K) -> np.ndarray:
    uvw = points @ k.T
    return uvw[..., :2] / uvw[..., 2:]


VIDEO = {"rate": 30, "bit_rate": 2_000_000}  # SURREAL's mp4s are 30 fps


def cells(values: list[str]) -> np.ndarray:
    out = np.empty((1, len(values)), dtype=object)
    for i, v in enumerate(values):
        out[0, i] = v
    return out


def write_clip(root: Path, clip: Clip, frames: int = FRAMES) -> dict[tuple[int, int], Truth]:
    """One clip's four files (and an unread _depth.mat); the truth of its annotated frames."""
    folder = root / "data" / "cmu" / clip.folder / clip.run / clip.sequence
    folder.mkdir(parents=True, exist_ok=True)
    cam_loc = np.array(clip.cam_loc, np.float32).reshape(3, 1)
    t = -R @ cam_loc[:, 0].astype(np.float64)
    joints3d = np.zeros((3, 24, frames), np.float32)
    joints2d = np.zeros((2, 24, frames), np.float32)
    truth = {}
    images, labels = [], []
    subject = int(clip.sequence.removeprefix("ung_").split("_")[0])
    for f in range(frames):
        body = BODY @ TURN.T if clip.away else BODY
        cam = body + np.array([clip.x + 0.02 * (f % 12), 0.0, clip.depth])
        mirrored = f < clip.mirror_until
        stored = cam[FLIP] if mirrored else cam
        if f in clip.placeholders:
            world = np.zeros((24, 3), np.float32)
        else:
            world = (stored @ R + cam_loc[:, 0]).astype(np.float32)  # R^T (cam - t)
        joints3d[:, :, f] = world.T
        # what the release holds: the projection of the stored joints, rounded
        cam32 = world.astype(np.float64) @ R.T + t
        if f not in clip.placeholders:
            joints2d[:, :, f] = np.rint(project(cam32)).T
            truth[(surreal.clip_id(clip.key), f)] = Truth(
                cam=cam32[FLIP] if mirrored else cam32,
                forward=np.array([0.0, 0.0, 1.0 if clip.away else -1.0]),
                stored_mirrored=mirrored,
                subject=subject,
                clip=clip,
            )
        uv = project(cam)
        (x0, y0), (x1, y1) = np.floor(uv.min(axis=0)).astype(int), np.ceil(uv.max(axis=0))
        x1, y1 = int(x1), int(y1)
        image = np.full((H, W, 3), background(f), np.uint8)
        image[y0 : y1 + 1, x0 : x1 + 1] = PERSON
        u, v = np.rint(uv[R_WRIST]).astype(int)
        image[v - 7 : v + 8, u - 7 : u + 8] = MARKER
        label = np.zeros((H, W), np.uint8)
        rows = np.arange(y1 + 1 - y0)  # bands of every part label 1 .. 24 from the top
        label[y0 : y1 + 1, x0 : x1 + 1] = (1 + (rows // 6) % 24)[:, None]
        images.append(image)
        labels.append(label)
    base = folder / clip.name
    write_video(base.with_suffix(".mp4"), images[: frames - clip.video_short], **VIDEO)
    scipy.io.savemat(
        f"{base}_info.mat",
        {
            "sequence": clip.name,
            "clipNo": np.array([[clip.number]], np.float64),
            "source": "cmu",
            "bg": cells([f"LSUN/img/kitchen/{f}.jpg" for f in range(frames)]),
            "gender": np.ones((frames, 1), np.uint8),
            "light": np.zeros((9, frames), np.float32),
            "stride": np.array([[50]], np.uint8),
            "camDist": np.array([[np.linalg.norm(cam_loc)]], np.float32),
            "camLoc": cam_loc,
            "joints2D": joints2d,
            "joints3D": joints3d,
            "pose": np.zeros((72, frames), np.float32),
            "zrot": np.zeros((frames, 1), np.float32),
            "cloth": cells(["nongrey_male_0001.jpg"] * frames),
            "shape": np.zeros((10, frames), np.float32),
        },
        do_compression=True,
    )
    scipy.io.savemat(
        f"{base}_segm.mat",
        {f"segm_{f + 1}": labels[f] for f in range(frames)},
        do_compression=True,
    )
    (folder / f"{clip.name}_depth.mat").write_bytes(b"not read")
    return {k: v for k, v in truth.items() if k[1] < frames - clip.video_short}


def write_surreal(root: Path, frames: int = FRAMES, copies: int = 1) -> dict:
    """The SURREAL layout at the real frame size (320 x 240): :data:`CLIPS` (``copies``
    times, numbered apart) with ``frames`` annotated frames each, empty val/run1 and run2,
    and an official test folder that must not be read. Returns the truth of every frame a
    converter may emit, by (seq id, frame). With the default stride of 10 the test split
    holds ``copies * (2 * ceil(frames / 10) - 1)`` samples (frame 10 of one clip is a
    placeholder) when ``frames > 10``; the train split about twice as many."""
    truth = {}
    for copy in range(copies):
        for clip in CLIPS:
            numbered = Clip(**{**clip.__dict__, "number": clip.number + 10 * copy})
            truth.update(write_clip(root, numbered, frames))
    for run in EMPTY_RUNS:
        (root / "data" / "cmu" / run).mkdir(parents=True, exist_ok=True)
    official_test = root / "data" / "cmu" / "test" / "run0" / "05_01"
    official_test.mkdir(parents=True)
    (official_test / "05_01_c0001_info.mat").write_bytes(b"the official test split is not read")
    return truth


def expected_rows(split: str, stride: int = 10) -> list[tuple[int, int, int]]:
    """(seq, subject, frame) of the samples of ``split``, in the converter's order."""
    folder = {"train": "train", "test": "val"}[split]
    clips = sorted((c for c in CLIPS if c.folder == folder), key=lambda c: (c.run, c.sequence))
    return [
        (surreal.clip_id(c.key), int(c.sequence.removeprefix("ung_").split("_")[0]), f)
        for c in clips
        for f in range(0, FRAMES - c.video_short, stride)
        if f not in c.placeholders
    ]


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("surreal-raw")
    return root, write_surreal(root)


@pytest.fixture(scope="module")
def shards(raw, tmp_path_factory) -> dict[str, ShardDataset]:
    out = tmp_path_factory.mktemp("surreal-out")
    paths = convert("surreal", raw[0], out, size=SIZE, progress=False)
    assert [p.name for p in paths] == ["train.h5", "test.h5"]
    return {p.stem: ShardDataset(p) for p in paths}


def rows_of(shard: ShardDataset) -> list[tuple[int, int, int]]:
    return [
        (int(s["seq"]), int(s["subject"]), int(s["frame"]))
        for s in (shard[i] for i in range(shard.info.num_samples))
    ]


def test_fixture_is_mirrored_as_the_real_release():
    """The property of the one public real clip (datasets.md §2.4, §7) that the fixture
    copies: labels anatomical in the world frame, mirrored in SURREAL's camera frame, and
    joints2D the rounded projection."""
    assert np.linalg.det(R) == pytest.approx(-1.0)
    cam = BODY + np.array([0.0, 0.0, 6.5])
    world = cam[FLIP] @ R + np.array(CLIPS[0].cam_loc)
    assert not surreal.mirrored(world)
    assert surreal.mirrored(world @ R.T - R @ np.array(CLIPS[0].cam_loc))
    assert not surreal.mirrored(cam) and not surreal.mirrored(cam @ TURN.T)


def test_shards_hold_camera_joints_in_mm_anatomically_labelled(raw, shards):
    _, truth = raw
    js = get_joint_set("h36m17")
    smpl = get_mapping("smpl24", "h36m17")
    j = {name: js.joints.index(name) for name in js.joints}
    swapped = kept = 0
    for shard in shards.values():
        assert shard.info.joint_set == "h36m17" and shard.info.image_size == (SIZE, SIZE)
        for i in range(shard.info.num_samples):
            s = {k: v.numpy() for k, v in shard[i].items() if k != "index"}
            want = truth[(int(s["seq"]), int(s["frame"]))]
            swapped += want.stored_mirrored
            kept += not want.stored_mirrored
            cam_mm = want.cam * 1000.0
            # camera frame, mm, canonical order, compared joint by joint by name
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
                assert s["kp3d"][j[name]] == pytest.approx(cam_mm[SMPL.index(raw_name)], abs=1e-3)
            assert np.allclose(s["kp3d"], smpl.apply(cam_mm), atol=1e-3, equal_nan=True)
            # no head top in SMPL
            assert np.isnan(s["kp3d"][j["head"]]).all() and np.isnan(s["kp2d"][j["head"]]).all()
            assert not s["vis"][j["head"]] and s["vis"].sum() == 16
            # kp2d: the crop (around all 24 joints) of the projection, within 1e-3 px
            uv = project(want.cam)
            crop = square_around(uv, np.ones(24, bool), SIZE)
            assert np.allclose(s["kp2d"], smpl.apply(crop.points(uv)), atol=1e-3, equal_nan=True)
            assert s["K"] == pytest.approx(crop.intrinsics(K), abs=1e-4)
            mapped = ~np.isnan(s["kp3d"]).any(axis=1)
            assert np.abs(project(s["kp3d"][mapped], s["K"]) - s["kp2d"][mapped]).max() < 1e-3
            # left on the anatomical left: the labelled hips and spine face the body's
            # forward, whether it faces the camera or not and however the labels were stored
            k = s["kp3d"]
            forward = np.cross(k[j["l_hip"]] - k[j["r_hip"]], k[j["thorax"]] - k[j["pelvis"]])
            assert forward @ want.forward > 0
            # the pixels agree: the marked (anatomical) right wrist is bright, the left not
            x, y = np.rint(s["kp2d"][j["r_wrist"]]).astype(int)
            assert s["images"][y, x].min() > 220
            x, y = np.rint(s["kp2d"][j["l_wrist"]]).astype(int)
            assert s["images"][y, x].max() < 200
    assert swapped and kept  # both kinds of stored labels were converted


def test_masks_are_the_part_labels_aligned_with_the_pixels_of_the_right_frame(raw, shards):
    _, truth = raw
    for shard in shards.values():
        for i in range(shard.info.num_samples):
            s = {k: v.numpy() for k, v in shard[i].items() if k != "index"}
            want = truth[(int(s["seq"]), int(s["frame"]))]
            # the segmentation written for that frame (segm_<frame + 1>), labels > 0
            clip = want.clip
            segm = scipy.io.loadmat(
                raw[0] / "data" / "cmu" / clip.folder / clip.run / clip.sequence
                / f"{clip.name}_segm.mat"
            )[f"segm_{int(s['frame']) + 1}"]  # fmt: skip
            crop = square_around(project(want.cam), np.ones(24, bool), SIZE)
            fg = crop.image((segm > 0).astype(np.uint8) * 255, resample=0) > 127
            mask = s["masks"].astype(bool)
            assert np.array_equal(mask, fg)
            assert 0.2 < mask.mean() < 0.9
            # pixels of the body inside the mask, the frame's own background outside it
            image = s["images"].astype(float)
            assert image[mask].mean() > PERSON - 10
            inner = ~mask & (image.max(axis=-1) > 0)  # not the padding past the border
            assert abs(np.median(image[inner]) - background(int(s["frame"]))) <= 3


def test_splits_stride_ids_and_short_videos(shards):
    # train = train/run0..2, test = val/run0..2; every 10th frame from 0; the video two
    # frames short loses frame 10, the placeholder frame (all-zero joints) is left out
    assert rows_of(shards["train"]) == expected_rows("train")
    assert rows_of(shards["test"]) == expected_rows("test")
    assert len(expected_rows("train")) == 7 and len(expected_rows("test")) == 3
    ids = {c.key: surreal.clip_id(c.key) for c in CLIPS}
    assert len(set(ids.values())) == len(CLIPS)  # the same name in two runs: two clips
    assert {seq for seq, _, _ in rows_of(shards["train"])} == {
        ids[c.key] for c in CLIPS if c.folder == "train"
    }
    # subject = CMU subject, the "ung_" prefix read through
    assert {subject for _, subject, _ in rows_of(shards["train"])} == {1, 90, 143}
    assert surreal.clip_id("train/run0/01_01_c0001") == ids[CLIPS[0].key]  # name alone


def test_items_are_a_generator_and_the_stride_a_setting(raw, tmp_path, monkeypatch):
    root, _ = raw
    items = get_converter("surreal").items(RawFiles("surreal", root), "test")
    assert inspect.isgenerator(items)
    first = next(items)
    assert (first.image, first.image_frame, first.mask, first.mask_frame) == (
        "data/cmu/val/run0/02_03/02_03_c0001.mp4",
        0,
        "data/cmu/val/run0/02_03/02_03_c0001_segm.mat",
        0,
    )
    items.close()
    monkeypatch.setattr(surreal.Surreal, "frame_stride", 3)
    path = convert("surreal", root, tmp_path, splits=["test"], size=SIZE, progress=False)[0]
    shard = ShardDataset(path)
    assert rows_of(shard) == expected_rows("test", stride=3)
    assert [f for _, _, f in rows_of(shard)][:4] == [0, 3, 6, 9]
    for i in range(shard.info.num_samples):  # other frames, still their own pixels
        s = shard[i]
        mask = s["masks"].numpy().astype(bool)
        image = s["images"].numpy().astype(float)
        inner = ~mask & (image.max(axis=-1) > 0)
        assert abs(np.median(image[inner]) - background(int(s["frame"]))) <= 3


def test_the_cmu_folder_or_its_parent_may_be_given(raw, tmp_path):
    root, _ = raw
    a = convert("surreal", root, tmp_path / "a", splits=["test"], size=16, progress=False)[0]
    b = convert(
        "surreal", root / "data" / "cmu", tmp_path / "b", splits=["test"], size=16, progress=False
    )[0]
    assert rows_of(ShardDataset(a)) == rows_of(ShardDataset(b))


def test_bad_surreal_copies_are_one_clear_error_and_nothing_is_written(raw, tmp_path, capsys):
    root, _ = raw
    out = tmp_path / "out"
    clip = "data/cmu/val/run0/02_03/02_03_c0002"

    def refused(folder: Path, match: str) -> None:
        assert_refused("surreal", folder, out, match)

    def copy(name: str) -> Path:
        folder = tmp_path / name
        shutil.copytree(root, folder)
        return folder

    def rewrite_info(folder: Path, **changes: object) -> None:
        path = folder / f"{clip}_info.mat"
        content = {k: v for k, v in scipy.io.loadmat(path).items() if not k.startswith("__")}
        for key, value in changes.items():
            if value is None:
                del content[key]
            else:
                content[key] = value
        scipy.io.savemat(path, content, do_compression=True)

    refused(tmp_path / "nowhere", "raw folder .*nowhere does not exist")
    # a run folder given as RAW_DIR
    refused(root / "data/cmu/train/run0", r"missing .*run0/data/cmu/train \(SURREAL's train")
    folder = copy("no-run")  # a partial download: one run missing
    shutil.rmtree(folder / "data/cmu/val/run2")
    refused(folder, r"missing .*data/cmu/val/run2 \(the test clips of run2")
    folder = copy("empty")
    shutil.rmtree(folder / "data/cmu/val/run0")
    (folder / "data/cmu/val/run0").mkdir()
    refused(folder, r"val/run0\.\.2 hold no clips")
    folder = copy("no-info")
    (folder / f"{clip}_info.mat").unlink()
    refused(folder, r"missing .*02_03_c0002_info\.mat \(the clip's annotations")
    folder = copy("no-video")
    (folder / f"{clip}.mp4").unlink()
    refused(folder, r"missing .*02_03_c0002\.mp4 \(the clip's RGB video\)")
    folder = copy("no-segm")
    (folder / f"{clip}_segm.mat").unlink()
    refused(folder, r"missing .*02_03_c0002_segm\.mat \(the clip's segmentation")
    folder = copy("cut")
    info = folder / f"{clip}_info.mat"
    info.write_bytes(info.read_bytes()[:300])
    refused(folder, r"02_03_c0002_info\.mat is not a readable MATLAB file")
    folder = copy("no-joints3d")
    rewrite_info(folder, joints3D=None)
    refused(folder, r"02_03_c0002_info\.mat lacks \['joints3D'\]")
    folder = copy("joints-rows")  # (T, 24, 3): another export
    joints = scipy.io.loadmat(root / f"{clip}_info.mat")["joints3D"]
    rewrite_info(folder, joints3D=joints.transpose(2, 1, 0))
    refused(folder, r"joints3D \(12, 24, 3\).*expected \(3, 24, T\)")
    folder = copy("proper-camera")  # joints2D of a camera without SURREAL's reflection
    j2d = scipy.io.loadmat(root / f"{clip}_info.mat")["joints2D"]
    rewrite_info(folder, joints2D=np.stack([W - 1 - j2d[0], j2d[1]]))
    refused(folder, r"02_03_c0002_info\.mat: joints2D differ from the projection .* camera")
    folder = copy("behind")  # the camera moved past the body
    cam_loc = scipy.io.loadmat(root / f"{clip}_info.mat")["camLoc"]
    rewrite_info(folder, camLoc=cam_loc - np.array([[15.0], [0.0], [0.0]], np.float32))
    refused(folder, r"02_03_c0002_info\.mat: joints3D lie behind the camera built from camLoc")
    folder = copy("cut-video")
    (folder / f"{clip}.mp4").write_bytes(b"\x00" * 100)
    refused(folder, r"02_03_c0002\.mp4 is not a readable video")
    folder = copy("segm-size")
    scipy.io.savemat(
        folder / f"{clip}_segm.mat", {"segm_1": np.zeros((120, 160), np.uint8)}, do_compression=True
    )
    refused(folder, r"02_03_c0002_segm\.mat: segm_1 is \(120, 160\); expected \(240, 320\)")
    folder = copy("segm-short")  # checked with the annotations, before any shard is written
    segm = folder / f"{clip}_segm.mat"
    labels = {k: v for k, v in scipy.io.loadmat(segm).items() if k.startswith("segm_")}
    del labels["segm_11"]
    scipy.io.savemat(segm, labels, do_compression=True)
    refused(folder, r"02_03_c0002_segm\.mat lacks segm_11, the part labels of frame 10")
    folder = copy("segm-cut")
    segm = folder / f"{clip}_segm.mat"
    segm.write_bytes(segm.read_bytes()[:200])
    refused(folder, r"02_03_c0002_segm\.mat is not a readable MATLAB file")
    folder = copy("small-video")  # frames of another size: the fixed K would not fit them
    video = folder / "data/cmu/train/run0/01_01/01_01_c0001.mp4"
    write_video(video, [np.zeros((120, 160, 3), np.uint8)] * FRAMES, **VIDEO)
    refused(folder, r"01_01_c0001\.mp4 has 160 x 120 frames; SURREAL's are 320 x 240")
    folder = copy("not-cmu")
    (folder / "data/cmu/val/run0/02_03").rename(folder / "data/cmu/val/run0/walk")
    for path in (folder / "data/cmu/val/run0/walk").iterdir():
        path.rename(path.with_name(path.name.replace("02_03", "walk")))
    refused(folder, r"in folder 'walk'; expected a CMU sequence name such as 01_01")
    # the CLI says the same in one line, exit status 2
    assert main(["data", "convert", "surreal", str(folder), "--out", str(out), "--quiet"]) == 2
    assert "expected a CMU sequence name" in capsys.readouterr().err


def test_clashing_clip_ids_are_refused(raw, tmp_path, monkeypatch):
    monkeypatch.setattr(surreal, "clip_id", lambda clip: 7)
    assert_refused(
        "surreal",
        raw[0],
        tmp_path,
        r"clips train/run0/ung_90_10_c0002 and train/run0/01_01_c0001 get one seq id",
    )
