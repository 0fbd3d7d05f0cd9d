"""What a training stage reads, as view objects: each checks that a source→target pair of
shards can provide it (fields and structure) before any compute, and delivers its batches.

Sampling is a pure function of (seed, epoch, batch): epoch ``e`` visits a view's units
(samples, frame-pair anchors or (seq, frame) groups) in the order
``np.random.default_rng([seed, e]).permutation(units)`` and drops its last incomplete
batch; anything else drawn for a batch (a pair's stride, a group's views) comes from
``np.random.default_rng([seed, e, batch])``. A stream's state is the number of batches its
caller consumed, so a stream restored from it continues bitwise-identically.

The torch-free grid parser builds stage declarations from this module, so torch, h5py and
`bench.data.shards` are imported inside the functions that read data, never at import.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from bench.errors import DabenchError

if TYPE_CHECKING:
    import torch

    from bench.data.pairs import PairShards

# bench.data.pairs.DOMAINS, repeated: importing that module would import torch.
_DOMAINS = ("source", "target")
# Names a view adds to the shard's fields in its batches.
_RESERVED = ("index", "stride")
# Fields that are pose labels, and what a labelled view delivers with them (defined here,
# not in bench.data.pairs, which imports torch).
_POSE_LABELS = ("kp2d", "kp3d", "vis")
LABELS = ("images", *_POSE_LABELS, "K")


# -- views -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class View:
    """One kind of data a training stage reads.

    A view checks a pair before any compute (`check`), says how many sampling units one
    epoch has (`units`; the trainer turns a stage length in epochs into steps with it) and
    delivers batches (`stream`). ``source_indices`` are the rows of the source training shard
    a stage may train on (the rest is held out for source-validation model selection):
    views on the source domain sample only those rows, target views ignore them.
    """

    kind: ClassVar[str] = "view"

    def describe(self) -> str:
        """What the view reads, in words, e.g. "target frame pairs (stride 5–15)"."""
        raise NotImplementedError

    def check(self, pair: PairShards) -> list[str]:
        """The problems that keep ``pair`` from feeding this view; [] if there are none."""
        role = self._role()
        if role not in pair.infos:
            return [f"{self.describe()}: {self._absent(pair)}"]
        present = set(pair.info(role).fields)
        missing = [f for f in self._required() if f not in present]
        if missing:
            return [f"{self.describe()}: {self._card(pair)} has no {', '.join(missing)}"]
        problem = self._structure_problem(pair)
        return [f"{self.describe()}: {problem}"] if problem else []

    def units(self, pair: PairShards, source_indices: np.ndarray | None = None) -> int:
        """The number of sampling units in one epoch."""
        return self._sampler(pair, source_indices).num_units

    def stream(
        self,
        pair: PairShards,
        batch_size: int,
        seed: int,
        *,
        source_indices: np.ndarray | None = None,
        artifacts: Mapping[str, Path] | None = None,
        workers: int = 0,
    ) -> BatchStream:
        """Batches of ``batch_size`` units forever; ``artifacts`` maps earlier stages to the
        directories of what they produced; ``workers`` > 0 reads in that many processes."""
        sampler = self._sampler(pair, source_indices)
        return BatchStream(
            self._reader(pair, artifacts),
            sampler,
            batch_size,
            seed,
            workers=workers,
            what=f"{self.describe()}: {self._path(pair)}",
        )

    # -- what subclasses say --------------------------------------------------------------

    def _role(self) -> str:
        """The key of the shard this view reads in `PairShards.infos`."""
        return f"{_domain(self)}_train"

    def _path(self, pair: PairShards) -> Path:
        return pair.info(self._role()).path

    def _card(self, pair: PairShards) -> str:
        return pair.card(_domain(self))

    def _absent(self, pair: PairShards) -> str:
        return f"{self._card(pair)} has no training shard"

    def _fields(self) -> tuple[str, ...]:
        """The shard fields each delivered row carries."""
        raise NotImplementedError

    def _required(self) -> tuple[str, ...]:
        """The fields the shard must hold: the delivered ones and those grouping rows."""
        return self._fields()

    def _structure_problem(self, pair: PairShards) -> str | None:
        """Why the shard's rows cannot form this view's units (fields are present)."""
        return None

    def _rows(self, pair: PairShards, source_indices: np.ndarray | None) -> np.ndarray:
        """The shard rows a stage may sample, ascending."""
        n = pair.info(self._role()).num_samples
        if _domain(self) != "source" or source_indices is None:
            return np.arange(n, dtype=np.int64)
        return _valid_rows(source_indices, n, self._path(pair))

    def _index(self, pair: PairShards, rows: np.ndarray) -> _Sampler:
        return _RowSampler(rows)

    def _sampler(self, pair: PairShards, source_indices: np.ndarray | None) -> _Sampler:
        problems = self.check(pair)
        if problems:
            raise DabenchError(f"{pair.source} → {pair.target}: " + "; ".join(problems))
        return self._index(pair, self._rows(pair, source_indices))

    def _reader(self, pair: PairShards, artifacts: Mapping[str, Path] | None) -> Any:
        """A map-style dataset over the shard's rows (sample i = stored row i)."""
        from bench.data.shards import ShardDataset

        return ShardDataset(self._path(pair), fields=self._fields())


@dataclass(frozen=True)
class Labelled(View):
    """Labelled training images of a domain (``Labelled("target")`` feeds the oracle)."""

    kind: ClassVar[str] = "labelled"
    domain: str = "source"

    def __post_init__(self) -> None:
        _check_domain(self)

    def describe(self) -> str:
        return f"labelled {self.domain} images"

    def _fields(self) -> tuple[str, ...]:
        return LABELS


@dataclass(frozen=True)
class Images(View):
    """Training images of a domain, without labels; ``fields`` may add unlabelled data
    that comes with an image (its intrinsics ``K``, a ``mask``), never a pose label."""

    kind: ClassVar[str] = "images"
    domain: str = "target"
    fields: tuple[str, ...] = ("images",)

    def __post_init__(self) -> None:
        _check_domain(self)
        _check_fields(self)
        labels = [f for f in self.fields if f in _POSE_LABELS]
        if labels:
            raise DabenchError(
                f"Images: {', '.join(labels)} is a pose label; the labelled view is "
                f"Labelled({self.domain!r})"
            )

    def describe(self) -> str:
        extra = [f for f in self.fields if f != "images"]
        return f"{self.domain} images" + (f" with {', '.join(extra)}" if extra else "")

    def _fields(self) -> tuple[str, ...]:
        return self.fields


@dataclass(frozen=True)
class Masked(View):
    """Training images with their foreground masks (and labels if ``labels``)."""

    kind: ClassVar[str] = "masked"
    domain: str = "target"
    labels: bool = False

    def __post_init__(self) -> None:
        _check_domain(self)

    def describe(self) -> str:
        return f"{'labelled ' if self.labels else ''}{self.domain} images with masks"

    def _fields(self) -> tuple[str, ...]:
        if not self.labels:
            return ("images", "masks")
        return (*LABELS, "masks")


@dataclass(frozen=True)
class Backgrounds(View):
    """Unconstrained images without the subject (synth-backgrounds for a synthetic pair,
    imagenet-val-backgrounds for a real one: :func:`bench.data.pairs.backgrounds_card`)."""

    kind: ClassVar[str] = "backgrounds"

    def describe(self) -> str:
        return "background images"

    def _role(self) -> str:
        return "backgrounds"

    def _card(self, pair: PairShards) -> str:
        from bench.data.pairs import backgrounds_card

        return backgrounds_card(pair.source, pair.target)

    def _absent(self, pair: PairShards) -> str:
        from bench.data.pairs import SYNTH_BACKGROUNDS

        card = self._card(pair)
        make = (
            f"dabench data synth {card}"
            if card == SYNTH_BACKGROUNDS
            else f"dabench data convert {card} RAW_DIR"
        )
        return f"there is no {card} shard (run `{make}`)"

    def _fields(self) -> tuple[str, ...]:
        return ("images",)


@dataclass(frozen=True)
class Extra(View):
    """Training images of another dataset, named by its card: data a method reads beside
    the pair's (Mask as Supervision's single-view in-the-wild images with masks, mixed into
    multi-view training). Its joint set and image size must be the pair's; its labels are
    never delivered."""

    kind: ClassVar[str] = "extra"
    card: str = ""
    fields: tuple[str, ...] = ("images",)

    def __post_init__(self) -> None:
        if not isinstance(self.card, str) or not self.card:
            raise DabenchError(f"Extra: card must be a dataset card's name, got {self.card!r}")
        _check_fields(self)
        labels = [f for f in self.fields if f in _POSE_LABELS]
        if labels:
            raise DabenchError(
                f"Extra: {', '.join(labels)} are pose labels; another dataset's images come "
                "without them"
            )

    @property
    def domain(self) -> str:
        return self.card  # neither the source nor the target: its own dataset

    def describe(self) -> str:
        return f"{self.card} images" + (" with masks" if "masks" in self.fields else "")

    def _role(self) -> str:
        return extra_role(self.card)

    def _card(self, pair: PairShards) -> str:
        return self.card

    def _absent(self, pair: PairShards) -> str:
        return f"there is no {self.card} training shard beside the pair"

    def _fields(self) -> tuple[str, ...]:
        return self.fields

    def _rows(self, pair: PairShards, source_indices: np.ndarray | None) -> np.ndarray:
        return np.arange(pair.info(self._role()).num_samples, dtype=np.int64)


def extra_role(card: str) -> str:
    """The key of another dataset's training shard in `PairShards.infos`."""
    return f"extra:{card}"


def extra_cards(views: Sequence[View]) -> list[str]:
    """The other datasets (cards) ``views`` read, sorted, wrapped views included."""
    found = {v.card for v in views if isinstance(v, Extra)}
    found |= {v.view.card for v in views if isinstance(v, Joined) and isinstance(v.view, Extra)}
    return sorted(found)


@dataclass(frozen=True)
class FramePairs(View):
    """Two frames of one sequence (and one camera view, where the shard has ``view``),
    ``stride`` apart, the stride drawn uniformly from the inclusive range ``stride`` among
    those that exist for the first frame (the anchor).

    Batches hold every field as [B, 2, ...], "stride" [B] (frame of the second minus frame
    of the first, >= 0: a range from 0, such as Lin et al.'s Table 4 [0, 5], may pair a frame
    with itself) and "index" [B, 2]. One unit is an anchor with at least one partner.
    """

    kind: ClassVar[str] = "frame-pairs"
    domain: str = "target"
    stride: tuple[int, int] = (1, 1)
    fields: tuple[str, ...] = ("images",)

    def __post_init__(self) -> None:
        _check_domain(self)
        _check_fields(self)
        s = self.stride
        if (
            not isinstance(s, Sequence)
            or len(s) != 2
            or not all(_is_int(v) for v in s)
            or not 0 <= s[0] <= s[1]
        ):
            raise DabenchError(
                f"FramePairs: stride must be (lo, hi) with integers 0 <= lo <= hi, got {s!r}"
            )
        object.__setattr__(self, "stride", (int(s[0]), int(s[1])))

    def describe(self) -> str:
        lo, hi = self.stride
        return f"{self.domain} frame pairs (stride {lo if lo == hi else f'{lo}–{hi}'})"

    def _fields(self) -> tuple[str, ...]:
        return self.fields

    def _required(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(("seq", "frame", *self.fields)))

    def _structure_problem(self, pair: PairShards) -> str | None:
        path = self._path(pair)
        rows = np.arange(pair.info(self._role()).num_samples, dtype=np.int64)
        index = _PairIndex(_columns(path, _PAIR_COLUMNS), rows, *self.stride)
        if index.num_units:
            return None
        lo, hi = self.stride
        apart = f"{lo} apart" if lo == hi else f"{lo}–{hi} apart"
        one = "one sequence and view" if index.by_view else "one sequence"
        if index.most_frames <= 1:
            have = "its sequences have 1 frame each"
        else:
            have = f"its sequences have at most {index.most_frames} frames, at most "
            have += f"{index.widest} apart"
        return f"{self._card(pair)} has no two frames of {one} {apart} ({have})"

    def _index(self, pair: PairShards, rows: np.ndarray) -> _Sampler:
        return _PairIndex(_columns(self._path(pair), _PAIR_COLUMNS), rows, *self.stride)


@dataclass(frozen=True)
class MultiView(View):
    """``views`` distinct calibrated camera views (finite cam_R, cam_t) of one (seq, frame);
    which of a group's views is drawn anew for every batch.

    Batches hold the requested fields as [B, V, ...] plus "K" [B, V, 3, 3], "cam_R"
    [B, V, 3, 3], "cam_t" [B, V, 3] and "index" [B, V]. One unit is a (seq, frame) group
    with at least ``views`` calibrated views.
    """

    kind: ClassVar[str] = "multi-view"
    domain: str = "target"
    views: int = 2
    fields: tuple[str, ...] = ("images",)

    def __post_init__(self) -> None:
        _check_domain(self)
        _check_fields(self)
        if not _is_int(self.views) or self.views < 2:
            raise DabenchError(f"MultiView: views must be an integer >= 2, got {self.views!r}")

    def describe(self) -> str:
        return f"{self.domain} multi-view groups ({self.views} views)"

    def _fields(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*self.fields, "K", "cam_R", "cam_t")))

    def _required(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(("seq", "frame", "view", *self._fields())))

    def _structure_problem(self, pair: PairShards) -> str | None:
        path = self._path(pair)
        rows = np.arange(pair.info(self._role()).num_samples, dtype=np.int64)
        index = _GroupIndex(_columns(path, _GROUP_COLUMNS), rows, self.views)
        if index.num_units:
            return None
        return (
            f"{self._card(pair)} has no (seq, frame) seen by {self.views} calibrated views "
            f"(at most {index.most_views} per (seq, frame))"
        )

    def _index(self, pair: PairShards, rows: np.ndarray) -> _Sampler:
        return _GroupIndex(_columns(self._path(pair), _GROUP_COLUMNS), rows, self.views)


@dataclass(frozen=True)
class FromArtifact(View):
    """Data an earlier training stage produced (e.g. target masks a segmenter predicted):
    the HDF5 file ``artifacts[stage] / file`` with datasets ``fields``, one row per row of
    the domain's training shard, joined by row with ``base_fields`` read from that shard.

    `check` can only check the base fields (the artifact is made during the run); `stream`
    checks the artifact.
    """

    kind: ClassVar[str] = "artifact"
    stage: str
    file: str
    fields: tuple[str, ...] = ("masks",)
    domain: str = "target"
    base_fields: tuple[str, ...] = ("images",)

    def __post_init__(self) -> None:
        _check_domain(self)
        _check_fields(self)
        _check_fields(self, "base_fields")
        for name in ("stage", "file"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise DabenchError(
                    f"FromArtifact: {name} must be a non-empty string, got {getattr(self, name)!r}"
                )
        both = sorted(set(self.fields) & set(self.base_fields))
        if both:
            raise DabenchError(
                f"FromArtifact: {', '.join(both)} cannot come from both the artifact and "
                "the shard; drop it from fields or base_fields"
            )

    def describe(self) -> str:
        return (
            f"{self.domain} {' + '.join(self.base_fields)} with {', '.join(self.fields)} "
            f"from stage {self.stage}"
        )

    def _fields(self) -> tuple[str, ...]:
        return self.base_fields

    def _reader(self, pair: PairShards, artifacts: Mapping[str, Path] | None) -> Any:
        return _join_artifact(self, super()._reader(pair, artifacts), pair, artifacts)


@dataclass(frozen=True)
class Joined(View):
    """Another view's batches plus per-row ``fields`` from the HDF5 file ``artifacts[stage]
    / file`` of an earlier stage (one row per row of the domain's training shard), joined by
    shard row: for views that read several rows per unit — ``Joined(MultiView("target", 4,
    ("images", "masks")), "geodesic", "weights.h5", ("weights",))`` gives every view of a
    group its own row of the artifact, shaped [B, V, ...] like the view's fields.

    Everything else (checks, units, sampling) is the wrapped view's; `check` cannot see the
    artifact (it is made during the run), `stream` checks it.
    """

    kind: ClassVar[str] = "joined"
    view: View
    stage: str
    file: str
    fields: tuple[str, ...] = ("masks",)

    def __post_init__(self) -> None:
        if not isinstance(self.view, View) or isinstance(self.view, Backgrounds):
            raise DabenchError(
                f"Joined: view must be a view of the source or target training shard, "
                f"got {self.view!r}"
            )
        _check_fields(self)
        for name in ("stage", "file"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise DabenchError(
                    f"Joined: {name} must be a non-empty string, got {getattr(self, name)!r}"
                )
        both = sorted(set(self.fields) & set(self.view._fields()))
        if both:
            raise DabenchError(
                f"Joined: {', '.join(both)} cannot come from both the artifact and the "
                f"shard; drop it from fields or from the wrapped view's fields"
            )

    @property
    def domain(self) -> str | None:
        return _domain(self.view)

    def describe(self) -> str:
        return f"{self.view.describe()} with {', '.join(self.fields)} from stage {self.stage}"

    def check(self, pair: PairShards) -> list[str]:
        return self.view.check(pair)

    def _role(self) -> str:
        return self.view._role()

    def _card(self, pair: PairShards) -> str:
        return self.view._card(pair)

    def _fields(self) -> tuple[str, ...]:
        return self.view._fields()

    def _rows(self, pair: PairShards, source_indices: np.ndarray | None) -> np.ndarray:
        return self.view._rows(pair, source_indices)

    def _index(self, pair: PairShards, rows: np.ndarray) -> _Sampler:
        return self.view._index(pair, rows)

    def _reader(self, pair: PairShards, artifacts: Mapping[str, Path] | None) -> Any:
        return _join_artifact(self, self.view._reader(pair, artifacts), pair, artifacts)


def check_views(label: str, views: Mapping[str, View], pair: PairShards) -> None:
    """One clear error, before any compute, when the pair cannot feed every view; the
    mapping's keys (the roles a method gives its views) name the problems."""
    problems = [f"{role} needs {p}" for role, view in views.items() for p in view.check(pair)]
    if problems:
        raise DabenchError(
            f"method {label} cannot run on {pair.source} → {pair.target}: " + "; ".join(problems)
        )


def _domain(view: View) -> str | None:
    return getattr(view, "domain", None)  # Backgrounds belong to neither domain


def _check_domain(view: View) -> None:
    domain = _domain(view)
    if domain not in _DOMAINS:
        raise DabenchError(
            f"{type(view).__name__}: unknown domain {domain!r}; valid: {', '.join(_DOMAINS)}"
        )


def _check_fields(view: View, attr: str = "fields") -> None:
    value = getattr(view, attr)
    if isinstance(value, str):
        value = (value,)
    if (
        not isinstance(value, Sequence)
        or not value
        or not all(isinstance(f, str) and f for f in value)
    ):
        raise DabenchError(
            f"{type(view).__name__}: {attr} must be a non-empty sequence of field names, "
            f"got {value!r}"
        )
    reserved = [f for f in value if f in _RESERVED]
    if reserved:
        raise DabenchError(
            f"{type(view).__name__}: {', '.join(reserved)} is added to every batch by the "
            f"view, not a field to ask for (reserved: {', '.join(_RESERVED)})"
        )
    # a tuple, so that views stay hashable whatever sequence the caller passed
    object.__setattr__(view, attr, tuple(dict.fromkeys(value)))


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _valid_rows(indices: np.ndarray, n: int, path: Path) -> np.ndarray:
    rows = np.asarray(indices)
    if rows.ndim != 1 or (rows.size and rows.dtype.kind not in "iu"):
        raise DabenchError(f"{path}: source_indices must be a 1-D array of row numbers")
    rows = rows.astype(np.int64)
    bad = rows[(rows < 0) | (rows >= n)]
    if bad.size:
        raise DabenchError(f"{path}: source_indices must lie in [0, {n}), found {bad[0]}")
    return np.unique(rows)


# -- structure: which rows form a view's units (shared by check, units and stream) -----------

_PAIR_COLUMNS = ("seq", "frame", "view")
_GROUP_COLUMNS = ("seq", "frame", "view", "cam_R", "cam_t")


def _columns(path: Path, names: Sequence[str]) -> dict[str, np.ndarray]:
    """The small id / camera datasets among ``names`` that the shard holds, whole."""
    import h5py

    from bench.data.schema import open_hdf5

    f = open_hdf5(path)
    try:
        out = {}
        for name in names:
            if name in f:
                d = f[name]
                string = h5py.check_string_dtype(d.dtype) is not None
                out[name] = d.asstr()[()] if string else d[()]
        return out
    finally:
        f.close()


def moment_ids(path: Path, rows: np.ndarray | None = None) -> np.ndarray | None:
    """Ids of the (seq, frame) moments of a shard's rows (all rows, or ``rows``): samples
    with one id are views of one moment, as :class:`MultiView` groups them. None where the
    shard has no seq, frame and view, or no moment is seen by two views."""
    cols = _columns(path, ("seq", "frame", "view"))
    if len(cols) < 3:
        return None
    if rows is not None:
        cols = {k: v[rows] for k, v in cols.items()}
    moments = _ids(cols["seq"], cols["frame"])
    if np.bincount(moments).max(initial=0) < 2:
        return None
    return moments


def _ids(*columns: np.ndarray) -> np.ndarray:
    """Dense int64 ids of the distinct value combinations of ``columns`` (ints or strings)."""
    ids = np.zeros(len(columns[0]), dtype=np.int64)
    for c in columns:
        _, code = np.unique(c, return_inverse=True)
        ids = ids * (int(code.max(initial=0)) + 1) + code.reshape(-1)
        _, ids = np.unique(ids, return_inverse=True)  # keep ids small: no overflow
        ids = ids.reshape(-1).astype(np.int64)
    return ids


def _runs(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start, count) of the runs of equal values in sorted ``keys``."""
    if keys.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    start = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    return start, np.diff(np.r_[start, keys.size])


class _Sampler:
    """The shard rows a batch of units reads; subclasses say how a unit becomes rows."""

    num_units: int
    noun: str = "samples"  # what a unit is, in messages

    def draw(
        self, rng: np.random.Generator, units: np.ndarray
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Rows [B] or [B, M] for the units of one batch, and extra per-unit arrays."""
        raise NotImplementedError


class _RowSampler(_Sampler):
    def __init__(self, rows: np.ndarray) -> None:
        self.rows = rows
        self.num_units = len(rows)

    def draw(self, rng, units):
        return self.rows[units], {}


class _PairIndex(_Sampler):
    """Anchor rows and, for each, its partners: rows of the same sequence (and view) whose
    frames lie ``lo``..``hi`` after the anchor's, as a range of a sorted partner table."""

    def __init__(self, cols: Mapping[str, np.ndarray], rows: np.ndarray, lo: int, hi: int):
        self.by_view = "view" in cols
        seq = cols["seq"][rows]
        group = _ids(seq, cols["view"][rows]) if self.by_view else _ids(seq)
        frame = cols["frame"][rows].astype(np.int64)
        # Partners: one row per (group, frame), the lowest, sorted by (group, frame); an
        # anchor's partners are then one contiguous range of this table.
        order = np.lexsort((rows, frame, group))
        g, f, r = group[order], frame[order], rows[order]
        first = np.r_[True, (g[1:] != g[:-1]) | (f[1:] != f[:-1])] if r.size else r.astype(bool)
        g, f = g[first], f[first]
        self.partner_rows, self.partner_frames = r[first], f
        start, count = _runs(g)
        self.most_frames = int(count.max(initial=0))
        last = start + count - 1
        self.widest = int((f[last] - f[start]).max(initial=0))
        # (group, frame) as one sortable key; the span leaves room for + hi within a group
        low = int(f.min(initial=0))
        span = int(f.max(initial=0)) - low + hi + 1
        keys = g * span + (f - low)
        anchor = group * span + (frame - low)
        lower = np.searchsorted(keys, anchor + lo, "left")
        upper = np.searchsorted(keys, anchor + hi, "right")
        ok = upper > lower
        self.anchors, self.anchor_frames = rows[ok], frame[ok]
        self.lower, self.upper = lower[ok], upper[ok]
        self.num_units = len(self.anchors)
        self.noun = "frame-pair anchors"

    def draw(self, rng, units):
        # uniform over the partners = over the strides in range that exist for the anchor
        k = rng.integers(self.lower[units], self.upper[units])
        rows = np.stack([self.anchors[units], self.partner_rows[k]], axis=1)
        return rows, {"stride": self.partner_frames[k] - self.anchor_frames[units]}


class _GroupIndex(_Sampler):
    """(seq, frame) groups of calibrated rows with at least ``views`` distinct views; each
    group's members (one row per view, the lowest) are a contiguous range of a table."""

    def __init__(self, cols: Mapping[str, np.ndarray], rows: np.ndarray, views: int):
        calibrated = np.isfinite(cols["cam_R"][rows]).all(axis=(1, 2)) & np.isfinite(
            cols["cam_t"][rows]
        ).all(axis=1)
        rows = rows[calibrated]
        group = _ids(cols["seq"][rows], cols["frame"][rows])
        view = cols["view"][rows].astype(np.int64)
        order = np.lexsort((rows, view, group))
        g, v, r = group[order], view[order], rows[order]
        first = np.r_[True, (g[1:] != g[:-1]) | (v[1:] != v[:-1])] if r.size else r.astype(bool)
        self.members = r[first]
        start, count = _runs(g[first])
        self.most_views = int(count.max(initial=0))
        ok = count >= views
        self.start, self.count = start[ok], count[ok]
        self.views = views
        self.num_units = len(self.start)
        self.noun = f"(seq, frame) groups with {views} views"

    def draw(self, rng, units):
        # V distinct members per group: the V smallest of random keys, the rest masked out
        count = self.count[units]
        keys = rng.random((len(units), int(count.max())))
        keys[np.arange(keys.shape[1])[None, :] >= count[:, None]] = np.inf
        pick = np.argsort(keys, axis=1)[:, : self.views]
        return self.members[self.start[units][:, None] + pick], {}


# -- artifacts -------------------------------------------------------------------------------


def _join_artifact(
    view: FromArtifact | Joined, base: Any, pair: PairShards, artifacts: Mapping[str, Path] | None
) -> _ArtifactJoin:
    """``base`` (a shard reader) joined with ``view.fields`` of its stage's artifact file."""
    if not artifacts or view.stage not in artifacts:
        have = ", ".join(sorted(artifacts or {})) or "none"
        raise DabenchError(
            f"{view.describe()}: no artifacts of stage {view.stage} (stages with "
            f"artifacts: {have}); that stage must come earlier in the method's plan"
        )
    path = Path(artifacts[view.stage]) / view.file
    _check_artifact(path, view.fields, len(base), view._path(pair))
    return _ArtifactJoin(base, path, view.fields)


def _check_artifact(path: Path, fields: Sequence[str], num: int, shard: Path) -> None:
    import h5py

    from bench.data.schema import open_hdf5

    if not path.is_file():
        raise DabenchError(f"{path}: artifact not found (the stage that makes it did not run?)")
    f = open_hdf5(path)
    try:
        have = [k for k in f if isinstance(f[k], h5py.Dataset)]
        missing = [k for k in fields if k not in have]
        if missing:
            raise DabenchError(
                f"{path}: artifact has no {', '.join(missing)} (it holds: "
                f"{', '.join(have) or 'nothing'})"
            )
        rows = {k: f[k].shape[0] if f[k].ndim else 0 for k in fields}
        wrong = [f"{k} has {n}" for k, n in rows.items() if n != num]
        if wrong:
            raise DabenchError(
                f"{path}: artifact needs one row per row of {shard} ({num}), but "
                + ", ".join(wrong)
            )
    finally:
        f.close()


class _ArtifactJoin:
    """A shard's rows joined by row with datasets of an artifact file: a map-style dataset
    (sample i = stored row i) that opens the artifact lazily in each process."""

    def __init__(self, base: Any, path: Path, fields: tuple[str, ...]) -> None:
        self.base, self.path, self.fields = base, path, fields
        self._file: Any = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return len(self.base)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_file": None, "_pid": None}

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        import torch

        from bench.data.schema import open_hdf5

        samples = self.base.__getitems__(indices)
        if self._file is None or self._pid != os.getpid():
            self._file, self._pid = open_hdf5(self.path), os.getpid()
        rows = np.asarray(indices, dtype=np.int64)
        uniq, inverse = np.unique(rows, return_inverse=True)
        for name in self.fields:
            column = torch.from_numpy(_read_runs(self._file[name], uniq)[inverse.reshape(-1)])
            for sample, value in zip(samples, column, strict=True):
                sample[name] = value
        return samples


def _read_runs(d: Any, rows: np.ndarray) -> np.ndarray:
    """Rows (sorted, unique) of an HDF5 dataset, each run of adjacent rows in one read: a
    fancy selection over per-sample chunks reads an order of magnitude slower."""
    cuts = np.flatnonzero(np.diff(rows) > 1) + 1
    parts = [d[int(run[0]) : int(run[-1]) + 1] for run in np.split(rows, cuts) if run.size]
    return np.concatenate(parts) if parts else np.empty((0, *d.shape[1:]), d.dtype)


# -- delivery --------------------------------------------------------------------------------


class _Plan:
    """Which rows batch (epoch, position) reads: a pure function of the seed."""

    def __init__(self, sampler: _Sampler, batch_size: int, seed: int) -> None:
        self.sampler, self.batch_size, self.seed = sampler, batch_size, seed
        self.per_epoch = sampler.num_units // batch_size
        self._perms: dict[int, np.ndarray] = {}

    def permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            # a loader prefetching into the next epoch needs two at a time
            while len(self._perms) >= 2:
                del self._perms[min(self._perms)]
            rng = np.random.default_rng([self.seed, epoch])
            self._perms[epoch] = rng.permutation(self.sampler.num_units)
        return self._perms[epoch]

    def batch(self, epoch: int, position: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        b = self.batch_size
        units = self.permutation(epoch)[position * b : (position + 1) * b]
        return self.sampler.draw(np.random.default_rng([self.seed, epoch, position]), units)

    def flat_rows(self, epoch: int, position: int) -> Iterator[list[int]]:
        """Row lists of the batches from (epoch, position) on, forever (a batch sampler)."""
        while True:
            yield self.batch(epoch, position)[0].reshape(-1).tolist()
            position += 1
            if position == self.per_epoch:
                epoch, position = epoch + 1, 0


class _BatchSampler:
    """The plan from a given state as a DataLoader batch sampler (re-iterable)."""

    def __init__(self, plan: _Plan, epoch: int, position: int) -> None:
        self.plan, self.epoch, self.position = plan, epoch, position

    def __iter__(self) -> Iterator[list[int]]:
        return self.plan.flat_rows(self.epoch, self.position)


class BatchStream(Iterator[dict[str, "torch.Tensor"]]):
    """An infinite iterator of batches (CPU tensors in the shard's dtypes, plus "index": the
    shard rows read), resumable: ``load_state_dict(state_dict())`` on a new stream of the
    same view, pair, batch size and seed continues with exactly the batches this one would
    deliver next. Made by `View.stream`."""

    def __init__(
        self,
        reader: Any,
        sampler: _Sampler,
        batch_size: int,
        seed: int,
        *,
        workers: int = 0,
        what: str,
    ) -> None:
        for name, value, low in (("batch_size", batch_size, 1), ("seed", seed, 0)):
            if not _is_int(value) or value < low:
                raise DabenchError(f"{what}: {name} must be an integer >= {low}, got {value!r}")
        if not _is_int(workers) or workers < 0:
            raise DabenchError(f"{what}: workers must be an integer >= 0, got {workers!r}")
        if sampler.num_units < batch_size:
            raise DabenchError(
                f"{what} has {sampler.num_units} usable {sampler.noun}, fewer "
                f"than the batch size {batch_size}"
            )
        self._reader = reader
        self._plan = _Plan(sampler, int(batch_size), int(seed))
        self._workers = int(workers)
        self._what = what
        self._epoch = 0
        self._position = 0
        self._loader: Iterator[Any] | None = None

    @property
    def batches_per_epoch(self) -> int:
        return self._plan.per_epoch

    def __iter__(self) -> BatchStream:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        rows, extras = self._plan.batch(self._epoch, self._position)
        if self._workers == 0:
            from torch.utils.data import default_collate

            batch = default_collate(self._reader.__getitems__(rows.reshape(-1).tolist()))
        else:
            if self._loader is None:
                self._loader = self._start_loader()
            batch = next(self._loader)
        self._position += 1
        if self._position == self._plan.per_epoch:
            self._epoch, self._position = self._epoch + 1, 0
        return _shaped(batch, rows.shape, extras)

    def _start_loader(self) -> Iterator[Any]:
        import torch
        from torch.utils.data import DataLoader

        loader = DataLoader(
            self._reader,
            batch_sampler=_BatchSampler(self._plan, self._epoch, self._position),
            num_workers=self._workers,
            persistent_workers=False,
            # The workers' base seed comes from this generator, not the global one: starting
            # a loader (or restarting it on resume) must not move the training RNG.
            generator=torch.Generator().manual_seed(self._plan.seed),
        )
        return iter(loader)

    def state_dict(self) -> dict[str, int]:
        """The batches consumed so far, as (epoch, position within it)."""
        return {"epoch": self._epoch, "position": self._position}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        """Continue after the batches ``state`` says were consumed."""
        ok = (
            isinstance(state, Mapping)
            and set(state) == {"epoch", "position"}
            and all(_is_int(v) and v >= 0 for v in state.values())
        )
        if not ok:
            raise DabenchError(
                f"{self._what}: a stream state is {{'epoch': int >= 0, 'position': int >= 0}}, "
                f"got {state!r}"
            )
        if state["position"] >= self._plan.per_epoch:
            raise DabenchError(
                f"{self._what}: state position {state['position']} is past the end of an epoch "
                f"({self._plan.per_epoch} batches): the state belongs to another stream"
            )
        self.close()
        self._epoch, self._position = int(state["epoch"]), int(state["position"])

    def close(self) -> None:
        """Stop the reading processes, if any (a later batch starts new ones)."""
        self._loader = None


def _shaped(
    batch: dict[str, Any], shape: tuple[int, ...], extras: Mapping[str, np.ndarray]
) -> dict[str, Any]:
    """Collated rows [B*M, ...] as [B, M, ...] (views reading M rows per unit), plus the
    view's extra per-unit arrays."""
    import torch

    if len(shape) > 1:
        width = shape[1]
        for key, value in batch.items():
            if isinstance(value, torch.Tensor):
                batch[key] = value.reshape(*shape, *value.shape[1:])
            else:  # string ids come as lists
                batch[key] = [value[i : i + width] for i in range(0, len(value), width)]
    for key, value in extras.items():
        batch[key] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.int64))
    return batch
