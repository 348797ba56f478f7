"""The real single-machine SLURM cluster, started once for every SLURM test of a session."""

from __future__ import annotations

import pytest

from tests.slurm.cluster import Cluster


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("slurm"))
    cluster.start()
    yield cluster
    cluster.stop()
    assert not cluster.running(), f"daemons left running: {cluster.running()}"
