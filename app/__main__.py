"""`python -m app …`: the `rtsp-viewer` command, where its script is not on PATH (a
Windows venv, a checkout)."""

from app.cli.main import main

main()
