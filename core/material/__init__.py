"""Generated music with true stems: the synthesizer behind the demo track, and the
training material."""
