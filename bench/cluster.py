"""What the driver checks on a Ray cluster before the first node starts, so that a grid
left running for days does not fail hours in, or quietly write where nobody looks: every
node's resource request fits some node of the cluster, and every node of the cluster
reaches the results and data directories at the same paths."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from bench.errors import DabenchError

PROBE_DIR = ".reach"  # under the results directory, while the check runs


def tune_resources(resources: Mapping[str, Any]) -> dict[str, Any]:
    """A grid node's resources (``cpu``, ``gpu``, ``custom: {name: amount}``) as the dict
    ``tune.with_resources`` takes (zero amounts dropped)."""
    out: dict[str, Any] = {k: v for k, v in resources.items() if k != "custom" and v}
    custom = {k: v for k, v in (resources.get("custom") or {}).items() if v}
    if custom:
        out["custom_resources"] = custom
    return out


def _wants(resources: Mapping[str, Any]) -> dict[str, float]:
    """A request in Ray's resource names (``CPU``, ``GPU``, custom names)."""
    want = {"CPU": resources.get("cpu", 1), "GPU": resources.get("gpu", 0)}
    want |= dict(resources.get("custom") or {})
    return {k: float(v) for k, v in want.items() if v}


def check_fit(requests: Iterable[tuple[str, Mapping[str, Any]]], nodes: list[dict]) -> None:
    """Refuse a grid one of whose nodes asks for more than any single node of the cluster
    has (Tune would wait for it forever). ``requests``: (label, grid resources) pairs;
    ``nodes``: ``ray.nodes()``."""
    alive = [n for n in nodes if n.get("Alive")]
    for label, resources in requests:
        want = _wants(resources)
        if any(all(n["Resources"].get(k, 0.0) >= v for k, v in want.items()) for n in alive):
            continue
        have = "; ".join(
            f"{n.get('NodeManagerAddress', '?')}: "
            + ", ".join(f"{k} {v:g}" for k, v in sorted(n["Resources"].items()) if _shown(k))
            for n in alive
        )
        asked = ", ".join(f"{k} {v:g}" for k, v in want.items())
        raise DabenchError(
            f"{label} asks for {asked} per trial, which no node of the cluster has "
            f"(nodes: {have}); lower the grid's resources, or add such a node "
            "(on a cluster that adds nodes on demand, run with --no-resource-check)"
        )


def _shown(resource: str) -> bool:
    # Ray's bookkeeping resources (memory, node:<ip>, object store) only clutter the error.
    return not (resource.startswith("node:") or resource in ("memory", "object_store_memory"))


def check_not_in_job_copy(paths: Mapping[str, Path]) -> None:
    """Refuse results or data inside a Ray job's copy of its working directory: Ray unpacks
    that copy separately on every node and deletes it when the job ends."""
    import ray

    if not ray.get_runtime_context().runtime_env.get("working_dir"):
        return
    copy = Path.cwd().resolve()
    for what, path in paths.items():
        if path.resolve().is_relative_to(copy):
            raise DabenchError(
                f"the {what} directory {path} lies inside this Ray job's temporary copy of "
                f"its working directory ({copy}), which every node unpacks on its own and "
                f"Ray deletes when the job ends; give {_flag(what)} an absolute path on "
                "storage that every node mounts at the same path"
            )


def _flag(what: str) -> str:
    return "--results" if what == "results" else "--data (or DABENCH_DATA)"


def _probe(results: str, data_root: str, token: str, node_id: str) -> str:
    """Run on one node: an empty string if it reaches both directories, else why not."""
    for what, path in (("results", results), ("data", data_root)):
        if not os.path.isdir(path):
            return f"the {what} directory {path} does not exist there"
    try:
        probe = Path(results) / PROBE_DIR / node_id
        probe.write_text(token)
    except OSError as exc:
        return f"cannot write to the results directory {results}: {exc}"
    return ""


def check_reachable(results: Path, data_root: Path) -> None:
    """Every alive node of the cluster must see the driver's results and data directories:
    a task pinned to each node checks them and writes a token into the results directory,
    which the driver must then read back (a node with its own disk at that path writes
    where the driver cannot see). Refused with one error naming the nodes and the reason."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token = secrets.token_hex(8)
    probes = Path(results) / PROBE_DIR
    probes.mkdir(parents=True, exist_ok=True)
    probe = ray.remote(num_cpus=0)(_probe)
    alive = [n for n in ray.nodes() if n.get("Alive")]
    try:
        answers = ray.get(
            [
                probe.options(
                    scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
                ).remote(str(results), str(data_root), token, n["NodeID"])
                for n in alive
            ]
        )
        problems = []
        for node, answer in zip(alive, answers, strict=True):
            where = f"node {node.get('NodeManagerAddress', '?')} ({node['NodeID'][:8]})"
            seen = probes / node["NodeID"]
            if not answer and not (seen.is_file() and seen.read_text() == token):
                answer = (
                    f"it wrote to its own {results}, which the driver does not see: the "
                    "directory is not on shared storage"
                )
            if answer:
                problems.append(f"{where}: {answer}")
    finally:
        shutil.rmtree(probes, ignore_errors=True)
    if problems:
        raise DabenchError(
            "not every node of the Ray cluster reaches the grid's directories, so trials "
            "there would fail or write where the driver never looks — "
            + "; ".join(problems)
            + ". Put results and data on storage every node mounts at the same path "
            "(see the README's cluster section)"
        )
