"""The method tests catch planted bugs (see tests/mutation_check.py): each mutant must make
a named test fail, and the unchanged scratch copy must pass the same tests."""

from __future__ import annotations

import dataclasses

import pytest
from mutation_check import MUTANTS, run


@pytest.mark.slow
def test_the_scratch_copy_passes_unchanged():
    # one mutant per method test file: the DA baselines' and causal interventions'
    controls = {m.tests[0].partition("::")[0]: m for m in MUTANTS}
    for mutant in controls.values():
        control = dataclasses.replace(mutant, name="control", mutated=mutant.original)
        assert run(control) == "survived", mutant.tests


@pytest.mark.slow
@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.name for m in MUTANTS])
def test_every_mutant_is_killed(mutant):
    assert run(mutant) == "killed"
