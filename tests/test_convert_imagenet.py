"""Background images from an ImageNet-validation folder, and the framework pieces they and the
video datasets lean on: images-only shards, generators read twice but never held, video
frames, and which background card a pair draws on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import write_video
from PIL import Image

from bench.data.convert import Converter, Item, convert, register
from bench.data.convert.base import CONVERTERS
from bench.data.convert.video import _readers, frame_count, read_frame
from bench.data.pairs import REAL_BACKGROUNDS, SYNTH_BACKGROUNDS, backgrounds_card
from bench.data.shards import ShardDataset, read_shard_info
from bench.errors import DabenchError


def write_imagenet(root: Path, n: int = 12) -> None:
    """``n`` images of varied shapes and modes; image i is a 40-px-wide bright vertical band
    at the centre of a dark field (so the centred square holds it), 3 of them not RGB."""
    root.mkdir(parents=True)
    for i in range(n):
        w, h = (90 + 7 * i, 60 + 3 * i) if i % 2 else (60 + 3 * i, 90 + 7 * i)
        image = np.full((h, w, 3), 20, np.uint8)
        image[:, w // 2 - 20 : w // 2 + 20] = 230
        pil = Image.fromarray(image)
        pil = {0: pil.convert("L"), 5: pil.convert("CMYK")}.get(i, pil)
        pil.save(root / f"ILSVRC2012_val_{i + 1:08d}.JPEG", format="JPEG")


def test_validation_images_become_centred_squares_without_labels(tmp_path):
    write_imagenet(tmp_path / "raw", n=12)
    train_path, test_path = convert(
        "imagenet-val-backgrounds", tmp_path / "raw", tmp_path, size=32, progress=False
    )
    info = read_shard_info(train_path)
    assert info.joint_set == "none" and info.image_size == (32, 32)
    train, test = ShardDataset(train_path), ShardDataset(test_path)
    assert (len(train), len(test)) == (11, 1)  # a tenth held out, at least one
    for shard in (train, test):
        for i in range(len(shard)):
            sample = shard[i]
            assert set(sample) >= {"images"} and "kp2d" not in sample
            image = sample["images"].numpy().astype(float)
            assert image.shape == (32, 32, 3)
            # the 40-px band sits in the middle of every centred square: a bright centre,
            # and (the square being at most 60 + 33 px wide) dark edges
            assert image[:, 14:18].mean() > 200
            assert image[:, :2].mean() < 60 and image[:, -2:].mean() < 60


def test_a_folder_without_validation_images_is_refused_and_nothing_written(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "n01440764").mkdir()  # the train layout: class folders
    with pytest.raises(DabenchError, match=r"no ILSVRC2012_val_\*\.JPEG files .*n01440764"):
        convert("imagenet-val-backgrounds", raw, tmp_path / "out", size=16, progress=False)
    broken = tmp_path / "broken"
    write_imagenet(broken, n=4)
    (broken / "ILSVRC2012_val_00000002.JPEG").write_bytes(b"not a jpeg")
    with pytest.raises(DabenchError, match=r"ILSVRC2012_val_00000002\.JPEG is not a readable"):
        convert("imagenet-val-backgrounds", broken, tmp_path / "out", size=16, progress=False)
    assert not list((tmp_path / "out").rglob("*.h5*"))


class Counting(Converter):
    """LSP-like samples from a generator, counting how often it is asked for them
    (module level: the worker processes unpickle it)."""

    card = "lsp"
    raw_joints = "common14"
    calls = 0

    def items(self, raw, split):
        type(self).calls += 1
        for i, name in enumerate(sorted(p.name for p in raw.root.glob("*.png"))):
            uv = np.stack([np.linspace(4, 40, 14), np.linspace(8, 30, 14)], 1) + i % 5
            yield Item(image=name, kp2d=uv, vis=np.ones(14, bool))


@pytest.fixture()
def counting_converter():
    saved = CONVERTERS.pop("lsp")
    Counting.calls = 0
    register(Counting)
    yield Counting
    CONVERTERS["lsp"] = saved


def test_a_generator_is_read_twice_and_written_in_order(tmp_path, counting_converter):
    raw = tmp_path / "raw"
    raw.mkdir()
    for i in range(150):  # three chunks of 64
        Image.fromarray(np.full((48, 48, 3), i, np.uint8)).save(raw / f"{i:04d}.png")
    paths = convert("lsp", raw, tmp_path / "out", splits=["train"], size=16, progress=False)
    # once to count and check, once to write: the split was never a list
    assert counting_converter.calls == 2
    shard = ShardDataset(paths[0])
    assert len(shard) == 150
    # order kept across chunks and worker processes: pixel value i is sample i
    assert [int(shard[i]["images"].numpy()[8, 8].mean().round()) for i in (0, 63, 64, 149)] == [
        0, 63, 64, 149,
    ]  # fmt: skip


def _write_video(path: Path, frames: int, size: tuple[int, int] = (48, 32)) -> None:
    w, h = size
    write_video(path, [np.full((h, w, 3), 10 + 20 * i, np.uint8) for i in range(frames)])


def test_video_frames_are_read_in_any_order_and_past_the_end_is_an_error(tmp_path):
    video = tmp_path / "clip.mp4"
    _write_video(video, frames=8)
    assert frame_count(video) == 8
    for i in (0, 3, 4, 7, 2, 5):  # forward, and back (reopens)
        frame = read_frame(video, i)
        assert frame.shape == (32, 48, 3)
        assert abs(frame.mean() - (10 + 20 * i)) < 6  # lossy codec
    # an image video and its mask video alternating both stay open, decoding forward
    other = tmp_path / "mask.mp4"
    _write_video(other, frames=8)
    for i in (0, 1, 2):
        read_frame(video, i)
        read_frame(other, i)
    assert {video: 3, other: 3}.items() <= {p: r.next for p, r in _readers().items()}.items()
    with pytest.raises(DabenchError, match=r"clip\.mp4 has 8 frames; .* frame 9"):
        read_frame(video, 9)
    (tmp_path / "cut.mp4").write_bytes(video.read_bytes()[:40])
    with pytest.raises(DabenchError, match=r"cut\.mp4"):
        read_frame(tmp_path / "cut.mp4", 0)
    with pytest.raises(DabenchError, match="missing video"):
        read_frame(tmp_path / "absent.mp4", 0)


def test_synthetic_pairs_draw_generated_backgrounds_and_real_ones_imagenet():
    assert backgrounds_card("synth-hand-clean", "synth-hand-wild") == SYNTH_BACKGROUNDS
    assert backgrounds_card("freihand", "stb") == REAL_BACKGROUNDS
    assert backgrounds_card("h36m", "synth-body-clean") == REAL_BACKGROUNDS


def test_grid_show_lists_the_background_images_a_real_grid_needs(tmp_path, monkeypatch, capsys):
    from bench.cli import main

    monkeypatch.setenv("DABENCH_DATA", str(tmp_path / "shards"))
    assert main(["grid", "show", "park-table1-hand"]) == 0
    listed = capsys.readouterr().out.split("Shards to convert first", 1)[1]
    assert (
        "  imagenet-val-backgrounds (train): dabench data convert imagenet-val-backgrounds "
        "RAW_DIR --split train --size 256"
    ) in listed
