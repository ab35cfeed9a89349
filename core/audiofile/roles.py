"""Stem roles: what a stem is (drums, bass, other, vocals), whatever its file calls it.

Every source of stems (a separated track, an NI Stems file, a MUSDB18 file, a
stem file stemdeck wrote) names its stems its own way: NI's own example files
call the vocal stem "Vox", MUSDB18 "vocals", Demucs "vocals". A stem's **role**
is read from its name, case-insensitively, through :data:`ALIASES`; the mixer
addresses a stem by its role (``/ch/vocals/...``), so one scene, one MIDI map and
one OSC layout fit every file, while the file's own name stays the label shown.

Every source is laid out in one order, :data:`ROLES`: drums, bass, other,
vocals, the order NI Stems (tracks 2-5), MUSDB18 (streams 1-4) and Demucs's
four-stem models share (``docs/separation.md`` says why). Stems whose name has
no role keep a key of their own (:func:`channel_keys`) and come after the roles,
in file order; when two stems have the same role, the first (in file order)
takes the role and the others keep keys of their own.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ALIASES",
    "KEY_MAX",
    "ROLES",
    "StemLayout",
    "channel_keys",
    "find_channel",
    "permute_rows",
    "stem_layout",
    "stem_role",
]

#: The roles, in the order every source of stems is laid out in.
ROLES: tuple[str, ...] = ("drums", "bass", "other", "vocals")

#: Most characters of a channel key (``/ch/<key>/...``): a reply naming every channel
#: stays far below a UDP datagram.
KEY_MAX = 32

# The names real files give their stems, by role. NI's Stem Creator presets and
# example files (Drums, Bass, Synth, Vox; Melody, Kick, Perc), MUSDB18's and
# Demucs's names (drums, bass, other, vocals; Demucs's six-stem model adds guitar,
# "other" to a four-stem mixer, and piano, left without a role: a scene's "piano"
# must not move a four-stem track's "other"), and the names stem packs and DAW
# exports commonly use (Beat, Sub, Instrumental, Lead Vocal, Keys).
_NAMES: dict[str, tuple[str, ...]] = {
    "drums": (
        "drums",
        "drum",
        "drum kit",
        "kit",
        "perc",
        "percs",
        "percussion",
        "kick",
        "kicks",
        "beat",
        "beats",
    ),
    "bass": ("bass", "basses", "bassline", "bass line", "sub", "sub bass", "bass guitar"),
    "other": (
        "other",
        "others",
        "synth",
        "synths",
        "music",
        "instrumental",
        "inst",
        "instruments",
        "melody",
        "melodies",
        "keys",
        "guitar",
        "guitars",
        "harmony",
        "accompaniment",
    ),
    "vocals": (
        "vocals",
        "vocal",
        "vox",
        "voice",
        "voices",
        "lead vocal",
        "lead vocals",
        "lead vox",
        "vocal lead",
        "singing",
        "acapella",
        "a cappella",
    ),
}
#: A normalised stem name (lower case, words split by single spaces) -> its role.
ALIASES: dict[str, str] = {alias: role for role, names in _NAMES.items() for alias in names}

_WORDS = re.compile(r"[^0-9a-z]+")


def _normalise(name: str) -> str:
    return " ".join(_WORDS.split(name.casefold())).strip()


def stem_role(name: str) -> str | None:
    """The role of a stem called ``name`` (one of :data:`ROLES`), or None.

    Case, spaces and punctuation do not count: ``"Vox"``, ``"Lead_Vocal"`` and
    ``" VOCALS "`` are all ``"vocals"``.

    Examples
    --------
    >>> stem_role("Vox"), stem_role("Synth"), stem_role("Perc."), stem_role("FX")
    ('vocals', 'other', 'drums', None)
    """
    return ALIASES.get(_normalise(name))


def find_channel(name: str, keys: Sequence[str]) -> int | None:
    """The index of the channel ``name`` means among ``keys``: the channel of that key,
    else the channel whose key is ``name``'s role (``"vox"`` finds ``vocals``);
    None when there is none.

    Examples
    --------
    >>> find_channel("vox", ["drums", "bass", "other", "vocals"])
    3
    >>> find_channel("vocals", ["component_01", "component_02"]) is None
    True
    """
    if name in keys:
        return list(keys).index(name)
    role = stem_role(name)
    if role is not None and role in keys:
        return list(keys).index(role)
    return None


def channel_keys(
    names: Sequence[str], *, taken: Sequence[str] = (), numbers: Sequence[int] | None = None
) -> list[str]:
    """Mixer channel names for stem names: lower case, OSC-safe, unique, never all digits.

    ``/ch/NAME/...`` must stay one OSC address component, and a name made of
    digits would read as a channel index. Runs of anything but ``a-z 0-9 _ -``
    become ``-``; a key has at most :data:`KEY_MAX` characters, a duplicate
    (also one made by the cut, or one of ``taken``) gets ``-2``, ``-3``... within
    that length; a name with nothing left is ``stemN``, N its number in
    ``numbers`` (default: 1, 2, ...). A key is also a safe file name (``separate``
    names a stem file's stems by them).
    """
    keys: list[str] = []
    used = set(taken)
    numbered = range(1, len(names) + 1) if numbers is None else numbers
    for i, name in zip(numbered, names, strict=True):
        key = re.sub(r"[^a-z0-9_-]+", "-", name.strip().lower()).strip("-")
        key = key[:KEY_MAX].rstrip("-")
        if not key or key.isdigit():
            key = f"stem{i}"
        base, n = key, 2
        while key in used:
            tail = f"-{n}"
            key = base[: KEY_MAX - len(tail)].rstrip("-") + tail
            n += 1
        keys.append(key)
        used.add(key)
    return keys


@dataclass(frozen=True)
class StemLayout:
    """Where each stem of a source goes in the mixer, and what it is called there.

    Attributes
    ----------
    order : tuple of int
        For each mixer channel, in order, the index of its stem in the source.
    keys : tuple of str
        Each channel's key (``/ch/<key>/...``): its role, or a key of its own.
    roles : tuple of str or None
        Each channel's role; None for a stem that has none (or whose role an
        earlier stem took).
    """

    order: tuple[int, ...]
    keys: tuple[str, ...]
    roles: tuple[str | None, ...]

    @property
    def identity(self) -> bool:
        """True when the source is in the mixer's order already."""
        return self.order == tuple(range(len(self.order)))

    def arrange(self, items: Sequence[str]) -> list[str]:
        """``items``, one per stem in source order, in the mixer's order."""
        return [items[i] for i in self.order]


def stem_layout(names: Sequence[str]) -> StemLayout:
    """The mixer's layout of stems named ``names`` (in source order).

    Stems with a role come first, in the order of :data:`ROLES`; the others
    follow in source order. The first stem (in source order) of each role takes
    it; a later stem of the same role keeps a key of its own, as do stems with
    no role (:func:`channel_keys`, never one of the roles' keys).

    Examples
    --------
    >>> stem_layout(["Drums", "Bass", "Vox", "Synth"]).keys
    ('drums', 'bass', 'other', 'vocals')
    >>> stem_layout(["drums", "bass", "vocals", "other"]).order
    (0, 1, 3, 2)
    >>> stem_layout(["Vox", "FX", "Lead Vocal"]).keys
    ('vocals', 'fx', 'lead-vocal')
    """
    first: dict[str, int] = {}
    for i, name in enumerate(names):
        role = stem_role(name)
        if role is not None and role not in first:
            first[role] = i
    with_role = [first[r] for r in ROLES if r in first]
    rest = [i for i in range(len(names)) if i not in with_role]
    own = channel_keys([names[i] for i in rest], taken=ROLES, numbers=[i + 1 for i in rest])
    roles = tuple(r for r in ROLES if r in first)
    return StemLayout(
        order=tuple(with_role + rest),
        keys=roles + tuple(own),
        roles=(*roles, *([None] * len(rest))),
    )


def permute_rows(array: np.ndarray, order: Sequence[int]) -> None:
    """Put the rows of ``array`` in ``order`` (row ``j`` becomes old row ``order[j]``)
    in place, holding at most one row aside: a track's stems are not copied whole."""
    n = len(order)
    if sorted(order) != list(range(n)) or n != array.shape[0]:
        raise ValueError(f"order {list(order)} is not a permutation of {array.shape[0]} rows")
    done = [False] * n
    for start in range(n):
        if done[start] or order[start] == start:
            done[start] = True
            continue
        held = array[start].copy()
        j = start
        while True:
            done[j] = True
            src = order[j]
            if src == start:
                array[j] = held
                break
            array[j] = array[src]
            j = src
