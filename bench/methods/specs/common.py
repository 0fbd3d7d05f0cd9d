"""Declarations several methods share."""

from __future__ import annotations

from typing import Any

from bench.data.views import Images, Labelled
from bench.methods.spec import MethodSpec, Stage

# What every feature-alignment method reads: labelled source and unlabelled target batches.
DA_VIEWS = {"source": Labelled("source"), "target": Images("target")}


class FeatureAlignmentSpec(MethodSpec):
    """DDC, DAN, DANN: one stage on labelled source and unlabelled target batches, one
    optimiser over the pose loss plus the alignment terms, and a source-only start when
    the grid asks for one (as tllib's and RegDA's adaptation scripts start)."""

    warm_start = True

    @classmethod
    def stages(cls, hp: Any) -> list[Stage]:
        return [Stage("train", views=DA_VIEWS)]
