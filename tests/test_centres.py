"""Class-aware patch sampling (``bench.patching.centres``): a fraction of each epoch's patches centred on a
voxel of chosen classes; the rest of the epoch as without it."""

from __future__ import annotations

import numpy as np
import pytest
from test_records import spec_of

from bench.errors import ConfigError, DataError
from bench.patching.sampler import PatchSampler, PatchSubject
from bench.spec import effective_settings


def subject(seed: int = 0) -> PatchSubject:
    """A 24³ volume of GM (2) with one CSF voxel (1) and a WM block (3)."""
    label = np.full((24, 24, 24), 2, np.int64)
    label[4:8, 16:20, 10:14] = 3
    label[13, 5 + seed, 17] = 1
    return PatchSubject(image=label.astype(np.float32), label=label, mask=np.ones(label.shape, bool))


def sampler(fraction: float, classes: tuple[int, ...] = (1,), mode: str = "random") -> PatchSampler:
    return PatchSampler([subject(0), subject(1)], 8, step=4, batch_size=4, seed=3, mode=mode,  # type: ignore[arg-type]
                        patches_per_epoch=40 if mode != "grid" else None, class_fraction=fraction,
                        class_centres=classes)


@pytest.mark.parametrize("mode", ["random", "random_subset", "grid"])
def test_a_fraction_of_patches_is_centred_on_the_rare_class_and_the_rest_stay(mode: str) -> None:
    plain, centred = sampler(0.0, mode=mode), sampler(0.25, mode=mode)
    before, after = plain.epoch_locations(2), centred.epoch_locations(2)
    changed = np.flatnonzero((before != after).any(axis=1))
    assert len(after) == len(before) and len(changed) <= round(0.25 * len(before))
    replaced = [row for row in after.tolist() if row[1:] in ([9, 1, 13], [9, 2, 13])]  # start = csf - patch // 2
    assert len(replaced) == round(0.25 * len(before))  # every replacement centred on a CSF voxel (of its subject)
    for s, x0, y0, z0 in replaced:
        assert centred.subjects[s].label[x0 + 4, y0 + 4, z0 + 4] == 1
    batch = centred.extract(after[changed])
    assert all((batch.label[i] == 1).sum() == 1 for i in range(len(changed)))


def test_classes_are_picked_uniformly_and_every_draw_is_seeded() -> None:
    source = PatchSampler([subject()], 8, batch_size=4, seed=0, mode="random", patches_per_epoch=400,
                          class_fraction=1.0, class_centres=(1, 3))
    locations = source.epoch_locations(0)
    centres = locations[:, 1:] + 4
    labels = source.subjects[0].label[centres[:, 0], centres[:, 1], centres[:, 2]]
    assert set(labels.tolist()) == {1, 3} and 0.4 < (labels == 1).mean() < 0.6  # CSF: 1 voxel, half the draws
    np.testing.assert_array_equal(locations, source.epoch_locations(0))
    assert not np.array_equal(locations, source.epoch_locations(1))


def test_bad_class_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"sampling.class_fraction=1.5 must be in \[0, 1\]"):
        sampler(1.5)
    with pytest.raises(DataError, match=r"class_centres=\[7\]: none of these classes occurs"):
        sampler(0.5, classes=(7,))


def test_the_foreground_preset_reaches_the_spec_and_the_record() -> None:
    spec = spec_of("sampling=foreground")
    assert (spec.network.sampling.mode, spec.network.sampling.class_fraction, spec.network.sampling.class_centres) == ("random", 0.33, (1, 2, 3))
    recorded = effective_settings(spec)["sampling"]
    assert recorded["class_fraction"] == 0.33 and list(recorded["class_centres"]) == [1, 2, 3]
    plain = effective_settings(spec_of())["sampling"]
    assert plain["class_fraction"] == 0.0 and "class_centres" not in plain  # off: only the fraction is recorded
    for override, needle in (("sampling.class_fraction=2", "sampling.class_fraction=2 must be a number in [0, 1]"),
                             ("sampling.class_centres=[0]", "sampling.class_centres=0 is the background"),
                             ("sampling.class_centres=[]", "sampling.class_centres=[] must be a non-empty list of label names"),
                             ("sampling.class_centres=[CSF,tumour]", "sampling.class_centres='tumour' is not a class")):
        with pytest.raises(ConfigError) as info:
            spec_of("sampling=foreground", override)
        assert needle in info.value.message
