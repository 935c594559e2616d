"""Speed and memory per row and framework from ``bench train-speed`` lines (issue 37's ``speed`` step):

    python -m benchmarks.speed_table runs/frameworks/train-speed.jsonl

prints a Markdown table: for each row (in order) and framework, the median over its lines (rounds) of training
and inference patches/s and peak memory, the number of rounds, and tf / torch ratios. Lines that differ in
device, precision, threads, patch or batch are refused: they are not one measurement.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

SETTINGS = ("device", "precision", "threads", "patch", "batch", "profile")
"""What must be equal across lines for their numbers to be compared."""
VALUES = (("train_patches_per_s", "train patches/s"), ("infer_patches_per_s", "inference patches/s"),
          ("peak_memory_mb", "peak MB"))


def read_lines(path: Path) -> list[dict[str, Any]]:
    """Every JSON line of ``path`` (blank lines skipped)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _setting(line: dict[str, Any], key: str) -> str:
    value = line.get(key)
    if key == "device":  # TF names its CPU /CPU:0
        value = "cpu" if str(value).upper().endswith("CPU:0") else value
    return json.dumps(value)


def medians(lines: Iterable[dict[str, Any]]) -> dict[tuple[int, str], dict[str, float]]:
    """``(row, framework) -> {value: median, "rounds": n}``.

    Raises:
        ValueError: The lines differ in a setting of :data:`SETTINGS`.
    """
    lines = list(lines)
    for key in SETTINGS:
        seen = {_setting(line, key) for line in lines}
        if len(seen) > 1:
            raise ValueError(f"the lines differ in {key} ({', '.join(sorted(seen))}): not one measurement")
    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for line in lines:
        groups.setdefault((int(line["row"]), str(line["framework"])), []).append(line)
    return {key: {**{name: float(statistics.median(float(g[name]) for g in group)) for name, _ in VALUES},
                  "rounds": float(len(group))}
            for key, group in sorted(groups.items())}


def table(found: dict[tuple[int, str], dict[str, float]], networks: dict[int, str],
          frameworks: Sequence[str] = ("torch", "tf")) -> str:
    """The Markdown table of :func:`medians` (``networks``: row -> architecture): one line per row, each value per
    framework and their ratio."""
    rows = sorted({row for row, _ in found})
    head = ["Row", "Network"] + [f"{label} {fw}" for _, label in VALUES for fw in frameworks] + \
           [f"{label} {frameworks[1]}/{frameworks[0]}" for _, label in VALUES] + ["Rounds"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        pair = [found.get((row, fw)) for fw in frameworks]
        cells = [str(row), networks.get(row, "")]
        for name, _ in VALUES:
            cells += [f"{p[name]:.1f}" if p else "n/a" for p in pair]
        for name, _ in VALUES:
            a, b = pair
            cells.append(f"{b[name] / a[name]:.2f}" if a and b and a[name] > 0 else "n/a")
        cells.append("/".join(str(int(p["rounds"])) if p else "0" for p in pair))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("jsonl", type=Path, help="the bench train-speed lines")
    args = parser.parse_args(argv)
    try:
        lines = read_lines(args.jsonl)
        found = medians(lines)
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {args.jsonl}: {exc}", file=sys.stderr)
        return 2
    print(table(found, {int(line["row"]): str(line.get("architecture", "")) for line in lines}), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
