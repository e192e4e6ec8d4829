"""One federated run in one process: Flower's simulation engine (Ray) with one virtual SuperNode per site.

``flwr.simulation.run_simulation`` runs the ServerApp in this process and the ClientApps in Ray workers
(one CPU each); it starts and stops its own Ray instance and leaves no daemon behind.
"""

from __future__ import annotations

import os

from brainbench.federated.config import FederatedConfig
from brainbench.federated.engine import require_flower
from brainbench.federated.server_app import ReplyObserver


def simulate(config: FederatedConfig, observer: ReplyObserver | None = None, workers: int = 2) -> None:
    """Run ``config`` in Flower's simulation engine; the server writes its outputs to ``config.out_dir``.

    Args:
        config: the run.
        observer: called with each round's replies (runs in this process, before aggregation).
        workers: Ray workers training sites in parallel (one CPU each).
    """
    require_flower()
    from flwr.simulation import run_simulation

    from brainbench.federated.client_app import make_client_app
    from brainbench.federated.server_app import make_server_app

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    workers = max(1, min(workers, config.sites))
    run_simulation(
        server_app=make_server_app(config, observer),
        client_app=make_client_app(config),
        num_supernodes=config.sites,
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"num_cpus": workers, "num_gpus": 0, "include_dashboard": False},
        },
    )
