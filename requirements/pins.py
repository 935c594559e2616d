"""The pins ``make install`` installs, from pyproject.toml (standard library only: it runs before the project is
installed).

    python requirements/pins.py cuda        # pyproject's pins (dependencies, dev and bench extras) with the
                                            # CUDA frameworks of requirements/cuda.txt in place of the CPU ones
    python requirements/pins.py conflicts cuda   # installed packages that must go first (tensorflow-cpu, a +cpu torch)
    python requirements/pins.py conflicts cpu    # (tensorflow from a CUDA install)
"""

from __future__ import annotations

import importlib.metadata as metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
CUDA = ROOT / "requirements" / "cuda.txt"
EXTRAS = ("dev", "bench")
REPLACED = {"torch": "torch", "tensorflow-cpu": "tensorflow"}
"""CPU pin of pyproject.toml -> the CUDA requirement that replaces it (by project name)."""


def name_of(requirement: str) -> str:
    """A requirement's normalised project name: ``tensorflow[and-cuda]==2.21.0`` -> ``tensorflow``."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if match is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def version_of(requirement: str) -> str:
    """The pinned version of ``name==v`` / ``name===v``."""
    match = re.search(r"===?\s*([^\s;#,]+)", requirement)
    if match is None:
        raise ValueError(f"{requirement!r} is not pinned to one version")
    return match.group(1)


def project_pins(pyproject: Path = PYPROJECT, extras: tuple[str, ...] = EXTRAS) -> list[str]:
    """pyproject.toml's dependencies, then those of ``extras``."""
    project = tomllib.loads(pyproject.read_text())["project"]
    return [*project["dependencies"], *(pin for extra in extras for pin in project["optional-dependencies"][extra])]


def cuda_requirements(cuda: Path = CUDA) -> list[str]:
    """The requirement lines of requirements/cuda.txt (comments and blank lines dropped)."""
    lines = (line.split("#", 1)[0].strip() for line in cuda.read_text().splitlines())
    return [line for line in lines if line]


def cuda_pins(pyproject: Path = PYPROJECT, cuda: Path = CUDA) -> list[str]:
    """Every pin of a CUDA install: pyproject's without its CPU frameworks, then requirements/cuda.txt's."""
    return [pin for pin in project_pins(pyproject) if name_of(pin) not in REPLACED] + cuda_requirements(cuda)


def conflicts(device: str) -> list[str]:
    """Installed packages that would sit beside the ``device`` set's frameworks (both provide ``tensorflow``), or
    that would satisfy its torch pin with the wrong build (a ``+cpu`` torch under ``torch===2.13.0`` does not)."""
    installed = {name_of(dist.metadata["Name"]): dist.version for dist in metadata.distributions()}
    if device == "cuda":
        wrong = ["tensorflow-cpu"] + (["torch"] if "+cpu" in installed.get("torch", "") else [])
    else:
        wrong = ["tensorflow"]
    return [name for name in wrong if name in installed]


def main(argv: list[str]) -> int:
    if argv == ["cuda"]:
        print("\n".join(cuda_pins()))
    elif argv == ["cpu"]:
        print("\n".join(project_pins()))
    elif len(argv) == 2 and argv[0] == "conflicts" and argv[1] in ("cpu", "cuda"):
        print("\n".join(conflicts(argv[1])))
    else:
        print("error: usage: python requirements/pins.py cpu|cuda|conflicts cpu|conflicts cuda", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
