"""The one splits helper: clip ranges, triplets and pairs spread over them, disjointness of their uses."""

from __future__ import annotations

import numpy as np
import pytest

from rifelab.frames.splits import (
    ClipRange,
    SplitError,
    check_disjoint,
    clip_ranges,
    range_frames,
    range_triplets,
    spread,
)


def _numbered(clip: str, max_frames: int, start: int = 0) -> np.ndarray:
    """Synthetic frames (labelled: not real data) whose pixel value is the frame number, to read the choice back."""
    return np.stack([np.full((8, 8, 3), start + i, np.uint8) for i in range(max_frames)])


def test_ranges_are_validated_with_the_key_named():
    assert clip_ranges({"bikes": [3, 9]}) == [ClipRange("bikes", 3, 9)]
    assert range_frames({"bikes": (3, 6)}) == {"bikes": range(3, 6)}
    for bad in ([5, 5], [-1, 4], [0.5, 3], [1, 2, 3], "0-9", [True, 4]):
        with pytest.raises(SplitError, match=r"train_ranges\['bikes'\].*0 <= start < stop"):
            clip_ranges({"bikes": bad}, "train_ranges")


def test_spread_reaches_both_ends_and_never_repeats():
    assert spread(10, 4).tolist() == [0, 3, 6, 9]
    assert spread(3, 10).tolist() == [0, 1, 2]
    assert spread(1, 2).tolist() == [0]


def test_even_and_apart_layouts_choose_the_documented_triplets():
    even = range_triplets({"c": [10, 30]}, 4, loader=_numbered, skip_cuts=False)
    assert [t.name for t in even] == ["c:10", "c:16", "c:21", "c:27"]  # first to last of the 18 triplet starts
    apart = range_triplets({"c": [10, 30]}, 4, layout="apart", skip_cuts=False, loader=_numbered)
    assert [t.name for t in apart] == ["c:10", "c:14", "c:18", "c:22"]  # (20 - 2) // 4 = 4 apart, none shares a frame
    t = apart[1]
    assert (t.frame0[0, 0, 0], t.gt[0, 0, 0], t.frame2[0, 0, 0]) == (14, 15, 16)
    small = range_triplets({"c": [0, 9]}, 1, layout="apart", skip_cuts=False, size=(4, 2), loader=_numbered)
    assert small[0].frame0.shape == (2, 4, 3) and small[0].frame0.dtype == np.uint8
    with pytest.raises(SplitError, match="layout"):
        range_triplets({"c": [0, 9]}, 1, layout="random", loader=_numbered)
    with pytest.raises(SplitError, match="integer >= 1"):
        range_triplets({"c": [0, 9]}, 0, loader=_numbered)


def test_scene_cuts_are_skipped_before_spreading():
    # bikes cuts between frames 29 and 30 (real frames): triplets starting at 28 and 29 straddle it
    assert [t.name for t in range_triplets({"bikes": [26, 33]}, 10)] == ["bikes:26", "bikes:27", "bikes:30"]


def test_disjointness_names_both_uses_and_the_shared_frames():
    check_disjoint({"a": range_frames({"bikes": [0, 10]}), "b": range_frames({"bikes": [10, 20], "carphone": [0, 5]})})
    with pytest.raises(SplitError, match=r"calibration and held-out share frames \(bikes frames 8..9\).*overlap"):
        check_disjoint({"train": {"carphone": range(0, 3)}, "calibration": range_frames({"bikes": [0, 10]}),
                        "held-out": range_frames({"bikes": [8, 20]})})
