"""`dabench data synth|list|show` end to end, including every bad-input path."""

from __future__ import annotations

import filecmp

import numpy as np
import pytest

from bench.cli import main
from bench.data.shards import ShardDataset, read_shard_info

SMALL = ["--n-train", "40", "--n-test", "12", "--size", "32", "--workers", "1", "--quiet"]


def leftovers(root):
    return sorted(p.name for p in root.rglob("*") if ".partial" in p.name)


def synth(root, *extra, card="synth-hand-clean"):
    return main(["data", "synth", card, "--out", str(root), *SMALL, *extra])


def test_synth_writes_both_splits_and_keeps_them(tmp_path, capsys):
    assert synth(tmp_path) == 0
    train, test = (
        tmp_path / "synth-hand-clean" / "train.h5",
        tmp_path / "synth-hand-clean" / "test.h5",
    )
    assert str(train) in capsys.readouterr().out
    info = read_shard_info(train)
    assert info.num_samples == 40 and info.image_size == (32, 32) and info.joint_set == "hand21"
    assert read_shard_info(test).num_samples == 12
    assert {"masks", "cam_R", "cam_t", "seq", "frame", "view"} <= set(info.fields)
    sample = ShardDataset(train)[3]
    assert sample["images"].shape == (32, 32, 3) and sample["kp3d"].shape == (21, 3)
    before = train.stat().st_mtime_ns
    assert synth(tmp_path) == 0  # same fingerprint: nothing to do
    assert train.stat().st_mtime_ns == before


def test_same_card_sizes_seed_give_byte_identical_shards(tmp_path):
    assert synth(tmp_path / "a") == 0
    assert synth(tmp_path / "b") == 0
    for split in ("train", "test"):
        a = tmp_path / "a" / "synth-hand-clean" / f"{split}.h5"
        b = tmp_path / "b" / "synth-hand-clean" / f"{split}.h5"
        assert filecmp.cmp(a, b, shallow=False)
    assert synth(tmp_path / "c", "--seed", "1") == 0
    c = tmp_path / "c" / "synth-hand-clean" / "train.h5"
    assert not filecmp.cmp(tmp_path / "a" / "synth-hand-clean" / "train.h5", c, shallow=False)


@pytest.mark.slow
def test_parallel_generation_is_byte_identical_to_serial(tmp_path):
    # 4 chunks of 384 samples: the parallel path (more than 2 chunks) really runs.
    args = ["--n-train", "1200", "--n-test", "8", "--size", "64", "--quiet"]
    card = "synth-body-wild"
    assert (
        main(["data", "synth", card, "--out", str(tmp_path / "one"), *args, "--workers", "1"]) == 0
    )
    assert (
        main(["data", "synth", card, "--out", str(tmp_path / "two"), *args, "--workers", "2"]) == 0
    )
    assert filecmp.cmp(
        tmp_path / "one" / card / "train.h5", tmp_path / "two" / card / "train.h5", shallow=False
    )


def test_different_fingerprint_is_refused_unless_overwrite(tmp_path, capsys):
    assert synth(tmp_path) == 0
    train = tmp_path / "synth-hand-clean" / "train.h5"
    original = train.read_bytes()
    capsys.readouterr()
    assert synth(tmp_path, "--seed", "5") == 2
    err = capsys.readouterr().err
    assert "fingerprint" in err and "--overwrite" in err and str(train) in err
    assert len(err.strip().splitlines()) == 1
    assert train.read_bytes() == original and leftovers(tmp_path) == []
    assert synth(tmp_path, "--seed", "5", "--overwrite") == 0
    assert train.read_bytes() != original


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["data", "synth", "synth-hand-muddy"],
            "unknown dataset card 'synth-hand-muddy'; valid cards:",
        ),
        (["data", "synth", "synth-hand-clean", "--n-train", "0"], "--n-train must be a positive"),
        (["data", "synth", "synth-hand-clean", "--n-test", "-4"], "--n-test must be a positive"),
        (["data", "synth", "synth-hand-clean", "--size", "0"], "--size must be a positive"),
        (["data", "synth", "synth-hand-clean", "--size", "8"], "--size must be at least 16"),
        (["data", "synth", "synth-hand-clean", "--seed", "-1"], "--seed must be a non-negative"),
    ],
)
def test_bad_input_gets_one_clear_line_and_writes_nothing(tmp_path, capsys, args, message):
    assert main([*args, "--out", str(tmp_path / "root"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dabench: error: ") and message in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "root").exists() or not any((tmp_path / "root").rglob("*.h5"))
    if "unknown dataset card" in message:
        assert "synth-hand-clean" in err and "synth-body-wild" in err


def test_unwritable_output_is_one_clear_error(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    assert synth(blocker / "sub") == 2
    err = capsys.readouterr().err
    assert "cannot create output directory" in err and str(blocker) in err


def test_interrupted_generation_leaves_nothing_behind(tmp_path, monkeypatch):
    from bench.data.synthetic import build

    real = build.generate_chunk
    calls = {"n": 0}

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(build, "generate_chunk", failing)
    args = ["--n-train", "800", "--n-test", "8", "--size", "64", "--workers", "1", "--quiet"]
    assert main(["data", "synth", "synth-hand-clean", "--out", str(tmp_path), *args]) == 130
    assert not (tmp_path / "synth-hand-clean" / "train.h5").exists()
    assert leftovers(tmp_path) == []


def test_list_shows_cards_and_existing_shards(tmp_path, capsys):
    assert synth(tmp_path) == 0
    capsys.readouterr()
    assert main(["data", "list", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if "synth-hand-clean" in line)
    assert "hand21" in row and "train: 40" in row and "test: 12" in row
    assert "synth-body-annotation-shift" in out and "synth-backgrounds" in out


def test_show_draws_a_png_and_checks_the_index(tmp_path, capsys):
    assert synth(tmp_path) == 0
    shard = tmp_path / "synth-hand-clean" / "train.h5"
    out = tmp_path / "pics" / "sample.png"
    assert main(["data", "show", str(shard), "--index", "7", "--out", str(out)]) == 0
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    from PIL import Image

    pixels = np.asarray(Image.open(out))
    assert pixels.shape[0] >= 128  # upscaled so a person can see the joints
    capsys.readouterr()
    assert main(["data", "show", str(shard), "--index", "40", "--out", str(out)]) == 2
    assert "out of range" in capsys.readouterr().err
    assert main(["data", "show", str(tmp_path / "missing.h5"), "--out", str(out)]) == 2


def test_backgrounds_card_synthesises_images_only(tmp_path):
    assert synth(tmp_path, card="synth-backgrounds") == 0
    info = read_shard_info(tmp_path / "synth-backgrounds" / "train.h5")
    assert info.joint_set == "none" and info.fields == ("images",)


def test_several_cards_are_all_checked_before_any_is_written(tmp_path, capsys):
    assert synth(tmp_path, card="synth-body-clean") == 0
    args = ["data", "synth", "synth-hand-clean", "synth-body-clean", "--out", str(tmp_path)]
    assert main([*args, *SMALL, "--seed", "9"]) == 2  # body-clean exists with seed 0
    assert "synth-body-clean" in capsys.readouterr().err
    assert not (tmp_path / "synth-hand-clean").exists() or not any(
        (tmp_path / "synth-hand-clean").iterdir()
    )
    assert main([*args, *SMALL]) == 0
    assert (tmp_path / "synth-hand-clean" / "train.h5").exists()
