"""Plant one bug at a time in a scratch copy of the project and check that the method tests
catch it (a test suite that passes for a wrong method is a defect).

    python tests/mutation_check.py            # every mutant
    python tests/mutation_check.py ddc-per-domain-bn

Each mutant replaces one exact snippet of one file; a snippet that is no longer in the
file is reported as stale (the code moved: update the mutant), never silently skipped.
The scratch copy is imported instead of the installed package (``PYTHONPATH``), and only the
tests named for the mutant run, so the whole check takes a few minutes on two cores.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPIED = ("bench", "tests", "methods", "datasets", "pyproject.toml")


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    original: str
    mutated: str
    tests: tuple[str, ...]  # pytest -k expressions per test file: "file::expr"


MUTANTS = (
    Mutant(
        "ddc-per-domain-bn",  # each domain normalised alone: linear MMD ≈ 0 by construction
        "bench/methods/ddc.py",
        'a = out["pooled"]',
        'a = __import__("torch").cat([(lambda t: (t - t.mean(0)) / (t.std(0) + 1e-5))(d) '
        'for d in (out["pooled"][:n], out["pooled"][n:])])',
        ("tests/test_methods_da.py::ddc_aligns",),
    ),
    Mutant(
        "dan-head-source-vs-source",
        "bench/methods/dan.py",
        'losses["mmd_head"] = hp.trade_off * self._mmd(h[:n], h[n:])',
        'losses["mmd_head"] = hp.trade_off * self._mmd(h[:n], h[:n])',
        ("tests/test_methods_da.py::dan_aligns",),
    ),
    Mutant(
        "dan-quadratic-runs-linear",
        "bench/methods/dan.py",
        "return mk_mmd2(x, y, alphas=self.hparams.alphas, estimator=self.hparams.estimator)",
        'return mk_mmd2(x, y, alphas=self.hparams.alphas, estimator="linear")',
        ("tests/test_methods_da.py::dan_aligns",),
    ),
    Mutant(
        "dann-adversary-sees-source-twice",
        "bench/methods/dann.py",
        "adv, acc = domain_adversarial_loss(logits[:n], logits[n:])",
        "adv, acc = domain_adversarial_loss(logits[:n], logits[:n])",
        ("tests/test_methods_da.py::dann_discriminates",),
    ),
    Mutant(
        "causal-swap-uses-source-codes",
        "bench/methods/causal.py",
        "noises_cf.append(codes_o[torch.arange(n, device=codes_o.device) % len(codes_o)])",
        "noises_cf.append(codes_s[torch.arange(n, device=codes_o.device) % len(codes_s)])",
        ("tests/test_causal.py::swap_interventions",),
    ),
    Mutant(
        "causal-target-never-reaches-adversary",
        "bench/methods/causal.py",
        "real_all = real if joint_pass else real[:n]",
        "real_all = real[:n]",
        ("tests/test_causal.py::adversary_only",),
    ),
    Mutant(
        "causal-kl-not-per-pixel-value",
        "bench/methods/causal.py",
        "* kl_divergence(mu[sub], logvar[sub]).mean()\n                / per_value",
        "* kl_divergence(mu[sub], logvar[sub]).mean()",
        ("tests/test_causal.py::elbo_per_pixel",),
    ),
    Mutant(
        "geometric-align-against-itself",  # the positive is the anchor, not its stylised copy
        "bench/methods/geometric.py",
        "align = info_nce(z[:n], z[n:], hp.tau)",
        "align = info_nce(z[:n], z[:n], hp.tau)",
        ("tests/test_geometric.py::align_pairs",),
    ),
    Mutant(
        "geometric-rec-reconstructs-the-base-frame",
        "bench/methods/geometric.py",
        "loss = self.perceptual(pred, _unit_images(drv))",
        "loss = self.perceptual(pred, _unit_images(base))",
        ("tests/test_geometric.py::driving_frame",),
    ),
    Mutant(
        "amp-scaler-not-updated-between-manual-steps",  # fp16 refuses Alg. 1's second step
        "bench/trainer.py",
        "            if self.stage.manual:\n                # The method's next backward",
        "            if False:\n                # The method's next backward",
        ("tests/test_method_contract.py::loss_scaling and ar-alternate",),
    ),
    Mutant(
        "amp-scaler-steps-an-optimiser-no-loss-reached",
        "bench/trainer.py",
        "        stepped = any(p.grad is not None for p in self.params[name])",
        "        stepped = True",
        ("tests/test_stages.py::loss_scaling",),
    ),
    Mutant(
        "mas-half-precision-weights-meet-bf16",  # one cat of float16 and autocast's bf16
        "bench/methods/mask_supervision.py",
        'weights = torch.cat([_flat(part, "weights").float() for part in parts])',
        'weights = torch.cat([_flat(part, "weights") for part in parts]).float()',
        ("tests/test_method_contract.py::bf16_autocast and mask-as-supervision",),
    ),
)


def scratch_copy(into: Path) -> Path:
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, into / name, ignore=shutil.ignore_patterns("__pycache__", "cache"))
        else:
            shutil.copy2(src, into / name)
    return into


def run(mutant: Mutant) -> str:
    """ "killed" if a named test fails on the mutant, "survived" if all pass, "stale" if
    the snippet is gone."""
    with tempfile.TemporaryDirectory(prefix=f"mutant-{mutant.name}-") as tmp:
        root = scratch_copy(Path(tmp))
        path = root / mutant.path
        text = path.read_text()
        if text.count(mutant.original) != 1:
            return "stale"
        path.write_text(text.replace(mutant.original, mutant.mutated))
        env = {**os.environ, "PYTHONPATH": str(root)}
        for entry in mutant.tests:
            file, _, expr = entry.partition("::")
            cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", file]
            cmd += ["-k", expr] if expr else []
            done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
            if done.returncode == 1:  # tests ran and one failed
                return "killed"
            if done.returncode != 0:
                raise RuntimeError(f"{mutant.name}: pytest could not run:\n{done.stdout}")
    return "survived"


def main(names: list[str]) -> int:
    chosen = [m for m in MUTANTS if not names or m.name in names]
    unknown = sorted(set(names) - {m.name for m in MUTANTS})
    if unknown:
        print(f"unknown mutant(s) {unknown}; valid: {', '.join(m.name for m in MUTANTS)}")
        return 2
    outcomes = {m.name: run(m) for m in chosen}
    for name, outcome in outcomes.items():
        print(f"{outcome:8} {name}")
    return 0 if all(o == "killed" for o in outcomes.values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
