"""One meaning per flag across the CLI (issue 35): ``--runs-dir`` is the runs folder in every subcommand that
reads one and ``--runs`` only ever names run ids; ``--debug`` gives a traceback in ``bench`` and in
``python -m bench.run`` alike; ``bench data`` splits as the config does."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO

from bench.cli import build_parser, main


@pytest.mark.parametrize("command", ["report", "predict", "register", "ensemble"])
def test_runs_dir_is_the_runs_folder_everywhere(command: str) -> None:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    options = {o for action in sub.choices[command]._actions for o in action.option_strings}  # type: ignore[index]
    assert "--runs-dir" in options


@pytest.mark.parametrize("command", [["report"], ["register", "0123", "--name", "x"]])
def test_the_old_runs_folder_flag_is_one_error_naming_the_new_one(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as done:
        main([*command, "--runs", "runs"])
    assert done.value.code == 2
    assert "the runs folder is --runs-dir DIR" in capsys.readouterr().err


def test_bench_data_splits_as_the_config_does() -> None:
    args = build_parser().parse_args(["data", "--root", "x"])
    import yaml

    assert args.split == yaml.safe_load((REPO / "conf" / "data" / "synthetic.yaml").read_text())["split"] == "paper"


def test_debug_flag_of_bench_run_gives_the_traceback() -> None:
    quiet = subprocess.run([sys.executable, "-m", "bench.run", "+profile.epoch=5"], cwd=REPO, capture_output=True,
                           text=True, timeout=300, check=False)
    assert quiet.returncode == 2 and "Traceback" not in quiet.stderr
    assert quiet.stderr.strip().splitlines() == [
        line for line in quiet.stderr.strip().splitlines() if line.startswith("error: profile.epoch is not a setting")]
    loud = subprocess.run([sys.executable, "-m", "bench.run", "--debug", "+profile.epoch=5"], cwd=REPO,
                          capture_output=True, text=True, timeout=300, check=False)
    assert loud.returncode != 0 and "Traceback" in loud.stderr and "unrecognized arguments" not in loud.stderr
