"""``bench convert ibsr18 ROOT --to nnunet OUT``: write an IBSR-layout dataset as an nnU-Net v2 raw dataset."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from bench.data.nnunet_write import convert_ibsr_to_nnunet


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "convert",
        help="convert a dataset to another layout (IBSR18 -> nnU-Net v2)",
        description="Convert an IBSR-layout dataset (course layout Training_Set/Validation_Set/Test_Set/<id>/, "
        "flat layout <id>/, or the synthetic cohort of `bench synth`) into an nnU-Net v2 raw dataset: "
        "OUT/dataset.json, labelled subjects as imagesTr/<id>_0000.nii.gz + labelsTr/<id>.nii.gz, unlabelled "
        "ones as imagesTs/<id>_0000.nii.gz. Every file is checked as on loading; the converted volumes load to "
        "the same arrays and geometry. OUT must be new, empty or an earlier conversion; it is written whole or "
        "not at all. Example: bench convert ibsr18 data/ibsr18 --to nnunet data/Dataset001_IBSR18",
    )
    parser.add_argument("source", choices=("ibsr18",), help="layout of ROOT: ibsr18 (course or flat layout)")
    parser.add_argument("root", type=Path, metavar="ROOT", help="dataset root to convert")
    parser.add_argument("--to", choices=("nnunet",), required=True, help="layout to write: nnunet (nnU-Net v2 raw)")
    parser.add_argument("out", type=Path, metavar="OUT", help="output dataset folder")
    parser.add_argument("--name", default=None, help="dataset.json's name (default: ROOT's folder name)")
    return parser


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    written = convert_ibsr_to_nnunet(args.root, args.out, name=args.name)
    images = [p for p in written if p.parent.name in ("imagesTr", "imagesTs")]
    labelled = sum(p.parent.name == "labelsTr" for p in written)
    print(f"wrote {len(images)} cases ({labelled} labelled in imagesTr/labelsTr, {len(images) - labelled} in "
          f"imagesTs) to {args.out} in {time.perf_counter() - start:.1f} s")
    return 0
