"""MIM-FCR-AR wired into the harness: the grid refuses a CNN, variants share the
segmenter's and the pre-training's artifacts, the attention regulariser starts at zero
and trains only the encoder, FCR weights reach the reconstruction loss, the segmenter's
masks cover the target shard, and a local MAE checkpoint loads (or is refused)."""

from __future__ import annotations

from collections import Counter

import h5py
import numpy as np
import pytest
import torch
from conftest import write_grid

from bench.errors import DabenchError
from bench.grid import load_grid
from bench.methods.base import build_method
from bench.methods.cards import resolve_method
from bench.models.pose_net import ModelConfig
from bench.trainer import StageContext

SIZE = 32
VIT = {"backbone": "vit_tiny", "patch_size": 8, "vit_depth": 2}

pytestmark = pytest.mark.usefixtures("one_thread")


def build(entry: str = "mim-fcr-ar", **hparams):
    resolved = resolve_method(entry, hparams or None)
    model = ModelConfig(**{"img_size": SIZE, "head_channels": 16, **VIT, **resolved.card.model})
    torch.manual_seed(0)
    return build_method(resolved.spec, resolved.hparams, model, 21, 0)


def images(n: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, SIZE, SIZE, 3), dtype=torch.uint8, generator=g)


def test_the_segmenter_is_one_per_pair_since_its_masks_are_the_targets(tmp_path):
    """Its training reads source data only, but its artifact holds the target's masks."""
    pairs = [
        {"source": "synth-hand-clean", "target": "synth-hand-wild"},
        {"source": "synth-hand-clean", "target": "synth-hand-style"},
    ]
    grid = load_grid(write_grid(tmp_path, methods=["mim-fcr-ar"], pairs=pairs, model=VIT))
    segments = [r for r in grid.stage_runs if r.stages == ("segment",)]
    assert sorted(r.target for r in segments) == ["synth-hand-style", "synth-hand-wild"]
    assert len({r.key for r in segments}) == 2


def test_a_grid_giving_mim_a_cnn_is_refused(tmp_path):
    path = write_grid(tmp_path, methods=["mim-fcr-ar"], model={"backbone": "resnet18"})
    with pytest.raises(DabenchError, match="needs one of the backbones vit_tiny, vit_small"):
        load_grid(path)


def test_variants_share_the_segmenter_and_the_pretraining(tmp_path):
    variants = ["", "/wo-ar", "/ar-alternate", "/lambda-human", "/r0.5", "/wo-st", "/scratch"]
    grid = load_grid(
        write_grid(
            tmp_path,
            methods=[f"mim-fcr-ar{v}" for v in variants],
            model=VIT,
            train={"steps": 4},
        )
    )
    runs = Counter(run.stages[0] for run in grid.stage_runs)
    # one segmenter for every variant that segments; one pre-training for the variants
    # that differ only in fine-tuning (full, w/o AR, Alg. 1, λ_attn), one each for r = 0.5
    # and w/o S_T (no segmenter), none for Scratch
    assert runs == {"segment": 1, "pretrain": 3}
    upstream = {t.label: [u.key for u in t.upstream] for t in grid.trials}
    shared = upstream["mim-fcr-ar"]
    for label in ("mim-fcr-ar/wo-ar", "mim-fcr-ar/ar-alternate", "mim-fcr-ar/lambda-human"):
        assert upstream[label] == shared
    assert upstream["mim-fcr-ar/r0.5"][0] == shared[0] != upstream["mim-fcr-ar/r0.5"][1]
    assert len(upstream["mim-fcr-ar/wo-st"]) == 1 and upstream["mim-fcr-ar/scratch"] == []


def test_attention_regularisation_starts_at_zero_and_trains_only_the_encoder():
    method = build()
    finetune = next(s for s in method.stages() if s.name == "finetune")
    method.on_stage_start(finetune, StageContext({}))
    method.train()
    target = {"images": images()}
    assert float(method._attention_loss(target).detach()) == pytest.approx(0.0, abs=1e-7)
    with torch.no_grad():  # the trainable encoder moves away from f^A
        for p in method.net.backbone.model.blocks[0].attn.qkv.parameters():
            p.add_(0.05 * torch.randn_like(p))
    loss = method._attention_loss(target)
    assert float(loss.detach()) > 0
    loss.backward()
    assert all(p.grad is None for p in method.attention_net.parameters())
    grads = [p.grad for p in method.net.backbone.model.blocks[0].attn.qkv.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)


def test_fcr_weights_reach_the_reconstruction_loss():
    masks = torch.zeros(4, SIZE, SIZE, dtype=torch.uint8)
    masks[:, :16, :16] = 1  # foreground in the top-left quarter
    batch = {"source": {"images": images(), "masks": masks}}

    def loss(**hparams) -> float:
        method = build(setting="source-only", backgrounds=False, **hparams)
        torch.manual_seed(1)  # the same masking for every call
        return float(method._reconstruction(batch))

    plain = loss(fcr=False)
    assert loss(fcr=True, alpha=0.0) == pytest.approx(plain, rel=1e-6)  # α = 0: w ≡ 1
    assert loss(fcr=True, alpha=8.0) != pytest.approx(plain, rel=1e-3)


def test_the_segmenter_width_is_a_setting_of_its_stage():
    """Table 6's 64 channels by default; a CPU grid's narrower U-Net is another segmenter,
    so another segment artifact (the width is one of the stage's reads)."""
    from bench.methods.specs.mim_fcr_ar import SEGMENT_READS

    widths = {m.out_channels for m in build().segmenter.modules() if hasattr(m, "out_channels")}
    assert widths == {64, 1}  # every layer 64 wide, the 1×1 output conv 1
    narrow = build(segmenter_channels=16).segmenter
    assert {m.out_channels for m in narrow.modules() if hasattr(m, "out_channels")} == {16, 1}
    assert "segmenter_channels" in SEGMENT_READS
    with pytest.raises(DabenchError, match="segmenter_channels must be a positive integer"):
        build(segmenter_channels=0)


def test_the_segmenter_masks_every_target_training_image(hand_pair, tmp_path):
    pair = hand_pair()
    method = build()
    method.export_artifact("segment", tmp_path, pair)
    with h5py.File(tmp_path / "masks.h5", "r") as f:
        masks = f["masks"][()]
    assert masks.shape == (pair.info("target_train").num_samples, SIZE, SIZE)
    assert masks.dtype == np.uint8 and set(np.unique(masks)) <= {0, 1}
    info = (tmp_path / "segmenter.json").read_text()
    assert '"target_test_iou"' in info and '"threshold": 0.5' in info


def test_a_local_mae_checkpoint_loads_and_a_mismatched_one_is_refused(tmp_path):
    source = build()
    state = {f"{k}": v for k, v in source.net.backbone.model.state_dict().items()}
    state |= {k: v for k, v in source.decoder.state_dict().items()}
    path = tmp_path / "mae_pretrain_vit_tiny.pth"
    torch.save({"model": state, "epoch": 799}, path)
    with torch.no_grad():  # the checkpoint, not the shared seed, must set the weights
        torch.manual_seed(5)
        loaded = build(mae_checkpoint=str(path))
    for k, v in source.net.backbone.model.state_dict().items():
        torch.testing.assert_close(loaded.net.backbone.model.state_dict()[k], v, msg=k)
    for k, v in source.decoder.state_dict().items():
        torch.testing.assert_close(loaded.decoder.state_dict()[k], v, msg=k)
    small = tmp_path / "vit_small.pth"
    torch.save({"model": {k: torch.zeros(3) for k in state}}, small)
    with pytest.raises(DabenchError, match="vit_small.pth"):
        build(mae_checkpoint=str(small))


@pytest.mark.parametrize("name", ["park-table1-hand", "park-table2-body"])
def test_the_paper_grids_validate_in_the_papers_configuration(name):
    grid = load_grid(name)
    model = grid.trials[0].model
    assert (model["backbone"], model["patch_size"], model["img_size"]) == ("vit_base", 16, 256)
    assert (model["depth_bins"], model["neck"], model["head"]) == (64, 0, "volumetric")
    hp = grid.trials[0].hparams
    assert (hp["pretrain_epochs"], hp["pretrain_lr"], hp["pretrain_batch"]) == (800, 2.4e-3, 2048)
    assert hp["attn_weight"] == (100.0 if "hand" in name else 10.0)
    # the grid's λ_attn sets the method's; the MAE rows keep their ablation (no AR)
    mae = next(t for t in grid.trials if t.label == "mim-fcr-ar/mae")
    assert (mae.hparams["attn_weight"], mae.hparams["fcr"]) == (0.0, False)
    assert hp["finetune_epochs"] == (50 if "hand" in name else 100)
    targets = {t.target for t in grid.trials}
    assert targets == (
        {"stb", "rhd", "pan", "gan"} if "hand" in name else {"3dpw", "3dhp", "surreal"}
    )


def test_the_ablation_grid_runs_tables_3_4_and_9_sharing_its_stages():
    """Every row of Tables 3, 4 and 9 on a hand and a body pair; one segmenter per pair and
    one pre-training per distinct pre-training setting (7 for 10 rows), λ_attn per task."""
    from bench.methods.cards import load_method_card

    grid = load_grid("mim-fcr-ar-ablation")
    labels = {t.label for t in grid.trials}
    groups = load_method_card("mim-fcr-ar").ablation_groups
    for table in ("design", "masks", "mask_ratio", "alpha"):
        assert set(groups[table]) <= labels, table
    assert len(grid.trials) == 2 * len(labels) == 20
    runs = Counter((s.source, s.stages) for s in grid.stage_runs)
    for source in ("synth-hand-clean", "synth-body-clean"):
        assert (runs[(source, ("segment",))], runs[(source, ("pretrain",))]) == (1, 7)
    starts = {(t.label, t.source): t.start.key for t in grid.trials}
    for source in ("synth-hand-clean", "synth-body-clean"):
        assert starts[("mim-fcr-ar", source)] == starts[("mim-fcr-ar/wo-ar", source)]
        assert starts[("mim-fcr-ar/mae", source)] == starts[("mim-fcr-ar/wo-fcr", source)]
    weights = {t.source: t.hparams["attn_weight"] for t in grid.trials if t.label == "mim-fcr-ar"}
    assert weights == {"synth-hand-clean": 100.0, "synth-body-clean": 10.0}
    model = grid.trials[0].model
    assert (model["backbone"], model["patch_size"], model["vit_depth"]) == ("vit_tiny", 8, 4)


def test_the_finetuning_step_regularises_attention_on_the_target_batch():
    from conftest import StepStub

    method = build()
    finetune = next(s for s in method.stages() if s.name == "finetune")
    method.on_stage_start(finetune, StageContext({}))
    method.train()
    with torch.no_grad():  # move the trainable encoder away from f^A
        for p in method.net.backbone.model.blocks[0].attn.qkv.parameters():
            p.add_(0.05 * torch.randn_like(p))
    kp = torch.rand(4, 21, 2) * SIZE
    source = {"images": images(seed=1), "kp2d": kp, "kp3d": torch.randn(4, 21, 3) * 50,
              "vis": torch.ones(4, 21, dtype=torch.bool)}  # fmt: skip
    target = {"images": images(seed=2)}
    losses = method.training_step("finetune", {"source": source, "target": target}, StepStub())
    on_target = float(method._attention_loss(target).detach())
    on_source = float(method._attention_loss(source).detach())
    assert float(losses["attn"].detach()) == pytest.approx(on_target, rel=1e-5)
    assert on_target != pytest.approx(on_source, rel=1e-3)
    assert float(losses["pose"].detach()) == pytest.approx(
        float(method._pose_loss(source).detach())
    )


def test_pretraining_reconstructs_source_and_target_images():
    def loss(target_seed: int) -> float:
        method = build(backgrounds=False, fcr=False)
        batch = {"source": {"images": images(seed=1)}, "target": {"images": images(target_seed)}}
        torch.manual_seed(1)
        return float(method._reconstruction(batch).detach())

    assert loss(2) != pytest.approx(loss(3), rel=1e-4)  # the target images enter the loss
