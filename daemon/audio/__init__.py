"""Audio out: the sinks that call the mixer at the stream's pace, and the recorder.

Modules
-------
sinks
    The seam: ``Engine`` (what a sink drives), ``Sink`` (rendering, xruns, the
    slowest block), ``SoundDeviceSink`` (a PortAudio stream), ``NullSink`` (a
    real-time clock without a device), ``output_device`` (a PortAudio device by name).
jack
    stemdeck's own JACK client (``serve --audio jack``): ``JackSink`` (ports named
    after the channels, the JACK transport read each block), ``JackOutput``,
    ``open_client``, ``port_names``, ``CLIENT_NAME``.
recorder
    ``Recorder`` (the master, written from a writer thread) and its ``WavFile``.
"""
