"""The Dockerfile, deploy/compose.yaml and deploy/rtsp-viewer.service.

Where a Docker engine runs, the image is built and run: it serves, is healthy, and exits
within 5 s of SIGTERM. Where none does (as on this project's CI machine), that test says
so and skips; the static checks below run everywhere. The systemd unit is checked with
`systemd-analyze verify` where systemd is installed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.helpers import BIN, ROOT
from tests.nginx import free_port

DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def test_the_dockerfile_builds_a_venv_and_runs_the_console_script_as_a_user() -> None:
    steps = instructions()
    bases = [args.split()[0] for word, args in steps if word == "FROM"]
    assert len(bases) == 2, "a build stage and a runtime stage"
    for base in bases:  # a slim Python base pinned to a patch version (or a digest)
        assert re.fullmatch(r"python:3\.1[1-9]\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?", base), base
    runtime = steps[[i for i, (word, _) in enumerate(steps) if word == "FROM"][1]:]
    args = {word: rest for word, rest in runtime}
    for word, rest in steps:
        if word == "COPY" and not rest.startswith("--from"):
            for source in rest.split()[:-1]:
                assert (ROOT / source).exists(), f"COPY {source}: no such file"
    assert "pip install" in " ".join(rest for word, rest in steps if word == "RUN") and "/venv" in args["COPY"]
    user = args["USER"]
    assert user not in ("root", "0") and re.search(rf"useradd .*\b{user}\b", args["RUN"])
    assert json.loads(args["VOLUME"]) == ["/data"] and args["EXPOSE"] == "8000"
    env = args["ENV"]
    assert "HOST=0.0.0.0" in env and "DATABASE_URL=sqlite:////data/streams.db" in env
    assert "/api/health/" in args["HEALTHCHECK"] and args["STOPSIGNAL"] == "SIGTERM"
    entrypoint = json.loads(args["ENTRYPOINT"])  # exec form: SIGTERM reaches the server itself
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert entrypoint == ["rtsp-viewer", "serve"] and "rtsp-viewer" in scripts
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


def test_compose_runs_the_image_with_the_deploy_nginx_conf_in_front() -> None:
    compose = yaml.safe_load((ROOT / "deploy/compose.yaml").read_text())
    server, nginx = compose["services"]["server"], compose["services"]["nginx"]
    assert server["build"] == ".." and (ROOT / "deploy" / server["build"] / "Dockerfile").exists()
    assert server["environment"]["TRUSTED_PROXIES"] == "127.0.0.1/32"  # nginx, in its network namespace
    assert nginx["network_mode"] == "service:server" and {"80:80", "443:443"} == set(server["ports"])
    mounts = {volume.split(":")[0]: volume.split(":")[1] for volume in nginx["volumes"]}
    assert mounts["./nginx.conf"] == "/etc/nginx/conf.d/default.conf" and (ROOT / "deploy/nginx.conf").exists()
    site = (ROOT / "deploy/nginx.conf").read_text()
    assert mounts["./certs"] + "/fullchain.pem" in site and mounts["./certs"] + "/privkey.pem" in site
    assert "/data" in " ".join(server["volumes"])


def test_the_systemd_unit_is_hardened_and_verifies(tmp_path: Path) -> None:
    text = (ROOT / "deploy/rtsp-viewer.service").read_text()
    settings = dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes",
                       "Restart": "on-failure", "DynamicUser": "yes", "StateDirectory": "rtsp-viewer",
                       "KillSignal": "SIGTERM"}.items():
        assert settings[key] == value, key
    assert 5 < int(settings["TimeoutStopSec"].removesuffix("s")) <= 30  # the server exits within 5 s
    assert settings["ExecStart"].endswith("/rtsp-viewer serve")
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("no systemd-analyze here: the unit was checked statically only")
    unit = tmp_path / "rtsp-viewer.service"  # the ExecStart this machine has
    unit.write_text(text.replace("/opt/rtsp-viewer/bin/rtsp-viewer", str(BIN / "rtsp-viewer")))
    done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0 and done.stdout + done.stderr == "", done.stdout + done.stderr


def docker_engine() -> str | None:
    docker = shutil.which("docker")
    if docker is None:
        return None
    done = subprocess.run([docker, "info"], capture_output=True, check=False, timeout=30)
    return docker if done.returncode == 0 else None


@pytest.mark.slow
def test_the_image_builds_serves_and_stops_within_5_s() -> None:
    docker = docker_engine()
    if docker is None:
        pytest.skip("no Docker engine here (docker info fails): the image is not built; "
                    "the static checks above cover the Dockerfile")
    tag = "rtsp-backend:test"
    subprocess.run([docker, "build", "-t", tag, str(ROOT)], check=True, timeout=900)
    port = free_port()
    container = subprocess.run([docker, "run", "-d", "-p", f"127.0.0.1:{port}:8000", tag], capture_output=True,
                               text=True, check=True).stdout.strip()
    try:
        assert subprocess.run([docker, "exec", container, "id", "-u"], capture_output=True, text=True,
                              check=True).stdout.strip() != "0"
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health/", timeout=2) as response:
                    assert response.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "the container did not serve within 30 s"
                time.sleep(0.5)
        started = time.monotonic()
        subprocess.run([docker, "stop", "-t", "10", container], check=True)
        assert time.monotonic() - started <= 5.5
        state = json.loads(subprocess.run([docker, "inspect", container], capture_output=True, text=True,
                                          check=True).stdout)[0]["State"]
        assert state["ExitCode"] == 0
    finally:
        subprocess.run([docker, "rm", "-f", container], capture_output=True, check=False)
