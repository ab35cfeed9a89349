"""stemdeck core: separation, the mixer, control, generated material. No sockets, no devices."""

from .errors import AudioFileError, CacheError, ParameterError, PresetError, StemdeckError

__version__ = "0.1.0"

__all__ = [
    "AudioFileError",
    "CacheError",
    "ParameterError",
    "PresetError",
    "StemdeckError",
    "__version__",
]
