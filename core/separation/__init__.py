"""Separation of a track into mixer channels: STFT, NMF, the stems model, masks, the cache.

Modules and their public names (audio files and stem files are
:mod:`stemdeck.core.audiofile`):

- :mod:`.separate`: ``separate`` and its result ``Separation``; ``factorize``,
  ``reconstruct``, ``reconstruct_spectra``, ``store_separation``,
  ``component_centroids``, ``ChannelSink``.
- :mod:`.chunks`: separation in overlapping chunks, in play order, on two
  threads, into the cache: ``ChunkedSeparator``, ``ChunkPlan``, ``Chunk``,
  ``iter_chunks``, ``CHUNK_SECONDS``.
- :mod:`.keys`: what a separation is asked to be and its cache key:
  ``SeparationSpec`` (``key``, ``digest``, ``settings_at``, ``channel_names``,
  ``channel_order``),
  ``Mode``, ``MODES``, ``STAGES`` (the progress stages and their shares).
- :mod:`.stem_model`: the stems model as data (numpy alone): ``load_stem_model``,
  ``StemModel``, ``STEM_NAMES``, ``MODEL_FORMAT``.
- :mod:`.stems`: the stems model applied to a track: ``estimate_stems``,
  ``fit_activations``, ``track_level``, ``StemEstimate``, ``Activations``, ``LEVEL_FRAMES``.
- :mod:`.spectral`: ``magnitude``, ``mel_filterbank``, ``BandExpansion``, ``hpss``.
- :mod:`.training`: training the stems model: ``train_stem_model``,
  ``train_dictionaries``, ``fit_maps``, ``Multitrack``.
- :mod:`.nmf`: ``nmf``, ``NMFResult``, ``solve_activations``, ``beta_divergence``,
  ``DEFAULT_THREADS``.
- :mod:`.stft`: ``stft``, ``istft``, ``n_frames``,
  ``stft_frames``, ``spread_frames``, ``frame_blocks``.
- :mod:`.cache`: the store: ``SeparationCache`` (look-ups, eviction, clean-up),
  ``cache_key``, ``default_cache_dir``.
- :mod:`.entry`: an entry's format on disk and as opened: ``FORMAT_VERSION``,
  ``CHECK_BLOCK``, ``CacheEntry``, ``DamagedEntry``, ``block_checksums``, ``seal_entry``.
- :mod:`.checks`: an entry's checks: ``CacheLookup``, ``LookupStatus``,
  ``EntryChecker``, ``entry_checker``, ``verify_entry``, ``check_entry``,
  ``remove_damaged``, ``unreadable``.
- :mod:`.writer`: a finished entry written whole: ``write_entry``, ``EntryWriter``;
  ``reorder_entry`` (an old entry rewritten in the channel order).
- :mod:`.partial`: entries growing chunk by chunk, as a reader sees them:
  ``PartialEntry``, ``open_partial``, ``covers``, ``try_lock``, ``writer_alive``,
  ``PARTIAL_PREFIX``, ``RECORD``, ``LOCK``.
- :mod:`.chunk_writer`: writing them chunk by chunk: ``start_chunk_writer`` (a new
  entry, or a dead writer's resumed), ``ChunkWriter``.
- :mod:`.overview`: a track's overview peaks, taken as an entry is written and kept
  in it: ``channel_peaks``, ``PeakAccumulator``, ``stored_peaks``, ``BINS``,
  ``OVERVIEW_FILE``.
- :mod:`.presets`: ``SeparationParams``, ``load_separation_preset``,
  ``list_presets``, ``read_preset_text``, ``check_stft_params``.
- :mod:`.prep`: one track of a library prep: ``prepare_track``, ``TrackResult``,
  ``decode_bytes``, ``sees_cache``, ``TOKEN_PREFIX``.

``docs/separation.md`` explains stems mode and the measurements behind it.
"""
