"""Reaching a camera safely: URL checks and masking (`urls`), address spellings
(`addresses`), the source policy (`sources`), the RTSP reader (`rtsp`) and the relay
that opens the camera's connection itself and hands it to FFmpeg (`relay`). Imports only
the vocabulary (`supervisors.events`)."""
