"""Conversion throughput per converter (samples/s, both cores, progress off) on raw-format
fixtures with images of the real datasets' sizes: LSP's people are ~200 × 300 px JPEGs, MPII's
frames 1280 × 720. Each benchmark puts ``samples_per_s`` in ``extra_info``; the figures are in
docs/benchmarks.md (``pytest tests/benchmarks/test_bench_convert.py --benchmark-enable``).

The other converters reuse their tests' fixture writers: every image is pasted at the top
left of a textured canvas of the dataset's real size (masks onto an empty one), so the
annotations still hold, and the few fixture samples are repeated to a realistic count.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from bench.data.convert import convert, get_converter
from bench.data.convert.raw import RawFiles


def _jpeg(path: Path, width: int, height: int, rng: np.random.Generator) -> None:
    """A textured JPEG (noise compresses and decodes like a photograph, not like a flat fill)."""
    small = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
    Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR).save(
        path, format="JPEG", quality=90
    )


def lsp_fixture(root: Path, distinct: int = 20) -> None:
    """The 2,000 LSP images (``distinct`` different ones, hard-linked) at 200 × 300."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    for i in range(distinct):
        _jpeg(root / "images" / f"src{i}.jpg", 200, 300, rng)
    for i in range(2000):
        (root / "images" / f"im{i + 1:04d}.jpg").hardlink_to(
            root / "images" / f"src{i % distinct}.jpg"
        )
    uv = rng.uniform(40, 160, (14, 2, 2000)) + np.array([0, 60])[None, :, None]
    joints = np.concatenate([uv.transpose(1, 0, 2) + 1, np.zeros((1, 14, 2000))])
    scipy.io.savemat(root / "joints.mat", {"joints": joints})


def mpii_fixture(root: Path, n: int) -> None:
    rng = np.random.default_rng(1)
    (root / "images").mkdir(parents=True)
    (root / "annot").mkdir()
    for split in ("train", "val"):
        entries = []
        for i in range(n):
            name = f"{split}{i}.jpg"
            _jpeg(root / "images" / name, 1280, 720, rng)
            uv = rng.uniform(300, 700, (16, 2))
            entries.append({"image": name, "joints": (uv + 1).tolist(), "joints_vis": [1] * 16})
        (root / "annot" / f"mpii_{split}.json").write_text(json.dumps(entries))
    boxes = np.tile(np.array([[400.0, 300.0], [460.0, 370.0]])[..., None], (1, 1, n))
    scipy.io.savemat(root / "annot" / "mpii_gt_val.mat", {"headboxes_src": boxes})


@pytest.mark.parametrize("card", ["lsp", "mpii"])
def test_conversion_throughput(benchmark, tmp_path, card):
    raw = tmp_path / "raw"
    splits = ["test"] if benchmark.disabled else None  # CI: one split, once
    if card == "lsp":
        lsp_fixture(raw)
        samples = 1000 if splits else 2000
    else:
        n = 16 if benchmark.disabled else 200
        mpii_fixture(raw, n)
        samples = n if splits else 2 * n
    rounds = iter(range(10))

    def run() -> None:
        out = tmp_path / f"out{next(rounds)}"
        convert(card, raw, out, splits=splits, size=256, workers=2, progress=False)

    benchmark.pedantic(run, rounds=1 if benchmark.disabled else 3, warmup_rounds=0)
    if not benchmark.disabled:
        benchmark.extra_info["samples_per_s"] = samples / benchmark.stats.stats.median


# card → (its test's fixture writer, {glob of its images: the real (width, height)})
REAL_SIZES = {
    "freihand": ("test_convert_freihand:write_freihand", {"**/rgb/*.jpg": (224, 224)}),
    "rhd": ("test_convert_rhd:write_rhd", {"*/color/*.png": (320, 320)}),
    "stb": ("test_convert_stb:write_stb", {"images/*/*.png": (640, 480)}),
    "gan": ("test_convert_gan:write_gan", {"data/*/*/*_color_composed.png": (256, 256)}),
    "3dpw": ("test_convert_3dpw:write_3dpw", {"imageFiles/*/*.jpg": (1920, 1080)}),
    "tiktok": ("test_convert_tiktok:write_tiktok", {"*/images/*.png": (604, 1080)}),
    "imagenet-val-backgrounds": (
        "test_convert_imagenet:write_imagenet",
        {"*.JPEG": (500, 375)},
    ),
}
REPEATED = 256  # samples per converted split in a benchmark round


def enlarge(root: Path, pattern: str, size: tuple[int, int], rng: np.random.Generator) -> int:
    """Paste every image matching ``pattern`` onto a canvas of ``size``; masks (under a
    ``mask``/``masks`` folder) onto an empty one. Returns how many images there were."""
    paths = sorted(root.glob(pattern))
    for path in paths:
        with Image.open(path) as image:
            small = image.copy()
        canvas = Image.fromarray(
            rng.integers(0, 256, (size[1] // 8 + 1, size[0] // 8 + 1, 3), dtype=np.uint8)
        ).resize(size, Image.Resampling.BILINEAR)
        canvas = canvas.convert(small.mode)
        canvas.paste(small, (0, 0))
        canvas.save(path, format=small.format or None)
        masks = [path.parent.parent / m / path.name for m in ("mask", "masks")]
        for mask in (m for m in masks if m.is_file()):
            with Image.open(mask) as image:
                small = image.copy()
            canvas = Image.new(small.mode, size)
            canvas.paste(small, (0, 0))
            canvas.save(mask, format=small.format or None)
    return len(paths)


@pytest.mark.parametrize("card", sorted(REAL_SIZES))
def test_conversion_throughput_on_real_image_sizes(benchmark, tmp_path, monkeypatch, card):
    import importlib

    module, name = REAL_SIZES[card][0].split(":")
    writer = getattr(importlib.import_module(module), name)
    raw = tmp_path / "raw"
    raw.mkdir()
    if card == "imagenet-val-backgrounds":
        raw.rmdir()  # its writer makes the folder
    writer(raw)
    rng = np.random.default_rng(2)
    for pattern, size in REAL_SIZES[card][1].items():
        assert enlarge(raw, pattern, size, rng), f"{card}: no image matches {pattern}"
    converter = type(get_converter(card))
    split = "test"
    items = list(converter().items(RawFiles(card, raw), split))
    repeats = -(-(REPEATED if not benchmark.disabled else len(items)) // len(items))
    monkeypatch.setattr(converter, "items", lambda self, raw_files, s: items * repeats)
    rounds = iter(range(10))

    def run() -> None:
        out = tmp_path / f"out{next(rounds)}"
        convert(card, raw, out, splits=[split], size=256, workers=2, progress=False)

    benchmark.pedantic(run, rounds=1 if benchmark.disabled else 3, warmup_rounds=0)
    if not benchmark.disabled:
        benchmark.extra_info["samples_per_s"] = len(items) * repeats / benchmark.stats.stats.median


def _h36m(root: Path, n: int) -> None:
    from test_convert_h36m import write_h36m_samples

    write_h36m_samples(root, n)  # 1000 x 1000 and 1000 x 1002 mp4, v7.3 masks


def _3dhp(root: Path, n: int) -> None:
    from test_convert_3dhp import write_3dhp_throughput

    write_3dhp_throughput(root, n)  # 2048² avi, chroma-mask avi


def _surreal(root: Path, n: int) -> None:
    from test_convert_surreal import write_surreal

    write_surreal(root, frames=100, copies=max(1, n // 19))  # 320 x 240 mp4, 100-frame clips


def _humaneva(root: Path, n: int) -> None:
    from test_convert_humaneva import write_humaneva_throughput

    write_humaneva_throughput(root, n)  # 640 x 480 avi, undistorted


def _pan(root: Path, n: int) -> None:
    from test_convert_pan import write_pan

    write_pan(root, frames=max(3, n // 3), width=1920, height=1080)  # HD JPEGs, undistorted


def _h3d(root: Path, n: int) -> None:
    from test_convert_h3d import write_h3d

    write_h3d(root, n=5 * n, size=512)  # 20 % of the entries are the test split


def _mvhand(root: Path, n: int) -> None:
    from test_convert_mvhand import write_mvhand

    # 640 x 480 JPEGs and masks; the test split is 2 recordings x 4 views per frame
    write_mvhand(root, frames=max(1, -(-n // 8)))


# card → (writer of a raw copy with about n samples in the split, the split converted)
FULL_SIZE = {
    "h36m": (_h36m, "train"),
    "3dhp": (_3dhp, "train"),
    "surreal": (_surreal, "test"),
    "humaneva": (_humaneva, "test"),
    "pan": (_pan, "test"),
    "h3d": (_h3d, "test"),
    "mvhand": (_mvhand, "test"),
}


@pytest.mark.parametrize("card", sorted(FULL_SIZE))
def test_conversion_throughput_of_video_and_full_frame_datasets(benchmark, tmp_path, card):
    """Videos cannot be repeated sample by sample (decoding forward is the work), so these
    writers make every sample at the real frame size."""
    from bench.data.shards import ShardDataset

    writer, split = FULL_SIZE[card]
    raw = tmp_path / "raw"
    raw.mkdir()
    writer(raw, 8 if benchmark.disabled else 128)
    rounds = iter(range(10))
    written: list[Path] = []

    def run() -> None:
        out = tmp_path / f"out{next(rounds)}"
        written[:] = convert(card, raw, out, splits=[split], size=256, workers=2, progress=False)

    benchmark.pedantic(run, rounds=1 if benchmark.disabled else 3, warmup_rounds=0)
    samples = len(ShardDataset(written[0]))
    assert samples > 0
    if not benchmark.disabled:
        benchmark.extra_info["samples"] = samples
        benchmark.extra_info["samples_per_s"] = samples / benchmark.stats.stats.median
