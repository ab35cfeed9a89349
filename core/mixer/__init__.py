"""The mixer: commands, the real-time engine, gain and pan laws."""
