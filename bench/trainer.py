"""Runs a method's stages: optimisation, schedules, AMP, clipping, periodic evaluation,
checkpoints, divergence detection, seeding, progress. Knows nothing about Ray."""

from __future__ import annotations

import dataclasses
import json
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

from bench.atomic import atomic_path
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
    adapt_steps: int = 0  # steps of warm-started (adapting) trials; 0 = steps
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
    keep_checkpoint: bool = False  # keep checkpoint.pt (weights + optimiser) after the trial

    def __post_init__(self) -> None:
        if self.amp not in AMP_MODES:
            raise DabenchError(f"train.amp {self.amp!r} is not one of {AMP_MODES}")
        if self.device not in DEVICES:
            raise DabenchError(f"train.device {self.device!r} is not one of {DEVICES}")
        for name in ("steps", "batch_size", "eval_every", "eval_batch_size", "log_every"):
            if getattr(self, name) <= 0:
                raise DabenchError(f"train.{name} must be positive, got {getattr(self, name)}")
        if self.adapt_steps < 0:
            raise DabenchError(f"train.adapt_steps must be >= 0, got {self.adapt_steps}")
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
class _RunState:
    """What a run has produced so far; checkpointed with the weights."""

    step: int = 0
    samples: int = 0
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    status: str = "ok"
    diverged_at: int | None = None
    evaluations: list[Evaluation] = field(default_factory=list)
    losses: list[dict[str, Any]] = field(default_factory=list)


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
        resume: bool = False,
        run_id: str = "",
    ) -> None:
        self.method = method
        self.resume = resume
        # Identifies the run a checkpoint belongs to (the trial id): a checkpoint of another
        # configuration in the same directory is never resumed from.
        self.run_id = run_id or json.dumps(dataclasses.asdict(config), sort_keys=True)
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
        """Train every stage, evaluating every ``eval_every`` steps. With ``resume`` and a
        checkpoint of the same run in ``workdir`` (a retried Ray trial), training continues
        after the last evaluation instead of starting over."""
        cfg = self.config
        seed_everything(self.seed, cfg.deterministic)
        stages = self.method.stages()
        shares = np.array([s.share for s in stages], dtype=float)
        stage_steps = np.floor(cfg.steps * shares / shares.sum()).astype(int)
        stage_steps[-1] = cfg.steps - stage_steps[:-1].sum()
        state = _RunState()
        restored = self._restore() if self.resume else None
        if restored is not None:
            state = restored["state"]
            self.log(f"resuming after step {state.step}")
        loaders = self._loaders(offset=state.step)
        bar = tqdm(
            total=cfg.steps,
            initial=state.step,
            disable=not self.progress,
            leave=False,
            unit="step",
            desc=f"{self.method.name} {self.pair.source}→{self.pair.target}",
        )
        # Losses accumulate as tensors and are read every log_every steps: reading them each
        # step would synchronise a GPU every step.
        running: dict[str, torch.Tensor] = {}
        first = 0
        for index, (stage, n_steps) in enumerate(zip(stages, stage_steps, strict=True)):
            n_steps = int(n_steps)
            if first + n_steps <= state.step:  # finished before the checkpoint
                first += n_steps
                continue
            params = list(stage.params(self.method) if stage.params else self.method.parameters())
            self.make_optimizer([p for p in params if p.requires_grad], stage.lr_scale)
            if restored is not None and restored["stage"] == index:
                self.optimizer.load_state_dict(restored["optimizer"])
                self.scaler.load_state_dict(restored["scaler"])
            warmup = min(cfg.warmup_steps, n_steps // 4)
            self.method.train()
            t0 = time.perf_counter()
            for i in range(state.step - first, n_steps):
                for group in self.optimizer.param_groups:
                    group["lr"] = self._base_lr * warmup_cosine(i, n_steps, warmup)
                batch = {role: self._to_device(next(it)) for role, it in loaders.items()}
                total = self.train_step(stage.name, batch, state.step, i / max(1, n_steps))
                state.samples += sum(len(b["images"]) for b in batch.values())
                state.step += 1
                for k, v in self._last_losses.items():
                    running[k] = running[k] + v.detach() if k in running else v.detach()
                if state.step % cfg.log_every == 0 or i == n_steps - 1:
                    sums = {k: float(v) for k, v in running.items()}
                    if not math.isfinite(float(total)) or not all(
                        math.isfinite(v) for v in sums.values()
                    ):
                        state.status, state.diverged_at = "diverged", state.step
                        self.log(f"non-finite loss at step {state.step}: stopping")
                        break
                    count = state.step % cfg.log_every or cfg.log_every
                    entry = {"step": state.step, "stage": stage.name}
                    entry |= {k: v / count for k, v in sums.items()}
                    entry |= self.method.metrics_step()
                    entry["lr"] = self.optimizer.param_groups[0]["lr"]
                    state.losses.append(entry)
                    bar.set_postfix({k: f"{v / count:.4f}" for k, v in sums.items()})
                    running = {}
                bar.update(1)
                if state.step % cfg.eval_every == 0 or state.step == cfg.steps:
                    state.train_seconds += time.perf_counter() - t0
                    te = time.perf_counter()
                    state.evaluations.append(self.evaluate(state.step))
                    state.eval_seconds += time.perf_counter() - te
                    self._checkpoint(state, index)
                    self.method.train()
                    t0 = time.perf_counter()
            state.train_seconds += time.perf_counter() - t0
            first += n_steps
            if state.status == "diverged":
                break
        bar.close()
        return TrainResult(
            status=state.status,
            evaluations=state.evaluations,
            losses=state.losses,
            timings={
                "train_seconds": state.train_seconds,
                "eval_seconds": state.eval_seconds,
                "train_samples_per_s": state.samples / state.train_seconds
                if state.train_seconds > 0
                else 0.0,
                "steps": state.step,
                "resumed": restored is not None,
            },
            device=self._device_name(),
            peak_memory_mb=self._peak_memory_mb(),
            diverged_at=state.diverged_at,
        )

    def _loaders(self, offset: int = 0) -> dict[str, Iterator]:
        """Infinite shuffled batches per role; ``offset`` (the step a resumed run starts
        at) changes the shuffling seed so a resumed run does not replay the same batches."""
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

    def _checkpoint(self, state: _RunState, stage: int) -> None:
        """Everything needed to continue after this evaluation, written atomically."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        checkpoint = {
            "run": self.run_id,
            "stage": stage,
            "state": state,
            "method": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict() if self.optimizer else None,
            "scaler": self.scaler.state_dict(),
        }
        with atomic_path(self.workdir / "checkpoint.pt") as tmp:
            torch.save(checkpoint, tmp)

    def _restore(self) -> dict[str, Any] | None:
        path = self.workdir / "checkpoint.pt"
        if not path.exists():
            return None
        try:
            # Our own file, written by _checkpoint; it pickles the run state (metrics).
            ckpt = torch.load(path, map_location=self.device, weights_only=False)
        except Exception as exc:  # an interrupted or foreign file: start over
            self.log(f"ignoring unreadable checkpoint {path}: {exc}")
            return None
        if ckpt.get("run") != self.run_id:
            return None
        self.method.load_state_dict(ckpt["method"])
        return ckpt

    def _device_name(self) -> str:
        if self.device.type == "cuda":
            return f"cuda:{torch.cuda.get_device_name(self.device)}"
        return f"cpu:{torch.get_num_threads()} threads"

    def _peak_memory_mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        # ru_maxrss is in kB on Linux: the peak resident memory of this process.
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
