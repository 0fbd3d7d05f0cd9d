"""Making sure a node's shards exist before it trains: synthetic shards are generated
(once, under a file lock, so concurrent trials never generate the same shard twice) and
shards made with other data settings are refused, never silently used. Real datasets are
converted by the user; their absence is an error raised by :func:`~bench.data.pairs.pair_shards`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from bench.atomic import file_lock
from bench.data.cards import load_dataset_card
from bench.data.pairs import backgrounds_card
from bench.errors import ShardMismatchError
from bench.paths import shard_root


def ensure_shards(
    source: str,
    target: str,
    data: Mapping[str, int],
    root: Path | None = None,
    *,
    backgrounds: bool = False,
    extras: Sequence[str] = (),
    progress: bool = False,
) -> None:
    """Generate the pair's synthetic shards (and the background images, and the other
    datasets a method reads beside the pair, when asked) if they are missing."""
    from bench.data.synthetic.build import synthesize

    root = root or shard_root()
    backgrounds_cards = [backgrounds_card(source, target)] if backgrounds else []
    cards = [source, target, *backgrounds_cards, *extras]
    for card_name in cards:
        if load_dataset_card(card_name).synthetic is None:
            continue
        with file_lock(root / ".locks" / f"{card_name}.lock"):
            try:
                synthesize(
                    card_name,
                    root,
                    n_train=data["n_train"],
                    n_test=data["n_test"],
                    size=data["size"],
                    seed=data["seed"],
                    progress=progress,
                )
            except ShardMismatchError as exc:
                raise ShardMismatchError(
                    f"{exc}. The grid asks for n_train={data['n_train']}, "
                    f"n_test={data['n_test']}, size={data['size']}, seed={data['seed']}: "
                    f"keep grids with other data settings in another data root "
                    f"($DABENCH_DATA), or regenerate with `dabench data synth {card_name} "
                    "--overwrite` and those settings"
                ) from exc


def missing_real_shards(
    needed: Mapping[str, set[str]], root: Path | None = None
) -> list[tuple[str, list[str]]]:
    """The real datasets among ``needed`` (card → splits) whose shards are not under
    ``root`` yet, with the missing splits: they must be converted from a raw copy first
    (synthetic ones are generated when a run needs them)."""
    root = root or shard_root()
    missing = []
    for card in sorted(needed):
        if load_dataset_card(card).synthetic is not None:
            continue
        splits = sorted(s for s in needed[card] if not (root / card / f"{s}.h5").exists())
        if splits:
            missing.append((card, splits))
    return missing
