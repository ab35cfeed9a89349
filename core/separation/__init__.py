"""Separation: loading, STFT, NMF, the stems model, masks, the cache, stem files."""
