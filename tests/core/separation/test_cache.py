import errno
import logging
from pathlib import Path

import numpy as np
import pytest

from conftest import SR, tone_mix
from stemdeck.core.errors import CacheError
from stemdeck.core.separation import checks as checks_mod
from stemdeck.core.separation import entry as entry_mod
from stemdeck.core.separation import writer as writer_mod
from stemdeck.core.separation.cache import SeparationCache, default_cache_dir
from stemdeck.core.separation.checks import CacheLookup
from stemdeck.core.separation.keys import SeparationSpec
from stemdeck.core.separation.presets import SeparationParams
from stemdeck.core.separation.separate import separate


@pytest.fixture
def cache(tmp_path: Path) -> SeparationCache:
    return SeparationCache(tmp_path / "cache")


def entries(cache: SeparationCache) -> list[Path]:
    return sorted(p for p in cache.root.iterdir()) if cache.root.exists() else []


def test_env_overrides_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEMDECK_CACHE", str(tmp_path / "elsewhere"))
    assert default_cache_dir() == tmp_path / "elsewhere"


def test_miss_then_hit_memory_mapped(
    cache: SeparationCache, small_params: SeparationParams
) -> None:
    y = tone_mix(2.0)
    first = separate(y, SR, spec=SeparationSpec("components", small_params), cache=cache)
    assert not first.from_cache and len(entries(cache)) == 1
    second = separate(y, SR, spec=SeparationSpec("components", small_params), cache=cache)
    assert second.from_cache
    assert isinstance(second.channels, np.memmap) and not second.channels.flags.writeable
    np.testing.assert_array_equal(np.asarray(first.channels), np.asarray(second.channels))
    np.testing.assert_array_equal(first.W, second.W)
    assert second.names == first.names and second.groups == first.groups


def test_a_cached_entrys_activations_are_a_memory_map_too(
    cache: SeparationCache, small_params: SeparationParams
) -> None:
    """H grows with the track (128 x 155,000 float32 for an hour, 79 MB): read from
    the cache it is a read-only memory map, not a copy in the process's heap."""
    y = tone_mix(2.0)
    first = separate(y, SR, spec=SeparationSpec("components", small_params), cache=cache)
    second = separate(y, SR, spec=SeparationSpec("components", small_params), cache=cache)
    assert second.from_cache
    assert isinstance(second.H, np.memmap) and not second.H.flags.writeable
    assert second.H.dtype == first.H.dtype and np.array_equal(np.asarray(second.H), first.H)


@pytest.mark.slow  # about a second: the fast tier stays under a minute
def test_key_changes_with_audio_and_every_parameter(
    cache: SeparationCache, small_params: SeparationParams
) -> None:
    y = tone_mix(1.0)
    separate(y, SR, spec=SeparationSpec("components", small_params), cache=cache)
    z = y.copy()
    z[0, 100] += 1e-6
    assert not separate(
        z, SR, spec=SeparationSpec("components", small_params), cache=cache
    ).from_cache
    assert not separate(
        y, SR, spec=SeparationSpec("components", small_params.with_overrides(seed=1)), cache=cache
    ).from_cache
    assert not separate(
        y,
        SR,
        spec=SeparationSpec("components", small_params.with_overrides(mask_power=2.0)),
        cache=cache,
    ).from_cache
    assert len(entries(cache)) == 4


@pytest.mark.parametrize("damage", ["truncate", "flip", "meta", "missing", "version"])
def test_damaged_entry_is_detected_and_rebuilt(
    cache: SeparationCache,
    small_params: SeparationParams,
    caplog: pytest.LogCaptureFixture,
    damage: str,
) -> None:
    y = tone_mix(2.0)
    good = np.asarray(
        separate(y, SR, spec=SeparationSpec("components", small_params), cache=cache).channels
    ).copy()
    (entry,) = entries(cache)
    data = entry / "channels.f32"
    if damage == "truncate":
        with data.open("r+b") as f:
            f.truncate(data.stat().st_size - 4)
    elif damage == "flip":
        raw = bytearray(data.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        data.write_bytes(bytes(raw))
    elif damage == "meta":
        (entry / "meta.json").write_text("{not json")
    elif damage == "missing":
        (entry / "W.npy").unlink()
    elif damage == "version":
        version = f'"format": {entry_mod.FORMAT_VERSION}'
        meta = (entry / "meta.json").read_text().replace(version, '"format": 999')
        (entry / "meta.json").write_text(meta)
    with caplog.at_level(logging.WARNING, logger="stemdeck"):
        again = separate(y, SR, spec=SeparationSpec("components", small_params), cache=cache)
    assert not again.from_cache  # rebuilt, never played damaged
    assert "damaged" in caplog.text
    np.testing.assert_array_equal(np.asarray(again.channels), good)
    assert separate(y, SR, spec=SeparationSpec("components", small_params), cache=cache).from_cache


def test_interrupted_write_leaves_nothing(cache: SeparationCache) -> None:
    y = np.zeros((2, 100), np.float32)
    with pytest.raises(KeyboardInterrupt), cache.writer("k" * 40, 2, (2, 100)) as w:
        w.add_channel("a", y)
        raise KeyboardInterrupt
    assert entries(cache) == []


def test_killed_writer_temp_folder_is_cleaned(cache: SeparationCache) -> None:
    stale = cache.root / ".tmp-abc-123"
    stale.mkdir(parents=True)
    cache.clean_stale(older_than=0.0)
    assert not stale.exists()


def test_disk_full_is_a_clear_error_and_leaves_no_entry(
    cache: SeparationCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(self: object, name: str, audio: np.ndarray) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writer_mod.EntryWriter, "add_channel", full)
    with pytest.raises(CacheError, match="disk full"), cache.writer("k" * 40, 1, (1, 10)) as w:
        w.add_channel("a", np.zeros((1, 10), np.float32))
    assert entries(cache) == []


def test_separate_survives_a_full_disk(
    cache: SeparationCache,
    small_params: SeparationParams,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    y = tone_mix(2.0)
    reference = separate(y, SR, spec=SeparationSpec("components", small_params))

    def full(self: object, name: str, audio: np.ndarray, *, index: int | None = None) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writer_mod.EntryWriter, "add_channel", full)
    with caplog.at_level(logging.WARNING, logger="stemdeck"):
        result = separate(y, SR, spec=SeparationSpec("components", small_params), cache=cache)
    assert "disk full" in caplog.text and "continuing without the cache" in caplog.text
    np.testing.assert_array_equal(result.channels, reference.channels)  # nothing lost
    assert entries(cache) == []


def test_least_recently_used_entries_evicted(
    tmp_path: Path, small_params: SeparationParams
) -> None:
    cache = SeparationCache(tmp_path / "c", max_bytes=1)  # keeps only the newest
    separate(
        tone_mix(1.0, seed=1), SR, spec=SeparationSpec("components", small_params), cache=cache
    )
    separate(
        tone_mix(1.0, seed=2), SR, spec=SeparationSpec("components", small_params), cache=cache
    )
    assert len(entries(cache)) == 1
    assert separate(
        tone_mix(1.0, seed=2), SR, spec=SeparationSpec("components", small_params), cache=cache
    ).from_cache


def _big_entry(cache: SeparationCache, key: str = "b" * 40) -> np.ndarray:
    """A 12 MiB entry (four stereo channels), written through the cache's writer."""
    rng = np.random.default_rng(5)
    channels = (0.1 * rng.standard_normal((4, 2, 393216))).astype(np.float32)
    with cache.writer(key, 4, (2, 393216)) as w:
        for i in range(4):
            w.add_channel(f"c{i}", channels[i])
        w.add_array("W", np.ones((3, 4)))
        w.add_array("H", np.ones((4, 5)))
        w.meta["sr"] = SR
    return channels


@pytest.mark.parametrize("offset", [0, 4096 * 1000 + 17, 6 * 2**20 + 3, -4096])
def test_every_block_of_a_big_entry_is_checked(
    cache: SeparationCache, offset: int, caplog: pytest.LogCaptureFixture
) -> None:
    """4 KiB flipped anywhere in a 12 MiB file is found (a sample of blocks was not)."""
    key = "b" * 40
    channels = _big_entry(cache, key)
    data = cache.root / key / "channels.f32"
    assert data.stat().st_size == channels.nbytes == 12 * 2**20
    loaded = cache.load(key).entry
    assert loaded is not None and loaded.verified
    np.testing.assert_array_equal(np.asarray(loaded.channels), channels)
    del loaded
    with data.open("r+b") as f:
        f.seek(offset % data.stat().st_size)
        chunk = bytearray(f.read(4096))
        f.seek(offset % data.stat().st_size)
        f.write(bytes(b ^ 0x5A for b in chunk))
    found = cache.load(key)
    assert found.status == "damaged" and found.entry is None
    assert "damaged" in (found.problem or "") and "checksum" in (found.problem or "")
    assert not (cache.root / key).exists()
    assert cache.load(key) == CacheLookup("absent")


def test_deferred_verification_opens_at_once_and_verify_finds_damage(
    tmp_path: Path,
) -> None:
    cache = SeparationCache(tmp_path / "c", verify_on_load=False)
    key = "d" * 40
    _big_entry(cache, key)
    entry = cache.load(key).entry
    assert entry is not None and not entry.verified
    checked = cache.verify(entry)
    assert checked.status == "found" and checked.entry is entry and entry.verified
    data = cache.root / key / "channels.f32"
    with data.open("r+b") as f:
        f.seek(9 * 2**20)
        f.write(b"\xff" * 4096)
    entry = cache.load(key).entry  # sizes match: opens, unverified
    assert entry is not None and not entry.verified
    checked = cache.verify(entry)
    assert checked.status == "damaged" and checked.entry is None and not entry.verified
    assert "checksum mismatch" in (checked.problem or "")
    assert not (cache.root / key).exists()


def test_an_unreadable_entry_is_kept(
    cache: SeparationCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An OSError that proves nothing (too many open files) never deletes an entry."""
    key = "e" * 40
    _big_entry(cache, key)

    def busy(path: Path, block: int = entry_mod.CHECK_BLOCK) -> list[int]:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(checks_mod, "block_checksums", busy)
    found = cache.load(key)
    assert found.status == "unreadable" and found.entry is None
    assert "unreadable" in (found.problem or "") and "kept" in (found.problem or "")
    checked = cache.verify(cache.root / key)
    assert checked.status == "unreadable" and "Too many open files" in (checked.problem or "")
    assert (cache.root / key / "channels.f32").is_file()
    monkeypatch.undo()
    entry = cache.load(key).entry
    assert entry is not None and entry.verified


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("1e400", "is not a finite number"),
        ("nan", "is not a finite number"),
        ("-1", "leaves no room: the cache would empty itself on every write"),
        ("0", "leaves no room: the cache would empty itself on every write"),
        # Hostile review, issue 21: a tiny positive size emptied the cache on every write.
        ("1e-30", "leaves no room: the cache would empty itself on every write"),
        ("0.2", "leaves no room: the cache would empty itself on every write"),
        ("abc", "is not a number"),
        ("2e6", "is more than 1048576 GiB"),
    ],
)
def test_a_bad_cache_size_setting_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str, problem: str
) -> None:
    monkeypatch.setenv("STEMDECK_CACHE_MAX_GB", value)
    with pytest.raises(CacheError) as err:
        SeparationCache(tmp_path / "c")
    assert str(err.value) == (
        f"STEMDECK_CACHE_MAX_GB={value!r} {problem}; set it to the cache's size in GiB, "
        "at least 0.25 and at most 1048576 (unset, it is 20)"
    )


@pytest.mark.parametrize(
    ("value", "size"),
    [("0.25", 2**28), ("0.5", 2**29), ("1048576", 2**50), ("", 20 * 2**30), (None, 20 * 2**30)],
)
def test_the_cache_size_setting_is_in_gib(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str | None, size: int
) -> None:
    if value is None:
        monkeypatch.delenv("STEMDECK_CACHE_MAX_GB", raising=False)
    else:
        monkeypatch.setenv("STEMDECK_CACHE_MAX_GB", value)
    assert SeparationCache(tmp_path / "c").max_bytes == size


def test_an_entry_in_the_old_stem_order_is_rewritten_once_in_the_new(
    cache: SeparationCache,
) -> None:
    """Entries made before every source shared one order list drums, bass, vocals, other:
    served in the new order (drums, bass, other, vocals), each channel its own audio,
    after one atomic rewrite; the next look-up opens the rewritten entry as it is."""
    y = tone_mix(2.0)
    spec = SeparationSpec(params=SeparationParams(stems_iter=10))
    fresh = separate(y, SR, spec=spec)  # no cache: the channels as computed now
    assert fresh.names == ["drums", "bass", "other", "vocals"]
    key = spec.key(y, SR)
    old_order = [0, 1, 3, 2]  # drums, bass, vocals, other
    with cache.writer(key, 4, (y.shape[0], y.shape[1])) as w:
        for i in old_order:
            w.add_channel(fresh.names[i], fresh.channels[i])
        w.add_array("W", fresh.W)
        w.add_array("H", fresh.H)
        w.meta["sr"] = SR
        w.meta["extra"] = {
            "groups": [fresh.groups[i] for i in old_order],
            "mode": "stems",
            "params": spec.settings_at(SR).as_dict(),
        }
    folder = cache.root / key
    old_inode = (folder / "channels.f32").stat().st_ino

    served = separate(y, SR, spec=spec, cache=cache)
    assert served.from_cache
    assert served.names == ["drums", "bass", "other", "vocals"]
    np.testing.assert_array_equal(np.asarray(served.channels), fresh.channels)
    assert served.groups == fresh.groups
    new_inode = (folder / "channels.f32").stat().st_ino
    assert new_inode != old_inode
    assert entries(cache) == [folder]  # nothing left aside
    again = cache.load(key)
    assert again.entry is not None and again.entry.names == served.names
    assert (folder / "channels.f32").stat().st_ino == new_inode  # not rewritten twice
    assert cache.verify(folder).status == "found"


def test_a_damaged_entry_in_the_old_order_is_removed_not_rewritten(
    cache: SeparationCache,
) -> None:
    y = tone_mix(1.0)
    with cache.writer("k" * 64, 2, (y.shape[0], y.shape[1])) as w:
        w.add_channel("vocals", y)
        w.add_channel("drums", y)
        w.add_array("W", np.ones((4, 2)))
        w.add_array("H", np.ones((2, 4)))
        w.meta["sr"] = SR
    with (cache.root / ("k" * 64) / "channels.f32").open("r+b") as f:
        f.write(b"\xff\xff\xff\x7f")
    found = cache.load("k" * 64, verify=False)
    assert found.status == "damaged" and entries(cache) == []
    assert found.problem == (
        f"cache entry {'k' * 12} was damaged (channels.f32 checksum mismatch); rebuilding it"
    )


def test_an_entry_is_checked_range_by_range_the_one_asked_for_first(tmp_path: Path) -> None:
    """The checker reads only the blocks of the samples asked for: the span under a
    play head is checked (and plays) before a damaged block elsewhere is read; that
    block is found once its samples are asked for, and the entry removed."""
    cache = SeparationCache(tmp_path / "c", verify_on_load=False)
    key = "f" * 40
    _big_entry(cache, key)
    data = cache.root / key / "channels.f32"
    with data.open("r+b") as f:  # the last block: the end of the last channel's right side
        f.seek(-4096, 2)
        f.write(b"\xff" * 4096)
    entry = cache.load(key).entry
    assert entry is not None and not entry.verified
    checker = cache.checker(entry)
    assert not isinstance(checker, CacheLookup)
    assert checker.files().status == "found"
    first = checker.samples(0, 100000)
    assert first.status == "found" and first.entry is entry
    assert not checker.complete and not entry.verified
    rest = checker.samples(100000, 393216)
    assert rest.status == "damaged" and rest.entry is None
    assert (
        rest.problem
        == f"cache entry {key[:12]} was damaged (channels.f32 checksum mismatch); rebuilding it"
    )
    assert not (cache.root / key).exists()


def test_an_entry_checked_range_by_range_is_verified_once_every_block_is(tmp_path: Path) -> None:
    cache = SeparationCache(tmp_path / "c", verify_on_load=False)
    key = "a" * 40
    _big_entry(cache, key)
    entry = cache.load(key).entry
    assert entry is not None
    checker = cache.checker(entry)
    assert not isinstance(checker, CacheLookup)
    for start in (200000, 0, 300000):  # any order, ranges that share blocks
        assert checker.samples(start, start + 100000).status == "found"
    assert checker.complete and entry.verified


def test_the_checker_finds_damaged_activations_first(tmp_path: Path) -> None:
    cache = SeparationCache(tmp_path / "c", verify_on_load=False)
    key = "9" * 40
    _big_entry(cache, key)
    with (cache.root / key / "H.npy").open("r+b") as f:
        f.seek(-4, 2)
        f.write(b"\x00\x00\x80\x7f")
    entry = cache.load(key).entry
    assert entry is not None
    checker = cache.checker(entry)
    assert not isinstance(checker, CacheLookup)
    found = checker.files()
    assert found.status == "damaged"
    assert (
        found.problem
        == f"cache entry {key[:12]} was damaged (H.npy checksum mismatch); rebuilding it"
    )
    assert not (cache.root / key).exists()


def test_a_checker_over_meta_without_every_block_is_damaged(tmp_path: Path) -> None:
    import json

    cache = SeparationCache(tmp_path / "c", verify_on_load=False)
    key = "8" * 40
    _big_entry(cache, key)
    meta_path = cache.root / key / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["files"]["channels.f32"]["crc"].pop()
    meta_path.write_text(json.dumps(meta))
    entry = cache.load(key).entry
    assert entry is not None
    found = cache.checker(entry)
    assert isinstance(found, CacheLookup) and found.status == "damaged"
    assert found.problem == (
        f"cache entry {key[:12]} was damaged (channels.f32 has 11 block checksums); rebuilding it"
    )


def test_may_hold_says_no_only_when_no_entry_has_the_shape_and_rate(tmp_path: Path) -> None:
    cache = SeparationCache(tmp_path / "c")
    assert not cache.may_hold(SR, (2, 393216))  # no folder yet
    _big_entry(cache, "7" * 40)  # four channels of (2, 393216) at SR
    assert cache.may_hold(SR, (2, 393216))
    assert not cache.may_hold(SR, (2, 393217))
    assert not cache.may_hold(SR, (1, 393216))
    assert not cache.may_hold(44100, (2, 393216))
    (cache.root / ("6" * 40)).mkdir()  # an entry whose meta cannot be read: maybe
    assert cache.may_hold(44100, (2, 393216))
