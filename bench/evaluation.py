"""The evaluation protocol: which splits are evaluated, how predictions become 3D (the
known-root-depth protocol), the metric suite, and where predictions go — to disk, one
file per split and evaluation, never into memory across evaluations or into checkpoints."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.atomic import atomic_path
from bench.data.pairs import PairShards, also_test_role, eval_batches
from bench.data.shards import read_shard_info
from bench.data.views import moment_ids
from bench.metrics import evaluate
from bench.models.lifting import backproject

EVAL_FIELDS = ("images", "kp2d", "kp3d", "vis", "K")


@dataclass
class Evaluation:
    """Metrics of every evaluated split at one step (summaries only; the per-sample
    material and predictions are on disk under ``directory``)."""

    step: int
    stage: str
    metrics: dict[str, dict[str, Any]]  # split -> MetricReport.to_dict()
    directory: Path

    def overall(self) -> dict[str, dict[str, float]]:
        return {split: m["overall"] for split, m in self.metrics.items()}

    def entry(self) -> dict[str, Any]:
        """The form selection rules and records read."""
        return {"step": self.step, "stage": self.stage, "metrics": self.metrics}

    def predictions(self, split: str = "target_test") -> dict[str, np.ndarray]:
        with np.load(self.directory / f"{split}.npz") as f:
            return {k: f[k] for k in f.files}


class Evaluator:
    """Evaluates a method on the target test split, the held-out source-validation rows,
    optionally the source test split, and the test splits of the datasets the grid's pair
    also tests on (``test@<card>``)."""

    def __init__(
        self,
        pair: PairShards,
        directory: Path,
        *,
        source_val: np.ndarray,
        source_test: bool,
        batch_size: int,
        device: torch.device,
        autocast: Callable[[], AbstractContextManager],
    ) -> None:
        self.pair = pair
        self.directory = Path(directory)
        self.splits: dict[str, tuple[Path, np.ndarray | None]] = {
            "target_test": (pair.target_test, None)
        }
        if len(source_val):
            self.splits["source_val"] = (pair.source_train, source_val)
        if source_test:
            self.splits["source_test"] = (pair.source_test, None)
        for card, path in pair.also_test.items():
            self.splits[also_test_role(card)] = (path, None)
        self.batch_size = batch_size
        self._head_sizes: dict[Path, bool] = {}
        self.device = device
        self.autocast = autocast

    @torch.no_grad()
    def predict_split(
        self, method: Any, path: Path, indices: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """Predictions and labels of a split, lifted to 3D with the ground-truth root depth
        (the known-root-depth protocol: root-relative metrics need no absolute depth)."""
        method.eval()
        out: dict[str, list[np.ndarray]] = {
            k: [] for k in ("pred2d", "pred3d", "gt2d", "gt3d", "vis")
        }
        # a 2D-only set (MPII-like) also says how large each head is, for PCKh
        fields = EVAL_FIELDS
        if path not in self._head_sizes:  # read once per shard, not at every evaluation
            self._head_sizes[path] = "head_size" in read_shard_info(path).fields
        if self._head_sizes[path]:
            fields, out["head_size"] = (*EVAL_FIELDS, "head_size"), []
        root = method.root
        for batch in eval_batches(path, fields, self.batch_size, indices):
            images = batch["images"].to(self.device)
            with self.autocast():
                pred = method.predict(images)
            kp2d = pred.kp2d.float().cpu()
            rel = pred.rel_depth.float().cpu()
            root_depth = batch["kp3d"][:, root, 2:3]
            pred3d = backproject(kp2d, rel + root_depth, batch["K"])
            out["pred2d"].append(kp2d.numpy())
            out["pred3d"].append(pred3d.numpy())
            out["gt2d"].append(batch["kp2d"].numpy())
            out["gt3d"].append(batch["kp3d"].numpy())
            out["vis"].append(batch["vis"].numpy())
            if "head_size" in out:
                out["head_size"].append(batch["head_size"].numpy())
        result = {k: np.concatenate(v) for k, v in out.items()}
        moments = moment_ids(path, indices)
        if moments is not None:
            result["moments"] = moments
        return result

    def __call__(self, method: Any, step: int, stage: str) -> Evaluation:
        """Evaluate every split; predictions to ``<directory>/step-<step>/<split>.npz``.
        The global RNG state is restored afterwards, so that evaluating changes nothing in
        training (an evaluated and an unevaluated run of a stage give the same weights)."""
        where = self.directory / f"step-{step:08d}"
        where.mkdir(parents=True, exist_ok=True)
        metrics = {}
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            for split, (path, idx) in self.splits.items():
                p = self.predict_split(method, path, idx)
                report = evaluate(
                    p["pred2d"],
                    p["gt2d"],
                    p["pred3d"],
                    p["gt3d"],
                    p["vis"],
                    self.pair.joint_set,
                    self.pair.image_size,
                    groups=p.get("moments"),
                    head_size=p.get("head_size"),
                )
                metrics[split] = report.to_dict()
                with atomic_path(where / f"{split}.npz") as tmp:
                    np.savez(tmp, kp2d=p["pred2d"], kp3d=p["pred3d"])
        return Evaluation(step=step, stage=stage, metrics=metrics, directory=where)

    def clear(self) -> None:
        """Remove every stored evaluation (a finished trial keeps only its selected one)."""
        shutil.rmtree(self.directory, ignore_errors=True)
