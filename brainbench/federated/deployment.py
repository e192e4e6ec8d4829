"""The same run across processes: ``flower-superlink``, one ``flower-supernode`` per site, ``flwr run``.

:func:`deploy_loopback` starts, on ``127.0.0.1`` and free ports, a SuperLink (``--insecure``) and one
SuperNode per site (``--node-config "partition-id=<k> num-partitions=<n>"``), writes a Flower app folder
whose ``pyproject.toml`` names brainbench's ServerApp and ClientApp and carries the run config, submits it
with ``flwr run <app> loopback --stream`` and stops every process it started (by its process group) when the
run ends or fails: no daemon is left behind. Across machines the same commands run on the server and on
each site (README, "Federated runs"); the machines need brainbench and torch installed beforehand, since
runtime dependency installation is off.

Each SuperNode runs every message in a fresh ``flwr-clientapp`` process (Flower's subprocess isolation), so
a site re-reads its data per message: right for a deployment, slow for many rounds on one machine.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from brainbench.errors import ConfigError
from brainbench.federated.config import FederatedConfig
from brainbench.federated.engine import flower_environment, require_flower

APP_COMPONENTS = {
    "serverapp": "brainbench.federated.server_app:app",
    "clientapp": "brainbench.federated.client_app:app",
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, timeout_seconds: float) -> None:
    """Return once something listens on ``127.0.0.1:port`` (the SuperLink may take seconds to start)."""
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            probe.settimeout(1.0)
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise ConfigError(f"nothing listens on 127.0.0.1:{port} after {timeout_seconds:.0f} s (the SuperLink)")


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


def write_app(folder: Path, config: FederatedConfig) -> Path:
    """A Flower app folder (``pyproject.toml``) running brainbench's apps with ``config`` as run config."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        "[build-system]",
        'requires = ["hatchling"]',
        'build-backend = "hatchling.build"',
        "",
        "[project]",
        'name = "brainbench-federated"',
        'version = "1.0.0"',
        "dependencies = []  # brainbench[federated] is installed on every machine beforehand",
        "",
        "[tool.hatch.build.targets.wheel]",
        'packages = ["."]',
        "",
        "[tool.flwr.app]",
        'publisher = "brainbench"',
        "",
        "[tool.flwr.app.components]",
        *(f'{k} = "{v}"' for k, v in APP_COMPONENTS.items()),
        "",
        "[tool.flwr.app.config]",
        *(f'"{k}" = {_toml_value(v)}' for k, v in config.to_run_config().items()),
    ]
    (folder / "pyproject.toml").write_text("\n".join(lines) + "\n")
    return folder


def _start(command: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    handle = log.open("w")
    return subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def processes_with_home(flwr_home: Path) -> list[int]:
    """Processes whose environment has ``FLWR_HOME=<flwr_home>``: what one deployment started, however deep.

    Each deployment has a ``FLWR_HOME`` of its own, and every process Flower starts inherits it (SuperLink,
    its executor, the ServerApp it starts in a session of its own, SuperNodes, their ClientApp processes).
    """
    marker = f"FLWR_HOME={flwr_home}".encode()
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
        except OSError:
            continue
    return [pid for pid in found if pid != os.getpid()]


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop(processes: list[subprocess.Popen], flwr_home: Path, grace_seconds: float = 10.0) -> None:
    """Stop the started processes and everything they started (:func:`processes_with_home`), by process id.

    SIGTERM, then SIGKILL after ``grace_seconds``; returns when none is left (or after 10 s more).
    """
    for process in processes:
        if process.poll() is None:
            _signal(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal(process.pid, signal.SIGKILL)
            process.wait()
    for _ in range(50):
        left = processes_with_home(flwr_home)
        if not left:
            return
        for pid in left:
            _signal(pid, signal.SIGKILL)
        time.sleep(0.2)


def deploy_loopback(config: FederatedConfig, workdir: Path, timeout_seconds: float = 1800) -> Path:
    """Run ``config`` through a SuperLink and ``config.sites`` SuperNodes on this machine.

    Args:
        config: the run (``out_dir`` must be set: the server writes its results there).
        workdir: app folder, ``FLWR_HOME`` and the processes' logs.
        timeout_seconds: stop everything after this long.

    Returns:
        ``config.out_dir``.
    """
    require_flower()
    if not config.out_dir:
        raise ConfigError("a deployed run needs out_dir, where the ServerApp writes its results")
    workdir = Path(workdir).resolve()
    flwr_home = workdir / "flwr-home"
    flwr_home.mkdir(parents=True, exist_ok=True)
    bin_dir = str(Path(sys.executable).parent)
    env = dict(os.environ)
    env.update(flower_environment(flwr_home))
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")  # the SuperLink starts flower-superexec by name
    env.setdefault("OMP_NUM_THREADS", "1")
    repo = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = repo + os.pathsep + env.get("PYTHONPATH", "")
    port = free_port()  # flwr 1.42: the SuperLink serves its Fleet, Control and Runtime APIs on one HTTP port
    (flwr_home / "config.toml").write_text(
        '[superlink]\ndefault = "loopback"\n\n[superlink.loopback]\n'
        f'address = "127.0.0.1:{port}"\ninsecure = true\n'
    )
    app = write_app(workdir / "app", config)
    processes: list[subprocess.Popen] = []
    try:
        processes.append(
            _start(
                [
                    f"{bin_dir}/flower-superlink",
                    "--insecure",
                    "--host=127.0.0.1",
                    f"--port={port}",
                    "--disable-runtime-dependency-installation",
                ],
                workdir / "superlink.log",
                env,
            )
        )
        for site in range(config.sites):
            processes.append(
                _start(
                    [
                        f"{bin_dir}/flower-supernode",
                        "--insecure",
                        f"--superlink=127.0.0.1:{port}",
                        f"--port={free_port()}",
                        f"--node-config=partition-id={site} num-partitions={config.sites}",
                    ],
                    workdir / f"supernode-{site}.log",
                    env,
                )
            )
        wait_for_port(port, timeout_seconds=120)
        time.sleep(2)  # the SuperNodes register after the SuperLink listens
        submit = subprocess.run(
            [f"{bin_dir}/flwr", "run", str(app), "loopback", "--stream"],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_seconds,
        )
        (workdir / "flwr-run.log").write_text(submit.stdout + submit.stderr)
        if submit.returncode != 0 or not (Path(config.out_dir) / "history.json").is_file():
            raise ConfigError(
                f"the deployed run failed (flwr run exit {submit.returncode}); logs in {workdir}\n"
                f"  fix: read {workdir}/superlink.log and supernode-*.log"
            )
    finally:
        stop(processes, flwr_home)
    return Path(config.out_dir)
