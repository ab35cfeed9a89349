"""Audio file formats: what stemdeck reads and writes, apart from separating.

Modules and their public names:

- :mod:`.files`: ``AUDIO_SUFFIXES`` (the files stemdeck opens), ``probe_audio``
  and ``AudioInfo`` (a header check), ``load`` and ``write``; ``printable_name`` (a
  file name that need not be UTF-8, as valid text); for writers ``create_temp``,
  ``is_disk_full``, ``disk_full_message``.
- :mod:`.samples`: sample arrays: ``validate_audio``, ``resample``,
  ``resample_channels``, ``downmix_to_stereo``.
- :mod:`.stemfile`: NI Stems files checked without decoding: ``probe``,
  ``StemFileInfo``, ``mp4_header``, ``declared_length``; file names
  (``is_stem_path``, ``stem_track_name``, ``STEM_SUFFIXES``); ``MIN_STEMS``,
  ``MAX_STEMS``.
- :mod:`.manifest`: the ``stem`` box's manifest: ``make_manifest``,
  ``manifest_problems``, ``parse_manifest``, ``MANIFEST_VERSION``, ``MANIFEST_MAX``,
  ``MANIFEST_DEPTH_MAX``; the stems' names (``NI_STEMS``, ``NI_NAMES``,
  ``NI_COLOURS``, ``stem_names``, ``display_name`` and ``NAME_MAX``).
- :mod:`.decode`: decoding with PyAV: ``read_stem_file``, ``StemFile``,
  ``read_mp4_audio``.
- :mod:`.tags`: ``Tags``, ``read_tags``.
- :mod:`.pyav`: PyAV: ``import_av``, ``open_container``, ``ffmpeg_reason``.
- :mod:`.roles`: stem roles: ``ROLES`` (drums, bass, other, vocals: the one order
  of every source), ``ALIASES``, ``stem_role``, ``stem_layout`` and ``StemLayout``
  (a source's stems in that order, with their keys), ``channel_keys`` and
  ``KEY_MAX``, ``permute_rows``.
- :mod:`.stemfile_write`: ``write_stem_file``, ``check_encodable``, ``CODECS``,
  ``AAC_RATES``.
- :mod:`.mp4`: MP4 boxes: ``is_mp4_path``, ``read_moov``, ``iter_boxes``,
  ``find_box``, ``check_tree``, ``read_stem_box``, ``make_box``, ``rewrite_moov``.

``docs/stemfiles.md`` describes the stem file format as these modules write and read it.
"""
