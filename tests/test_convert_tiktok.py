"""The TikTok converter on a fixture of its layout: unlabelled frames cropped around their
masks, masks and pixels together, ids, the held-out videos, and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.data.convert import convert
from bench.data.shards import ShardDataset
from bench.errors import DabenchError


def write_tiktok(root: Path, videos: int = 3, frames: int = 2) -> None:
    """Portrait 30 x 50 frames; the dancer is a bright 8 x 20 box (its mask) that moves
    right by 2 px per frame and down by 3 px per video."""
    for v in range(videos):
        for sub in ("images", "masks"):
            (root / f"{v + 1:05d}" / sub).mkdir(parents=True)
        for f in range(frames):
            image = np.full((50, 30, 3), 30, np.uint8)
            mask = np.zeros((50, 30, 3), np.uint8)
            x, y = 8 + 2 * f, 10 + 3 * v
            image[y : y + 20, x : x + 8] = 220
            mask[y : y + 20, x : x + 8] = 255
            name = f"{f:04d}.png"
            Image.fromarray(image).save(root / f"{v + 1:05d}" / "images" / name)
            Image.fromarray(mask).save(root / f"{v + 1:05d}" / "masks" / name)


def test_frames_are_cropped_around_their_masks_without_labels(tmp_path):
    write_tiktok(tmp_path / "raw")
    train_path, test_path = convert("tiktok", tmp_path / "raw", tmp_path, size=32, progress=False)
    train, test = ShardDataset(train_path), ShardDataset(test_path)
    # three videos: the last two (at most 10, at least one left to train on) are held out
    assert [int(train[i]["seq"]) for i in range(len(train))] == [0, 0]
    assert [(int(s["seq"]), int(s["frame"])) for s in (test[i] for i in range(4))] == [
        (1, 0), (1, 1), (2, 0), (2, 1),
    ]  # fmt: skip
    for shard in (train, test):
        for i in range(len(shard)):
            s = shard[i]
            assert np.isnan(s["kp2d"].numpy()).all() and not s["vis"].numpy().any()
            mask, image = s["masks"].numpy().astype(bool), s["images"].numpy()
            # the box (20 high) with the margin fills most of the crop's height, centred
            rows = np.flatnonzero(mask.any(axis=1))
            assert 20 <= len(rows) <= 28 and abs((rows[0] + rows[-1]) / 2 - 15.5) <= 1.5
            # pixels and mask moved together
            assert image[mask].mean() > 180 and image[~mask].mean() < 90


def test_bad_tiktok_copies_are_one_clear_error_and_nothing_is_written(tmp_path):
    out = tmp_path / "out"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DabenchError, match="no video folders .* point RAW_DIR at the TikTok"):
        convert("tiktok", empty, out, size=16, progress=False)
    raw = tmp_path / "raw"
    write_tiktok(raw)
    (raw / "00003" / "masks" / "0001.png").unlink()
    with pytest.raises(DabenchError, match=r"missing .*00003/masks/0001\.png \(the mask of"):
        convert("tiktok", raw, out, size=16, progress=False)
    assert not list(out.rglob("*.h5*"))


def test_grid_show_names_the_shards_to_convert_and_the_command(tmp_path, monkeypatch, capsys):
    from bench.cli import main

    monkeypatch.setenv("DABENCH_DATA", str(tmp_path / "shards"))
    assert main(["grid", "show", "mas-table1-h36m"]) == 0
    listed = capsys.readouterr().out.split("Shards to convert first", 1)[1]
    # only the splits the grid reads: tiktok's test split and 3dhp's train split are not
    assert (
        "  tiktok (train): dabench data convert tiktok RAW_DIR --split train --size 256" in listed
    )
    assert "  mpii (test): dabench data convert mpii RAW_DIR --split test --size 256" in listed
    assert "  3dhp (test): dabench data convert 3dhp RAW_DIR --split test --size 256" in listed
    assert "  h36m-mas (test, train): dabench data convert h36m-mas RAW_DIR --size 256" in listed
    write_tiktok(tmp_path / "raw", videos=2, frames=1)
    convert("tiktok", tmp_path / "raw", tmp_path / "shards", size=16, progress=False)
    assert main(["grid", "show", "mas-table1-h36m"]) == 0
    assert "tiktok (" not in capsys.readouterr().out  # converted: no longer listed
