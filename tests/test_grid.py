"""Grid YAML → trial specs: expansion, stable ids, and every mistake named before a run."""

from __future__ import annotations

import json

import pytest
import yaml

from bench.cluster import tune_resources
from bench.errors import DabenchError
from bench.grid import load_grid, named_grids

BASE = {
    "name": "tiny",
    "methods": ["source-only", "oracle"],
    "pairs": [{"source": "synth-hand-clean", "target": "synth-hand-wild"}],
    "seeds": [0, 1],
    "data": {"n_train": 64, "n_test": 32, "size": 32},
    "model": {"backbone": "resnet18"},
    "train": {"steps": 4, "batch_size": 8, "eval_every": 2},
}


def write(tmp_path, grid, name="grid.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(grid))
    return path


def test_expansion_and_stable_ids(tmp_path):
    grid = load_grid(write(tmp_path, BASE))
    assert len(grid.trials) == 4
    assert {(t.method, t.seed) for t in grid.trials} == {
        ("source-only", 0),
        ("source-only", 1),
        ("oracle", 0),
        ("oracle", 1),
    }
    ids = [t.trial_id for t in grid.trials]
    assert len(set(ids)) == 4
    assert ids == [t.trial_id for t in load_grid(write(tmp_path, BASE, "again.yaml")).trials]
    # Things that do not change the result do not change the id ...
    same = {
        **BASE,
        "name": "other",
        "resources": {"cpu": 2},
        "train": {**BASE["train"], "threads": 3, "workers": 1},
    }
    assert ids == [t.trial_id for t in load_grid(write(tmp_path, same, "same.yaml")).trials]
    # ... and everything that does, does.
    for change in (
        {"hparams": {"source-only": {"pose_weight": 2.0}}},
        {"train": {**BASE["train"], "lr": 0.01}},
        {"model": {"backbone": "resnet50"}},
        {"data": {**BASE["data"], "seed": 1}},
    ):
        other = [
            t.trial_id for t in load_grid(write(tmp_path, {**BASE, **change}, "c.yaml")).trials
        ]
        assert other != ids
    t = grid.trials[0]
    assert t.model["img_size"] == 32 and t.model["depth_range_mm"] == 400.0
    assert t.category == "source-only" and grid.trials[2].category == "oracle"


def test_named_grids_ship_with_the_package():
    assert "quickstart" in named_grids()
    grid = load_grid("quickstart")
    pairs = {(t.source, t.target) for t in grid.trials}
    assert ("synth-hand-clean", "synth-hand-wild") in pairs
    assert ("synth-body-clean", "synth-body-wild") in pairs
    assert {"source-only", "oracle"} <= {t.method for t in grid.trials}
    body = next(t for t in grid.trials if t.source.startswith("synth-body"))
    assert body.model["depth_range_mm"] == 2000.0
    # one network for every CNN row (causal interventions' volumetric head): each adapter
    # starts from the source-only trial's export, no stage run trains a second start
    warm = [s for s in grid.stage_runs if s.method == "source-only"]
    assert len(warm) == 2 and all(s.exported_by for s in warm)
    heads = {t.method: t.model["head"] for t in grid.trials}
    assert heads.pop("geometric-reconstruction") == "2.5d"  # the card fixes its 2.5D head
    assert set(heads.values()) == {"volumetric"}
    # MIM-FCR-AR's ViT row: its own segmenter and pre-training per pair, its own budget
    mim = [s.stages for s in grid.stage_runs if s.method == "mim-fcr-ar"]
    assert sorted(mim) == [("pretrain",)] * 2 + [("segment",)] * 2
    (vit,) = {t.model["backbone"] for t in grid.trials if t.method == "mim-fcr-ar"}
    assert vit == "vit_tiny" and {t.model["backbone"] for t in grid.trials} == {vit, "regnetx_002"}
    assert {t.train["steps"] for t in grid.trials if t.method == "mim-fcr-ar"} == {40}
    # geometric reconstruction: VGG features, StyleNet, pre-training and generator per pair,
    # then a short fine-tuning on frame pairs of the 8-frame wild sequences
    geo = sorted(s.stages for s in grid.stage_runs if s.method == "geometric-reconstruction")
    assert geo == sorted([(n,) for n in ("features", "generator", "pretrain", "stylenet")] * 2)
    (hp,) = {
        json.dumps(t.hparams, sort_keys=True)
        for t in grid.trials
        if t.method == "geometric-reconstruction"
    }
    hp = json.loads(hp)
    assert hp["features"] == "trained-vgg19" and hp["stride"][1] <= 7


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"methods": ["source-only", "dnan"]},
            "unknown method 'dnan'; valid methods:.*source-only",
        ),
        ({"methods": ["source-only/fast"]}, "unknown variant 'fast' of method 'source-only'"),
        (
            {"pairs": [{"source": "synth-hand-clen", "target": "synth-hand-wild"}]},
            "unknown dataset card 'synth-hand-clen'; valid cards:.*synth-hand-clean",
        ),
        (
            {"hparams": {"source-only": {"pose_wieght": 1.0}}},
            r"unknown hyper-parameter\(s\) \['pose_wieght'\]; valid: pose_weight \(float\)",
        ),
        (
            {"hparams": {"source-only": {"pose_weight": "big"}}},
            "'pose_weight' must be float, got 'big'",
        ),
        ({"hparams": {"dann": {"trade_off": 1.0}}}, "hparams given for.*dann.*does not run"),
        ({"methods": []}, "'methods' must be a non-empty list"),
        ({"pairs": []}, "'pairs' must be a non-empty list"),
        ({"seeds": []}, "'seeds' must be a non-empty list"),
        ({"epochs": 3}, r"unknown key\(s\) \['epochs'\]; valid keys"),
        ({"selection": "best"}, "selection 'best' is not one of last, source-val, target-oracle"),
        ({"train": {"stpes": 3}}, r"train: unknown key\(s\) \['stpes'\]; valid keys:.*steps"),
        ({"train": {"steps": "many"}}, "'steps' must be int"),
        ({"train": {"amp": "fp8"}}, "train.amp 'fp8' is not one of"),
        ({"train": {"checkpoint_every_s": -1.0}}, r"checkpoint_every_s must be >= 0 \(0 = at"),
        ({"model": {"feature_stride": 12}}, "feature_stride 12 not supported"),
        ({"model": {"backbone": 18}}, "'backbone' must be str"),
        ({"data": {"n_train": -5}}, "data.n_train must be a non-negative integer"),
        ({"resources": {"tpu": 1}}, r"unknown resource\(s\) \['tpu'\].*go under custom"),
        ({"resources": {"custom": ["a100"]}}, "resources.custom must map resource names"),
        ({"resources": {"custom": {"a100": -1}}}, "resources.custom.a100 must be a non-neg"),
        ({"resources": {"gpu": "half"}}, "resources.gpu must be a non-negative number"),
        (
            {"pairs": [{"source": "synth-hand-clean", "target": "synth-body-wild"}]},
            "different joint sets",
        ),
        ({"pairs": [{"source": "synth-hand-clean"}]}, "needs 'source' and 'target'"),
        (
            {"pairs": [{**BASE["pairs"][0], "hparams": {"dann": {"trade_off": 1.0}}}]},
            r"synth-hand-clean → synth-hand-wild: hparams must map methods the grid runs",
        ),
        (
            {"pairs": [{**BASE["pairs"][0], "hparams": {"oracle": {"pose_wieght": 1.0}}}]},
            "pose_wieght",
        ),
        (
            {"model": {"methods": {"ddc": {"backbone": "vit_tiny"}}}},
            "model or train settings given",
        ),
        ({"train": {"methods": {"ddc": {"lr": 0.1}}}}, r"settings given for \['ddc'\]"),
        ({"train": {"methods": {"oracle": {"lrr": 0.1}}}}, r"train.methods.oracle: unknown key"),
        ({"train": {"methods": {"oracle": {"amp": "fp8"}}}}, r"train.methods.oracle: train.amp"),
        ({"model": {"methods": {"oracle": {"bakbone": "vit_tiny"}}}}, r"model.methods.oracle"),
        ({"report": {"refrence": "oracle"}}, r"unknown report key\(s\) \['refrence'\]; valid"),
        ({"report": {"reference": "ddc"}}, "report.reference 'ddc' is not a method of the grid"),
        (
            {"report": {"complementarity": [{"baseline": "oracle", "a": "source-only"}]}},
            r"report.complementarity\[0\] needs name \(optional\), baseline, a, b, both",
        ),
        (
            {"report": {"paper_pairs": {"synth-hand-clean → synth-hand-wild": 3}}},
            "report.paper_pairs maps 'source → target' to a paper's",
        ),
    ],
)
def test_grid_mistakes_are_named_before_anything_runs(tmp_path, change, message):
    with pytest.raises(DabenchError, match=message):
        load_grid(write(tmp_path, {**BASE, **change}))


def test_unknown_grid_lists_named_grids():
    with pytest.raises(DabenchError, match="named grids: .*quickstart"):
        load_grid("quickstrat")


def test_duplicate_trials_are_refused(tmp_path):
    with pytest.raises(DabenchError, match="same trial twice"):
        load_grid(write(tmp_path, {**BASE, "methods": ["source-only", "source-only"]}))


def warm_grid(tmp_path, filename: str, **train):
    """Source-only, oracle and DDC warm-started from source-only, with these train settings."""
    raw = {
        **BASE,
        "methods": ["source-only", "oracle", "ddc"],
        "warm_start": "source-only",
        "train": {**BASE["train"], **train},
    }
    return load_grid(write(tmp_path, raw, filename))


def test_warm_start_links_adapting_trials_to_their_source_only_trial(tmp_path):
    grid = warm_grid(tmp_path, "grid.yaml", adapt_steps=2)
    by = {(t.method, t.seed): t for t in grid.trials}
    assert len(grid.stage_runs) == 2  # one source-only network per seed
    for seed in (0, 1):
        ddc, so = by[("ddc", seed)], by[("source-only", seed)]
        assert ddc.start.key == so.exports["train"] and ddc.train["steps"] == 2
        assert ddc.start.method == "source-only" and ddc.start.stage == "train"
        assert so.start is None and so.train["steps"] == 4
        assert by[("oracle", seed)].start is None  # the oracle does not opt in
        assert by[("oracle", seed)].exports == {}
    assert by[("ddc", 0)].start.key != by[("ddc", 1)].start.key
    plain = load_grid(write(tmp_path, {**BASE, "methods": ["source-only", "ddc"]}, "p.yaml"))
    assert {t.trial_id for t in plain.trials if t.method == "ddc"}.isdisjoint(
        {by[("ddc", s)].trial_id for s in (0, 1)}
    )
    with pytest.raises(DabenchError, match="none of the grid's methods can start from it"):
        load_grid(
            write(
                tmp_path,
                {**BASE, "methods": ["source-only", "oracle"], "warm_start": "source-only"},
                "w.yaml",
            )
        )
    # another adaptation budget changes the adapting trials only: the from-scratch ones
    # (and the network they export) are the same, so a store keeps them
    longer = warm_grid(tmp_path, "l.yaml", adapt_steps=3)
    again = {(t.method, t.seed): t for t in longer.trials}
    for seed in (0, 1):
        for method in ("source-only", "oracle"):
            assert again[(method, seed)].trial_id == by[(method, seed)].trial_id
        assert again[("ddc", seed)].trial_id != by[("ddc", seed)].trial_id
        assert again[("ddc", seed)].start.key == by[("ddc", seed)].start.key
    # adapt_lr: the adapting trials' own learning rate; the start and its key stay
    slower = warm_grid(tmp_path, "s.yaml", adapt_steps=2, adapt_lr=1e-4)
    slow = {(t.method, t.seed): t for t in slower.trials}
    assert slow[("ddc", 0)].train["lr"] == 1e-4 and slow[("oracle", 0)].train["lr"] == 1e-3
    assert slow[("source-only", 0)].trial_id == by[("source-only", 0)].trial_id
    assert slow[("ddc", 0)].start.key == by[("ddc", 0)].start.key
    assert slow[("ddc", 0)].trial_id != by[("ddc", 0)].trial_id
    with pytest.raises(DabenchError, match=r"train.adapt_lr must be >= 0 \(0 = lr\)"):
        load_grid(write(tmp_path, {**BASE, "train": {**BASE["train"], "adapt_lr": -1}}, "n.yaml"))


def test_a_method_with_another_head_gets_a_matched_warm_start(tmp_path):
    grid = load_grid(
        write(
            tmp_path,
            {
                **BASE,
                "seeds": [0],
                "methods": ["source-only", "ddc", "causal-interventions"],
                "warm_start": "source-only",
            },
        )
    )
    by = {t.method: t for t in grid.trials}
    runs = {s.key: s for s in grid.stage_runs}
    shared = runs[by["ddc"].start.key]
    matched = runs[by["causal-interventions"].start.key]
    assert shared.exported_by == by["source-only"].trial_id and shared.model["head"] == "2.5d"
    # causal interventions' card fixes a volumetric head: its own source-only start
    assert matched.exported_by is None and matched.method == "source-only"
    assert (matched.model["head"], matched.model["depth_bins"]) == ("volumetric", 16)
    assert by["causal-interventions"].model == matched.model


def test_per_method_resources(tmp_path):
    grid = load_grid(
        write(tmp_path, {**BASE, "resources": {"cpu": 2, "methods": {"oracle": {"gpu": 0.5}}}})
    )
    res = {t.method: t.resources for t in grid.trials}
    assert res["source-only"] == {"cpu": 2, "gpu": 0}
    assert res["oracle"] == {"cpu": 2, "gpu": 0.5}
    # A cluster's own resources pin a method to the machines that have them; Tune gets
    # them as custom_resources.
    grid = load_grid(
        write(tmp_path, {**BASE, "resources": {"methods": {"oracle": {"custom": {"big": 1}}}}})
    )
    res = {t.method: t.resources for t in grid.trials}
    assert res["oracle"] == {"cpu": 1, "gpu": 0, "custom": {"big": 1}}
    assert tune_resources(res["oracle"]) == {"cpu": 1, "custom_resources": {"big": 1}}
    assert tune_resources(res["source-only"]) == {"cpu": 1}
    with pytest.raises(DabenchError, match="resources given for .*'dann'"):
        load_grid(
            write(tmp_path, {**BASE, "resources": {"methods": {"dann": {"cpu": 1}}}}, "r.yaml")
        )


def test_artifact_keys_ignore_what_does_not_change_the_weights(tmp_path):
    base = {**BASE, "methods": ["source-only", "ddc"], "warm_start": "source-only"}
    key = load_grid(write(tmp_path, base)).stage_runs[0].key
    for change in (
        {"train": {**BASE["train"], "eval_every": 1, "threads": 2, "log_every": 1}},
        {"selection": "source-val"},
        {"pairs": [{"source": "synth-hand-clean", "target": "synth-hand-style"}]},
    ):
        grid = load_grid(write(tmp_path, {**base, **change}, "c.yaml"))
        assert grid.stage_runs[0].key == key, change  # source-only reads no target data
    for change in (
        {"train": {**BASE["train"], "lr": 0.5}},
        {"hparams": {"source-only": {"pose_weight": 2.0}}},
        {"model": {"backbone": "resnet50"}},
    ):
        grid = load_grid(write(tmp_path, {**base, **change}, "c.yaml"))
        assert grid.stage_runs[0].key != key, change


def test_the_grid_report_section_is_written_into_the_store(tmp_path):
    """A report is a function of the store: the runner copies the grid's report settings
    there, where bench.report.frames reads them."""
    from bench.report.frames import read_grid_reports
    from bench.runner import write_grid_report

    section = {"reference": "oracle", "paper_pairs": {"a → b": "A→B"}}
    grid = load_grid(write(tmp_path, {**BASE, "report": section}))
    assert grid.report == section
    write_grid_report(tmp_path, grid)
    assert read_grid_reports(tmp_path) == {"tiny": section}


def test_a_method_may_get_its_own_model(tmp_path):
    grid = load_grid(
        write(
            tmp_path,
            {**BASE, "model": {"backbone": "resnet18", "methods": {"oracle": {"neck": 0}}}},
        )
    )
    models = {t.method: t.model for t in grid.trials}
    assert models["oracle"]["neck"] == 0 and models["source-only"]["neck"] == 256
    assert models["oracle"]["backbone"] == models["source-only"]["backbone"] == "resnet18"


def test_a_pair_may_set_its_own_hyper_parameters(tmp_path):
    """A paper's per-task value (λ_attn = 100 for hands, 10 for bodies) is set on the pair;
    the pair's value wins over the grid's, the other pair keeps the grid's."""
    grid = {
        **BASE,
        "methods": ["mim-fcr-ar", "mim-fcr-ar/so", "mim-fcr-ar/wo-ar"],
        "seeds": [0],
        "model": {"backbone": "vit_tiny", "patch_size": 8},
        "hparams": {"mim-fcr-ar": {"attn_weight": 50.0, "alpha": 2.0}},
        "pairs": [
            BASE["pairs"][0],
            {
                "source": "synth-body-clean",
                "target": "synth-body-wild",
                "hparams": {"mim-fcr-ar": {"attn_weight": 10.0}},
            },
        ],
    }
    trials = load_grid(write(tmp_path, grid)).trials
    weights = {(t.label, t.source): (t.hparams["attn_weight"], t.hparams["alpha"]) for t in trials}
    assert weights[("mim-fcr-ar", "synth-hand-clean")] == (50.0, 2.0)
    assert weights[("mim-fcr-ar", "synth-body-clean")] == (10.0, 2.0)
    # the variant is what its name says: neither the grid nor the pair undoes its ablation
    assert weights[("mim-fcr-ar/wo-ar", "synth-body-clean")] == (0.0, 2.0)
    assert weights[("mim-fcr-ar/wo-ar", "synth-hand-clean")] == (0.0, 2.0)
    # the source-only setting uses no target data: it is a source-only row, not an adaptation
    categories = {t.label: t.category for t in trials}
    assert categories == {
        "mim-fcr-ar": "domain-adaptation",
        "mim-fcr-ar/so": "source-only",
        "mim-fcr-ar/wo-ar": "domain-adaptation",
    }


def test_a_method_may_get_its_own_training_settings(tmp_path):
    """``train.methods``: a row's own learning rate and budget (a ViT among CNN rows)."""
    grid = {**BASE, "train": {**BASE["train"], "methods": {"oracle": {"lr": 0.5, "steps": 6}}}}
    trials = {t.method: t for t in load_grid(write(tmp_path, grid)).trials}
    assert (trials["oracle"].train["lr"], trials["oracle"].train["steps"]) == (0.5, 6)
    assert trials["source-only"].train["steps"] == 4
    assert trials["source-only"].train["lr"] != 0.5
