"""MLflow logged models and the model registry (with ``bench.tracking``, the only modules that import mlflow).

A CNN run's model folder (``bench.predict.package``) is logged as an MLflow 3 *logged model* of type
``brainbench``, linked to the run (its source run and one of its outputs) and shown in the experiment's
"Logged models" tab. An ``MLmodel`` file with a ``brainbench`` flavor describes it; no Python object is
pickled. ``bench predict`` resolves ``runs:/RUN_ID``, ``models:/NAME/VERSION`` (registry) and
``models:/MODEL_ID`` to that folder, downloaded.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow.artifacts import download_artifacts
from mlflow.entities import LoggedModelOutput
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.tracking import MlflowClient

from bench.errors import ConfigError, DataError
from bench.io import link_tree
from bench.tracking.calls import retry_call
from bench.tracking.runs import ChildRun
from bench.tracking.store import local_artifacts

MODEL_TYPE = "brainbench"
FLAVOR = "brainbench"
TAG_MODEL_ID = "brainbench.model_id"
"""On a registered model version: the logged model it was made from."""
_MODEL_URI = re.compile(r"^models:/(?P<name>[^/]+)(?:/(?P<version>[^/]+))?/?$")


def log_model(child: ChildRun, directory: Path, name: str, *, params: Mapping[str, Any],
              tags: Mapping[str, str], flavor: Mapping[str, Any]) -> str:
    """Log the model folder ``directory`` as a logged model of ``child``'s run; return its model id.

    Writes ``directory/MLmodel`` first (flavor ``brainbench`` with ``flavor`` as its settings). The model
    is created PENDING, its files uploaded, then marked READY (FAILED if the upload fails).
    """
    client = child.client
    experiment_id = retry_call(lambda: client.get_run(child.run_id)).info.experiment_id
    model = retry_call(lambda: client.create_logged_model(
        experiment_id, name=name, source_run_id=child.run_id, model_type=MODEL_TYPE,
        params={k: str(v)[:6000] for k, v in params.items()}, tags=dict(tags)))
    try:
        record = Model(artifact_path=model.artifact_location, run_id=child.run_id, model_id=model.model_id,
                       flavors={FLAVOR: dict(flavor)})
        record.save(str(Path(directory) / "MLmodel"))
        local = local_artifacts(str(model.artifact_location))
        if local is not None:  # a local store: hard links to the run folder's model, stored once
            link_tree(directory, local)
        else:
            retry_call(lambda: client.log_model_artifacts(model.model_id, str(directory)))
    except BaseException:
        retry_call(lambda: client.finalize_logged_model(model.model_id, "FAILED"))
        raise
    retry_call(lambda: client.finalize_logged_model(model.model_id, "READY"))
    retry_call(lambda: client.log_outputs(child.run_id, [LoggedModelOutput(model.model_id, 0)]))
    return str(model.model_id)


def _client(uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def run_model_id(run_id: str, uri: str) -> str:
    """The id of the READY logged model of run ``run_id``.

    Raises:
        DataError: No such run, or the run logged no model (an atlas run, or one made before models were logged).
    """
    client = _client(uri)
    try:
        run = retry_call(lambda: client.get_run(run_id))
    except MlflowException as exc:
        raise DataError(f"no MLflow run {run_id!r} in {uri}", fix="check the run id and --tracking-uri") from exc
    found = retry_call(lambda: client.search_logged_models(
        [run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'", max_results=10))
    ready = [m for m in found if str(m.status).endswith("READY")]
    if not ready:
        kind = run.data.tags.get("architecture", "")
        raise DataError(f"run {run_id} ({run.info.run_name}, {kind or 'unknown architecture'}) logged no model",
                        fix="only CNN runs log one; pass a CNN run's id")
    return str(ready[0].model_id)


def _registered_model_id(name: str, version: str, uri: str) -> str:
    client = _client(uri)
    try:
        found = retry_call(functools.partial(client.get_model_version, name, version))
    except MlflowException as exc:
        raise DataError(f"no registered model {name!r} version {version!r} in {uri}",
                        fix="see `bench register`, or check the name, version and --tracking-uri") from exc
    model_id = found.tags.get(TAG_MODEL_ID) or found.model_id
    if not model_id:
        raise DataError(f"registered model {name!r} version {version} was not made by `bench register`")
    return str(model_id)


def download_model(reference: str, uri: str, dst: Path) -> Path:
    """Download the model folder that ``reference`` names into ``dst``; return its local path.

    ``reference``: ``runs:/RUN_ID``, ``models:/NAME/VERSION`` or ``models:/MODEL_ID``.
    """
    if reference.startswith("runs:/"):
        model_id = run_model_id(reference.removeprefix("runs:/").strip("/"), uri)
    else:
        parsed = _MODEL_URI.match(reference)
        if parsed is None:
            raise ConfigError(f"--model {reference!r} is not runs:/RUN_ID, models:/NAME/VERSION or a folder")
        name, version = parsed.group("name"), parsed.group("version")
        model_id = name if version is None else _registered_model_id(name, version, uri)
    client = _client(uri)
    try:
        model = retry_call(lambda: client.get_logged_model(model_id))
    except MlflowException as exc:
        raise DataError(f"no logged model {model_id!r} in {uri}") from exc
    dst.mkdir(parents=True, exist_ok=True)
    try:
        local = download_artifacts(artifact_uri=model.artifact_location, dst_path=str(dst), tracking_uri=uri)
    except (MlflowException, OSError) as exc:
        raise DataError(f"cannot download logged model {model_id} ({exc})") from exc
    return Path(local)


def register_model(run_id: str, name: str, uri: str) -> int:
    """Register run ``run_id``'s logged model under ``name`` in the model registry; the new version number."""
    model_id = run_model_id(run_id, uri)
    client = _client(uri)
    model = retry_call(lambda: client.get_logged_model(model_id))
    try:
        retry_call(lambda: client.get_registered_model(name))
    except MlflowException:
        retry_call(lambda: client.create_registered_model(name, tags={"brainbench.kind": "model"}))
    version = retry_call(lambda: client.create_model_version(
        name, source=model.artifact_location, run_id=run_id, model_id=model_id,
        tags={TAG_MODEL_ID: model_id, "framework": model.tags.get("framework", "")}))
    return int(version.version)


def run_record(run_id: str, uri: str, dst: Path) -> dict[str, Any]:
    """A FINISHED run's experiment name, tags, params and ``summary.json`` (downloaded into ``dst``).

    Raises:
        DataError: No such run, a run that did not finish, or one without ``summary.json``.
    """
    client = _client(uri)
    try:
        run = retry_call(lambda: client.get_run(run_id))
    except MlflowException as exc:
        raise DataError(f"no MLflow run {run_id!r} in {uri}", fix="check the run id and --tracking-uri") from exc
    if run.info.status != "FINISHED":
        raise DataError(f"run {run_id} is {run.info.status}, not FINISHED")
    experiment = retry_call(lambda: client.get_experiment(run.info.experiment_id))
    try:
        local = retry_call(lambda: client.download_artifacts(run_id, "summary.json", str(dst)))
        summary = json.loads(Path(local).read_text())
    except (MlflowException, OSError, json.JSONDecodeError) as exc:
        raise DataError(f"run {run_id} has no readable summary.json ({exc})") from exc
    return {"run_id": run_id, "experiment": experiment.name, "tags": dict(run.data.tags),
            "params": dict(run.data.params), "summary": summary, "name": run.info.run_name}
