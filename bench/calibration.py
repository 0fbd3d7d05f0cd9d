"""The machine's calibration figure: how many samples per second one CPU thread trains a bare
``regnetx_002`` pose network at (64 px, batch 32, 2.5D head with 64 channels, no neck, AdamW).

Machines of one kind differ about 3× in speed, so wall times are stated with this figure and
the quickstart is judged by its **cost = wall seconds × samples/s**, which is about the same
on every machine (docs/benchmarks.md). ``dabench calibrate`` measures the figure and predicts
the quickstart's wall time from the last measured cost.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

# Cost (wall s × samples/s) of a first `dabench run quickstart`, data generation included,
# written up in docs/benchmarks.md; update both together. 78,300 as measured on the
# machine of issue 13, times the wall-time ratio of the grids without and with the rows
# added since, run back to back on one machine (issue 14: 498 s → 537 s, × 1.078; then
# trained VGG features: 537 s → 547 s on a machine of the same kind, × 1.019). Those
# machines' calibration figures overstated it: the issue-13 grid cost ≈ 95,000 there.
QUICKSTART_COST: float = 86_000.0

BATCH = 32
IMG_SIZE = 64


@dataclass(frozen=True)
class Calibration:
    samples_per_s: float  # median over rounds
    low: float
    high: float

    def predict(self, cost: float = QUICKSTART_COST) -> float:
        """Wall seconds a job of this cost takes here."""
        return cost / self.samples_per_s

    def __str__(self) -> str:
        return f"{self.samples_per_s:.0f} samples/s ({self.low:.0f}–{self.high:.0f})"


def calibrate(rounds: int = 5, steps: int = 10, warmup: int = 5) -> Calibration:
    """Time ``rounds`` × ``steps`` bare training steps on one thread (after ``warmup``)."""
    import torch

    from bench.config import ModelConfig
    from bench.models.pose_net import PoseNet

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            config = ModelConfig(
                backbone="regnetx_002", img_size=IMG_SIZE, head_channels=64, neck=0
            )
            net = PoseNet(config, num_joints=21).train()
            opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
            images = torch.randint(0, 256, (BATCH, IMG_SIZE, IMG_SIZE, 3), dtype=torch.uint8)
            target = torch.rand(BATCH, 21, 3)

            def step() -> None:
                loss = (net(images)["coords"] - target).abs().mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            for _ in range(warmup):
                step()
            rates = []
            for _ in range(rounds):
                start = time.perf_counter()
                for _ in range(steps):
                    step()
                rates.append(steps * BATCH / (time.perf_counter() - start))
    finally:
        torch.set_num_threads(threads)
    return Calibration(statistics.median(rates), min(rates), max(rates))
