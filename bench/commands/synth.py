"""``bench synth``: write the built-in synthetic cohort (IBSR-like, from the MNI152 template), in the IBSR course
layout or as an nnU-Net v2 raw dataset (``--format nnunet``, optionally 2 channels and 5 labels)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from bench.data.synth import FULL_SHAPE, SUBJECT_ORDER, write_cohort, write_nnunet_cohort
from bench.errors import ConfigError


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
        "Deterministic for a seed. --format nnunet writes an nnU-Net v2 raw dataset instead (OUT/dataset.json, "
        "labelled subjects in imagesTr/labelsTr, Test_Set subjects in imagesTs with their labels in labelsTs), where --channels 2 adds a "
        "FLAIR-like second contrast and --labels 5 a lesion class (value 10, bright blobs in the WM).",
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
    parser.add_argument("--format", choices=("ibsr", "nnunet"), default="ibsr",
                        help="ibsr: the IBSR course layout; nnunet: an nnU-Net v2 raw dataset (default: %(default)s)")
    parser.add_argument("--channels", type=int, choices=(1, 2), default=1,
                        help="input channels (--format nnunet): 1 T1, 2 T1 and FLAIR-like (default: %(default)s)")
    parser.add_argument("--labels", type=int, choices=(4, 5), default=4,
                        help="classes (--format nnunet): 4 bg/CSF/GM/WM, 5 adds lesion = 10 (default: %(default)s)")
    return parser


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    if args.format == "nnunet":
        paths = write_nnunet_cohort(args.out, args.subjects, args.seed, tuple(args.shape), args.spacing_scale,
                                    channels=args.channels, labels=args.labels)
        n_images = sum(p.name.endswith("_0000.nii.gz") for p in paths)
        n_labels = sum(p.parent.name == "labelsTr" for p in paths)
    else:
        if (args.channels, args.labels) != (1, 4):
            raise ConfigError("--channels and --labels need --format nnunet (the IBSR layout holds one T1 and "
                              "4 labels)", fix="add --format nnunet")
        paths = write_cohort(args.out, args.subjects, args.seed, tuple(args.shape), args.spacing_scale)
        n_labels = sum(p.name.endswith("_seg.nii.gz") for p in paths)
        n_images = len(paths) - n_labels
    elapsed = time.perf_counter() - start
    print(
        f"wrote {n_images} subjects ({n_labels} labelled) to {args.out} "
        f"in {elapsed:.1f} s ({elapsed / max(n_images, 1):.1f} s per subject)"
    )
    return 0
