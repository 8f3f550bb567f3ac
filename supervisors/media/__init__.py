"""Media formats as bytes: MPEG-TS packets and their index (`mpegts`), fMP4 boxes and
fragments (`fmp4`), timestamps that stay continuous across restarts (`timeline`). Pure:
no processes, no I/O, nothing else of the engine."""
