"""Method cards: ``methods/<name>.yaml`` gives a method's defaults, named variants
(ablations), category, paper and reported numbers; grids name ``method`` or
``method/variant``."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.config import CATEGORIES
from bench.errors import DabenchError
from bench.methods.spec import MethodSpec, coerce_hparams, get_spec, hparams_dict, split_label
from bench.paths import method_cards_dir
from bench.yaml_files import read_card

# What a card's fidelity level promises about the method it runs.
FIDELITY: dict[str, str] = {
    "faithful": "the method as published: its losses, stages and settings as the paper gives "
    "them; the card's choices only fill gaps the paper leaves",
    "adapted": "the published objective, with what the paper fixes for another task or "
    "network (which layers are aligned, optimiser, schedule, loss scales) changed for pose, "
    "each change listed in the card's choices",
    "reconstructed": "the paper's objective is not (fully) available; the method is our "
    "reading of what is, every inferred part marked in the card's choices",
}
_REQUIRED = ("name", "adapter", "category", "title", "description", "fidelity")
_OPTIONAL = (
    "paper",
    "defaults",
    "variants",
    "ablation_groups",
    "reported",
    "choices",
    "model",
    "diagnostics",
)


@dataclass(frozen=True)
class MethodCard:
    name: str
    adapter: str
    category: str
    title: str
    description: str
    path: Path
    fidelity: str
    paper: str = ""
    defaults: Mapping[str, Any] = field(default_factory=dict)
    variants: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    ablation_groups: Mapping[str, Any] = field(default_factory=dict)
    reported: Any = None
    choices: tuple[str, ...] = ()
    # Model settings the method's paper fixes (e.g. a volumetric head); they override the
    # grid's model section for this method's trials.
    model: Mapping[str, Any] = field(default_factory=dict)
    # Scalars the method logs that say how one of its parts did (a segmenter's IoU), shown
    # in the report's diagnostics table: term -> Diagnostic.
    diagnostics: Mapping[str, Diagnostic] = field(default_factory=dict)


@dataclass(frozen=True)
class Diagnostic:
    """How a report shows a logged scalar: ``title`` (with its unit), what it measures
    (``protocol``), ``scale`` applied before printing, ``decimals``, and whether higher is
    better (for bold)."""

    title: str
    protocol: str
    scale: float = 1.0
    decimals: int = 1
    higher_is_better: bool | None = None


def _diagnostics(path: Path, raw: Any) -> dict[str, Diagnostic]:
    out = {}
    for term, spec in (raw or {}).items():
        try:
            out[str(term)] = Diagnostic(**spec)
        except TypeError as exc:
            valid = ", ".join(f.name for f in dataclasses.fields(Diagnostic))
            raise DabenchError(
                f"method card {path}: diagnostic {term!r} must be a mapping of {valid} ({exc})"
            ) from None
    return out


@dataclass(frozen=True)
class ResolvedMethod:
    """A grid entry resolved: the card, the method's declaration and the typed
    hyper-parameters."""

    card: MethodCard
    variant: str | None
    spec: type[MethodSpec]
    hparams: Any

    @property
    def label(self) -> str:
        return self.card.name + (f"/{self.variant}" if self.variant else "")

    @property
    def category(self) -> str:
        """The card's category, unless the method's hyper-parameters put this entry in
        another one (MIM-FCR-AR's source-only setting is a source-only row)."""
        return self.spec.category(self.hparams, self.card.category)

    def hparams_dict(self) -> dict[str, Any]:
        return hparams_dict(self.hparams)


def _parse(path: Path) -> MethodCard:
    raw = read_card(path, "method card", _REQUIRED, _OPTIONAL)
    if raw["category"] not in CATEGORIES:
        raise DabenchError(
            f"method card {path}: category {raw['category']!r} is not one of {CATEGORIES}"
        )
    if raw["fidelity"] not in FIDELITY:
        raise DabenchError(
            f"method card {path}: fidelity {raw['fidelity']!r} is not one of {', '.join(FIDELITY)}"
        )
    return MethodCard(
        name=raw["name"],
        adapter=raw["adapter"],
        category=raw["category"],
        title=raw["title"],
        description=" ".join(str(raw["description"]).split()),
        path=path,
        paper=str(raw.get("paper", "")),
        defaults=raw.get("defaults") or {},
        variants=raw.get("variants") or {},
        ablation_groups=raw.get("ablation_groups") or {},
        reported=raw.get("reported"),
        fidelity=raw["fidelity"],
        choices=tuple(raw.get("choices") or ()),
        model=raw.get("model") or {},
        diagnostics=_diagnostics(path, raw.get("diagnostics")),
    )


def list_method_cards(directory: Path | None = None) -> list[MethodCard]:
    directory = directory or method_cards_dir()
    return [_parse(p) for p in sorted(directory.glob("*.yaml"))]


def load_method_card(name: str, directory: Path | None = None) -> MethodCard:
    directory = directory or method_cards_dir()
    path = directory / f"{name}.yaml"
    if not path.is_file():
        valid = sorted(p.stem for p in directory.glob("*.yaml"))
        raise DabenchError(f"unknown method {name!r}; valid methods: {', '.join(valid)}")
    return _parse(path)


def resolve_method(entry: str, overrides: Mapping[str, Any] | None = None) -> ResolvedMethod:
    """``method`` or ``method/variant`` plus grid overrides → typed hyper-parameters.

    Precedence: the adapter's dataclass defaults < card defaults < the grid < the variant.
    A variant is what its name says (``wo-ar`` has no attention regularisation, ``r0.5``
    masks half the patches), so a grid that sets the method's configuration — λ_attn per
    task, longer pre-training — never undoes the ablation a row stands for.
    """
    name, variant = split_label(entry)
    card = load_method_card(name)
    spec = get_spec(card.adapter)
    values = {**card.defaults, **(overrides or {})}
    if variant:
        if variant not in card.variants:
            valid = ", ".join(sorted(card.variants)) or "none"
            raise DabenchError(f"unknown variant {variant!r} of method {name!r}; valid: {valid}")
        values.update(card.variants[variant] or {})
    hparams = coerce_hparams(spec.Hparams, values, f"method {entry}")
    return ResolvedMethod(card=card, variant=variant, spec=spec, hparams=hparams)
