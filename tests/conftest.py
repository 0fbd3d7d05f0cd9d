"""Fixtures several test modules share: tiny synthetic hand shards and tiny grid files."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from bench.data.pairs import PairShards, pair_shards
from bench.data.synthetic.build import synthesize

HAND_PAIR = ("synth-hand-clean", "synth-hand-wild")
BODY_PAIR = ("synth-body-clean", "synth-body-style")


# A test pose of SMPL-24 (bench/data/joints.py smpl24) in metres around the pelvis, in the
# camera's axes (x right, y down, z away), for 3DPW's and SURREAL's fixtures: the subject
# faces the camera, so its left is on the image's right (+x), its toes towards the camera.
# Asymmetric: the right arm is raised above the head, the left hangs down.
SMPL24_BODY = np.array(
    [
        [0.00, 0.00, 0.00],  # 0 pelvis
        [0.09, 0.08, 0.01],  # 1 l_hip
        [-0.09, 0.08, 0.02],  # 2 r_hip
        [0.00, -0.10, 0.03],  # 3 spine1
        [0.10, 0.45, 0.04],  # 4 l_knee
        [-0.10, 0.45, -0.05],  # 5 r_knee
        [0.00, -0.22, 0.00],  # 6 spine2
        [0.10, 0.85, 0.06],  # 7 l_ankle
        [-0.10, 0.85, -0.01],  # 8 r_ankle
        [0.00, -0.28, 0.02],  # 9 spine3
        [0.12, 0.90, -0.10],  # 10 l_foot
        [-0.12, 0.90, -0.12],  # 11 r_foot
        [0.00, -0.50, 0.03],  # 12 neck
        [0.07, -0.45, 0.00],  # 13 l_collar
        [-0.07, -0.45, 0.01],  # 14 r_collar
        [0.00, -0.62, -0.02],  # 15 head (centre)
        [0.18, -0.45, 0.02],  # 16 l_shoulder
        [-0.18, -0.45, 0.03],  # 17 r_shoulder
        [0.22, -0.20, 0.05],  # 18 l_elbow
        [-0.35, -0.55, -0.04],  # 19 r_elbow
        [0.24, 0.02, -0.06],  # 20 l_wrist
        [-0.40, -0.80, -0.08],  # 21 r_wrist
        [0.25, 0.10, -0.07],  # 22 l_hand
        [-0.42, -0.88, -0.09],  # 23 r_hand
    ]
)


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, the cores are shared out among the workers: torch's default of
    one intra-op thread per core in every worker would oversubscribe them."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under `-n N`, whole files go to the workers, in collection order (below): a file's
    module fixtures (a Ray cluster, a shared Ray session) are made once."""
    from xdist.scheduler import LoadFileScheduling

    config.option.loadscopereorder = False
    return LoadFileScheduling(config, log)


# The longest files first: a long file started last keeps one worker busy while the other
# has nothing left. The files known to be long (their tests wait on Ray clusters and
# subprocesses), then the others by their number of tests, as xdist's own reorder would.
LONGEST_FIRST = ("test_cluster.py", "test_mutants.py", "test_harness_ray.py", "test_harness.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    counts: dict[Path, int] = {}
    for item in items:
        counts[item.path] = counts.get(item.path, 0) + 1

    def rank(item: pytest.Item) -> tuple[int, int]:
        name = item.path.name
        first = LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)
        return first, -counts[item.path]

    items.sort(key=rank)  # stable: the order within a file stays


# A grid small enough to train a few steps per trial on the CPU in seconds.
TINY_GRID: dict[str, Any] = {
    "name": "tiny",
    "methods": ["source-only", "oracle"],
    "pairs": [{"source": HAND_PAIR[0], "target": HAND_PAIR[1]}],
    "seeds": [0],
    "data": {"n_train": 96, "n_test": 40, "size": 32},
    "model": {"backbone": "resnet18"},
    "train": {
        "steps": 4,
        "batch_size": 8,
        "eval_every": 2,
        "warmup_steps": 1,
        "eval_batch_size": 32,
        "log_every": 2,
    },
}


def _pair_factory(tmp_path_factory, cards: tuple[str, str], defaults: tuple[int, int, int]):
    """``make(n_train, n_test, size)``: the pair's shards, generated once per size."""
    made: dict[tuple[int, int, int], PairShards] = {}

    def make(n_train: int = defaults[0], n_test: int = defaults[1], size: int = defaults[2]):
        key = (n_train, n_test, size)
        if key not in made:
            root = tmp_path_factory.mktemp(f"{cards[0]}-{n_train}-{n_test}-{size}")
            synthesize(list(cards), root, n_train=n_train, n_test=n_test, size=size, progress=False)
            made[key] = pair_shards(*cards, root)
        return made[key]

    return make


@pytest.fixture(scope="session")
def hand_pair(tmp_path_factory) -> Callable[..., PairShards]:
    """``hand_pair(n_train, n_test, size)``: synth-hand clean → wild shards, generated once
    per size for the whole session. Read-only: tests that write shards make their own."""
    return _pair_factory(tmp_path_factory, HAND_PAIR, (40, 8, 32))


@pytest.fixture(scope="session")
def body_pair(tmp_path_factory) -> Callable[..., PairShards]:
    """``body_pair(n_train, n_test, size)``: synth-body clean → style shards (4-camera
    rigs, 8-frame sequences, masks), generated once per size for the whole session."""
    return _pair_factory(tmp_path_factory, BODY_PAIR, (64, 32, 64))


@pytest.fixture
def one_thread():
    """One torch intra-op thread for the test (tiny models run faster on one)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_grid(directory: Path, **changes: Any) -> Path:
    """:data:`TINY_GRID` with ``changes`` as ``<directory>/<name>.yaml``; a mapping section
    (data, model, train) given in ``changes`` updates the tiny one instead of replacing it."""
    grid = dict(TINY_GRID)
    for key, value in changes.items():
        base = grid.get(key)
        grid[key] = {**base, **value} if isinstance(base, dict) else value
    path = directory / f"{grid['name']}.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


@pytest.fixture
def tiny_grid(tmp_path) -> Callable[..., Path]:
    """``tiny_grid(**changes)``: :func:`write_grid` in the test's tmp_path."""
    return lambda **changes: write_grid(tmp_path, **changes)


class StepStub:
    """The step context a grouped (non-manual) stage gives ``training_step``, for tests
    that call a method directly."""

    def __init__(self, step: int = 0, progress: float = 0.0) -> None:
        self.step, self.progress = step, progress
        self.stage_step = step

    def backward(self, loss, optimizer: str) -> None:  # pragma: no cover - manual stages only
        raise AssertionError("a grouped stage must not call ctx.backward")

    def optimizer_step(self, optimizer: str) -> None:  # pragma: no cover
        raise AssertionError("a grouped stage must not call ctx.optimizer_step")


def assert_predicts_with_the_pose_net_only(method, images, other_parts) -> None:
    """A method's prediction is its pose network's alone: moving the weights of every other
    part (alignment layers, discriminators, generators) changes nothing; moving the pose
    head changes it."""
    import torch

    pred = method.predict(images)
    with torch.no_grad():
        for part in other_parts:
            for p in getattr(method, part).parameters():
                p.add_(1.0)
    again = method.predict(images)
    assert torch.equal(again.kp2d, pred.kp2d) and torch.equal(again.rel_depth, pred.rel_depth)
    # moved, not scaled: an argmax decoder does not see a scaled head
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in method.net.head.parameters():
            p.add_(torch.rand(p.shape, generator=g))
    assert not torch.equal(method.predict(images).rel_depth, pred.rel_depth)


def assert_refused(card: str, folder: Path, out: Path, match: str) -> None:
    """Converting ``folder`` as ``card`` is one DabenchError matching ``match``, and nothing
    that looks like a shard is left under ``out``."""
    from bench.data.convert import convert
    from bench.errors import DabenchError

    with pytest.raises(DabenchError, match=match):
        convert(card, folder, out, size=16, progress=False)
    assert not list(out.rglob("*.h5*")), "something was written"


def write_video(
    path: Path,
    frames: Iterable[np.ndarray],
    codec: str = "mpeg4",
    rate: int = 25,
    bit_rate: int | None = None,
) -> None:
    """A video of ``[H, W, 3]`` uint8 RGB frames for the video converters' fixtures: ffv1 is
    lossless (masks and markers stay exact), mpeg4 is lossy like the releases' codecs."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = None
        for rgb in frames:
            if stream is None:
                stream = container.add_stream(codec, rate=rate)
                stream.height, stream.width = rgb.shape[:2]
                stream.pix_fmt = "bgr0" if codec == "ffv1" else "yuv420p"
                if bit_rate is not None:
                    stream.bit_rate = bit_rate
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        assert stream is not None, f"{path}: no frames"
        container.mux(stream.encode())
