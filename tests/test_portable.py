"""Windows and macOS: `scripts/serve.ps1` and `scripts/serve.bat` do what `scripts/serve`
does, `python -m app` is a way in everywhere, and no POSIX-only call sits outside a
guarded path. There is no Windows machine here: the modules are imported (and the app
built) in a process where the POSIX-only modules and calls are taken away, after the
third-party libraries have loaded (they choose their own platform paths by
`sys.platform`, which this cannot fake)."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import ROOT

POSIX_ONLY_MODULES = ("resource", "fcntl", "termios", "pty", "pwd", "grp")
POSIX_ONLY_CALLS = {"os": ("killpg", "setsid", "getpgid", "getsid", "sysconf", "fork", "writev", "getuid", "geteuid",
                           "pipe2", "sched_getaffinity"),
                    "socket": ("TCP_USER_TIMEOUT", "SO_REUSEPORT", "AF_UNIX"),
                    "signal": ("SIGKILL", "SIGSTOP", "SIGCONT", "SIGHUP", "SIGUSR1", "SIGPIPE", "setitimer")}
SCRIPT = f"""
import importlib, importlib.abc, os, pathlib, signal, socket, sys
import trio, hypercorn.trio, quart_trio, trio_websocket, httpx, argon2, defusedxml.ElementTree, attrs, cattrs  # noqa
import psycopg, psycopg_pool, imageio_ffmpeg, prometheus_client, wsproto, quart  # noqa
for name in {POSIX_ONLY_MODULES!r}:
    sys.modules.pop(name, None)
class Windows(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name in {POSIX_ONLY_MODULES!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (as on Windows)", name=name)
        return None
sys.meta_path.insert(0, Windows())
for module, names in {POSIX_ONLY_CALLS!r}.items():
    for name in names:
        if hasattr(sys.modules[module], name):
            delattr(sys.modules[module], name)
root = pathlib.Path({str(ROOT)!r})
names = sorted(".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
               for folder in ("app", "supervisors") for p in (root / folder).rglob("*.py") if p.name != "__main__.py")
for name in names:
    importlib.import_module(name)
from app.factory import create_app
from app.settings import Settings
from app.sockets.wire import tune_socket
create_app(Settings(database_url="sqlite:///:memory:"), own_process=True)
assert tune_socket(object()) is False
print(len(names), "modules")
"""


def test_every_module_imports_and_the_app_builds_without_posix_only_calls() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert int(done.stdout.split()[0]) > 80, done.stdout


def test_python_dash_m_app_is_the_command() -> None:
    done = subprocess.run([sys.executable, "-m", "app", "serve", "--help"], capture_output=True, text=True, cwd=ROOT,
                          timeout=60, check=False)
    assert done.returncode == 0 and "--workers" in done.stdout, done.stderr


def test_the_windows_scripts_do_what_scripts_serve_does() -> None:
    """Checked by reading them (no PowerShell or cmd.exe here): a venv, the install with
    the constraints, then `serve` with the arguments given."""
    shell = (ROOT / "scripts/serve").read_text()
    assert "-m venv .venv" in shell and "-c constraints.txt -e ." in shell and "serve" in shell
    for script, arguments in (("serve.ps1", "@args"), ("serve.bat", "%*")):
        text = (ROOT / "scripts" / script).read_text()
        assert "-m venv .venv" in text and "-c constraints.txt -e ." in text, script
        assert f"-m app serve {arguments}" in text, script
        assert r".venv\Scripts\python.exe" in text, script
    assert b"\r\n" in (ROOT / "scripts/serve.bat").read_bytes()  # cmd.exe reads CRLF lines


def test_workers_on_windows_say_what_to_do_instead(monkeypatch: object) -> None:
    import os

    from app.cli import workers

    monkeypatch.setattr(os, "name", "nt")  # type: ignore[attr-defined]
    try:
        workers.worker_count("2")
    except ValueError as refused:
        assert "POSIX" in str(refused)
    else:
        raise AssertionError("--workers 2 was accepted on Windows")
    assert workers.worker_count("1") == 1


def test_readme_says_what_is_lost_on_windows() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Windows and macOS")[1].split("\n## ")[0]
    for lost in ("TCP_USER_TIMEOUT", "--workers", "lean send path", "open-file limit", "not run on Windows"):
        assert lost in section, lost

