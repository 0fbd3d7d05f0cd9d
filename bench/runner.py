"""Execute a grid's DAG: skip finished trials and existing artifacts, prepare data and
check every node's views before any compute, then run the stage runs and trials in
dependency order — as Ray Tune trials (local Ray or a cluster; each node with its own
resources, crashes retried) or in-process."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import reaper
from bench.artifacts import ArtifactStore
from bench.atomic import atomic_path
from bench.errors import DabenchError
from bench.grid import Grid, StageRunSpec, TrialSpec
from bench.paths import shard_root
from bench.progress import GridProgress
from bench.store import CHECKPOINT, attempts, is_complete, read_record, trial_dir, write_trial
from bench.trackers import callbacks, check_trackers

EXECUTORS = ("ray", "local")
TUNE_RUN_NODES = 250  # nodes per Tune run (see _run_ray); measured in docs/benchmarks.md

Node = StageRunSpec | TrialSpec


@dataclass(frozen=True)
class RunSummary:
    total: int
    skipped: int
    records: list[dict[str, Any]]
    stage_runs: int = 0  # stage runs computed by this run
    # wall seconds of the driver's phases: prepare (data generation and checks), ray_start,
    # nodes (from the first node's start to the last one's end)
    timings: dict[str, float] = field(default_factory=dict)
    ran_ids: tuple[str, ...] = ()  # trials this run trained (the others were complete)

    @property
    def ran(self) -> int:
        return len(self.ran_ids)

    @property
    def ran_records(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r["trial_id"] in self.ran_ids]

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r["status"] == "failed"]


def schedule(grid: Grid, results: Path, log: Callable[[str], None] = print) -> list[list[Node]]:
    """The nodes still to run, in waves: every node's start artifact exists or is made by
    a node of an earlier wave. A missing artifact is made by the pending trial that
    exports it, or else by its stage run."""
    store = ArtifactStore(results)
    for run in grid.stage_runs:  # a damaged artifact is made anew, never started from
        if store.exists(run.key) and (why := store.verify(run.key)):
            aside = store.quarantine(run.key)
            log(f"stage artifact {run.key} is damaged ({why}): moved to {aside}, made anew")
    pending = [t for t in grid.trials if not is_complete(results, t.trial_id)]
    runs = {s.key: s for s in grid.stage_runs}
    pending_ids = {t.trial_id for t in pending}
    producer: dict[str, Node] = {}
    nodes: dict[str, Node] = {t.trial_id: t for t in pending}

    def need(key: str) -> None:
        if store.exists(key) or key in producer:
            return
        run = runs.get(key)
        if run is None:  # pragma: no cover - the grid always has a stage run per needed key
            raise DabenchError(f"no node of grid {grid.name} makes artifact {key}")
        if run.exported_by in pending_ids:
            producer[key] = nodes[run.exported_by]
        else:
            producer[key] = run
            nodes[run.key] = run
        for up in producer[key].upstream:
            need(up.key)

    for t in pending:
        for up in t.upstream:
            need(up.key)
    depth: dict[str, int] = {}

    def level(node: Node) -> int:
        if node.node_id not in depth:
            deps = [producer[u.key] for u in node.upstream if u.key in producer]
            depth[node.node_id] = 1 + max((level(d) for d in deps), default=-1)
        return depth[node.node_id]

    waves: list[list[Node]] = []
    for node in nodes.values():
        k = level(node)
        while len(waves) <= k:
            waves.append([])
        waves[k].append(node)
    return waves


def node_work(node: Node) -> float:
    """A node's work in image batches, roughly: per stage it trains, its steps (fixed, a
    share of the budget, or epochs of its data at its batch size) times the views it reads.
    Only for ordering: steps of different methods cost differently, but a 600-step trial
    is not a 20-step one."""
    from bench.methods.cards import load_method_card
    from bench.methods.spec import Epochs, Share, Steps, coerce_hparams, get_spec

    try:
        spec = get_spec(load_method_card(node.method).adapter)
        plan = {s.name: s for s in spec.stages(coerce_hparams(spec.Hparams, node.hparams, ""))}
    except DabenchError:
        return 1.0
    batch = max(1, int(node.train.get("batch_size", 32)))
    budget = float(node.train.get("steps", 1))
    work = 0.0
    for name in node.stages:
        stage = plan.get(name)
        if stage is None:
            continue
        length = stage.length
        if isinstance(length, Steps):
            steps = float(length.n)
        elif isinstance(length, Share):
            steps = length.fraction * budget
        elif isinstance(length, Epochs):
            role = length.role or next(iter(stage.views))
            per_step = stage.batch_sizes.get(role) or batch
            steps = length.n * node.data.get("n_train", budget * per_step) / per_step
        else:
            steps = budget
        work += steps * len(stage.views)
    return max(work, 1.0)


def critical_first(waves: list[list[Node]]) -> list[Node]:
    """The nodes in the order they are offered to free workers: the most work on the
    longest chain through a node first — its own work (:func:`node_work`) plus the most
    of any node waiting on it — so that long trials (source-only and the oracle at the
    full budget) and the producers of long chains (a source-only trial before its adapters,
    a segmenter before the pre-training and fine-tuning it unlocks) start first and short
    nodes fill the end; else in wave order. A producer's figure always exceeds its
    consumers', so the order stays topological."""
    nodes = [n for wave in waves for n in wave]
    made_by = {k: n.node_id for n in nodes for k in _produces(n)}
    children: dict[str, list[Node]] = {n.node_id: [] for n in nodes}
    for n in nodes:
        for up in n.upstream:
            if up.key in made_by:
                children[made_by[up.key]].append(n)
    work = {n.node_id: node_work(n) for n in nodes}
    chain: dict[str, float] = {}

    def weight(node: Node) -> float:
        if node.node_id not in chain:
            below = max((weight(c) for c in children[node.node_id]), default=0.0)
            chain[node.node_id] = work[node.node_id] + below
        return chain[node.node_id]

    return sorted(nodes, key=lambda n: -weight(n))  # stable: wave order among equals


def prepare(nodes: list[Node], data_root: Path, progress: bool = True) -> None:
    """Generate missing synthetic shards once, in the driver, and check that every pair
    can feed every node's stages — all before the first node starts."""
    from bench.trial import prepare_pair

    pairs: dict = {}
    for node in nodes:
        prepare_pair(node, data_root, progress=progress, pairs=pairs)


def run_grid(
    grid: Grid,
    results: Path,
    *,
    executor: str = "ray",
    address: str | None = None,
    data_root: Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    check_resources: bool = True,
    trackers: tuple[str, ...] = (),
) -> RunSummary:
    """Run the grid's missing trials (and the stage runs they need) into ``results``.
    Under Ray the cluster is checked first: ``check_resources`` refuses nodes that ask for
    more than any machine has (off for clusters that add machines on demand).
    ``trackers`` (bench.trackers) show the nodes' curves live."""
    if executor not in EXECUTORS:
        raise DabenchError(f"unknown executor {executor!r}; valid: {', '.join(EXECUTORS)}")
    check_trackers(tuple(trackers), executor)
    results = Path(results).resolve()
    data_root = Path(data_root or shard_root()).resolve()
    waves = schedule(grid, results, log)
    nodes = critical_first(waves)
    trials = [n for n in nodes if isinstance(n, TrialSpec)]
    stage_runs = [n for n in nodes if isinstance(n, StageRunSpec)]
    skipped = len(grid.trials) - len(trials)
    log(
        f"grid {grid.name}: {len(grid.trials)} trials, {skipped} already complete, "
        f"{len(trials)} to run, {len(stage_runs)} stage run(s) to compute ({executor}) "
        f"→ {results}"
    )
    computed = 0
    timings: dict[str, float] = {}
    if nodes:
        run_id = uuid.uuid4().hex
        tracker = GridProgress(nodes, log)
        store = ArtifactStore(results)
        session = _ray_session(address, timings) if executor == "ray" else contextlib.nullcontext()
        with session:
            if executor == "ray":
                _check_cluster(nodes, results, data_root, check_resources)
            started = time.perf_counter()
            prepare(nodes, data_root, progress)
            timings["prepare"] = time.perf_counter() - started
            results.mkdir(parents=True, exist_ok=True)
            started = time.perf_counter()
            if executor == "local":
                for wave in waves:
                    for node in _drop_orphans(wave, store, results, run_id, log, tracker):
                        _run_local(node, results, data_root, run_id, progress, log, tracker)
            else:
                _run_ray(grid, nodes, results, data_root, run_id, log, tracker, trackers)
            timings["nodes"] = time.perf_counter() - started
        computed = sum(
            store.exists(s.key) and store.meta(s.key).get("run_id") == run_id for s in stage_runs
        )
    if results.exists():
        write_grid_report(results, grid)
    records = []
    for spec in grid.trials:
        path = trial_dir(results, spec.trial_id) / "record.json"
        if not path.exists():
            raise DabenchError(
                f"trial {spec.trial_id} ({spec.label}) produced no record; see "
                f"the Ray logs under {results / '_ray'}"
            )
        records.append(read_record(path))
    return RunSummary(
        total=len(grid.trials),
        skipped=skipped,
        records=records,
        stage_runs=computed,
        timings=timings,
        ran_ids=tuple(t.trial_id for t in trials),
    )


def write_grid_report(results: Path, grid: Grid) -> None:
    """The grid's ``report:`` settings into the store, so that a report of the store is a
    function of the store alone (bench.report.frames reads them)."""
    from bench.report.frames import GRID_REPORTS

    path = results / GRID_REPORTS / f"{grid.name}.json"
    path.parent.mkdir(exist_ok=True)
    text = json.dumps(dict(grid.report), indent=1, sort_keys=True) + "\n"
    if not path.exists() or path.read_text() != text:
        with atomic_path(path) as tmp:
            tmp.write_text(text)


def _check_cluster(nodes: list[Node], results: Path, data_root: Path, resources: bool) -> None:
    """Before any data is made or any node starts: the directories are not inside a job's
    temporary copy, every node's resources fit a machine, every machine reaches the
    directories."""
    import ray

    from bench import cluster

    cluster.check_not_in_job_copy({"results": results, "data": data_root})
    if resources:
        requests = {(n.label, repr(n.resources)): n.resources for n in nodes}
        cluster.check_fit(
            [(f"method {label}", r) for (label, _), r in requests.items()], ray.nodes()
        )
    made = [d for d in (results, data_root) if not d.exists()]
    for d in made:
        d.mkdir(parents=True)
    try:
        cluster.check_reachable(results, data_root)
    except DabenchError:
        for d in made:  # nothing of a refused run stays on disk
            with contextlib.suppress(OSError):
                d.rmdir()
        raise


def _drop_orphans(
    wave: list[Node],
    store: ArtifactStore,
    results: Path,
    run_id: str,
    log: Callable,
    tracker: GridProgress,
) -> list[Node]:
    """Nodes whose start artifact could not be made (its producer failed) do not run; a
    trial among them gets a failed record that names the missing artifact."""
    ready = []
    for node in wave:
        missing = [u for u in node.upstream if not store.exists(u.key)]
        if not missing:
            ready.append(node)
            continue
        u = missing[0]
        message = (
            f"the artifact it starts from ({u.method} stage {u.stage}, {u.key}) could not be "
            "made: its stage run or trial failed (see above)"
        )
        log(
            f"{tracker.done(node.node_id, ok=False)}  {node.label} {node.source} → "
            f"{node.target} seed {node.seed}: skipped, {message}"
        )
        if isinstance(node, TrialSpec):
            from bench.trial import failed_record

            write_trial(results, failed_record(node, results, DabenchError(message)), None)
    return ready


def _describe(node: Node) -> str:
    what = "stage run " + "/".join(node.stages) if isinstance(node, StageRunSpec) else "trial"
    return f"{node.label} {node.source} → {node.target} seed {node.seed} ({what})"


def _run_local(
    node: Node,
    results: Path,
    data_root: Path,
    run_id: str,
    progress: bool,
    log: Callable[[str], None],
    grid_progress: GridProgress,
) -> None:
    from bench.trial import run_stage_run, run_trial

    log(f"[{grid_progress.finished + 1}/{grid_progress.total}] {_describe(node)}")
    grid_progress.started(node.node_id)
    ok = True
    try:
        if isinstance(node, StageRunSpec):
            run_stage_run(
                node, results, data_root=data_root, run_id=run_id, progress=progress, log=log
            )
            log(f"  stage run {node.key}: ok")
        else:
            record = run_trial(
                node, results, data_root=data_root, run_id=run_id, progress=progress, log=log
            )
            ok = record["status"] != "failed"
            log(_summary_line(record))
    except Exception as exc:  # recorded by the node; the grid goes on
        ok = False
        log(f"  failed: {type(exc).__name__}: {exc}")
    grid_progress.done(node.node_id, ok)
    log(grid_progress.line())


def _summary_line(record: dict[str, Any]) -> str:
    head = (
        f"  {record['label']} {record['pair']['source']} → {record['pair']['target']} "
        f"seed {record['seed']}: {record['status']}"
    )
    if record["status"] == "failed":
        return f"{head} ({record['error']['type']}: {record['error']['message']})"
    overall = record["metrics"].get("target_test", {}).get("overall", {})
    if overall:
        head += (
            f", target MPJPE {_fmt(overall.get('mpjpe'))} mm, "
            f"PCK@0.05 {_fmt(overall.get('pck2d_005'))}%"
        )
    return head


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _entry(node: Node) -> dict[str, Any]:
    """A node as the config entry a Tune trial runs."""
    return {
        "kind": "stage" if isinstance(node, StageRunSpec) else "trial",
        "node": node.to_dict(),
        "resources": dict(node.resources),
    }


def _tune_node(config: dict[str, Any]) -> None:
    """The Ray Tune trainable: run one node (stage run or trial) and report its outcome.
    Every checkpoint the node writes goes to Tune too, with the latest losses and
    evaluation (live curves; a retry on another machine resumes from Tune's copy).
    Exceptions other than a bad configuration propagate, so ``FailureConfig`` retries."""
    import tempfile

    from ray import tune

    from bench.trial import Checkpoints, run_stage_run, run_trial

    entry = config["spec"]
    results = Path(config["results"])
    with tempfile.TemporaryDirectory(prefix="dabench-restore-") as restore:
        others: tuple[Path, ...] = ()
        previous = tune.get_checkpoint()
        if previous is not None:  # a retry: Tune's copy of the last checkpoint
            previous.to_directory(restore)
            others = (Path(restore) / CHECKPOINT,)
        kwargs = {
            "data_root": Path(config["data_root"]),
            "run_id": config["run_id"],
            "progress": False,
            "checkpoints": Checkpoints(
                others=others,
                on_write=lambda path, metrics: _report_checkpoint(
                    path, metrics, results / "_ray" / config["experiment"]
                ),
            ),
        }
        if entry["kind"] == "stage":
            try:
                run_stage_run(StageRunSpec.from_dict(entry["node"]), results, **kwargs)
            except DabenchError as exc:  # a bad configuration: retrying cannot help
                tune.report({"status": "failed", "error": str(exc), "target_mpjpe": -1.0})
                return
            tune.report({"status": "ok", "target_mpjpe": -1.0})
            return
        record = run_trial(TrialSpec.from_dict(entry["node"]), results, **kwargs)
    overall = record["metrics"].get("target_test", {}).get("overall", {})
    tune.report({"status": record["status"], "target_mpjpe": overall.get("mpjpe") or -1.0})


def _report_checkpoint(path: Path, metrics: dict[str, Any], experiment: Path) -> None:
    """Hand a checkpoint just written to Tune, which copies it into the trial's directory
    under ``experiment``; then drop the copies before it (only the last one resumes)."""
    import tempfile

    from ray import tune

    with tempfile.TemporaryDirectory(prefix="dabench-ckpt-") as d:
        try:  # a hard link costs nothing; Tune copies the file into its storage
            os.link(path, Path(d) / CHECKPOINT)
        except OSError:
            shutil.copyfile(path, Path(d) / CHECKPOINT)
        # timesteps_total: the x axis Tune's TensorBoard and MLflow loggers plot against
        metrics = {"status": "running", "timesteps_total": metrics["step"], **metrics}
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
    # Tune's num_to_keep would do this, but it also makes the driver save the whole
    # experiment's state after every checkpoint: quadratic in the grid's size.
    copies = sorted((experiment / tune.get_context().get_trial_id()).glob("checkpoint_*"))
    for old in copies[:-1]:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def _ray_session(address: str | None, timings: dict[str, float]) -> Iterator[None]:
    """One Ray session for every wave of a run (started here unless one is running); the
    seconds ``ray.init`` took go to ``timings["ray_start"]``."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    import ray

    if ray.is_initialized():
        yield
        return
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "logging_level": "ERROR",
        "log_to_driver": False,
    }
    if address:
        kwargs["address"] = address
    started = time.perf_counter()
    ray.init(**kwargs)
    timings["ray_start"] = time.perf_counter() - started
    # A local Ray started here is stopped even if this process is killed (see bench.reaper).
    guard = contextlib.nullcontext() if address else reaper.watch()
    try:
        with guard:
            try:
                yield
            finally:
                ray.shutdown()
    finally:
        if ray.is_initialized():  # pragma: no cover - the watcher failed to start
            ray.shutdown()


def _produces(node: Node) -> set[str]:
    """The artifact keys a node writes."""
    return {node.key} if isinstance(node, StageRunSpec) else set(node.exports.values())


class _Dependencies:
    """Releases nodes in order as soon as every artifact they start from is made or has
    failed to be made (then the node is dropped as an orphan, see ``_drop_orphans``), so
    one Tune run covers the whole DAG: no barrier between levels, one set of workers."""

    def __init__(self, nodes: list[Node], release: Callable[[Node], bool]) -> None:
        self.pending = list(nodes)
        self.unfinished = {n.node_id: n for n in nodes}
        # artifact key → how many unfinished nodes still make it
        self.outstanding = Counter(k for n in nodes for k in _produces(n))
        self.release = release  # False: the node is an orphan and finished at once

    def next(self) -> Node | None:
        """The first pending node whose producers all finished; None if none is ready."""
        while True:
            node = next(
                (n for n in self.pending if not any(self.outstanding[u.key] for u in n.upstream)),
                None,
            )
            if node is None:
                return None
            self.pending.remove(node)
            if self.release(node):
                return node
            self.finish(node.node_id)

    def finish(self, node_id: str) -> None:
        node = self.unfinished.pop(node_id, None)
        if node is not None:
            self.outstanding.subtract(_produces(node))

    @property
    def exhausted(self) -> bool:
        return not self.pending


def _run_ray(
    grid: Grid,
    nodes: list[Node],
    results: Path,
    data_root: Path,
    run_id: str,
    log: Callable[[str], None],
    grid_progress: GridProgress,
    trackers: tuple[str, ...] = (),
) -> None:
    # Tune's own loggers (JSON, CSV, TensorBoard) only on request: the records are the
    # results, and a grid of thousands of trials should not write three logs per trial.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    from ray import tune
    from ray.tune.search import Searcher

    from bench.cluster import tune_resources

    store = ArtifactStore(results)

    def release(node: Node) -> bool:
        return bool(_drop_orphans([node], store, results, run_id, log, grid_progress))

    class _DagSearcher(Searcher):
        """Tune asks for a trial whenever a worker is free; a node is suggested once its
        start artifacts exist (None: wait for a running node to finish)."""

        def __init__(self, deps: _Dependencies) -> None:
            super().__init__()
            self.deps = deps
            self.live: dict[str, str] = {}  # Tune trial id → node id

        def set_search_properties(self, metric, mode, config, **spec) -> bool:
            return True

        def suggest(self, trial_id: str) -> dict | None:
            node = self.deps.next()
            if node is None:
                return Searcher.FINISHED if self.deps.exhausted and not self.live else None
            self.live[trial_id] = node.node_id
            return {"spec": _entry(node)}

        def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
            self.deps.finish(self.live.pop(trial_id, ""))

    def node_of(trial: Any) -> Node:
        entry = trial.config["spec"]
        kind = StageRunSpec if entry["kind"] == "stage" else TrialSpec
        return kind.from_dict(entry["node"])

    class _Progress(tune.Callback):
        def on_step_begin(self, iteration, trials, **info) -> None:
            grid_progress.tick()

        def on_trial_start(self, iteration, trials, trial, **info) -> None:
            grid_progress.started(node_of(trial).node_id)

        def on_trial_complete(self, iteration, trials, trial, **info) -> None:
            self._finished(trial, ok=True)

        def on_trial_error(self, iteration, trials, trial, **info) -> None:
            self._finished(trial, ok=False)

        def _finished(self, trial: Any, ok: bool) -> None:
            # Tune's copy of the node's last checkpoint only serves Tune's own retries, over
            # now; kept, a grid of a thousand trials would keep a thousand copies on disk.
            for where in {trial.path, trial.local_path}:
                for ckpt in Path(where).glob("checkpoint_*"):
                    shutil.rmtree(ckpt, ignore_errors=True)
            node = node_of(trial)
            if isinstance(node, StageRunSpec):
                outcome = "done" if ok else "failed"
                log(f"{grid_progress.done(node.node_id, ok)} stage run {node.key}: {outcome}")
                return
            path = trial_dir(results, node.trial_id) / "record.json"
            if not ok and not path.exists():  # killed every time: it wrote no record
                _gave_up(node, trial, results)
            record = read_record(path) if path.exists() else None
            ok = ok and record is not None and record["status"] != "failed"
            line = _summary_line(record) if record else f"  {node.label}: no record"
            log(f"{grid_progress.done(node.node_id, ok)}{line}")

    # Each node asks for its own resources (a GPU method beside CPU baselines).
    trainable = tune.with_resources(
        _tune_node, lambda config: tune_resources(config["spec"]["resources"])
    )
    max_failures = max(int(n.train.get("max_failures", 1)) for n in nodes)
    # Tune runs of at most TUNE_RUN_NODES nodes, one after another (nodes are in
    # dependency order, so a run only waits on earlier ones): Tune keeps every trial of a
    # run in the driver's memory, so that memory stays bounded on grids of any size.
    chunks = [nodes[i : i + TUNE_RUN_NODES] for i in range(0, len(nodes), TUNE_RUN_NODES)]
    for index, chunk in enumerate(chunks):
        experiment = f"{grid.name}-{run_id[:8]}" + (f"-{index + 1}" if len(chunks) > 1 else "")
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=_DagSearcher(_Dependencies(chunk, release)),
                num_samples=len(chunk),
                # A worker process imports torch and timm once (≈8 s on a slow 2-core
                # machine) and then runs node after node; every node seeds and configures
                # torch itself.
                reuse_actors=True,
                # <results>/_ray/<experiment>/<Tune trial id>: found by _report_checkpoint
                trial_dirname_creator=lambda trial: trial.trial_id,
            ),
            param_space={
                "results": str(results),
                "data_root": str(data_root),
                "run_id": run_id,
                "experiment": experiment,
            },
            run_config=tune.RunConfig(
                name=experiment,
                storage_path=str(results / "_ray"),
                failure_config=tune.FailureConfig(max_failures=max_failures),
                verbose=0,
                callbacks=[_Progress(), *callbacks(trackers, results, grid.name)],
            ),
        )
        tuner.fit()
        del tuner
    _prune_tune_checkpoints(results / "_ray", results)


def _gave_up(node: TrialSpec, trial: Any, results: Path) -> None:
    """Tune stopped retrying a trial: its record says so, with Tune's last error (a
    process that was killed wrote no record of its own)."""
    from bench.trial import failed_record

    error = trial.get_error()
    retries = int(node.train.get("max_failures", 1))
    message = f"gave up after {retries + 1} attempt(s) (train.max_failures {retries}): " + (
        f"{type(error).__name__}: {error}".splitlines()[0] if error else "no error given"
    )
    record = failed_record(node, results, DabenchError(message))
    record["attempt"] = max(1, attempts(trial_dir(results, node.trial_id)))
    write_trial(results, record, None)


def _prune_tune_checkpoints(tune_dir: Path, results: Path) -> None:
    """Tune's checkpoint copies of finished nodes that the callbacks could not remove (a
    run killed before its trials ended), in every Tune run under ``tune_dir``."""
    import json

    store = ArtifactStore(results)
    for params in tune_dir.glob("*/*/params.json"):
        if not any(params.parent.glob("checkpoint_*")):
            continue
        try:
            entry = json.loads(params.read_text())["spec"]
        except (OSError, ValueError, KeyError):
            continue
        if entry["kind"] == "stage":
            done = store.exists(StageRunSpec.from_dict(entry["node"]).key)
        else:
            done = is_complete(results, TrialSpec.from_dict(entry["node"]).trial_id)
        if done:
            for ckpt in params.parent.glob("checkpoint_*"):
                shutil.rmtree(ckpt, ignore_errors=True)
