"""`rtsp-viewer`: serve (`main`) and the operator's commands (`operator`)."""
