"""Method registry, cards, hyper-parameter resolution, stage declarations, data checks
and selection rules."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, replace

import pytest
import torch
from conftest import StepStub

from bench.data.pairs import split_source_val
from bench.data.views import Backgrounds, Labelled, Masked, check_views
from bench.errors import DabenchError
from bench.methods.base import build_method
from bench.methods.cards import FIDELITY, list_method_cards, resolve_method
from bench.methods.spec import (
    Hparams,
    MethodSpec,
    Optim,
    Share,
    Stage,
    get_spec,
    method_names,
    register_method,
)
from bench.models.pose_net import ModelConfig
from bench.selection import get_rule


def test_builtin_methods_are_registered_and_carded():
    assert {"source-only", "oracle", "ddc", "dan", "dann", "causal-interventions"} <= set(
        method_names()
    )
    cards = {c.name: c for c in list_method_cards()}
    assert cards["source-only"].category == "source-only"
    assert cards["oracle"].category == "oracle"
    for card in cards.values():
        spec = get_spec(card.adapter)
        assert spec.name == card.adapter
        assert spec.method_class().spec is spec  # the adapter names its declaration


def test_declarations_import_without_torch():
    code = (
        "import sys; from bench.methods.spec import method_names; method_names(); "
        "import bench.grid, bench.report.build, bench.selection, bench.config; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_card_states_a_fidelity_level_with_its_promise(tmp_path, monkeypatch):
    for card in list_method_cards():
        assert card.fidelity in FIDELITY, card.name
        # adapting or reconstructing a method is only honest with the changes listed
        if card.fidelity != "faithful":
            assert len(card.choices) >= 3, card.name
    assert set(FIDELITY) == {"faithful", "adapted", "reconstructed"}
    assert all(len(promise) > 40 for promise in FIDELITY.values())
    monkeypatch.setenv("DABENCH_METHOD_CARDS", str(tmp_path))
    card = "name: x\nadapter: source-only\ncategory: oracle\ntitle: X\ndescription: d\n"
    (tmp_path / "x.yaml").write_text(card)
    with pytest.raises(DabenchError, match=r"missing key\(s\) \['fidelity'\]"):
        resolve_method("x")
    (tmp_path / "x.yaml").write_text(card + "fidelity: exact\n")
    with pytest.raises(DabenchError, match="fidelity 'exact' is not one of faithful, adapted"):
        resolve_method("x")


def test_unknown_method_lists_valid_ones():
    with pytest.raises(DabenchError, match="unknown method 'sauce-only'; valid methods:.*oracle"):
        get_spec("sauce-only")


def test_registering_two_classes_under_one_name_is_an_error():
    with pytest.raises(DabenchError, match="registered twice"):

        @register_method("source-only")
        class Impostor(MethodSpec):
            pass


@dataclass(frozen=True)
class _Hp(Hparams):
    alpha: float = 1.0
    beta: int = 2
    gamma: bool = False


@register_method("test-precedence")
class _Precedence(MethodSpec):
    Hparams = _Hp


def test_hparam_precedence_dataclass_card_variant_grid(tmp_path, monkeypatch):
    monkeypatch.setenv("DABENCH_METHOD_CARDS", str(tmp_path))
    (tmp_path / "prec.yaml").write_text(
        "name: prec\nadapter: test-precedence\ncategory: domain-adaptation\ntitle: P\n"
        "description: d\nfidelity: faithful\ndefaults: {alpha: 3.0}\nvariants:\n  big: {beta: 7}\n"
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


def test_stage_views_are_checked_against_the_shards(pair, monkeypatch):
    check_views("m", {"source": Labelled("source"), "target": Masked("target")}, pair)
    with pytest.raises(DabenchError, match="synth-backgrounds"):
        check_views("m", {"bg": Backgrounds()}, pair)
    # A target without masks (as most real datasets) cannot feed a mask-supervised method.
    real_info = type(pair).info

    def no_masks(self, role):
        info = real_info(self, role)
        if role == "target_train":
            return replace(info, fields=tuple(f for f in info.fields if f != "masks"))
        return info

    monkeypatch.setattr(type(pair), "info", no_masks)
    with pytest.raises(DabenchError, match="method m cannot run on .*masks"):
        check_views("m", {"t": Masked("target")}, pair)


def test_stage_declarations_are_checked():
    views = {"source": Labelled("source")}
    with pytest.raises(DabenchError, match="batch sizes for \\['target'\\]"):
        Stage("s", views=views, batch_sizes={"target": 4})
    with pytest.raises(DabenchError, match="at most one optimiser"):
        Stage("s", views=views, optimizers={"a": Optim(), "b": Optim()})
    with pytest.raises(DabenchError, match="unknown optimiser factory 'adagrad'"):
        Optim(factory="adagrad")
    with pytest.raises(DabenchError, match="unknown schedule 'cyclic'"):
        Optim(schedule=replace(Optim().schedule, kind="cyclic"))

    class Bad(MethodSpec):
        name = "bad"
        Hparams = _Hp

        @classmethod
        def stages(cls, hp):
            return [
                Stage("fine", views=views, length=Share(0.5)),
                Stage("pre", views=views, length=Share(0.5), evaluate=False),
            ]

        @classmethod
        def losses(cls, hp, stage):
            return ("pose",)

    with pytest.raises(DabenchError, match="pre-training stages .* must come before"):
        Bad.checked_stages(_Hp())


def test_source_val_split_holds_out_the_tail():
    train, val = split_source_val(100, 0.1)
    assert len(val) == 10 and val.min() == 90 and not set(train) & set(val)
    train, val = split_source_val(100, 0.0)
    assert len(val) == 0 and len(train) == 100


def _evaluation(step, target, source_val):
    return {
        "step": step,
        "stage": "train",
        "metrics": {
            "target_test": {"overall": {"mpjpe": target}},
            "source_val": {"overall": {"mpjpe": source_val}},
        },
    }


def test_selection_rules_pick_the_named_checkpoint():
    evals = [_evaluation(1, 50.0, 30.0), _evaluation(2, 40.0, 35.0), _evaluation(3, 45.0, 32.0)]
    assert get_rule("last").choose(evals)["step"] == 3
    assert get_rule("source-val").choose(evals)["step"] == 1
    assert get_rule("target-oracle").choose(evals)["step"] == 2
    with pytest.raises(DabenchError, match="unknown selection rule 'best'; valid: last"):
        get_rule("best")
    assert get_rule("last").choose([]) is None
    # a diverged checkpoint (non-finite target error) is never chosen
    evals.append(_evaluation(4, float("nan"), 1.0))
    assert get_rule("source-val").choose(evals)["step"] == 1
    assert get_rule("last").choose(evals)["step"] == 4  # "last" reports what happened
    no_val = [{**e, "metrics": {"target_test": e["metrics"]["target_test"]}} for e in evals]
    with pytest.raises(DabenchError, match="needs the source_val split"):
        get_rule("source-val").choose(no_val)


def test_source_only_and_oracle_train_and_predict(pair):
    torch.manual_seed(0)
    config = ModelConfig(img_size=32, head_channels=32)
    for name in ("source-only", "oracle"):
        resolved = resolve_method(name)
        method = build_method(resolved.spec, resolved.hparams, config, 21, pair.root)
        batch = {
            role: {
                "images": torch.randint(0, 255, (4, 32, 32, 3), dtype=torch.uint8),
                "kp2d": torch.rand(4, 21, 2) * 31,
                "kp3d": torch.rand(4, 21, 3) * 100 + 400,
                "vis": torch.ones(4, 21, dtype=torch.bool),
            }
            for role in ("source", "target")
        }
        losses = method.training_step("train", batch, StepStub())
        assert set(losses) == {"pose"}
        # source-only learns from the source labels, the oracle from the target's
        role = "target" if name == "oracle" else "source"
        out = method.net(batch[role]["images"])
        expected = method.supervised_loss(batch[role], out)
        assert float(losses["pose"].detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
        other = method.supervised_loss(batch["source" if role == "target" else "target"], out)
        assert float(other.detach()) != pytest.approx(float(expected.detach()), rel=1e-3)
        losses["pose"].backward()
        assert any(p.grad is not None for p in method.parameters())
        pred = method.predict(batch["source"]["images"])
        assert pred.kp2d.shape == (4, 21, 2) and pred.rel_depth.shape == (4, 21)


def test_records_say_which_data_of_which_domain_each_method_read():
    from bench.store import method_data

    def data(method: str, **hp) -> str:
        return method_data({"method": method, "hparams": hp})

    assert data("source-only") == "source: images, pose labels, intrinsics"
    assert data("oracle") == "target: images, pose labels, intrinsics"  # the target's labels
    assert data("dann") == "source: images, pose labels, intrinsics; target: images"
    assert data("mim-fcr-ar", setting="source-only", attn_weight=0.0) == (
        "source: images, masks, pose labels, intrinsics; unconstrained: images"
    )
    assert data("mim-fcr-ar").endswith("target: images; unconstrained: images")
    assert data("no-longer-registered") == ""
    assert data("dann", no_such_setting=1) == ""  # a record the method no longer accepts
