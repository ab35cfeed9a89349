"""Stem roles: names real files use, one order for every source, keys and duplicates."""

from __future__ import annotations

import numpy as np
import pytest

from stemdeck.core.audiofile.roles import (
    ROLES,
    StemLayout,
    find_channel,
    permute_rows,
    stem_layout,
    stem_role,
)


@pytest.mark.parametrize(
    ("names", "role"),
    [
        (["Vox", "VOCALS", "vocal", "Voice", "Lead Vocal", "lead_vocals", " Lead-Vox "], "vocals"),
        (["Drums", "drum", "Perc", "Percussion", "Kick", "Beats", "beat", "Drum Kit"], "drums"),
        (["Bass", "SUB", "Sub Bass", "Bassline"], "bass"),
        (
            ["Synth", "Music", "Instrumental", "Melody", "Keys", "Guitar", "Guitars", "Inst"],
            "other",
        ),
        (["other", "Other"], "other"),
    ],
)
def test_the_names_real_files_use_have_their_role(names: list[str], role: str) -> None:
    assert [stem_role(n) for n in names] == [role] * len(names)


@pytest.mark.parametrize("name", ["FX", "Piano", "Pad", "", "3", "vocals 2", "Backing"])
def test_other_names_have_no_role(name: str) -> None:
    assert stem_role(name) is None


def test_the_order_is_the_one_ni_musdb_and_demucs_share() -> None:
    assert ROLES == ("drums", "bass", "other", "vocals")


@pytest.mark.parametrize(
    ("names", "layout"),
    [
        # NI's own names, in NI's order: nothing moves, Vox is vocals.
        (
            ["Drums", "Bass", "Other", "Vox"],
            StemLayout((0, 1, 2, 3), ("drums", "bass", "other", "vocals"), ROLES),
        ),
        # MUSDB18 / Demucs names.
        (
            ["drums", "bass", "other", "vocals"],
            StemLayout((0, 1, 2, 3), ("drums", "bass", "other", "vocals"), ROLES),
        ),
        # stemdeck's model order: vocals and other swap.
        (
            ["drums", "bass", "vocals", "other"],
            StemLayout((0, 1, 3, 2), ("drums", "bass", "other", "vocals"), ROLES),
        ),
        # Missing roles close up; names without a role follow, in file order.
        (
            ["FX", "Vox", "Pad", "Kick"],
            StemLayout(
                (3, 1, 0, 2), ("drums", "vocals", "fx", "pad"), ("drums", "vocals", None, None)
            ),
        ),
        # Two of one role: the first in the file takes it, the other keeps its own key.
        (
            ["Lead Vocal", "Drums", "Vox"],
            StemLayout((1, 0, 2), ("drums", "vocals", "vox"), ("drums", "vocals", None)),
        ),
        # A later stem's own key never takes a role's key.
        (
            ["Vox", "vocals"],
            StemLayout((0, 1), ("vocals", "vocals-2"), ("vocals", None)),
        ),
        # A name with nothing usable is numbered by its place in the file.
        (
            ["123", "Bass", "  "],
            StemLayout((1, 0, 2), ("bass", "stem1", "stem3"), ("bass", None, None)),
        ),
    ],
)
def test_layout_puts_roles_first_in_one_order(names: list[str], layout: StemLayout) -> None:
    assert stem_layout(names) == layout
    assert layout.arrange(names) == [names[i] for i in layout.order]


def test_find_channel_by_key_then_by_role() -> None:
    keys = ["drums", "bass", "other", "vocals", "fx"]
    assert [find_channel(n, keys) for n in ("vocals", "vox", "Vox", "fx", "kick", "piano")] == [
        3,
        3,
        3,
        4,
        0,
        None,
    ]
    assert find_channel("vocals", ["component_01", "component_02"]) is None


@pytest.mark.parametrize(
    "order", [(0, 1, 2, 3), (0, 1, 3, 2), (3, 0, 1, 2), (1, 0, 3, 2), (2, 3, 0, 1)]
)
def test_permute_rows_in_place(order: tuple[int, ...]) -> None:
    rng = np.random.default_rng(3)
    rows = rng.standard_normal((4, 2, 50)).astype(np.float32)
    array = rows.copy()
    before = array.__array_interface__["data"][0]
    permute_rows(array, order)
    np.testing.assert_array_equal(array, rows[list(order)])
    assert array.__array_interface__["data"][0] == before


def test_permute_rows_refuses_what_is_no_permutation() -> None:
    with pytest.raises(ValueError, match=r"^order \[0, 0, 1\] is not a permutation of 3 rows$"):
        permute_rows(np.zeros((3, 1, 4), np.float32), [0, 0, 1])
