"""The report's figures: both files written whole and reproducibly, one panel per pair,
legends in display titles, means over seeds, and errors that say what is available."""

from __future__ import annotations

import itertools
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from bench.errors import DabenchError
from bench.report import plots

STORE = Path(__file__).parents[1] / "reports/quickstart/records"

METHODS = {"source-only": "source-only", "ddc": "domain-adaptation"}
PAIRS = ["hand-clean → hand-wild", "body-clean → body-wild"]
SEEDS = [0, 1]
STEPS = [10, 20, 30]
TITLES = {"ddc": "Deep Domain Confusion"}


def _ids():
    for (label, category), pair, seed in itertools.product(METHODS.items(), PAIRS, SEEDS):
        yield {
            "trial_id": f"{label}-{pair[:4]}-{seed}",
            "label": label,
            "category": category,
            "pair": pair,
            "seed": seed,
            "status": "ok",
        }


def _value(ids: dict, *salt: object) -> float:
    # Distinct per method, pair and seed, so that a mean over seeds is a real average.
    base = 10.0 * (1 + list(METHODS).index(ids["label"])) + PAIRS.index(ids["pair"])
    return base + ids["seed"] + 0.1 * len(str(salt))


def _curves(splits=("target_test", "source_val"), steps=STEPS) -> pd.DataFrame:
    rows = [
        {**ids, "step": step, "stage": "train", "split": split, "metric": metric}
        | {"value": _value(ids, split, metric) - step / 10}
        for ids in _ids()
        for step, split, metric in itertools.product(steps, splits, ["mpjpe", "pck2d_005"])
    ]
    return pd.DataFrame(rows)


def _losses() -> pd.DataFrame:
    rows = [
        {**ids, "step": step, "stage": "train", "term": term, "value": _value(ids, term) / step}
        for ids in _ids()
        for step, term in itertools.product(STEPS, ["pose", "lr"])
    ]
    return pd.DataFrame(rows)


GROUP_ORDER = ["all", "mcp", "pip", "dip", "tip"]


def _groups() -> pd.DataFrame:
    rows = [
        {**ids, "rule": "last", "split": split, "group": group, "metric": "mpjpe"}
        | {"value": _value(ids, group)}
        for ids in _ids()
        for split, group in itertools.product(["target_test", "source_val"], GROUP_ORDER)
    ]
    return pd.DataFrame(rows)


def _gap(rule: str | None = "last") -> pd.DataFrame:
    rows = [
        {"label": ids["label"], "pair": ids["pair"], "seed": ids["seed"], "gap": -ids["seed"]}
        for ids in _ids()
    ]
    gap = pd.DataFrame(rows)
    if rule is not None:
        gap.attrs["rule"] = rule
    return gap


def _legend_texts(fig: Figure) -> list[str]:
    assert len(fig.legends) == 1
    return [t.get_text() for t in fig.legends[0].texts]


def test_files_are_written_whole_and_byte_for_byte_reproducible(tmp_path):
    # One pair, one panel: a whole figure with legend and band, at half the cost of two.
    losses = _losses().query("pair == @PAIRS[0]")
    a = plots.loss_curves(losses, "pose", tmp_path / "a" / "loss_pose", TITLES)
    b = plots.loss_curves(losses, "pose", tmp_path / "b" / "loss_pose", TITLES)
    assert a == [tmp_path / "a/loss_pose.png", tmp_path / "a/loss_pose.pdf"]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["loss_pose.pdf", "loss_pose.png"]
    png, pdf = a[0].read_bytes(), a[1].read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and pdf.startswith(b"%PDF")
    assert [p.read_bytes() for p in b] == [png, pdf]
    # Both saves may fall within one second, so the stamps must be absent, not just equal.
    assert b"Software" not in png and b"tIME" not in png
    for key in (b"CreationDate", b"Producer", b"Creator", b"Matplotlib"):
        assert key not in pdf


def test_a_dot_in_the_stem_is_kept(tmp_path):
    paths = plots.save_figure(Figure(figsize=(1, 1)), tmp_path / "loss_0.5", dpi=20)
    assert [p.name for p in paths] == ["loss_0.5.png", "loss_0.5.pdf"]
    assert all(p.exists() for p in paths)


def test_learning_curves_panels_legend_and_mean_over_seeds():
    fig = plots._learning_curves_figure(_curves(), "mpjpe", TITLES, metric_title="MPJPE (mm)")
    axes = fig.axes
    assert len(axes) == len(PAIRS) * 2  # pairs × (target_test, source_val)
    titles = [ax.get_title() for ax in axes]
    assert titles[0].endswith("target_test") and titles[-1].endswith("source_val")
    assert {t.split(" · ")[0] for t in titles} == set(PAIRS)
    assert axes[0].get_ylabel() == "MPJPE (mm)"
    # Source only first (category order), titles replace labels, the rest keep their label.
    assert _legend_texts(fig) == ["source-only", "Deep Domain Confusion"]
    line = axes[0].lines[0]
    assert line.get_marker() == "o"
    sub = _curves().query("metric == 'mpjpe' and split == 'target_test' and label == 'source-only'")
    pair = titles[0].split(" · ")[0]
    mean = sub[sub["pair"] == pair].groupby("step")["value"].mean()
    np.testing.assert_allclose(line.get_ydata(), mean.to_numpy())
    assert axes[0].collections, "no confidence band drawn"


def test_learning_curves_without_source_val_have_one_row():
    fig = plots._learning_curves_figure(_curves(splits=("target_test",)), "mpjpe")
    assert len(fig.axes) == len(PAIRS)


def test_a_single_evaluation_per_trial_still_shows_a_point():
    fig = plots._learning_curves_figure(_curves(steps=[600]), "mpjpe")
    line = fig.axes[0].lines[0]
    assert line.get_marker() == "o" and len(line.get_xdata()) == 1


def test_ci95_is_a_student_t_interval():
    low, high = plots._ci95(np.array([1.0, 3.0]))
    # mean 2, standard error 1, t(0.975, df=1) = 12.706
    assert low == pytest.approx(2 - 12.7062, abs=1e-3)
    assert high == pytest.approx(2 + 12.7062, abs=1e-3)
    assert plots._ci95(np.array([5.0])) == (5.0, 5.0)


def test_loss_curves_one_panel_per_pair():
    fig = plots._loss_curves_figure(_losses(), "pose", TITLES)
    assert sorted(ax.get_title() for ax in fig.axes) == sorted(PAIRS)
    assert "pose" in fig.axes[0].get_ylabel()
    assert _legend_texts(fig) == ["source-only", "Deep Domain Confusion"]


def test_group_bars_put_all_last_and_keep_first_seen_order():
    fig = plots._group_bars_figure(_groups(), "mpjpe", "target_test", TITLES)
    assert len(fig.axes) == len(PAIRS)
    for ax in fig.axes:
        assert [t.get_text() for t in ax.get_xticklabels()] == ["mcp", "pip", "dip", "tip", "all"]
    assert _legend_texts(fig) == ["source-only", "Deep Domain Confusion"]


def test_selection_gap_axis_names_the_rule_and_marks_zero():
    fig = plots._selection_gap_figure(_gap("source-val"), TITLES, metric_title="MPJPE")
    assert len(fig.axes) == len(PAIRS)
    ax = fig.axes[0]
    assert "source-val" in ax.get_xlabel() and "MPJPE" in ax.get_xlabel()
    # Without a category column, methods are in label order (ddc < source-only).
    assert [t.get_text() for t in ax.get_yticklabels()] == ["Deep Domain Confusion", "source-only"]
    assert any(list(line.get_xdata()) == [0.0, 0.0] for line in ax.lines)
    bars = sorted(ax.patches, key=lambda p: p.get_y())
    assert [b.get_width() for b in bars] == pytest.approx([-0.5, -0.5])  # mean of 0 and -1
    default = plots._selection_gap_figure(_gap(rule=None))
    assert "chosen rule" in default.axes[0].get_xlabel()


@pytest.mark.parametrize(
    ("call", "needles"),
    [
        (lambda p: plots.learning_curves(_curves(), "auc", p), ["'auc'", "mpjpe", "pck2d_005"]),
        (lambda p: plots.loss_curves(_losses(), "mmd", p), ["'mmd'", "lr", "pose"]),
        (lambda p: plots.group_bars(_groups(), "pck", "target_test", p), ["'pck'", "mpjpe"]),
        (
            lambda p: plots.group_bars(_groups(), "mpjpe", "target_val", p),
            ["'target_val'", "source_val", "target_test"],
        ),
        (lambda p: plots.selection_gap(_gap().iloc[:0], p), ["no selection gaps"]),
        (lambda p: plots.selection_gap(_gap().drop(columns="gap"), p), ["gap"]),
    ],
)
def test_missing_input_names_what_is_available(tmp_path, call, needles):
    with pytest.raises(DabenchError) as err:
        call(tmp_path / "figure")
    for needle in needles:
        assert needle in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_leaves_no_file(tmp_path, monkeypatch):
    real = Figure.savefig

    def fail_on_pdf(self, fname, *args, **kwargs):
        if kwargs.get("format") == "pdf":
            raise OSError("disk full")
        return real(self, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", fail_on_pdf)
    with pytest.raises(OSError, match="disk full"):
        plots.loss_curves(_losses(), "pose", tmp_path / "loss_pose")
    # Not even the PNG, which was drawn before the PDF failed.
    assert list(tmp_path.iterdir()) == []


def test_the_callers_style_is_left_alone(tmp_path):
    before = dict(matplotlib.rcParams)
    plots._group_bars_figure(_groups(), "mpjpe", "source_val")
    assert dict(matplotlib.rcParams) == before


def test_every_plot_renders_from_the_quickstart_records():
    from bench.report.frames import open_store

    store = open_store(STORE)
    trials = store.trials
    gap = trials[["label", "category", "pair", "seed"]].assign(
        gap=trials["target-oracle:target_test/mpjpe"] - trials["last:target_test/mpjpe"]
    )
    gap.attrs["rule"] = "last"
    figures = [
        plots._learning_curves_figure(store.curves, "mpjpe"),
        plots._loss_curves_figure(store.losses, "pose"),
        plots._group_bars_figure(store.groups, "mpjpe", "target_test"),
        plots._selection_gap_figure(gap),
    ]
    n_pairs = store.trials["pair"].nunique()
    # Saving is covered above (and costs seconds); the data handling is what real records
    # could break.
    for fig in figures:
        assert len(fig.axes) % n_pairs == 0
        assert all(ax.lines or ax.patches for ax in fig.axes)
