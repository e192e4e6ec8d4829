"""Federated runs through Flower on the tiny world: what sites send, the federated row, and deployment.

The fast test runs ``brainbench federate``'s code path in Flower's simulation (2 sites, 2 rounds) and inspects
every reply a site sends; the slow one runs the same app through ``flower-superlink`` and two
``flower-supernode`` processes on 127.0.0.1 and checks it trains the same global model as the simulation.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from brainbench.data.preparation import prepare_dataset
from brainbench.federated.config import FederatedConfig
from brainbench.federated.model import SiteInputs, build_shared
from brainbench.federated.run import METRIC_IDS, federate
from brainbench.federated.site_data import store_categories
from brainbench.leaderboard.store import read_leaderboard

SUBJECTS = (1, 2)


@pytest.fixture(scope="module", autouse=True)
def ray_memory_threshold():
    """Ray kills workers when the node passes 95 % memory, which other jobs on a shared CI machine reach;
    the tiny runs need little, so let Ray wait for the kernel's own limit (0.99)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_memory_usage_threshold", "0.99")
        yield


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    home = tmp_path_factory.mktemp("federated-home")
    prepared = [
        prepare_dataset("world-nsd", s, home=home, world_preset="tiny", progress=False) for s in SUBJECTS
    ]
    names = {c for scene in store_categories(prepared[0] / "stimuli.hdf5").values() for c in scene}
    from brainbench.data.manifest import Manifest

    return {"home": home, "n_classes": len(names), "n_voxels": {Manifest.load(p).n_voxels for p in prepared}}


def tiny_config(world: dict, out: Path, **changes: object) -> FederatedConfig:
    base = FederatedConfig(
        method="pmcmfl",
        subjects="1+2",
        sites=2,
        missing=0.5,
        rounds=2,
        world_preset="tiny",
        home=str(world["home"]),
        n_classes=world["n_classes"],
        local_dim=16,
        embed_dim=16,
        hidden_dim=16,
        batch_size=32,
        out_dir=str(out),
    )
    return base.replace(**changes)


def array_shapes(record_dict) -> dict[str, dict[str, tuple[int, ...]]]:
    """``{record key: {array name: shape}}`` of every ArrayRecord in a message's content."""
    return {
        key: {name: tuple(array.shape) for name, array in record.items()}
        for key, record in record_dict.array_records.items()
    }


def voxel_like_arrays(shapes: dict[str, dict[str, tuple[int, ...]]], n_voxels: set[int]) -> list[str]:
    """Arrays (from :func:`array_shapes`) with a voxel-count axis or a site-local layer's name."""
    return [
        f"{key}/{name}{shape}"
        for key, arrays in shapes.items()
        for name, shape in arrays.items()
        if name.startswith("layers.") or any(d in n_voxels for d in shape)
    ]


@pytest.fixture(scope="module")
def simulated(tiny_world, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One ``federate`` run in the simulation (2 sites, 2 rounds), with the shapes of every reply."""
    tmp = tmp_path_factory.mktemp("federated-sim")
    replies = []
    config = tiny_config(tiny_world, tmp / "out")
    row = federate(
        config,
        leaderboards=tmp / "lb",
        runs=tmp / "runs",
        observer=lambda r, messages: replies.append((r, [array_shapes(m.content) for m in messages])),
    )
    return {"config": config, "row": row, "replies": replies, "tmp": tmp}


def test_federate_appends_a_row_and_no_site_sends_voxels_or_its_input_layers(tiny_world, simulated):
    from flwr.app import ArrayRecord, RecordDict

    config, replies, tmp_path, row = (simulated[k] for k in ("config", "replies", "tmp", "row"))

    # what the sites sent: two rounds, two sites, only the shared weights, prototypes and numbers
    assert [(r, len(m)) for r, m in replies] == [(1, 2), (2, 2)]
    shared_names = set(build_shared(config).state_dict())
    for _, messages in replies:
        for shapes in messages:
            assert set(shapes) == {"arrays", "prototypes"}
            assert set(shapes["arrays"]) == shared_names
            assert set(shapes["prototypes"].values()) == {(config.n_classes, 16)}
            assert voxel_like_arrays(shapes, tiny_world["n_voxels"]) == []
    # the check itself catches a site's input layer (it has a voxel axis)
    inputs = SiteInputs({1: min(tiny_world["n_voxels"])}, config.local_dim)
    leaked = RecordDict({"arrays": ArrayRecord(inputs.state_dict())})
    assert voxel_like_arrays(array_shapes(leaked), tiny_world["n_voxels"])

    # the leaderboard row
    table = read_leaderboard(tmp_path / "lb" / "world-nsd" / "federated.csv")
    assert len(table) == 1
    got = table.iloc[0]
    assert (got["method"], int(got["sites"]), int(got["rounds"]), float(got["missing_p"])) == (
        "pmcmfl",
        2,
        2,
        0.5,
    )
    assert got["engine"].startswith("flwr=1.") and got["engine"].endswith(":simulation")
    assert got["dataset_version"] == "v1-tiny"
    for metric in METRIC_IDS.values():
        assert 0.0 <= float(got[metric]) <= 1.0
    assert row["run_id"] == got["run_id"]
    assert (tmp_path / "out" / "global_model.pt").is_file()


@pytest.mark.slow
def test_loopback_deployment_trains_the_same_model_as_the_simulation(simulated, tmp_path):
    from brainbench.federated.deployment import deploy_loopback, processes_with_home

    deployed = simulated["config"].replace(out_dir=str(tmp_path / "deployed"))
    deploy_loopback(deployed, tmp_path / "deployment")

    assert processes_with_home(tmp_path / "deployment" / "flwr-home") == []  # no daemon left behind
    sim_model = torch.load(simulated["tmp"] / "out" / "global_model.pt")
    dep_model = torch.load(tmp_path / "deployed" / "global_model.pt")
    assert sim_model.keys() == dep_model.keys()
    for name in sim_model:
        assert torch.equal(sim_model[name], dep_model[name]), name
    sim_library = torch.load(simulated["tmp"] / "out" / "prototypes.pt")
    dep_library = torch.load(tmp_path / "deployed" / "prototypes.pt")
    assert all(torch.equal(sim_library[m], dep_library[m]) for m in sim_library)
