"""Runs a method's stages: per-stage views and batch sizes, named optimisers with their own
schedules, grouped or manual updates, frozen modules, hooks, AMP, clipping, periodic
evaluation, checkpoints that resume bit for bit, divergence detection, progress. Knows
nothing about Ray, grids or artifacts' storage."""

from __future__ import annotations

import hashlib
import math
import os
import random
import resource
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from bench.atomic import atomic_path
from bench.config import TrainConfig
from bench.data.pairs import PairShards, split_source_val
from bench.data.views import check_views
from bench.errors import DabenchError
from bench.evaluation import Evaluation, Evaluator
from bench.methods.base import Method
from bench.methods.spec import Epochs, Share, Stage, Steps
from bench.optim import build_optimizer, lr_factor, resolve_params
from bench.store import CHECKPOINT


@dataclass
class TrainResult:
    status: str  # "ok" | "diverged"
    evaluations: list[Evaluation]
    losses: list[dict[str, Any]]
    timings: dict[str, Any]
    device: str
    peak_memory_mb: float
    stage_steps: dict[str, int]
    diverged_at: int | None = None


@dataclass
class _RunState:
    """Where a run stands; checkpointed with the weights."""

    stage_index: int = 0  # index into the stages this run trains
    stage_step: int = 0  # steps done in that stage
    step: int = 0  # steps done in this run
    samples: int = 0
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    data_seconds: float = 0.0  # of train_seconds: waiting for the next batch
    checkpoint_seconds: float = 0.0
    status: str = "ok"
    diverged_at: int | None = None
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    losses: list[dict[str, Any]] = field(default_factory=list)


def _latest(state: _RunState) -> dict[str, Any]:
    """Where a run stands, flat, for live curves: the step, the last logged losses, and the
    overall metrics of an evaluation made at this step (``<split>/<metric>``)."""
    out: dict[str, Any] = {"step": state.step}
    if state.losses:
        last = state.losses[-1]
        out["stage"] = last["stage"]
        out |= {f"train/{k}": v for k, v in last.items() if k not in ("step", "stage")}
    if state.evaluations and state.evaluations[-1]["step"] == state.step:
        for split, m in state.evaluations[-1]["metrics"].items():
            out |= {f"{split}/{k}": v for k, v in m["overall"].items()}
    return out


# How torch words its refusal of a non-deterministic op when determinism is on.
NO_DETERMINISTIC_KERNEL = " does not have a deterministic implementation"


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Python, numpy and torch (CPU and CUDA) from one seed."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - libraries draw from the global RNG
    torch.manual_seed(seed)
    # Set both ways: one process runs trial after trial (a reused Ray worker, the local
    # executor), and a deterministic trial must not leave the next one deterministic.
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = False


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DabenchError("train.device is 'cuda' but no CUDA device is available")
    return torch.device(name)


def stream_seed(seed: int, stage: str, role: str) -> int:
    """A sampler seed per (trial seed, stage, role), stable across processes."""
    digest = hashlib.sha256(f"{seed}/{stage}/{role}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def stage_lengths(
    stages: list[Stage],
    budget: int,
    epoch_steps: Callable[[Stage], float],
) -> dict[str, int]:
    """Steps of every stage: fixed steps, epochs of a view (``epoch_steps`` gives one
    epoch's steps), or shares of ``budget``. When every stage is a share the shares are
    normalised and the last stage takes the rounding remainder, so they sum to ``budget``."""
    out = {}
    if all(isinstance(s.length, Share) for s in stages):
        shares = np.array([s.length.fraction for s in stages], dtype=float)
        if shares.sum() <= 0:
            raise DabenchError("stage shares must add up to more than 0")
        steps = np.floor(budget * shares / shares.sum()).astype(int)
        steps[-1] = budget - steps[:-1].sum()
        return {s.name: int(n) for s, n in zip(stages, steps, strict=True)}
    for s in stages:
        if isinstance(s.length, Steps):
            out[s.name] = int(s.length.n)
        elif isinstance(s.length, Epochs):
            out[s.name] = max(1, math.ceil(s.length.n * epoch_steps(s)))
        else:
            out[s.name] = round(budget * s.length.fraction)
    return out


class StepContext:
    """What the method sees of the trainer inside a step: the step counters, and in a
    manual stage the updates themselves."""

    def __init__(self, updater: StageUpdater, step: int = 0, progress: float = 0.0) -> None:
        self._updater = updater
        self.step = step  # steps of the whole run so far
        self.progress = progress  # fraction of the stage done
        self.stage_step = 0  # steps of this stage so far (e.g. a paper's "first 400 steps")

    def backward(self, loss: torch.Tensor, optimizer: str) -> None:
        """Gradients of ``loss`` for the parameters of ``optimizer`` only."""
        self._updater.backward(loss, optimizer)

    def optimizer_step(self, optimizer: str) -> None:
        """Clip, step and zero ``optimizer``; then the method's after-step hook."""
        self._updater.optimizer_step(optimizer, self)


class StageContext:
    """What ``on_stage_start`` sees: earlier stages' artifacts; whether it is a replay."""

    def __init__(self, artifacts: Mapping[str, Path], resuming: bool = False) -> None:
        self.artifacts = artifacts
        self.resuming = resuming


class StageUpdater:
    """The named optimisers of one stage and one iteration's updates: the method's losses,
    then (unless the stage is manual) one backward and step per optimiser of the losses it
    owns, in declared order; per-optimiser clipping and schedules; AMP loss scaling."""

    def __init__(
        self,
        method: Method,
        stage: Stage,
        config: TrainConfig,
        *,
        steps: int,
        scaler: torch.amp.GradScaler | None = None,
        autocast: Callable[[], Any] = nullcontext,
    ) -> None:
        self.method, self.stage, self.config, self.steps = method, stage, config, steps
        self.scaler = scaler or torch.amp.GradScaler("cuda", enabled=False)
        self.autocast = autocast
        self.declared = method.spec.losses(method.hparams, stage.name)
        self.owner = stage.loss_owner(self.declared)
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.params: dict[str, list[torch.nn.Parameter]] = {}
        self._base_lrs: dict[str, list[float]] = {}
        taken: set[int] = set()
        named_first = sorted(stage.optimizers.items(), key=lambda kv: kv[1].params is None)
        for name, spec in named_first:
            named = resolve_params(method, spec.params, taken)
            if not named:
                raise DabenchError(
                    f"method {method.name}, stage {stage.name!r}: optimiser {name!r} has no "
                    "trainable parameters"
                )
            taken |= {id(p) for _, p in named}
            opt, base = build_optimizer(spec, named, config, method)
            self.params[name], self._base_lrs[name], self.optimizers[name] = (
                [p for _, p in named],
                base,
                opt,
            )
        # the declared order is the order of the updates
        self.optimizers = {n: self.optimizers[n] for n in stage.optimizers}

    def set_learning_rates(self, i: int) -> None:
        """Each optimiser's schedule at step ``i`` of the stage."""
        for name, opt in self.optimizers.items():
            schedule = self.stage.optimizers[name].schedule
            factor = lr_factor(schedule, i, self.steps, self.config.warmup_steps)
            for group, base in zip(opt.param_groups, self._base_lrs[name], strict=True):
                group["lr"] = base * factor

    def step(self, batch: Mapping, ctx: StepContext) -> dict[str, torch.Tensor]:
        """One iteration on ``batch``; returns the losses (not synchronised)."""
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
        with self.autocast():
            losses = self.method.training_step(self.stage.name, batch, ctx)
        if set(losses) != set(self.declared):
            raise DabenchError(
                f"method {self.method.name}, stage {self.stage.name!r}: training_step returned "
                f"losses {sorted(losses)}, but the method declares {sorted(self.declared)}"
            )
        if not self.stage.manual:
            names = list(self.optimizers)
            if len(names) == 1:
                self.scaler.scale(sum(losses.values())).backward()
            else:
                # Every group's gradient comes from the same forward pass, restricted to its
                # own parameters; the steps follow, in declared order.
                for k, name in enumerate(names):
                    total = sum(v for key, v in losses.items() if self.owner[key] == name)
                    if isinstance(total, torch.Tensor) and total.requires_grad:
                        self.scaler.scale(total).backward(
                            inputs=self.params[name], retain_graph=k < len(names) - 1
                        )
            stepped = [self.optimizer_step(name, ctx) for name in names]
            if any(stepped):  # once per iteration, after every optimiser stepped
                self.scaler.update()
        return losses

    def backward(self, loss: torch.Tensor, optimizer: str) -> None:
        if optimizer not in self.optimizers:
            raise DabenchError(
                f"method {self.method.name}: no optimiser {optimizer!r} in stage "
                f"{self.stage.name!r}; optimisers: {sorted(self.optimizers)}"
            )
        self.scaler.scale(loss).backward(inputs=self.params[optimizer])

    def optimizer_step(self, name: str, ctx: StepContext) -> bool:
        """Clip, step and run the method's hook; False where no loss reached ``name``."""
        opt = self.optimizers[name]
        spec = self.stage.optimizers[name]
        clip = spec.grad_clip if spec.grad_clip is not None else self.config.grad_clip
        # An optimiser no loss reached this iteration does not step (its parameters have no
        # gradient, so torch's optimisers would skip them anyway): fp16's loss scaler
        # refuses a step it recorded no gradients for.
        stepped = any(p.grad is not None for p in self.params[name])
        if stepped:
            if clip > 0:
                self.scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(self.params[name], clip)
            self.scaler.step(opt)
            if self.stage.manual:
                # The method's next backward may reach this optimiser again in the same
                # iteration (Alg. 1's two updates of one encoder): the scaler must be
                # updated between, or it refuses a second step.
                self.scaler.update()
        opt.zero_grad(set_to_none=True)
        self.method.after_optimizer_step(self.stage.name, name, ctx)
        return stepped

    def state_dict(self) -> dict[str, Any]:
        return {n: o.state_dict() for n, o in self.optimizers.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state[name])


class Trainer:
    """Trains one method on one pair through the stages it declares (or the ``run`` named
    subset of them), evaluating the pose every ``eval_every`` steps of evaluated stages
    (never with ``evaluate`` False: a stage run that only makes an artifact)."""

    def __init__(
        self,
        method: Method,
        pair: PairShards,
        config: TrainConfig,
        seed: int,
        workdir: Path,
        *,
        run: list[str] | None = None,
        artifacts: Mapping[str, Path] | None = None,
        evaluate: bool = True,
        progress: bool = True,
        log: Callable[[str], None] | None = None,
        resume: bool = False,
        run_id: str = "",
        on_stage_end: Callable[[Stage], None] | None = None,
        on_checkpoint: Callable[[Path, dict[str, Any]], None] | None = None,
        other_checkpoints: Sequence[Path] = (),
    ) -> None:
        self.method = method
        self.pair = pair
        self.config = config
        self.seed = seed
        self.workdir = Path(workdir)
        self.artifacts = dict(artifacts or {})
        self.evaluate = evaluate
        self.progress = progress
        self.log = log or (lambda msg: None)
        self.resume = resume
        # Identifies the run a checkpoint belongs to: a checkpoint of another configuration
        # in the same directory is never resumed from.
        self.run_id = run_id or repr(config)
        self.on_stage_end = on_stage_end or (lambda stage: None)
        # Told of every checkpoint written, with the latest losses and evaluation (Ray Tune
        # keeps a copy, for retries on another node, and shows the curves live).
        self.on_checkpoint = on_checkpoint
        # Checkpoints of this run kept elsewhere (Tune's copy); the furthest one resumes.
        self.other_checkpoints = tuple(other_checkpoints)
        self.device = resolve_device(config.device)
        if config.amp == "fp16" and self.device.type != "cuda":
            raise DabenchError("train.amp 'fp16' needs a CUDA device; use 'bf16' on the CPU")
        if config.threads > 0:
            torch.set_num_threads(config.threads)
        self.plan = method.stages()
        names = [s.name for s in self.plan]
        unknown = sorted(set(run or ()) - set(names))
        if unknown:
            raise DabenchError(f"method {method.name}: no stage(s) {unknown}; stages: {names}")
        self.stages = [s for s in self.plan if run is None or s.name in run]
        for stage in self.stages:
            check_views(method.name, stage.views, pair)
        num = pair.info("source_train").num_samples
        self.source_train, self.source_val = split_source_val(num, config.source_val_fraction)
        # config.steps is the budget shares divide (adapt_steps for a warm-started trial:
        # the grid puts it there)
        self.lengths = stage_lengths(self.plan, config.steps, self._epoch_steps)
        self.total_steps = sum(self.lengths[s.name] for s in self.stages)
        self.method.to(self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=config.amp == "fp16")
        self.evaluator = Evaluator(
            pair,
            self.workdir / "evaluations",
            source_val=self.source_val,
            source_test=config.eval_source_test,
            batch_size=config.eval_batch_size,
            device=self.device,
            autocast=self.autocast,
        )
        self.streams: dict[str, Any] = {}
        self.update: StageUpdater | None = None

    # -- pieces a stage is made of; public so tests and benchmarks use the real thing --------
    def autocast(self):
        if self.config.amp == "none":
            return nullcontext()
        dtype = torch.bfloat16 if self.config.amp == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def batch_size(self, stage: Stage, role: str) -> int:
        return stage.batch_sizes.get(role, self.config.batch_size)

    def _epoch_steps(self, stage: Stage) -> float:
        role = stage.length.role or next(iter(stage.views))  # type: ignore[union-attr]
        view = stage.views[role]
        return view.units(self.pair, self.source_train) / self.batch_size(stage, role)

    def open_streams(self, stage: Stage) -> dict[str, Any]:
        """The stage's batch streams (one per role), positioned at their start."""
        return {
            role: view.stream(
                self.pair,
                self.batch_size(stage, role),
                stream_seed(self.seed, stage.name, role),
                source_indices=self.source_train,
                artifacts=self.artifacts,
                workers=self.config.workers,
            )
            for role, view in stage.views.items()
        }

    def next_batch(self) -> dict[str, dict[str, torch.Tensor]]:
        return {role: self._to_device(next(s)) for role, s in self.streams.items()}

    def updater(self, stage: Stage) -> StageUpdater:
        return StageUpdater(
            self.method,
            stage,
            self.config,
            steps=self.lengths[stage.name],
            scaler=self.scaler,
            autocast=self.autocast,
        )

    def _to_device(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        return {
            k: v.to(self.device, non_blocking=True)
            for k, v in batch.items()
            if isinstance(v, torch.Tensor) and k != "index"
        }

    # -- the whole run ------------------------------------------------------------------
    def fit(self) -> TrainResult:
        """Train the stages in order. With ``resume`` and a checkpoint of the same run in
        ``workdir`` (a retried trial), training continues from it exactly: weights,
        optimisers, samplers and random generators are restored."""
        try:
            return self._fit()
        except RuntimeError as exc:
            # torch refuses, under use_deterministic_algorithms, an op with no deterministic
            # kernel on this device (grid_sample's backward on CUDA, say): a property of the
            # method and the device, so a configuration error that retrying cannot mend.
            op, found, _ = str(exc).partition(NO_DETERMINISTIC_KERNEL)
            if not (self.config.deterministic and found):
                raise
            raise DabenchError(
                f"train.deterministic is true, but method {self.method.name!r} runs "
                f"{op.strip()!r}, which has no deterministic kernel on {self.device.type}; "
                "set train.deterministic: false for it (the seed still fixes initialisation "
                "and data order)"
            ) from exc

    def _fit(self) -> TrainResult:
        cfg = self.config
        state = _RunState()
        restored = self._read_checkpoint() if self.resume else None
        resumed = restored is not None
        resumed_at = restored["state"].step if restored is not None else 0
        self._last_checkpoint = time.perf_counter()
        if restored is not None:
            state = restored["state"]
            self.log(f"resuming after step {state.step}")
        else:
            seed_everything(self.seed, cfg.deterministic)
        bar = tqdm(
            total=self.total_steps,
            initial=state.step,
            disable=not self.progress,
            leave=False,
            unit="step",
            desc=f"{self.method.name} {self.pair.source}→{self.pair.target}",
        )
        # Losses accumulate as tensors and are read every log_every steps: reading them each
        # step would synchronise a GPU every step.
        running: dict[str, torch.Tensor] = dict(restored["running"]) if restored else {}
        for index in range(state.stage_index, len(self.stages)):
            stage = self.stages[index]
            n_steps = self.lengths[stage.name]
            resuming_here = restored is not None and index == state.stage_index
            if resuming_here:
                self._replay_stage_starts(index)
                self._load_checkpoint(restored, stage)
            else:
                state.stage_index, state.stage_step = index, 0
                self.method.on_stage_start(stage, StageContext(self.artifacts))
                self.update = self.updater(stage)
                self.streams = self.open_streams(stage) if n_steps > 0 else {}
            update = self.update
            ctx = StepContext(update)
            self.method.train()
            t0 = time.perf_counter()
            for i in range(state.stage_step, n_steps):
                update.set_learning_rates(i)
                tb = time.perf_counter()
                batch = self.next_batch()
                state.data_seconds += time.perf_counter() - tb
                ctx.step, ctx.progress = state.step, i / max(1, n_steps)
                ctx.stage_step = i
                losses = update.step(batch, ctx)
                state.samples += sum(len(b["images"]) for b in batch.values() if "images" in b)
                state.step += 1
                state.stage_step = i + 1
                for k, v in losses.items():
                    v = v.detach().float()
                    running[k] = running[k] + v if k in running else v
                if state.step % cfg.log_every == 0 or i == n_steps - 1:
                    if not self._log(state, stage, running, bar):
                        break
                    running = {}
                bar.update(1)
                last = state.step == self.total_steps
                if state.step % cfg.eval_every == 0 or last or i == n_steps - 1:
                    state.train_seconds += time.perf_counter() - t0
                    due = state.step % cfg.eval_every == 0 or last
                    if self.evaluate and stage.evaluate and due:
                        te = time.perf_counter()
                        ev = self.evaluator(self.method, state.step, stage.name)
                        state.evaluations.append(ev.entry() | {"directory": str(ev.directory)})
                        state.eval_seconds += time.perf_counter() - te
                        tt = ev.metrics["target_test"]["overall"]
                        self.log(
                            f"step {state.step}: target MPJPE {tt['mpjpe']:.1f} mm, "
                            f"PCK@0.05 {tt['pck2d_005']:.1f}%"
                        )
                    self._timed_checkpoint(state, running)
                    self.method.train()
                    t0 = time.perf_counter()
                elif (
                    cfg.checkpoint_every_s
                    and time.perf_counter() - self._last_checkpoint >= cfg.checkpoint_every_s
                ):
                    state.train_seconds += time.perf_counter() - t0
                    self._timed_checkpoint(state, running)
                    t0 = time.perf_counter()
            state.train_seconds += time.perf_counter() - t0
            if state.status == "diverged":
                break
            self.on_stage_end(stage)
            self._export_for_later_stages(index + 1)
            restored = None
        bar.close()
        return TrainResult(
            status=state.status,
            evaluations=[_evaluation(e) for e in state.evaluations],
            losses=state.losses,
            timings={
                "train_seconds": state.train_seconds,
                "eval_seconds": state.eval_seconds,
                "data_seconds": state.data_seconds,
                "checkpoint_seconds": state.checkpoint_seconds,
                "train_samples_per_s": state.samples / state.train_seconds
                if state.train_seconds > 0
                else 0.0,
                "steps": state.step,
                "resumed": resumed,
                "resumed_at_step": resumed_at,
            },
            device=self._device_name(),
            peak_memory_mb=self._peak_memory_mb(),
            stage_steps={s.name: self.lengths[s.name] for s in self.stages},
            diverged_at=state.diverged_at,
        )

    def _log(self, state: _RunState, stage: Stage, running: dict, bar: tqdm) -> bool:
        """Append a log entry; False (and status diverged) on a non-finite loss."""
        sums = {k: float(v) for k, v in running.items()}
        if not all(math.isfinite(v) for v in sums.values()):
            state.status, state.diverged_at = "diverged", state.step
            self.log(f"non-finite loss at step {state.step}: stopping")
            return False
        count = state.step % self.config.log_every or self.config.log_every
        count = min(count, state.stage_step) or 1
        entry: dict[str, Any] = {"step": state.step, "stage": stage.name}
        entry |= {k: v / count for k, v in sums.items()}
        entry |= self.method.scalars()
        optimizers = self.update.optimizers if self.update else {}
        for name, opt in optimizers.items():
            entry["lr" if len(optimizers) == 1 else f"lr_{name}"] = opt.param_groups[0]["lr"]
        state.losses.append(entry)
        bar.set_postfix({k: f"{v / count:.4f}" for k, v in sums.items()})
        return True

    # -- checkpoints ----------------------------------------------------------------------
    def _timed_checkpoint(self, state: _RunState, running: Mapping[str, torch.Tensor]) -> None:
        started = time.perf_counter()
        self._checkpoint(state, running)
        if self.on_checkpoint is not None:
            self.on_checkpoint(self.workdir / CHECKPOINT, _latest(state))
        self._last_checkpoint = time.perf_counter()
        state.checkpoint_seconds += self._last_checkpoint - started

    def _checkpoint(self, state: _RunState, running: Mapping[str, torch.Tensor]) -> None:
        """Everything needed to continue exactly after this step, written atomically:
        no predictions and no per-sample errors (those are on disk per evaluation)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        checkpoint = {
            "run": self.run_id,
            "state": state,
            "method": self.method.state_dict(),
            "optimizers": self.update.state_dict() if self.update else {},
            "scaler": self.scaler.state_dict(),
            "streams": {r: s.state_dict() for r, s in self.streams.items()},
            "running": {k: v.cpu() for k, v in running.items()},
            "rng": _rng_state(self.device),
        }
        with atomic_path(self.workdir / CHECKPOINT) as tmp:
            torch.save(checkpoint, tmp)

    def _read_checkpoint(self) -> dict[str, Any] | None:
        """The furthest readable checkpoint of this run among the work directory's and
        :attr:`other_checkpoints`; None if there is none."""
        found = []
        for path in (self.workdir / CHECKPOINT, *self.other_checkpoints):
            if not path.exists():
                continue
            try:
                # Our own file, written by _checkpoint; it pickles the run state (metrics).
                ckpt = torch.load(path, map_location="cpu", weights_only=False)
            except Exception as exc:  # a damaged or foreign file is never trusted
                self.log(f"ignoring unreadable checkpoint {path}: {exc}")
                continue
            if ckpt.get("run") == self.run_id and isinstance(ckpt.get("state"), _RunState):
                found.append(ckpt)
        return max(found, key=lambda c: c["state"].step, default=None)

    def _replay_stage_starts(self, index: int) -> None:
        """The start hooks of every stage up to ``index`` (modules they create or freeze
        must exist before the checkpoint's weights are loaded into them)."""
        for stage in self.stages[: index + 1]:
            self.method.on_stage_start(stage, StageContext(self.artifacts, resuming=True))

    def _export_for_later_stages(self, done: int) -> None:
        """Data the first ``done`` stages produce that a later stage of this run reads
        (``FromArtifact`` views), when no stored artifact provides it: exported by the
        method into the work directory, as a grid's stage run would into the store. Done
        once per stage; a resumed run exports what its crash left unexported, from the
        restored weights."""
        wanted = {
            view.stage
            for later in self.stages[done:]
            for view in later.views.values()
            if getattr(view, "stage", None)
        }
        for stage in self.stages[:done]:
            if stage.name not in wanted or stage.name in self.artifacts:
                continue
            directory = self.workdir / "stage-artifacts" / stage.name
            if not directory.is_dir():
                tmp = directory.with_name(f".{stage.name}.tmp")
                if tmp.exists():
                    shutil.rmtree(tmp)
                tmp.mkdir(parents=True)
                self.method.export_artifact(stage.name, tmp, self.pair)
                tmp.rename(directory)
            self.artifacts[stage.name] = directory

    def _load_checkpoint(self, ckpt: dict[str, Any], stage: Stage) -> None:
        self.method.load_state_dict(ckpt["method"])
        self.method.to(self.device)
        self._export_for_later_stages(self.stages.index(stage))
        self.update = self.updater(stage)
        self.update.load_state_dict(ckpt["optimizers"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.streams = self.open_streams(stage) if self.lengths[stage.name] > 0 else {}
        for role, s in self.streams.items():
            s.load_state_dict(ckpt["streams"][role])
        _set_rng_state(ckpt["rng"], self.device)

    def _device_name(self) -> str:
        if self.device.type == "cuda":
            return f"cuda:{torch.cuda.get_device_name(self.device)}"
        return f"cpu:{torch.get_num_threads()} threads"

    def _peak_memory_mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        # ru_maxrss is in kB on Linux: the peak resident memory of this process.
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _evaluation(entry: Mapping[str, Any]) -> Evaluation:
    return Evaluation(
        step=entry["step"],
        stage=entry["stage"],
        metrics=entry["metrics"],
        directory=Path(entry["directory"]),
    )


def _rng_state(device: torch.device) -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
        "numpy": np.random.get_state(),  # noqa: NPY002 - the global state libraries use
        "python": random.getstate(),
    }


def _set_rng_state(state: Mapping[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and device.type == "cuda":
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    random.setstate(state["python"])
