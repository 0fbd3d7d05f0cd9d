"""MIM-FCR-AR pre-training throughput on the CPU: one pre-training step (masked encoder,
MAE decoder, Eq. 3 loss, backward, AdamW step) of vit_tiny at 64 px, patch 8 (64 tokens),
batch 32, one thread, with MAE's masking at r = 0.75 against the same encoder and decoder
on all tokens (r = 0): the masked encoder sees ≈ 1/(1 − r) = 4× fewer tokens.

Run with ``pytest tests/benchmarks/test_bench_mim.py --benchmark-enable -s`` (figures in
docs/benchmarks.md); under the default ``--benchmark-disable`` each runs one step as a test.
"""

from __future__ import annotations

import pytest
import torch

from bench.methods.base import build_method
from bench.methods.cards import resolve_method
from bench.models.pose_net import ModelConfig

BATCH = 32
SIZE = 64


@pytest.mark.benchmark(group="mim-pretraining")
@pytest.mark.parametrize("ratio", [0.75, 0.0])
def test_pretraining_step(benchmark, ratio, one_thread):
    resolved = resolve_method(
        "mim-fcr-ar", {"setting": "source-only", "backgrounds": False, "mask_ratio": ratio}
    )
    model = ModelConfig(
        **{"backbone": "vit_tiny", "patch_size": 8, "img_size": SIZE, **resolved.card.model}
    )
    torch.manual_seed(0)
    method = build_method(resolved.spec, resolved.hparams, model, 21, 0).train()
    params = [p for p in (*method.net.backbone.parameters(), *method.decoder.parameters())]
    optimiser = torch.optim.AdamW([p for p in params if p.requires_grad], lr=1e-4)
    images = torch.randint(0, 256, (BATCH, SIZE, SIZE, 3), dtype=torch.uint8)
    masks = torch.zeros(BATCH, SIZE, SIZE, dtype=torch.uint8)
    masks[:, 16:48, 16:48] = 1
    batch = {"source": {"images": images, "masks": masks}}

    def step() -> float:
        optimiser.zero_grad(set_to_none=True)
        loss = method._reconstruction(batch)
        loss.backward()
        optimiser.step()
        return float(loss.detach())

    loss = benchmark.pedantic(
        step,
        rounds=5 if not benchmark.disabled else 1,
        warmup_rounds=1 if not benchmark.disabled else 0,
    )
    if not benchmark.disabled:
        per_s = BATCH / benchmark.stats.stats.mean
        benchmark.extra_info["images_per_s"] = per_s
        print(f"\nr = {ratio}: {per_s:.1f} images/s ({BATCH} per step)")
    # at r = 0 no patch is removed, so Eq. 3 is 0; the step still runs every token through
    # encoder, decoder and backward, which is what is timed
    assert loss == loss and (loss > 0 if ratio else loss == 0)
