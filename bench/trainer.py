"""Runs a method's stages: optimisation, schedules, AMP, clipping, periodic evaluation,
checkpoints, divergence detection, seeding, progress. Knows nothing about Ray."""

from __future__ import annotations

import dataclasses
import math
import os
import random
import resource
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from bench.data.views import (
    PairShards,
    eval_batches,
    infinite_batches,
    role_fields,
    split_source_val,
)
from bench.errors import DabenchError
from bench.methods.base import Method
from bench.metrics import MetricReport, evaluate
from bench.models.lifting import backproject

AMP_MODES = ("none", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class TrainConfig:
    """The training budget and optimisation settings shared by every method of a grid."""

    steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    grad_clip: float = 1.0  # max gradient norm; 0 disables clipping
    eval_every: int = 250
    eval_batch_size: int = 256
    eval_source_test: bool = True
    source_val_fraction: float = 0.1  # held out of source train for source-val selection
    amp: str = "none"  # none | bf16 | fp16 (fp16 with loss scaling, CUDA only)
    device: str = "auto"
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default
    workers: int = 0  # DataLoader workers per role
    deterministic: bool = False  # deterministic kernels (slower on GPU)
    log_every: int = 10

    def __post_init__(self) -> None:
        if self.amp not in AMP_MODES:
            raise DabenchError(f"train.amp {self.amp!r} is not one of {AMP_MODES}")
        if self.device not in DEVICES:
            raise DabenchError(f"train.device {self.device!r} is not one of {DEVICES}")
        for name in ("steps", "batch_size", "eval_every", "eval_batch_size", "log_every"):
            if getattr(self, name) <= 0:
                raise DabenchError(f"train.{name} must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.source_val_fraction < 0.5:
            raise DabenchError("train.source_val_fraction must be in [0, 0.5)")


@dataclass
class Evaluation:
    """Metrics of every evaluated split at one step, and the target-test predictions."""

    step: int
    reports: dict[str, MetricReport]
    predictions: dict[str, np.ndarray]

    def overall(self) -> dict[str, dict[str, float]]:
        return {split: rep.overall for split, rep in self.reports.items()}


@dataclass
class TrainResult:
    status: str  # "ok" | "diverged"
    evaluations: list[Evaluation]
    losses: list[dict[str, float]]
    timings: dict[str, float]
    device: str
    peak_memory_mb: float
    diverged_at: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Python, numpy and torch (CPU and CUDA) from one seed."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - libraries draw from the global RNG
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DabenchError("train.device is 'cuda' but no CUDA device is available")
    return torch.device(name)


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    """Learning-rate factor: linear warm-up from 0, then cosine decay to 0 at ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / span)))


class Trainer:
    """Trains one method on one pair and evaluates it every ``eval_every`` steps."""

    def __init__(
        self,
        method: Method,
        pair: PairShards,
        config: TrainConfig,
        seed: int,
        workdir: Path,
        progress: bool = True,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.method = method
        self.pair = pair
        self.config = config
        self.seed = seed
        self.workdir = Path(workdir)
        self.progress = progress
        self.log = log or (lambda msg: None)
        self.device = resolve_device(config.device)
        if config.amp == "fp16" and self.device.type != "cuda":
            raise DabenchError("train.amp 'fp16' needs a CUDA device; use 'bf16' on the CPU")
        if config.threads > 0:
            torch.set_num_threads(config.threads)
        self.method.to(self.device)
        num = pair.info("source_train").num_samples
        self._src_train_idx, self._src_val_idx = split_source_val(num, config.source_val_fraction)
        self.scaler = torch.amp.GradScaler("cuda", enabled=config.amp == "fp16")
        self.optimizer: torch.optim.Optimizer | None = None

    # -- one optimisation step; public so benchmarks can time it against a bare loop ----
    def autocast(self):
        if self.config.amp == "none":
            return nullcontext()
        dtype = torch.bfloat16 if self.config.amp == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def train_step(self, stage: str, batch, step: int, progress: float) -> torch.Tensor:
        """Forward, backward, clip, update; returns the summed loss (not synchronised)."""
        opt = self.optimizer
        assert opt is not None
        opt.zero_grad(set_to_none=True)
        with self.autocast():
            losses = self.method.training_step(stage, batch, step, progress)
        total = sum(losses.values())
        self.scaler.scale(total).backward()
        if self.config.grad_clip > 0:
            self.scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(self._params, self.config.grad_clip)
        self.scaler.step(opt)
        self.scaler.update()
        self._last_losses = losses
        return total.detach()

    def make_optimizer(self, params: list[torch.nn.Parameter], lr_scale: float) -> None:
        self._params = params
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]  # norms and biases: no weight decay
        self.optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": self.config.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=self.config.lr * lr_scale,
        )
        self._base_lr = self.config.lr * lr_scale

    # -- the whole run ------------------------------------------------------------------
    def fit(self) -> TrainResult:
        cfg = self.config
        seed_everything(self.seed, cfg.deterministic)
        stages = self.method.stages()
        shares = np.array([s.share for s in stages], dtype=float)
        stage_steps = np.floor(cfg.steps * shares / shares.sum()).astype(int)
        stage_steps[-1] = cfg.steps - stage_steps[:-1].sum()
        loaders = self._loaders()
        evaluations: list[Evaluation] = []
        losses_log: list[dict[str, float]] = []
        status, diverged_at = "ok", None
        t_train = t_eval = 0.0
        samples = 0
        global_step = 0
        bar = tqdm(
            total=cfg.steps,
            disable=not self.progress,
            leave=False,
            unit="step",
            desc=f"{self.method.name} {self.pair.source}→{self.pair.target}",
        )
        # Losses accumulate as tensors and are read every log_every steps: reading them each
        # step would synchronise a GPU every step.
        running: dict[str, torch.Tensor] = {}
        for stage, n_steps in zip(stages, stage_steps, strict=True):
            params = list(stage.params(self.method) if stage.params else self.method.parameters())
            params = [p for p in params if p.requires_grad]
            self.make_optimizer(params, stage.lr_scale)
            warmup = min(cfg.warmup_steps, n_steps // 4)
            self.method.train()
            t0 = time.perf_counter()
            for i in range(int(n_steps)):
                for group in self.optimizer.param_groups:
                    group["lr"] = self._base_lr * warmup_cosine(i, int(n_steps), warmup)
                batch = {role: self._to_device(next(it)) for role, it in loaders.items()}
                total = self.train_step(stage.name, batch, global_step, i / max(1, n_steps))
                samples += sum(len(b["images"]) for b in batch.values())
                global_step += 1
                for k, v in self._last_losses.items():
                    running[k] = running[k] + v.detach() if k in running else v.detach()
                if global_step % cfg.log_every == 0 or i == n_steps - 1:
                    sums = {k: float(v) for k, v in running.items()}
                    if not math.isfinite(float(total)) or not all(
                        math.isfinite(v) for v in sums.values()
                    ):
                        status, diverged_at = "diverged", global_step
                        self.log(f"non-finite loss at step {global_step}: stopping")
                        break
                    count = global_step % cfg.log_every or cfg.log_every
                    entry = {"step": global_step, "stage": stage.name}
                    entry |= {k: v / count for k, v in sums.items()}
                    entry |= self.method.metrics_step()
                    entry["lr"] = self.optimizer.param_groups[0]["lr"]
                    losses_log.append(entry)
                    bar.set_postfix({k: f"{v / count:.4f}" for k, v in sums.items()})
                    running = {}
                bar.update(1)
                if global_step % cfg.eval_every == 0 or global_step == cfg.steps:
                    t_train += time.perf_counter() - t0
                    te = time.perf_counter()
                    evaluations.append(self.evaluate(global_step))
                    self._checkpoint(global_step, evaluations, losses_log)
                    t_eval += time.perf_counter() - te
                    self.method.train()
                    t0 = time.perf_counter()
            t_train += time.perf_counter() - t0
            if status == "diverged":
                break
        bar.close()
        return TrainResult(
            status=status,
            evaluations=evaluations,
            losses=losses_log,
            timings={
                "train_seconds": t_train,
                "eval_seconds": t_eval,
                "train_samples_per_s": samples / t_train if t_train > 0 else 0.0,
                "steps": global_step,
            },
            device=self._device_name(),
            peak_memory_mb=self._peak_memory_mb(),
            diverged_at=diverged_at,
        )

    def _loaders(self) -> dict[str, Iterator]:
        fields = role_fields(self.method.active_needs)
        paths = {
            "source": self.pair.source_train,
            "target": self.pair.target_train,
            "backgrounds": self.pair.backgrounds,
        }
        out = {}
        for k, (role, f) in enumerate(sorted(fields.items())):
            indices = self._src_train_idx if role == "source" else None
            out[role] = infinite_batches(
                paths[role],
                f,
                self.config.batch_size,
                self.seed * 1000 + k,
                indices,
                self.config.workers,
            )
        return out

    def _to_device(self, batch: dict) -> dict[str, torch.Tensor]:
        return {
            k: v.to(self.device, non_blocking=True)
            for k, v in batch.items()
            if isinstance(v, torch.Tensor) and k != "index"
        }

    # -- evaluation -----------------------------------------------------------------
    @torch.no_grad()
    def predict_split(self, path: Path, indices: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Predictions and labels of a split, lifted to 3D with the ground-truth root depth
        (the known-root-depth protocol: root-relative metrics need no absolute depth)."""
        self.method.eval()
        fields = ("images", "kp2d", "kp3d", "vis", "K")
        out: dict[str, list[np.ndarray]] = {
            k: [] for k in ("pred2d", "pred3d", "gt2d", "gt3d", "vis")
        }
        root = self.method.root
        for batch in eval_batches(path, fields, self.config.eval_batch_size, indices):
            images = batch["images"].to(self.device)
            with self.autocast():
                pred = self.method.predict(images)
            kp2d = pred.kp2d.float().cpu()
            rel = pred.rel_depth.float().cpu()
            root_depth = batch["kp3d"][:, root, 2:3]
            pred3d = backproject(kp2d, rel + root_depth, batch["K"])
            out["pred2d"].append(kp2d.numpy())
            out["pred3d"].append(pred3d.numpy())
            out["gt2d"].append(batch["kp2d"].numpy())
            out["gt3d"].append(batch["kp3d"].numpy())
            out["vis"].append(batch["vis"].numpy())
        return {k: np.concatenate(v) for k, v in out.items()}

    def evaluate(self, step: int) -> Evaluation:
        splits = {"target_test": (self.pair.target_test, None)}
        if len(self._src_val_idx):
            splits["source_val"] = (self.pair.source_train, self._src_val_idx)
        if self.config.eval_source_test:
            splits["source_test"] = (self.pair.source_test, None)
        reports, predictions = {}, {}
        for split, (path, idx) in splits.items():
            p = self.predict_split(path, idx)
            reports[split] = evaluate(
                p["pred2d"],
                p["gt2d"],
                p["pred3d"],
                p["gt3d"],
                p["vis"],
                self.pair.joint_set,
                self.pair.image_size,
            )
            if split == "target_test":
                predictions = {"kp2d": p["pred2d"], "kp3d": p["pred3d"]}
        ev = Evaluation(step=step, reports=reports, predictions=predictions)
        tt = reports["target_test"].overall
        self.log(f"step {step}: target MPJPE {tt['mpjpe']:.1f} mm, PCK@0.05 {tt['pck2d_005']:.1f}%")
        return ev

    def _checkpoint(self, step: int, evaluations: list[Evaluation], losses: list) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        tmp = self.workdir / "checkpoint.pt.partial"
        torch.save(
            {
                "step": step,
                "method": self.method.state_dict(),
                "optimizer": self.optimizer.state_dict() if self.optimizer else None,
                "config": dataclasses.asdict(self.config),
            },
            tmp,
        )
        tmp.replace(self.workdir / "checkpoint.pt")

    def _device_name(self) -> str:
        if self.device.type == "cuda":
            return f"cuda:{torch.cuda.get_device_name(self.device)}"
        return f"cpu:{torch.get_num_threads()} threads"

    def _peak_memory_mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        # ru_maxrss is in kB on Linux: the peak resident memory of this process.
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
