"""The ``dabench`` command line. Parses arguments and hands over; no logic lives here."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.errors import DabenchError


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


def _data_list(args: argparse.Namespace) -> None:
    from tabulate import tabulate

    from bench.data.show import catalogue

    rows = catalogue(args.root)
    print(tabulate(rows, headers="keys", tablefmt="github"))


def _data_show(args: argparse.Namespace) -> None:
    from bench.data.show import render_sample, resolve_shard

    print(render_sample(resolve_shard(args.shard), args.index, args.out))


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

    lst = dsub.add_parser("list", help="every dataset card and which shards exist")
    lst.add_argument("--root", type=Path, default=None, help="shard root to inspect")
    lst.set_defaults(func=_data_list)

    show = dsub.add_parser("show", help="draw one sample with its skeleton and mask")
    show.add_argument("shard", help="a shard file, or CARD/SPLIT under the shard root")
    show.add_argument("--index", type=int, default=0, help="sample index")
    show.add_argument("--out", type=Path, required=True, help="PNG file to write")
    show.set_defaults(func=_data_show)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
