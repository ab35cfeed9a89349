"""The mixer: commands, the real-time engine, its block arithmetic, the fader taper.

- :mod:`.commands`: what control threads post (``StripTarget``, ``EchoTarget``,
  ``ReverbTarget``, ``Play``, ``Loop``, ``Rate``, ``Keylock``, ``Pitch``,
  ``SetTrack`` with a ``Track``, ``Quantized``...; the ``Command`` union).
- :mod:`.engine`: ``Mixer`` (prepare, process, reset, and what the layers below
  give it), ``enter_audio_thread``, ``FADING_HEADS``, ``AUDIO_BUFSIZE``.
- :mod:`.control`: ``MixerControl``, the Mixer's command side: ``post``, and what
  a drained command changes (strip targets, master, transport, loop, track, jumps,
  quantized commands waiting for their frame); ``PENDING_ACTIONS``.
- :mod:`.state`: ``MixerState``, what control threads read of the Mixer
  (read_meters, strip_state, master_state, filter_state, echo_state, echo_delay,
  reverb_state, rolling, loop, echo_running, reverb_running), and its views
  ``Meters``, ``StripState``, ``MasterState``.
- :mod:`.fx`: ``Effects`` (``Mixer.fx``), the DJ filters, the echo bus and the
  reverb bus: their ramps, states, delay lines and the FX path of a block;
  ``FILTER_TABLE``, ``FILTER_LP_HZ``, ``FILTER_HP_HZ``, ``ECHO_GLIDE_S``, the
  reverb's delays (``REVERB_COMBS_44K``...), ``reverb_lengths``, ``reverb_feedback``.
- :mod:`.keylock`: ``Shifter`` (``Mixer.shifter``), keylock and the pitch shift: one
  spectral pitch shifter of the master; ``FRAME``, ``HOP``, ``LATENCY`` (the frame and
  half a hop), ``MAX_PITCH``, ``XFADE_MS``, ``transpose``.
- :mod:`.heads`: ``Ramp`` and ``FadingHead``, the block's scalar ramps and fading play heads.
- :mod:`.kernel`: the block arithmetic's calls (the DJ filter, the echo and reverb buses
  included), ``COMPILED`` (``_kernel.c``), ``KERNEL_BUILT``, the read head's table.
- :mod:`.numpy_kernel`: ``NumpyKernel``, the compiled kernel's numpy reference and fallback.
- :mod:`.params`: the fader taper and level conversions (``fader_to_db``,
  ``db_to_gain``...), the echo's and the reverb's ranges and defaults
  (``ECHO_MAX_MS``, ``ECHO_MAX_BEATS``, ``ECHO_DIVISIONS``, ``REVERB_MAX_LOWCUT``...).
"""
