"""The stack shared on a network (issue 39): leaving loopback needs ``--auth``; with it a real PostgreSQL (scram)
and a real MLflow basic-auth server over TLS on 127.0.0.1 refuse unauthenticated requests, a smoke run with the
credentials in its environment FINISHES, and no secret is left in the store, the outputs, Hydra's configs or any
log; URI passwords are hidden in error lines.
"""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import Workspace, mlflow_runs
from stack_helpers import assert_stack_gone, processes_mentioning, require_postgres, stack_dir, stack_ports

from bench import stack
from bench.cli import main as bench_main

CHEAP = ("data.split={train:[IBSR_01],val:[IBSR_07],test:[IBSR_11]}", "inference.overlap=0")
SEARCH = "/api/2.0/mlflow/experiments/search?max_results=5"


def test_a_non_loopback_host_without_auth_is_one_error_line_and_starts_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "stack"
    assert bench_main(["stack", "up", "--host", "0.0.0.0", "--dir", str(root)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --host 0.0.0.0") and "--auth" in lines[0], lines
    assert "started" not in captured.out
    assert not root.exists()
    assert processes_mentioning(str(root)) == []


def test_half_a_certificate_and_a_wildcard_ray_head_are_refused(tmp_path: Path) -> None:
    from bench.errors import ConfigError

    root = tmp_path / "stack"
    with pytest.raises(ConfigError, match="--tls-cert and --tls-key go together"):
        stack.up(root, stack.StackPorts(auth=True, tls_cert=str(tmp_path / "c.pem")))
    with pytest.raises(ConfigError, match="Ray's head needs this machine's own address"):
        stack.up(root, stack.StackPorts(host="0.0.0.0", auth=True))
    assert not root.exists()


def test_passwords_in_uris_are_hidden_in_error_lines() -> None:
    from bench.errors import BenchError
    from bench.redact import hide_password, without_userinfo

    error = BenchError("tracking server https://admin:s3cr3t-pw@lab:5001 is unreachable",
                       fix="check postgresql+psycopg://mlflow:other-pw@127.0.0.1:5433/mlflow")
    assert "s3cr3t-pw" not in error.message and "other-pw" not in error.message
    assert "https://admin:***@lab:5001" in error.message
    assert hide_password("uri: http://lab:5001/a") == "uri: http://lab:5001/a"
    assert without_userinfo("https://admin:pw@lab:5001/x") == "https://lab:5001/x"


def _get(url: str, cafile: str, auth: tuple[str, str] | None = None) -> int:
    request = urllib.request.Request(url)
    if auth is not None:
        import base64

        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=30, context=ssl.create_default_context(cafile=cafile)) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _files_containing(folder: Path, secret: bytes) -> list[str]:
    """Files under ``folder`` holding ``secret``, apart from a stack's own ``secrets/`` folder."""
    return [str(p) for p in folder.rglob("*") if p.is_file() and not p.is_symlink() and "secrets" not in p.parts
            and secret in p.read_bytes()]


@pytest.mark.slow
def test_an_auth_stack_over_tls_refuses_strangers_runs_a_sweep_and_records_no_secret(
        tiny_cohort: Path, workspace: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    require_postgres()
    ports = stack_ports()
    ports = stack.StackPorts(postgres=ports.postgres, mlflow=ports.mlflow, ray=ports.ray, host="127.0.0.1",
                             auth=True)
    with stack_dir() as root:
        try:
            stack.up(root, ports, ("postgres", "mlflow"))
            pids = stack.status(root)
            keys = stack.secrets_of(root)
            assert keys.folder.stat().st_mode & 0o777 == 0o700
            for path in (keys.admin_password, keys.flask_secret_key, keys.pg_password, keys.pgpass, keys.ray_token,
                         keys.auth_config, keys.tls_key):
                assert path.stat().st_mode & 0o777 == 0o600, path
            password = keys.read(keys.admin_password)
            secrets = [password, keys.read(keys.pg_password), keys.read(keys.flask_secret_key)]
            assert all(s not in " ".join(processes_mentioning(str(root))) for s in secrets), "a secret in argv"

            uri, cert = ports.tracking_uri, str(keys.tls_cert)
            assert uri.startswith("https://127.0.0.1:")
            assert _get(uri + SEARCH, cert) == 401
            assert _get(uri + SEARCH, cert, ("admin", "wrong-password")) == 401
            assert _get(uri + SEARCH, cert, ("admin", password)) == 200  # TLS verified with the stack's cert
            with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
                urllib.request.urlopen(uri + "/health", timeout=30)  # the system's CAs do not know it

            env = {**{k: v for k, v in workspace.env.items() if k != "MLFLOW_TRACKING_URI"},
                   **stack.client_env(root, ports)}
            # the password planted in the URI too: it must not reach Hydra's saved configs or any record
            planted = uri.replace("https://", f"https://admin:{password}@")
            args = workspace.overrides(tiny_cohort, "+experiment=table1/row7", f"tracking.uri={planted}",
                                       "tracking.experiment=auth-run", *CHEAP)
            done = workspace.bench_run(args, env=env)
            assert done.returncode == 0, done.stderr[-3000:]
            for name, value in stack.client_env(root, ports).items():
                monkeypatch.setenv(name, value)
            runs = [r for r in mlflow_runs(uri) if r.data.tags.get("brainbench.kind") == "child"]
            assert [r.info.status for r in runs] == ["FINISHED"]

            stranger = {k: v for k, v in env.items() if k != "MLFLOW_TRACKING_PASSWORD"}
            plain = workspace.overrides(tiny_cohort, "+experiment=table1/row7", f"tracking.uri={uri}",
                                        "tracking.experiment=stranger", *CHEAP)
            refused = workspace.bench_run(plain, env=stranger)
            errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
            assert refused.returncode == 2 and len(errors) == 1, refused.stderr[-3000:]
            assert "HTTP 401" in errors[0] and "MLFLOW_TRACKING_PASSWORD" in errors[0], errors

            for text in (done.stdout, done.stderr, refused.stdout, refused.stderr):
                assert [s for s in secrets if s in text] == [], text[-3000:]
            assert (workspace.runs / "hydra" / "run" / ".hydra" / "overrides.yaml").is_file()
            assert any((root / "artifacts").rglob("summary.json")), "the grep below would search no artifacts"
        finally:
            stack.down(root)
        assert_stack_gone(root, pids)
        for secret in secrets:  # the store (pg/, WAL included), the served artifacts and the stack's logs
            assert _files_containing(root, secret.encode()) == []
            assert _files_containing(workspace.root, secret.encode()) == [], "a secret in outputs, Hydra or logs"

