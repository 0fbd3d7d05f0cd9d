"""The ``dabench`` command line. Parses arguments and hands over; no logic lives here."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bench.errors import DabenchError

if TYPE_CHECKING:  # the CLI imports its commands' modules lazily
    from bench.grid import Grid


def _data_synth(args: argparse.Namespace) -> None:
    from bench.data.synthetic.build import synthesize

    paths = synthesize(
        args.cards,
        args.out,
        n_train=args.n_train,
        n_test=args.n_test,
        size=args.size,
        seed=args.seed,
        overwrite=args.overwrite,
        workers=args.workers,
        progress=not args.quiet,
    )
    for p in paths:
        print(p)


def _data_convert(args: argparse.Namespace) -> None:
    from bench.data.convert import convert

    paths = convert(
        args.card,
        args.raw_dir,
        args.out,
        splits=args.split,
        size=args.size,
        overwrite=args.overwrite,
        workers=args.workers,
        progress=not args.quiet,
    )
    for p in paths:
        print(p)


def _data_list(args: argparse.Namespace) -> None:
    from tabulate import tabulate

    from bench.data.show import catalogue

    rows = catalogue(args.root)
    print(tabulate(rows, headers="keys", tablefmt="github"))


def _data_show(args: argparse.Namespace) -> None:
    from bench.data.show import render_sample, resolve_shard

    print(render_sample(resolve_shard(args.shard), args.index, args.out))


def _calibrate(args: argparse.Namespace) -> None:
    from bench.calibration import QUICKSTART_COST, calibrate

    if args.rounds <= 0:
        raise DabenchError(f"--rounds must be a positive integer, got {args.rounds}")
    cal = calibrate(rounds=args.rounds)
    print(
        f"calibration: {cal} — bare regnetx_002 training step, 1 thread, 64 px, batch 32\n"
        f"`dabench run quickstart` (cost ≈ {QUICKSTART_COST:,.0f} = wall s × samples/s) should "
        f"take about {cal.predict() / 60:.0f} min here, data generation included"
    )


def _run(args: argparse.Namespace) -> None:
    from bench.progress import duration, time_breakdown
    from bench.report.build import FORMATS, write_report
    from bench.runner import run_grid

    start = time.perf_counter()
    formats = [] if args.report.strip() == "none" else _list(args.report)
    bad = sorted(set(formats) - set(FORMATS))
    if bad or (not formats and args.report.strip() != "none"):
        # refused before hours of training, not after
        raise DabenchError(
            f"--report: unknown format(s) {bad}; valid: {', '.join(FORMATS)}, or none"
        )
    grid, results = _grid_results(args)
    summary = run_grid(
        grid,
        results,
        executor=args.executor,
        address=args.address,
        data_root=args.data,
        progress=not args.quiet,
        check_resources=not args.no_resource_check,
        trackers=tuple(args.tracker),
    )
    report = write_report(results, formats=formats) if formats else "not written (--report none)"
    failed = len(summary.failed)
    wall = time.perf_counter() - start
    print(
        f"{summary.total} trials ({summary.skipped} skipped, {summary.ran} run, "
        f"{failed} failed), {summary.stage_runs} stage run(s) computed in "
        f"{duration(wall)}; report: {report}"
    )
    if summary.ran:
        timings = [r["timings"] for r in summary.ran_records]
        print(f"time: {time_breakdown(wall, summary.timings, timings)}")
    if failed:
        raise SystemExit(1)


def _grid_show(args: argparse.Namespace) -> None:
    from tabulate import tabulate

    from bench.grid import load_grid

    grid = load_grid(args.grid)
    print(
        f"grid {grid.name} ({grid.path}): {len(grid.stage_runs)} stage run(s), "
        f"{len(grid.trials)} trials, selection {grid.selection}"
    )
    if grid.stage_runs:
        print("\nStage runs (stored artifacts other nodes start from; each computed once):")
        rows = [
            {
                "artifact": s.key,
                "method": s.label,
                "stages": ", ".join(s.stages),
                "source": s.source,
                "target": s.target,
                "seed": s.seed,
                "head": s.model["head"],
                "starts from": s.start.key if s.start else "",
                "made by": f"trial {s.exported_by}" if s.exported_by else "itself",
            }
            for s in grid.stage_runs
        ]
        print(tabulate(rows, headers="keys", tablefmt="github"))
        print("\nTrials:")
    also = any(t.also_test for t in grid.trials)  # the pairs' also_test datasets
    rows = [
        {
            "trial": t.trial_id,
            "method": t.label,
            "source": t.source,
            "target": t.target,
            "seed": t.seed,
            "steps": t.train["steps"],
            "stages": ", ".join(t.stages),
            "starts from": t.start.key if t.start else "",
            "backbone": t.model["backbone"],
        }
        | ({"also tested on": ", ".join(t.also_test)} if also else {})
        for t in grid.trials
    ]
    print(tabulate(rows, headers="keys", tablefmt="github"))
    _print_missing_shards(grid)


def _print_missing_shards(grid: Grid) -> None:
    """The real datasets the grid reads whose shards are not converted yet, with the
    command that converts each."""
    from bench.data.convert import CONVERTERS, get_converter
    from bench.data.pairs import backgrounds_card
    from bench.data.provision import missing_real_shards
    from bench.paths import shard_root
    from bench.trial import node_datasets

    needed: dict[str, set[str]] = {}
    for node in (*grid.trials, *grid.stage_runs):
        backgrounds, extras, also = node_datasets(node)
        for card in (node.source, node.target):
            needed.setdefault(card, set()).update(("train", "test"))
        if backgrounds:
            needed.setdefault(backgrounds_card(node.source, node.target), set()).add("train")
        for card in extras:
            needed.setdefault(card, set()).add("train")
        for card in also:
            needed.setdefault(card, set()).add("test")
    missing = missing_real_shards(needed)
    if not missing:
        return
    get_converter("lsp")  # registers every converter
    size = grid.trials[0].data["size"]
    print(f"\nShards to convert first (under {shard_root()}; nothing is downloaded):")
    for card, splits in missing:
        how = f"no converter yet (datasets/{card}.yaml says where it stands)"
        if card in CONVERTERS:
            # only the splits the grid reads: a test-only dataset need not convert its train
            only = set(CONVERTERS[card].splits) - set(splits)
            picks = "".join(f" --split {s}" for s in splits) if only else ""
            how = f"dabench data convert {card} RAW_DIR{picks} --size {size}"
        print(f"  {card} ({', '.join(splits)}): {how}")


def _grid_results(args: argparse.Namespace) -> tuple[Grid, Path]:
    """The grid ``args.grid`` names and its result store (``--results`` or the default)."""
    from bench.grid import load_grid
    from bench.paths import results_root

    grid = load_grid(args.grid)
    results = args.results or results_root() / grid.name
    return grid, results


def _grid_status(args: argparse.Namespace) -> None:
    from collections import Counter

    from tabulate import tabulate

    from bench.status import STATES, grid_status

    grid, results = _grid_results(args)
    statuses = grid_status(grid, results)
    rows = [
        {
            "trial": s.trial_id,
            "method": s.label,
            "source": s.source,
            "target": s.target,
            "seed": s.seed,
            "state": s.state,
            "message": s.message,
        }
        for s in statuses
    ]
    print(tabulate(rows, headers="keys", tablefmt="github"))
    counts = Counter(s.state for s in statuses)
    print(
        f"\ngrid {grid.name} in {results}: {len(statuses)} trials — "
        + ", ".join(f"{counts[state]} {state}" for state in STATES)
        + " (interrupted: a checkpoint, no record and no process running it — the next run "
        "resumes it; failed trials run again)"
    )


def _grid_clean(args: argparse.Namespace) -> None:
    from bench.status import clean_failed

    grid, results = _grid_results(args)
    if not args.failed:
        raise DabenchError("say what to remove: --failed (the only choice)")
    removed = clean_failed(grid, results)
    for s in removed:
        print(f"removed {s.trial_id} ({s.label} {s.source} → {s.target} seed {s.seed})")
    print(f"{len(removed)} failed trial(s) removed from {results}")


def _report(args: argparse.Namespace) -> None:
    from bench.report.build import write_report

    out = write_report(
        args.results,
        out=args.out,
        formats=_list(args.format),
        rule=args.selection,
        metrics=_list(args.metrics) if args.metrics else None,
        papers=args.papers,
    )
    print(out)


def _list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dabench",
        description="Benchmark harness for unsupervised domain adaptation of hand and body pose.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = sub.add_parser("data", help="generate, list and inspect dataset shards")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    synth = dsub.add_parser("synth", help="generate the shards of synthetic dataset cards")
    synth.add_argument(
        "cards",
        nargs="+",
        metavar="CARD",
        help="dataset card(s), e.g. synth-hand-clean (see `dabench data list`)",
    )
    synth.add_argument(
        "--out",
        type=Path,
        default=None,
        help="shard root (default: $DABENCH_DATA or datasets/cache)",
    )
    synth.add_argument("--n-train", type=int, default=None, help="training samples")
    synth.add_argument("--n-test", type=int, default=None, help="test samples")
    synth.add_argument("--size", type=int, default=None, help="image side in pixels")
    synth.add_argument("--seed", type=int, default=None, help="generator seed")
    synth.add_argument(
        "--overwrite", action="store_true", help="replace shards made with different settings"
    )
    synth.add_argument(
        "--workers", type=int, default=None, help="generator processes (default: up to 2)"
    )
    synth.add_argument("--quiet", action="store_true", help="no progress bar")
    synth.set_defaults(func=_data_synth)

    conv = dsub.add_parser(
        "convert", help="convert a real dataset's local raw copy into shards (see its card)"
    )
    conv.add_argument("card", metavar="CARD", help="a real dataset card, e.g. lsp")
    conv.add_argument("raw_dir", type=Path, metavar="RAW_DIR", help="the raw copy's folder")
    conv.add_argument("--split", action="append", default=None, help="only this split (repeatable)")
    conv.add_argument(
        "--size", type=int, default=256, help="side of the square crops in pixels (256)"
    )
    conv.add_argument("--out", type=Path, default=None, help="shard root (default: $DABENCH_DATA)")
    conv.add_argument(
        "--overwrite", action="store_true", help="replace shards made from other raw files"
    )
    conv.add_argument("--workers", type=int, default=None, help="processes (default: up to 2)")
    conv.add_argument("--quiet", action="store_true", help="no progress bar")
    conv.set_defaults(func=_data_convert)

    lst = dsub.add_parser("list", help="every dataset card and which shards exist")
    lst.add_argument("--root", type=Path, default=None, help="shard root to inspect")
    lst.set_defaults(func=_data_list)

    show = dsub.add_parser("show", help="draw one sample with its skeleton and mask")
    show.add_argument("shard", help="a shard file, or CARD/SPLIT under the shard root")
    show.add_argument("--index", type=int, default=0, help="sample index")
    show.add_argument("--out", type=Path, required=True, help="PNG file to write")
    show.set_defaults(func=_data_show)

    run = sub.add_parser("run", help="run a grid (named, or a path to a grid YAML)")
    run.add_argument("grid", help="named grid (e.g. quickstart) or a grid YAML file")
    run.add_argument(
        "--results", type=Path, default=None, help="result store (default: results/<grid name>)"
    )
    run.add_argument(
        "--executor",
        choices=("ray", "local"),
        default="ray",
        help="Ray Tune trials (default) or in-process, one after another",
    )
    run.add_argument(
        "--address",
        default=None,
        help="Ray cluster address (e.g. auto); default starts a local Ray",
    )
    run.add_argument(
        "--data",
        type=Path,
        default=None,
        help="shard root (default: $DABENCH_DATA or datasets/cache); on a cluster, a path "
        "every node mounts",
    )
    run.add_argument(
        "--no-resource-check",
        action="store_true",
        help="do not refuse trials that no current node of the cluster can hold (for "
        "clusters that add nodes on demand)",
    )
    run.add_argument(
        "--tracker",
        action="append",
        default=[],
        choices=("tensorboard", "mlflow"),
        help="show the trials' curves live in TensorBoard (event files under "
        "RESULTS/_ray) or MLflow ($MLFLOW_TRACKING_URI, default a file store in "
        "RESULTS/_mlruns); may be given twice",
    )
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.add_argument(
        "--report",
        default="md,tex,csv",
        help="formats of the report written after the run (RESULTS/report), or none",
    )
    run.set_defaults(func=_run)

    cal = sub.add_parser(
        "calibrate",
        help="measure this machine's calibration figure and predict the quickstart's time",
    )
    cal.add_argument("--rounds", type=int, default=5, help="timed rounds of 10 steps")
    cal.set_defaults(func=_calibrate)

    grid = sub.add_parser("grid", help="inspect grids")
    gsub = grid.add_subparsers(dest="grid_command", required=True, metavar="ACTION")
    gshow = gsub.add_parser("show", help="print the trials a grid expands to")
    gshow.add_argument("grid", help="named grid or grid YAML file")
    gshow.set_defaults(func=_grid_show)
    gstatus = gsub.add_parser(
        "status", help="each trial of a grid: ok, diverged, failed, running, interrupted or missing"
    )
    gstatus.add_argument("grid", help="named grid or grid YAML file")
    gstatus.add_argument(
        "--results", type=Path, default=None, help="result store (default: results/<grid name>)"
    )
    gstatus.set_defaults(func=_grid_status)
    gclean = gsub.add_parser("clean", help="remove what must be redone")
    gclean.add_argument("grid", help="named grid or grid YAML file")
    gclean.add_argument(
        "--results", type=Path, default=None, help="result store (default: results/<grid name>)"
    )
    gclean.add_argument("--failed", action="store_true", help="the failed trials")
    gclean.set_defaults(func=_grid_clean)

    report = sub.add_parser(
        "report", help="write a report folder (markdown, LaTeX, CSV, figures) from a result store"
    )
    report.add_argument("results", type=Path, help="result store directory")
    report.add_argument(
        "--format", default="md,tex,csv", help="comma-separated: md, tex, csv (default: all)"
    )
    report.add_argument(
        "--selection",
        default=None,
        help="model-selection rule: last, source-val or target-oracle (default: the grid's)",
    )
    report.add_argument(
        "--metrics",
        default=None,
        help="comma-separated metric names (default: mpjpe,pa_mpjpe,pck2d_005)",
    )
    report.add_argument(
        "--out", type=Path, default=None, help="report folder (default: RESULTS/report)"
    )
    papers = report.add_mutually_exclusive_group()
    papers.add_argument(
        "--papers",
        dest="papers",
        action="store_const",
        const=True,
        default=None,
        help="require the papers' numbers beside ours (an error when no pair maps to a paper)",
    )
    papers.add_argument(
        "--no-papers", dest="papers", action="store_const", const=False, help="leave them out"
    )
    report.set_defaults(func=_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except DabenchError as exc:
        print(f"dabench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dabench: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return 0


if __name__ == "__main__":
    sys.exit(main())
