"""``stemdeck prep``: separate a whole library ahead of time, in parallel, with Dask.

The client (this process) finds the tracks, decides what is already done,
hands the rest to Dask workers as pure tasks (``core/separation/prep.py``: the
track's bytes and the parameters in, the separation out), and records every
track exactly once: outputs, the report, the progress line. ``docs/prep.md``
explains the design; in short:

- by default a ``LocalCluster`` on 127.0.0.1: N worker processes, one thread
  each, single-threaded BLAS (set before each worker starts); its workers
  decode and hash the tracks, the client only reads them; ``--scheduler``
  uses an existing cluster whose workers have stemdeck installed, and the
  client takes each key first;
- an index in the cache folder (``index.py``) gives the key of a file
  unchanged since it was prepared, so a rerun only stats the files;
- workers that see the client's cache folder write the cache entries there
  (atomic, a key already there is kept); others send the separation back and
  the client stores it; per-track files (wav, flac, stem.mp4) are written by
  the client, atomically, a track's set all or nothing, under safe names
  (``daemon/outputs.py``);
- a worker that dies mid-task: the scheduler runs the task again elsewhere, and
  the client still records the track once;
- Ctrl-C cancels the tasks and closes the cluster; nothing half-written stays
  under a final name, and a rerun resumes where it stopped.

Modules
-------
job
    :class:`PrepOptions` and :func:`run_prep`: one run, each track recorded once.
discover
    :func:`find_tracks`: the audio files under folders (``core/audiofile/files.py``
    ``AUDIO_SUFFIXES``).
cluster
    ``prep_task`` (what a worker runs), ``PrepCluster`` (the client and its
    LocalCluster, started when the first track needs one), ``SINGLE_THREAD_ENV``.
worker
    ``WorkerSetup``: the plugin every LocalCluster worker runs as it starts.
index
    ``TrackIndex``: the key each unchanged file had (``.prep-index.json``).
report
    :class:`PrepSummary`, :class:`Record`, :func:`summary_lines`,
    ``write_report`` (``--report``), ``Tally`` (the progress line's figures),
    ``NOT_UTF8`` (the note of a name that is not UTF-8).
"""

from .discover import find_tracks
from .job import PrepOptions, run_prep
from .report import PrepSummary, Record, summary_lines

__all__ = [
    "PrepOptions",
    "PrepSummary",
    "Record",
    "find_tracks",
    "run_prep",
    "summary_lines",
]
