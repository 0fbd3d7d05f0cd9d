"""A real Ray cluster for tests, started with the ``ray`` CLI as a user would: a head node
and a worker node on the loopback address of this machine, each with its own CPUs, temp
directory and a custom resource (``head_node`` / ``worker_node``) that shows where trials
land; token authentication on, with a token of its own. Stopped — every process it made —
whatever happens."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

RAY = str(Path(sys.executable).with_name("ray"))
DABENCH = str(Path(sys.executable).with_name("dabench"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class RayCluster:
    root: Path  # both nodes' temp directories and the token live here
    address: str  # the head's GCS, for ``--address`` of a driver
    dashboard: str  # the job server, for ``ray job submit --address``
    env: dict[str, str]  # what a client shell exports: auth mode and token path

    def run(self, *args: str, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
        """A command in a client shell of this cluster."""
        return subprocess.run(
            list(args),
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            **kwargs,
        )

    def nodes(self) -> dict[str, str]:
        """Node id by the custom resource that names the node (head_node / worker_node)."""
        out = self.run(
            RAY, "list", "nodes", "--format", "json", "--detail", "--address", self.dashboard
        )
        assert out.returncode == 0, out.stderr
        found = {}
        for node in json.loads(out.stdout):
            if node["state"] != "ALIVE":
                continue
            for name in ("head_node", "worker_node"):
                if name in node["resources_total"]:
                    found[name] = node["node_id"]
        return found

    def processes(self) -> list[psutil.Process]:
        """Every live process of this cluster (its command line names its temp directory),
        with their children (workers, agents)."""
        found: dict[int, psutil.Process] = {}
        for proc in psutil.process_iter(["cmdline"]):
            try:
                if str(self.root) in " ".join(proc.info["cmdline"] or ()):
                    found[proc.pid] = proc
                    for child in proc.children(recursive=True):
                        found[child.pid] = child
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return list(found.values())


def _stop(cluster: RayCluster) -> None:
    # `ray stop` would stop every Ray on the machine, the developer's own included.
    procs = cluster.processes()
    for proc in procs:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=10)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=10)


@contextmanager
def ray_cluster(root: Path, cpus: tuple[int, int] = (1, 1)) -> Iterator[RayCluster]:
    root.mkdir(parents=True, exist_ok=True)
    token = root / "token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {
        **os.environ,
        # Recent Ray turns token authentication on for local clusters; the tests use it
        # whatever the default, as a cluster that others can reach must.
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    for key in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
        env.pop(key, None)
    port, dash, client = free_port(), free_port(), free_port()
    cluster = RayCluster(
        root=root,
        address=f"127.0.0.1:{port}",
        dashboard=f"http://127.0.0.1:{dash}",
        env=env,
    )
    common = ["--node-ip-address", "127.0.0.1", "--disable-usage-stats"]
    try:
        head = cluster.run(
            RAY, "start", "--head", "--port", str(port), "--num-cpus", str(cpus[0]),
            "--resources", '{"head_node": 1}', "--dashboard-host", "127.0.0.1",
            "--dashboard-port", str(dash), "--ray-client-server-port", str(client),
            # Each node its own temp directory: on one machine a shared one would let a
            # node's runtime-env agent delete the other's unpacked job files.
            "--temp-dir", str(root / "head"), *common,
            timeout=120,
        )  # fmt: skip
        assert head.returncode == 0, head.stdout + head.stderr
        worker = cluster.run(
            RAY, "start", "--address", cluster.address, "--num-cpus", str(cpus[1]),
            "--resources", '{"worker_node": 1}', "--temp-dir", str(root / "worker"), *common,
            timeout=120,
        )  # fmt: skip
        assert worker.returncode == 0, worker.stdout + worker.stderr
        deadline = time.monotonic() + 60
        while len(cluster.nodes()) < 2:
            assert time.monotonic() < deadline, "the worker node never joined"
            time.sleep(1)
        yield cluster
    finally:
        _stop(cluster)
