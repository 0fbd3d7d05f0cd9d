"""Timing one stage-updater step (forward, losses, backward, optimiser step) of a trainer's
stage, shared by the step-cost benchmarks."""

from __future__ import annotations

import torch

from bench.trainer import StepContext, Trainer


def time_stage_step(benchmark, trainer: Trainer, stage_name: str) -> None:
    """Benchmark one step of ``stage_name`` on one batch of its streams (the start hooks of
    the stages before it must have run); 5 rounds after a warm-up, or one under
    ``--benchmark-disable``. Records the images a step reads."""
    stage = next(s for s in trainer.stages if s.name == stage_name)
    update = trainer.updater(stage)
    trainer.streams = trainer.open_streams(stage)
    batch = trainer.next_batch()
    trainer.method.train()
    benchmark.extra_info["images_per_step"] = sum(
        b["images"][..., 0, 0, 0].numel() for b in batch.values()
    )
    ctx = StepContext(update, 0, 0.5)
    loss = benchmark.pedantic(
        lambda: sum(update.step(batch, ctx).values()).detach(),
        rounds=5 if not benchmark.disabled else 1,
        warmup_rounds=1 if not benchmark.disabled else 0,
    )
    assert torch.isfinite(loss)
