"""The method tests catch planted bugs (see tests/mutation_check.py): each mutant must make
a named test fail, and the unchanged scratch copy must pass the same tests."""

from __future__ import annotations

import dataclasses

import pytest
from mutation_check import MUTANTS, run


@pytest.mark.slow
def test_the_scratch_copy_passes_unchanged():
    for mutant in MUTANTS[:1] + MUTANTS[3:4]:  # one DDC/DAN and one causal test file
        control = dataclasses.replace(mutant, name="control", mutated=mutant.original)
        assert run(control) == "survived", mutant.tests


@pytest.mark.slow
@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.name for m in MUTANTS])
def test_every_mutant_is_killed(mutant):
    assert run(mutant) == "killed"
