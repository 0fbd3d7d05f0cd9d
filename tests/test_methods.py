"""Method registry, cards, hyper-parameter resolution, data needs and selection rules."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from bench.data.views import DataNeed, check_needs, role_fields, split_source_val
from bench.errors import DabenchError
from bench.methods.base import Hparams, Method
from bench.methods.cards import list_method_cards, resolve_method
from bench.methods.registry import get_method_class, method_names, register_method
from bench.metrics import MetricReport
from bench.models.pose_net import ModelConfig
from bench.trainer import Evaluation
from bench.trial import select


def test_builtin_methods_are_registered_and_carded():
    assert {"source-only", "oracle"} <= set(method_names())
    cards = {c.name: c for c in list_method_cards()}
    assert cards["source-only"].category == "source-only"
    assert cards["oracle"].category == "oracle"
    for card in cards.values():
        assert get_method_class(card.adapter).name == card.adapter


def test_unknown_method_lists_valid_ones():
    with pytest.raises(DabenchError, match="unknown method 'sauce-only'; valid methods:.*oracle"):
        get_method_class("sauce-only")


def test_registering_two_classes_under_one_name_is_an_error():
    with pytest.raises(DabenchError, match="registered twice"):

        @register_method("source-only")
        class Impostor(Method):
            pass


@dataclass(frozen=True)
class _Hp(Hparams):
    alpha: float = 1.0
    beta: int = 2
    gamma: bool = False


@register_method("test-precedence")
class _Precedence(Method):
    Hparams = _Hp


def test_hparam_precedence_dataclass_card_variant_grid(tmp_path, monkeypatch):
    monkeypatch.setenv("DABENCH_METHOD_CARDS", str(tmp_path))
    (tmp_path / "prec.yaml").write_text(
        "name: prec\nadapter: test-precedence\ncategory: domain-adaptation\ntitle: P\n"
        "description: d\ndefaults: {alpha: 3.0}\nvariants:\n  big: {beta: 7}\n"
    )
    assert resolve_method("prec").hparams == _Hp(alpha=3.0, beta=2, gamma=False)
    assert resolve_method("prec/big").hparams == _Hp(alpha=3.0, beta=7)
    resolved = resolve_method("prec/big", {"alpha": 5, "gamma": True})
    assert resolved.hparams == _Hp(alpha=5.0, beta=7, gamma=True)  # int 5 coerced to float
    assert resolved.label == "prec/big"
    with pytest.raises(DabenchError, match="'beta' must be int, got 2.5"):
        resolve_method("prec", {"beta": 2.5})
    with pytest.raises(DabenchError, match="'gamma' must be bool"):
        resolve_method("prec", {"gamma": "yes"})
    with pytest.raises(DabenchError, match=r"unknown variant 'small'.*valid: big"):
        resolve_method("prec/small")


@pytest.fixture(scope="module")
def pair(hand_pair):
    return hand_pair()


def test_data_needs_are_checked_against_the_shards(pair, monkeypatch):
    check_needs(
        "m",
        {
            DataNeed.SOURCE_LABELS,
            DataNeed.TARGET_IMAGES,
            DataNeed.TARGET_MASKS,
            DataNeed.TARGET_FRAME_PAIRS,
            DataNeed.TARGET_MULTI_VIEW,
        },
        pair,
    )
    with pytest.raises(DabenchError, match="backgrounds: no background images"):
        check_needs("m", {DataNeed.BACKGROUNDS}, pair)
    # A target without masks (as most real datasets) cannot feed a mask-supervised method.
    real_info = pair.info

    def no_masks(role):
        info = real_info(role)
        if role == "target_train":
            from dataclasses import replace

            return replace(info, fields=tuple(f for f in info.fields if f != "masks"))
        return info

    monkeypatch.setattr(type(pair), "info", lambda self, role: no_masks(role))
    with pytest.raises(
        DabenchError, match="method m cannot run on .*target_masks: synth-hand-wild has no masks"
    ):
        check_needs("m", {DataNeed.TARGET_MASKS}, pair)


def test_role_fields_follow_needs():
    assert role_fields({DataNeed.SOURCE_LABELS}) == {
        "source": ("images", "kp2d", "kp3d", "vis", "K")
    }
    roles = role_fields({DataNeed.SOURCE_LABELS, DataNeed.TARGET_IMAGES, DataNeed.TARGET_MASKS})
    assert roles["target"] == ("images", "masks")


def test_source_val_split_holds_out_the_tail():
    train, val = split_source_val(100, 0.1)
    assert len(val) == 10 and val.min() == 90 and not set(train) & set(val)
    train, val = split_source_val(100, 0.0)
    assert len(val) == 0 and len(train) == 100


def _evaluation(step, target, source_val):
    def report(v):
        return MetricReport(
            overall={"mpjpe": v},
            per_joint={},
            per_group={},
            per_sample={},
            version="1",
            joint_set="hand21",
            joints=(),
        )

    return Evaluation(
        step=step,
        reports={"target_test": report(target), "source_val": report(source_val)},
        predictions={},
    )


def test_selection_rules_pick_the_named_checkpoint():
    evals = [_evaluation(1, 50.0, 30.0), _evaluation(2, 40.0, 35.0), _evaluation(3, 45.0, 32.0)]
    assert select(evals, "last").step == 3
    assert select(evals, "source-val").step == 1
    assert select(evals, "target-oracle").step == 2
    with pytest.raises(DabenchError, match="unknown selection rule"):
        select(evals, "best")
    assert select([], "last") is None


def test_source_only_and_oracle_train_and_predict(pair):
    torch.manual_seed(0)
    config = ModelConfig(img_size=32, head_channels=32)
    for name in ("source-only", "oracle"):
        resolved = resolve_method(name)
        method = resolved.cls(resolved.hparams, config, 21, pair.root)
        batch = {
            role: {
                "images": torch.randint(0, 255, (4, 32, 32, 3), dtype=torch.uint8),
                "kp2d": torch.rand(4, 21, 2) * 31,
                "kp3d": torch.rand(4, 21, 3) * 100 + 400,
                "vis": torch.ones(4, 21, dtype=torch.bool),
            }
            for role in ("source", "target")
        }
        losses = method.training_step("train", batch, 0, 0.0)
        assert set(losses) == {"pose"} and torch.isfinite(losses["pose"])
        losses["pose"].backward()
        assert any(p.grad is not None for p in method.parameters())
        pred = method.predict(batch["source"]["images"])
        assert pred.kp2d.shape == (4, 21, 2) and pred.rel_depth.shape == (4, 21)
        assert torch.allclose(pred.rel_depth[:, pair.root], torch.zeros(4))
        assert np.isfinite(pred.kp2d.numpy()).all()
