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


# Dense bf16 tensor-core peaks (FLOP/s) of the devices sessions are lent, from the vendor's
# datasheets (SXM parts, without sparsity).
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def pretraining_method(backbone: str, size: int, patch: int, device: str):
    """MIM-FCR-AR in the DA setting with FCR and X_C, as the paper pre-trains it."""
    resolved = resolve_method("mim-fcr-ar", {})
    model = ModelConfig(
        **{"backbone": backbone, "patch_size": patch, "img_size": size, **resolved.card.model}
    )
    torch.manual_seed(0)
    return build_method(resolved.spec, resolved.hparams, model, 21, 0).to(device).train()


def pretraining_batch(n: int, size: int, device: str) -> dict:
    g = torch.Generator().manual_seed(0)

    def images():
        return torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, generator=g)

    masks = torch.zeros(n, size, size, dtype=torch.uint8)
    masks[:, size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1
    batch = {
        "source": {"images": images(), "masks": masks},
        "target": {"images": images(), "masks": masks},
        "backgrounds": {"images": images()},
    }
    return {r: {k: v.to(device) for k, v in b.items()} for r, b in batch.items()}


def step_flops(method, batch) -> float:
    """FLOPs of one pre-training step (forward and backward) by torch's FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        method._reconstruction(batch).backward()
    method.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def test_the_step_flop_count_scales_with_the_batch():
    """What the GPU benchmark divides by is counted, not guessed: a positive count that
    doubles with the batch (the decoder, loss and backward included)."""
    method = pretraining_method("vit_tiny", 32, 8, "cpu")
    batch = pretraining_batch(2, 32, "cpu")
    flops = step_flops(method, batch)
    assert flops > 0
    double = pretraining_batch(4, 32, "cpu")
    assert step_flops(method, double) == pytest.approx(2 * flops, rel=0.05)


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.benchmark(group="mim-pretraining-gpu")
def test_vit_base_pretraining_throughput_with_bf16(benchmark):
    """The paper's pre-training step on a GPU: ViT-B/16 at 256² (256 tokens, 64 visible at
    r = 0.75), source + target images with FCR and background replacement, bf16 autocast,
    fused AdamW. Records images/s and the fraction of the device's dense bf16 peak."""
    per_domain = 128  # 256 images a step; the paper's 4,096 is accumulated or sharded
    method = pretraining_method("vit_base", 256, 16, "cuda")
    batch = pretraining_batch(per_domain, 256, "cuda")
    params = [p for p in (*method.net.backbone.parameters(), *method.decoder.parameters())]
    optimiser = torch.optim.AdamW([p for p in params if p.requires_grad], lr=1e-4, fused=True)

    def step() -> None:
        optimiser.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = method._reconstruction(batch)
        loss.backward()
        optimiser.step()
        torch.cuda.synchronize()

    with torch.autocast("cuda", dtype=torch.bfloat16):
        flops = step_flops(method, batch)
    benchmark.pedantic(step, rounds=10, warmup_rounds=3)
    seconds = benchmark.stats.stats.mean
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    images = 2 * per_domain / seconds
    benchmark.extra_info.update(
        device=name, images_per_s=images, tflops=flops / seconds / 1e12,
        peak_fraction=flops / seconds / peak if peak else None,
    )  # fmt: skip
    print(f"\n{name}: {images:.0f} images/s, {flops / seconds / 1e12:.0f} TFLOP/s", end="")
    print(f" = {flops / seconds / peak:.0%} of the dense bf16 peak" if peak else "")
    assert images > 0
