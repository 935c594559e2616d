"""Docs that cannot rot (issue 35): every relative link in README.md and docs/ resolves; every
``python -m bench.run …`` line in their code blocks composes and translates into a run spec (no training);
every ``bench <subcommand>`` they show exists and answers ``--help``. The checkers are tested on a page with
a broken link, a stale override and a removed subcommand, so that they cannot pass by checking nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO

from bench import hardware
from bench.cli import build_parser
from bench.config import run_spec_from_config
from bench.errors import BenchError
from bench.sweeps import compose_config, sweep_jobs, to_container

PAGES = sorted([REPO / "README.md", *(REPO / "docs").rglob("*.md")])
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|!\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^\s*(```|~~~)")
PLACEHOLDERS = {"$IBSR18_ROOT": "/data/ibsr18", "${IBSR18_ROOT}": "/data/ibsr18", "$PWD": "/work",
                "$DATA": "/data/dataset"}
RUN = "python -m bench.run"
HYDRA_FLAGS = ("--multirun", "-m", "--debug")


def relative_links(page: Path) -> Iterator[tuple[str, Path]]:
    """``(link, resolved path)`` for every relative link of a Markdown page (web links and anchors-only skipped)."""
    in_code = False
    for line in page.read_text().splitlines():
        if FENCE.match(line):
            in_code = not in_code
            continue
        if in_code:
            continue
        for match in LINK.finditer(re.sub(r"`[^`]*`", "", line)):
            target = match.group(1) or match.group(2)
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue
            yield target, (page.parent / target.split("#", 1)[0]).resolve()


def broken_links(page: Path) -> list[str]:
    return [link for link, path in relative_links(page) if not path.exists()]


def code_lines(page: Path) -> Iterator[str]:
    """The lines of a page's fenced code blocks, continuation lines (``\\``) joined, comments dropped."""
    in_code, pending = False, ""
    for line in page.read_text().splitlines():
        if FENCE.match(line):
            in_code, pending = not in_code, ""
            continue
        if not in_code:
            continue
        text = pending + line.strip().removeprefix("$ ")
        if text.endswith("\\"):
            pending = text[:-1] + " "
            continue
        pending = ""
        yield text


def run_commands(page: Path) -> list[str]:
    """Every ``python -m bench.run`` command of a page's code blocks (its arguments as written)."""
    found = []
    for line in code_lines(page):
        if RUN in line and not line.lstrip().startswith("#"):
            found.append(line[line.index(RUN) + len(RUN):])
    return found


def _arguments(command: str) -> list[str]:
    for name, value in PLACEHOLDERS.items():
        command = command.replace(name, value)
    words = shlex.split(command, comments=True)
    for stop in ("&&", "||", ";", "|", ">", "2>&1"):  # the rest of a shell line is another command
        if stop in words:
            words = words[: words.index(stop)]
    return words


STAND_IN_DATASET = {"channel_names": {"0": "T1", "1": "FLAIR"}, "file_ending": ".nii.gz", "numTraining": 0,
                    "labels": {"background": 0, "CSF": 1, "GM": 2, "WM": 3, "lesion": 10}}


def _stand_in_root(word: str) -> str:
    """``data.root=DIR`` of an nnU-Net dataset the docs only name: a folder whose dataset.json (2 channels, 5
    labels) the config reads instead (a page's own dataset is not on this machine)."""
    if not word.startswith("data.root="):
        return word
    root = Path(tempfile.mkdtemp(prefix="docs-dataset-"))
    (root / "dataset.json").write_text(json.dumps(STAND_IN_DATASET))
    return f"data.root={root}"


STAND_IN_GPU = "0, GPU-docs, NVIDIA H200, 143771, 570.124.06, 9.0"
"""The GPU a ``profile.device=cuda`` command of the docs is checked with (``nvidia-smi``'s line for it)."""


@contextlib.contextmanager
def stand_in_gpu(words: list[str]) -> Iterator[None]:
    """For a command with ``profile.device=cuda``: this machine lists ``STAND_IN_GPU`` (the docs' GPU machine)."""
    if "profile.device=cuda" not in words:
        yield
        return
    listed, visible = hardware._smi_gpus, os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    hardware._smi_gpus = lambda: hardware.parse_smi(STAND_IN_GPU)  # type: ignore[assignment]
    try:
        yield
    finally:
        hardware._smi_gpus = listed  # type: ignore[assignment]
        if visible is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = visible


def command_error(command: str) -> str | None:
    """Why ``python -m bench.run <command>`` would not compose and translate into a run spec, or None."""
    words = _arguments(command)
    if "--config-dir" in words or "--help" in words or "-h" in words:
        return None  # a user's own config folder (tests/test_target_models.py runs that path) / Hydra's help
    multirun = "--multirun" in words or "-m" in words
    overrides = [_stand_in_root(w) if "data=nnunet" in words else w for w in words if w not in HYDRA_FLAGS]
    try:
        with stand_in_gpu(words):
            return _translate(overrides, multirun)
    except BenchError as exc:
        return exc.message
    except Exception as exc:  # Hydra's own errors: an unknown group option, a key its config lacks
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"


def covering_jobs(jobs: list[list[str]]) -> list[list[str]]:
    """Jobs, in order, until every override any job holds is in one of them: each value of each axis composes
    once (a 270-job sweep of 9 rows x 3 seeds x 5 folds x 2 frameworks is checked in 16 jobs)."""
    needed = {override for job in jobs for override in job}
    picked = []
    for job in jobs:
        if needed & set(job):
            picked.append(job)
            needed -= set(job)
    return picked


def _translate(overrides: list[str], multirun: bool) -> str | None:
    """Compose and translate ``overrides`` (a sweep: :func:`covering_jobs` of its jobs): None, or why a sweep
    has no jobs."""
    jobs = sweep_jobs(overrides) if multirun else [overrides]
    if not jobs:
        return "the sweep has no jobs"
    for job in covering_jobs(jobs):
        run_spec_from_config(to_container(compose_config(job)))
    return None


def bench_subcommands(page: Path) -> list[str]:
    """Every ``bench <subcommand>`` a page's code blocks run (``bench report``, ``.venv/bin/bench predict``)."""
    found = []
    for line in code_lines(page):
        for match in re.finditer(r"(?:^|[\s/;&|(])bench\s+(?:--debug\s+)?([a-z][a-z0-9_-]*)", line):
            if not line.lstrip().startswith("#"):
                found.append(match.group(1))
    return found


def unknown_subcommands(page: Path) -> list[str]:
    known = set(_subcommands())
    return [name for name in bench_subcommands(page) if name not in known]


def _subcommands() -> list[str]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    return list(sub.choices)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ the docs


def test_there_are_docs() -> None:
    assert (REPO / "docs").is_dir() and len(PAGES) > 10
    assert len((REPO / "README.md").read_text().splitlines()) <= 200


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page: Path) -> None:
    assert broken_links(page) == []


def _commands() -> list[tuple[str, str]]:
    return [(str(page.relative_to(REPO)), command) for page in PAGES for command in run_commands(page)]


@pytest.mark.parametrize(("page", "command"), _commands())
def test_documented_run_commands_compose(page: str, command: str) -> None:
    assert command_error(command) is None, f"{page}: python -m bench.run{command}"


def test_covering_jobs_hold_every_value_of_every_axis() -> None:
    import itertools

    axes = [[f"row={r}" for r in range(9)], [f"seed={k}" for k in range(3)], ["fw=torch", "fw=tf"]]
    jobs = [list(job) for job in itertools.product(*axes)]
    picked = covering_jobs(jobs)
    assert {o for job in picked for o in job} == {o for axis in axes for o in axis}
    assert picked[0] == jobs[0] and len(picked) == 1 + sum(len(axis) - 1 for axis in axes)  # 12 of 54


def test_documented_subcommands_exist_and_answer_help() -> None:
    shown = sorted({name for page in PAGES for name in bench_subcommands(page)})
    assert shown, "the docs show no bench subcommand"
    assert [name for name in shown if name not in _subcommands()] == []
    for name in shown:
        with pytest.raises(SystemExit) as done:
            build_parser().parse_args([name, "--help"])
        assert done.value.code == 0


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    """``make docs``: mkdocs (material theme) in strict mode, so a broken link or a missing page fails."""
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "how-to" / "own-model" / "index.html").is_file()


# ---------------------------------------------------------------------------------- the checkers themselves

STALE_PAGE = """# A page that rotted

See [the design](explanation/design.md), [a removed page](how-to/gone.md) and [the web](https://example.org).

```
python -m bench.run profile=smoke model=unet3d
python -m bench.run +profile.epoch=5
python -m bench.run model=resnet
python -m bench.run --multirun +sweep=table1 profile=smoke seed=1,2
python -m bench.run data=ibsr18 data.root=$IBSR18_ROOT \\
    model.params.base_filters=8
bench report --runs-dir runs
bench publish --to zenodo
```
"""


def test_the_checkers_fail_on_a_stale_page(tmp_path: Path) -> None:
    (tmp_path / "explanation").mkdir()
    (tmp_path / "explanation" / "design.md").write_text("# design\n")
    page = tmp_path / "page.md"
    page.write_text(STALE_PAGE)
    assert broken_links(page) == ["how-to/gone.md"]
    commands = run_commands(page)
    assert len(commands) == 5
    errors = [command_error(c) for c in commands]
    assert errors[0] is None and errors[3] is None and errors[4] is None  # the good ones, a sweep, a continuation
    assert errors[1] is not None and "profile.epoch is not a setting" in errors[1]
    assert errors[2] is not None and "resnet" in errors[2]
    assert unknown_subcommands(page) == ["publish"]
