"""Control: the parameter registry (OSC, MIDI, scenes) and MIDI maps."""
