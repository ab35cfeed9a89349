"""Control: the parameter registry (OSC, MIDI, scenes) and MIDI maps.

- :mod:`.registry`: ``Registry`` (the address space: ``match``, ``resolve``, ``get``,
  ``get_norm``, ``snapshot``, ``written_since``) and ``Transaction``, the one write
  path (stage with ``set``, ``set_norm``, ``restore``, ``set_names``, ``set_grid``;
  ``commit``), the tempo the echo's delay in beats follows (``grid_bpm``, ``rate``);
  ``CHANNEL_PARAMS``, ``MASTER_PARAMS``, ``ECHO_PARAMS``, ``REVERB_PARAMS``,
  ``PARAM_ALIASES``.
- :mod:`.values`: the states the registry holds (``StripState``, ``EchoState``,
  ``ReverbState``), a scene's tables (``SceneState``, ``ChannelState``,
  ``MasterState``, ``EchoSceneState``, ``ReverbSceneState``), and the pure
  functions between them, a message's arguments and the engine's commands
  (``strip_updated``, ``strip_value``, ``scene_of``, ``strip_command``,
  ``echo_followed``...).
- :mod:`.pattern`: OSC 1.0 address patterns, matched in linear time
  (``compile_pattern``, ``is_pattern``, ``MAX_PATTERN``).
- :mod:`.midimap`: MIDI maps and the state machine that turns MIDI into control
  changes (``load_midi_map``, ``MidiMap``, ``Binding``, ``MidiMapper``; the transport
  values a control drives, ``TRANSPORT_VALUES``).
"""
