"""``bench synth``: write the built-in synthetic cohort (IBSR-like, from the MNI152 template)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from bench.data.synth import FULL_SHAPE, SUBJECT_ORDER, write_cohort


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "synth",
        help="write the built-in synthetic cohort",
        description="Write N synthetic subjects in the IBSR18 course layout "
        "(OUT/{Training_Set,Validation_Set,Test_Set}/IBSR_xx/IBSR_xx.nii.gz + IBSR_xx_seg.nii.gz), made "
        "from the MNI152 template shipped in nilearn with a random smooth deformation, intensity scale, "
        "gamma, bias field and noise. Subjects keep their real IBSR folder and spacing; Test_Set subjects "
        "are written without a _seg label, like the real ones. The first N of the order "
        f"{', '.join(SUBJECT_ORDER)} are written: N >= 7 covers every split of --split paper. "
        "Deterministic for a seed.",
    )
    parser.add_argument("--out", type=Path, required=True, help="output dataset root (new, empty or earlier synth)")
    parser.add_argument("--subjects", type=int, default=len(SUBJECT_ORDER), help="N in 1..18 (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument(
        "--shape",
        type=int,
        nargs=3,
        metavar=("X", "Y", "Z"),
        default=list(FULL_SHAPE),
        help="grid size; axis 1 is the 1.5 mm slice axis (default: 256 128 256)",
    )
    parser.add_argument(
        "--spacing-scale",
        type=float,
        default=1.0,
        help="spacing = IBSR spacing × this; e.g. --shape 48 32 48 --spacing-scale 4.5 for a tiny cohort "
        "(default: %(default)s)",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    paths = write_cohort(args.out, args.subjects, args.seed, tuple(args.shape), args.spacing_scale)
    images = [p for p in paths if not p.name.endswith("_seg.nii.gz")]
    elapsed = time.perf_counter() - start
    print(
        f"wrote {len(images)} subjects ({len(paths) - len(images)} labelled) to {args.out} "
        f"in {elapsed:.1f} s ({elapsed / max(len(images), 1):.1f} s per subject)"
    )
    return 0
