"""Ray on the ``--auth`` stack (issue 39): the head refuses a client without its token (Ray 2.60's two ways, and
brainbench's one ``error:`` line for a sweep that cannot join), a ``hydra/launcher=ray`` sweep whose driver has
``bench stack env``'s exports runs to FINISHED in the basic-auth MLflow server over TLS (its Ray workers get the
credentials from the head's environment), a ``submitit_local`` sweep's workers get them from the driver, SLURM's
generated batch script passes the environment on, and no secret is on a command line, in a log or in a record.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Workspace, mlflow_runs
from stack_helpers import assert_stack_gone, require_postgres, stack_dir, stack_ports

from bench import stack

CHEAP = ("data.split={train:[IBSR_01],val:[IBSR_07],test:[IBSR_11]}", "inference.overlap=0")
CLIENT = """
import sys, ray
try:
    ray.init(address=sys.argv[1], include_dashboard=False, log_to_driver=False)
    print("CONNECTED")
except BaseException as exc:
    print("REFUSED", f"{type(exc).__module__}.{type(exc).__name__}", str(exc).splitlines()[0])
"""


def test_ray_connection_errors_become_one_line_naming_bench_stack_env(monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from ray.exceptions import AuthenticationError

    from bench import run

    no_token = AuthenticationError("Token authentication is enabled but no authentication token was found. "
                                   "Ensure that the token for the cluster is available ...")
    refused = run.ray_connection_error(no_token)
    assert refused is not None and "no authentication token was found (" in refused.message
    assert "bench stack env" in refused.message and "RAY_AUTH_TOKEN_PATH" in refused.message
    gone = run.ray_connection_error(ConnectionError("Failed to connect to Ray cluster at 10.0.0.5:6380"))
    assert gone is not None and gone.message.startswith("Failed to connect to Ray cluster at 10.0.0.5:6380: ")
    assert "bench stack env" in gone.message and "hydra.launcher.ray.init.address" in gone.message
    assert run.ray_connection_error(ConnectionError("connection reset")) is None
    assert run.ray_connection_error(ValueError("Failed to connect to Ray cluster at x")) is None

    def fails() -> None:
        raise no_token

    monkeypatch.setattr(sys, "argv", ["bench.run", "--multirun", "hydra/launcher=ray"])
    monkeypatch.setattr(run, "main", fails)
    with pytest.raises(SystemExit) as exited:
        run.cli()
    assert exited.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: Ray refused this sweep: Token authentication"), lines


def test_slurm_batch_scripts_pass_the_environment_on_and_hold_no_secret(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """submitit's sbatch script sets no ``--export`` (SLURM's default, ALL: the job gets the environment
    ``sbatch`` ran in, and ``srun`` passes it to the task) and holds no value of that environment."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf

    from bench.sweeps import compose_config

    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 0\n")  # submitit checks that SLURM is there
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "pw-that-must-stay-in-the-environment")
    cfg = compose_config(["hydra/launcher=submitit_slurm", f"hydra.sweep.dir={tmp_path}"], return_hydra_config=True)
    conf = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert isinstance(conf, dict)
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor = submitit.AutoExecutor(folder=str(conf["submitit_folder"]), cluster="slurm")
    executor.update_parameters(**{str(k) if k in base else f"slurm_{k!s}": v for k, v in conf.items()
                                  if k not in ("_target_", "submitit_folder", "max_num_timeout")})
    slurm: Any = executor._executor
    script = slurm._make_submission_file_text("python -m submitit.core._submit x", "0")
    assert "#SBATCH" in script and "srun" in script
    assert "export=" not in script.lower() and "get-user-env" not in script
    assert "pw-that-must-stay" not in script


class _Started(Exception):
    pass


@pytest.mark.parametrize("auth", [False, True])
def test_the_ray_head_sets_its_auth_mode_whatever_ray_finds_in_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    auth: bool) -> None:
    """Without ``--auth`` the head runs with ``RAY_AUTH_MODE=disabled`` (Ray 2.60 turns token auth on when
    ``~/.ray/auth_token`` exists, which its first local ``ray.init()`` writes, and then refuses every sweep
    that joins by address); with it, ``token`` and the stack's token, and the MLflow client's environment,
    never on its command line."""
    seen: dict[str, object] = {}

    def start(root: Path, name: str, argv: list[str], **kwargs: object) -> None:
        seen.update(argv=argv, env=kwargs["env"])
        raise _Started

    monkeypatch.setattr(stack, "_start", start)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")  # e.g. a shell that sourced another stack's exports
    ports = stack.StackPorts(ray=stack_ports().ray, auth=auth)
    root = tmp_path / "stack"
    if auth:
        stack.secrets_of(root).ensure(ports.host, pg_exists=False, own_cert=False)
    with pytest.raises(_Started):
        stack.start_ray(root, ports)
    env = seen["env"]
    assert isinstance(env, dict) and isinstance(seen["argv"], list)
    if not auth:
        assert env["RAY_AUTH_MODE"] == "disabled" and "MLFLOW_TRACKING_PASSWORD" not in env
        return
    keys = stack.secrets_of(root)
    assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN_PATH"] == str(keys.ray_token)
    assert env["MLFLOW_TRACKING_PASSWORD"] == keys.read(keys.admin_password)
    assert not [a for a in seen["argv"] if keys.read(keys.admin_password) in a or keys.read(keys.ray_token) in a]


def _secrets(root: Path) -> dict[str, str]:
    keys = stack.secrets_of(root)
    return {path.name: keys.read(path) for path in (keys.admin_password, keys.ray_token, keys.pg_password,
                                                    keys.flask_secret_key)}


def _files_containing(folder: Path, secret: bytes) -> list[str]:
    """Files under ``folder`` holding ``secret``, apart from a stack's own ``secrets/`` folder."""
    found = []
    for path in folder.rglob("*"):
        if "secrets" in path.parts or path.is_symlink() or not path.is_file():
            continue
        try:
            if secret in path.read_bytes():
                found.append(str(path))
        except OSError:  # a file Ray removed meanwhile
            continue
    return found


class ArgvWatch:
    """Polls every process's command line (``/proc/*/cmdline``, what ``ps`` shows) for the secrets while in
    the ``with`` block; ``hits``: which secret was seen in which program."""

    def __init__(self, secrets: dict[str, str]) -> None:
        self.secrets = {name: value.encode() for name, value in secrets.items()}
        self.hits: set[str] = set()
        self.scans = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit():
                    continue
                try:
                    argv = (entry / "cmdline").read_bytes()
                except OSError:
                    continue
                program = argv.split(b"\0")[0].decode(errors="replace")
                self.hits.update(f"{name} in the argv of {program}" for name, value in self.secrets.items()
                                 if value in argv)
            self.scans += 1
            self._stop.wait(0.2)

    def __enter__(self) -> ArgvWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


@pytest.fixture(scope="module")
def auth_stack() -> Iterator[tuple[Path, stack.StackPorts]]:
    """PostgreSQL, the MLflow server and a 2-CPU Ray head, all with ``--auth``, on 127.0.0.1."""
    require_postgres()
    free = stack_ports(ray_cpus=2)
    ports = stack.StackPorts(postgres=free.postgres, mlflow=free.mlflow, ray=free.ray, ray_cpus=2, auth=True)
    with stack_dir() as root:
        try:
            t0 = time.perf_counter()
            stack.up(root, ports)
            print(f"\nauth stack with Ray up in {time.perf_counter() - t0:.1f} s")
            pids = stack.status(root)
            assert all(pids.values()), pids
            yield root, ports
        finally:
            stack.down(root)
        assert_stack_gone(root, pids)


def _client_env(ws: Workspace, root: Path, ports: stack.StackPorts) -> dict[str, str]:
    """The workspace's environment with what ``bench stack env`` exports instead of its sqlite store."""
    plain = {k: v for k, v in ws.env.items() if k != "MLFLOW_TRACKING_URI" and not k.startswith("RAY_")}
    return {**plain, **stack.client_env(root, ports)}


def _sweep_args(ws: Workspace, data: Path, ports: stack.StackPorts, experiment: str, *extra: str) -> list[str]:
    return ws.overrides(data, "+experiment=table1/row7", f"tracking.uri={ports.tracking_uri}",
                        f"tracking.experiment={experiment}", f"tracking.sweep={experiment}", *CHEAP, *extra)


@pytest.mark.slow
def test_the_head_refuses_clients_without_its_token(tiny_cohort: Path, workspace: Workspace, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    auth_stack: tuple[Path, stack.StackPorts]) -> None:
    root, ports = auth_stack
    full = _client_env(workspace, root, ports)
    home = tmp_path / "home"  # no ~/.ray/auth_token, which Ray would otherwise try
    home.mkdir()
    no_ray = {**{k: v for k, v in full.items() if not k.startswith("RAY_")}, "HOME": str(home)}
    mode_only = {**no_ray, "RAY_AUTH_MODE": "token"}
    wrong = {**mode_only, "RAY_AUTH_TOKEN": "0" * 32}
    right = {**full, "HOME": str(home)}
    sweep = ["-m", "bench.run", "--multirun", *_sweep_args(workspace, tiny_cohort, ports, "refused", "seed=1,2"),
             "hydra/launcher=ray", f"hydra.launcher.ray.init.address={ports.ray_address}"]
    clients = (("mode only", ["-c", CLIENT, ports.ray_address], mode_only),
               ("wrong token", ["-c", CLIENT, ports.ray_address], wrong),
               ("right token", ["-c", CLIENT, ports.ray_address], right),
               ("sweep, no RAY_AUTH", sweep, no_ray),
               ("sweep, mode only", sweep, mode_only))
    t0 = time.perf_counter()
    started = {}
    for i, (name, argv, env) in enumerate(clients):  # at once: three of them wait ~20 s for Ray's retries
        with open(tmp_path / f"{i}.out", "w") as out, open(tmp_path / f"{i}.err", "w") as err:
            started[name] = (i, subprocess.Popen([sys.executable, *argv], cwd=workspace.root, env=env, stdout=out,
                                                 stderr=err, stdin=subprocess.DEVNULL))
    took: dict[str, float] = {}
    while len(took) < len(started) and time.perf_counter() - t0 < 300:
        took.update({name: time.perf_counter() - t0 for name, (_, process) in started.items()
                     if name not in took and process.poll() is not None})
        time.sleep(0.2)
    done = {}
    for name, (i, process) in started.items():
        if process.poll() is None:
            process.kill()
        process.wait(timeout=60)
        done[name] = (process, (tmp_path / f"{i}.out").read_text(), (tmp_path / f"{i}.err").read_text())
    print("\n" + "; ".join(f"{name} {seconds:.1f} s" for name, seconds in took.items()))
    outputs = {name: f"exit {p.returncode}\n{out[-2000:]}\n{err[-3000:]}" for name, (p, out, err) in done.items()}

    assert done["right token"][1].strip() == "CONNECTED", outputs["right token"]  # the address is right
    assert done["mode only"][1].strip() == (
        "REFUSED ray.exceptions.AuthenticationError Token authentication is enabled but no authentication token "
        "was found. Ensure that the token for the cluster is available in a local file (e.g., ~/.ray/auth_token "
        "or via RAY_AUTH_TOKEN_PATH) or as the `RAY_AUTH_TOKEN` environment variable. To generate a token for "
        "local development, use `ray get-auth-token --generate` For remote clusters, ensure that the token is "
        "propagated to all nodes of the cluster when token authentication is enabled. For more information, see: "
        "https://docs.ray.io/en/latest/ray-security/token-auth.html"), outputs["mode only"]
    assert done["wrong token"][1].startswith("REFUSED builtins.ConnectionError Failed to connect to Ray cluster at "), \
        outputs["wrong token"]
    assert "Unauthenticated: RPC error: InvalidAuthToken" in done["wrong token"][2], outputs["wrong token"]

    for name, needle in (("sweep, no RAY_AUTH", "Failed to connect to Ray cluster at "),
                         ("sweep, mode only", "Ray refused this sweep: Token authentication is enabled but no "
                                              "authentication token was found (")):
        process, _, stderr = done[name]
        errors = [line for line in stderr.splitlines() if line.startswith("error:")]
        assert process.returncode == 2 and len(errors) == 1, outputs[name]
        assert needle in errors[0] and 'eval "$(bench stack env)"' in errors[0], errors
        print(f"{name}: {errors[0]}")
        assert "Traceback" not in stderr, outputs[name]
    assert "InvalidAuthToken" in done["sweep, no RAY_AUTH"][2]  # Ray's own lines say why
    for key, value in stack.client_env(root, ports).items():
        monkeypatch.setenv(key, value)
    refused = _runs_of(ports, "refused")
    assert refused == [], [(r.info.status, r.data.tags.get("table_row")) for r in refused]  # no job ran


def _runs_of(ports: stack.StackPorts, experiment: str) -> list[Any]:
    from mlflow.tracking import MlflowClient

    found = MlflowClient(ports.tracking_uri).get_experiment_by_name(experiment)
    return [] if found is None else [r for r in mlflow_runs(ports.tracking_uri)
                                     if r.info.experiment_id == found.experiment_id]


@pytest.mark.slow
def test_a_ray_sweep_on_the_auth_stack_finishes_with_no_secret_on_a_command_line_or_in_a_log(
        tiny_cohort: Path, workspace: Workspace, monkeypatch: pytest.MonkeyPatch,
        auth_stack: tuple[Path, stack.StackPorts]) -> None:
    root, ports = auth_stack
    secrets = _secrets(root)
    env = _client_env(workspace, root, ports)
    args = _sweep_args(workspace, tiny_cohort, ports, "ray-auth", "seed=1,2", "hydra/launcher=ray",
                       f"hydra.launcher.ray.init.address={ports.ray_address}")
    with ArgvWatch(secrets) as watch:
        t0 = time.perf_counter()
        done = workspace.bench_run(args, multirun=True, env=env, timeout=900)
        print(f"\n2-run Ray sweep on the auth stack: {time.perf_counter() - t0:.1f} s ({watch.scans} argv scans)")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert watch.scans > 10 and watch.hits == set(), watch.hits

    for name, value in stack.client_env(root, ports).items():
        monkeypatch.setenv(name, value)
    runs = _runs_of(ports, "ray-auth")
    assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED"]
    assert sorted(r.data.params["seed"] for r in runs) == ["1", "2"]
    head = stack.read_pid(root, "ray")
    workers = {r.data.tags["brainbench.pid"] for r in runs}
    assert len(workers) == 2 and str(head) not in workers and str(os.getpid()) not in workers

    ray_logs = stack._ray_temp_dir(root)
    assert ray_logs.is_relative_to(root) and any(ray_logs.rglob("raylet.out")), "the grep would miss Ray's logs"
    for name, value in secrets.items():
        for text in (done.stdout, done.stderr):
            assert value not in text, name
        # the stack's logs (ray.log, mlflow.log, postgres.log), Ray's session logs, the store, the artifacts;
        # the sweep's outputs and Hydra's saved configs
        assert _files_containing(root, value.encode()) == [], name
        assert _files_containing(workspace.root, value.encode()) == [], name


@pytest.mark.slow
def test_submitit_local_workers_get_the_credentials_from_the_driver(tiny_cohort: Path, workspace: Workspace,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     auth_stack: tuple[Path, stack.StackPorts]) -> None:
    root, ports = auth_stack
    secrets = _secrets(root)
    args = _sweep_args(workspace, tiny_cohort, ports, "submitit-auth", "hydra/launcher=submitit_local")
    with ArgvWatch(secrets) as watch:
        done = workspace.bench_run(args, multirun=True, env=_client_env(workspace, root, ports), timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert watch.hits == set(), watch.hits
    for name, value in stack.client_env(root, ports).items():
        monkeypatch.setenv(name, value)
    runs = _runs_of(ports, "submitit-auth")
    assert [r.info.status for r in runs] == ["FINISHED"]
    assert any(workspace.root.rglob("*_submitted.pkl")), "the grep below would search no submitit job"
    for name, value in secrets.items():  # submitit pickles each job and logs its output
        assert _files_containing(workspace.root, value.encode()) == [], name

