"""The driver's checks of a Ray cluster (bench.cluster) without a cluster: what a node
answers when it cannot reach the grid's directories, and which requests no node holds."""

from __future__ import annotations

import pytest

from bench.errors import DabenchError


def test_a_node_that_cannot_reach_the_directories_says_why(tmp_path):
    from bench.cluster import PROBE_DIR, _probe

    results, data = tmp_path / "results", tmp_path / "data"
    assert "results directory" in _probe(str(results), str(data), "t0k", "n1")
    results.mkdir()
    assert f"the data directory {data} does not exist there" == _probe(
        str(results), str(data), "t0k", "n1"
    )
    data.mkdir()
    (results / PROBE_DIR).mkdir()
    assert _probe(str(results), str(data), "t0k", "n1") == ""
    assert (results / PROBE_DIR / "n1").read_text() == "t0k"  # what the driver reads back


def test_a_trial_no_node_can_hold_is_named_with_the_nodes():
    from bench.cluster import check_fit

    nodes = [
        {"Alive": True, "NodeManagerAddress": "10.0.0.1", "Resources": {"CPU": 8.0, "GPU": 1.0}},
        {"Alive": False, "NodeManagerAddress": "10.0.0.2", "Resources": {"CPU": 64.0}},
    ]
    check_fit([("method oracle", {"cpu": 8, "gpu": 0.5})], nodes)
    with pytest.raises(
        DabenchError, match=r"method dann asks for CPU 16 per trial.*10\.0\.0\.1: CPU 8, GPU 1\)"
    ):
        check_fit([("method dann", {"cpu": 16, "gpu": 0})], nodes)  # the dead node is not counted
