"""The Table 1 rows and the recipe's members keep their identities (issue 34: nothing already run is lost).

A run's hash is its identity: a sweep run again skips what FINISHED under it. These hashes were taken before the
neutral core moved to ``bench/networks`` and ``bench/training`` and ``_target_`` networks came in; a change that
moves one must bump ``bench.spec.RECORD_VERSION`` and say which runs re-run. Precision and threads are pinned
(``auto`` and 0 resolve per machine) and the data root is fixed (it is part of the record).
"""

from __future__ import annotations

import pytest

from bench.config import run_spec_from_config
from bench.sweeps import compose_config, to_container

PINNED = ["profile.precision=fp32", "profile.num_threads=2", "data.root=/data/synthetic"]
GOLDEN = {
    "smoke/row1": "4aea59db7bc47808",
    "smoke/row2": "f22a3cbba3cf0343",
    "smoke/row3": "7e4b398d3dcacf3b",
    "smoke/row4": "c661187f2ee50835",
    "smoke/row5": "3258397f23208663",
    "smoke/row6": "88b9cb8f58850411",
    "smoke/row7": "e487ffe3669d83a8",
    "smoke/row8": "dec0956f2b20a29b",
    "smoke/row9": "d406546a30a397ae",
    "quick/row1": "e804753a695b939b",
    "quick/row2": "f8badbd5347338b8",
    "quick/row3": "0dea8e6670537ed1",
    "quick/row4": "8302d908bd75515c",
    "quick/row5": "c138b3a2fb6b7e5c",
    "quick/row6": "99102753b5fbe685",
    "quick/row7": "3c23902a85f41495",
    "quick/row8": "466f66550ce8a816",
    "quick/row9": "4ca92135c1523f0c",
    "full/row1": "e804753a695b939b",
    "full/row2": "612ee54326d0d37f",
    "full/row3": "5210692420e53bde",
    "full/row4": "082eb47fb780329d",
    "full/row5": "d91246961e078794",
    "full/row6": "42ae0b5038174147",
    "full/row7": "2fadbd80bea3f6b2",
    "full/row8": "e5057f0597d7a30f",
    "full/row9": "526715539a7e6153",
    "recipe/unet_torch": "e6b82b67289fbbed",
    "recipe/unet_tf": "d117e1e6f8d63f88",
}


def _overrides(key: str) -> list[str]:
    group, member = key.split("/")
    if group == "recipe":
        return [f"+experiment=brainbench/{member}"]
    return [f"+experiment=table1/{member}", f"profile={group}"]


@pytest.mark.parametrize("key", sorted(GOLDEN))
def test_config_hash_is_unchanged(key: str) -> None:
    spec = run_spec_from_config(to_container(compose_config([*_overrides(key), *PINNED])))
    assert spec.config_hash == GOLDEN[key]
