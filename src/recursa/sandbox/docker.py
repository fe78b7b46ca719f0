"""The docker backend (optional): the same worker in a container of its own.

`docker run -i --rm` with no network (`--network none`), a read-only root filesystem, all
capabilities dropped, no-new-privileges, a memory limit (also on swap), one CPU, a pids
limit, a size-capped tmpfs as /tmp and HOME, and only the worker's folder and any directory
contexts mounted, read-only. The container's environment is the worker's, built from nothing;
the docker client itself gets the host's DOCKER_* settings and nothing else.

The image needs a Python 3.10 or later at `python` (the worker uses only the standard
library): `python:X.Y-slim` for this host's version unless `image=` says otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import subprocess
import sys
import uuid
from typing import Any

from .base import ContextPayload
from .limits import MIB, WorkerLimits, die_with_parent
from .process import WORKER_PATH, SubprocessSandbox, clean_env

CONTAINER_DIR = "/opt/recursa"
CLIENT_VARS = (
    "DOCKER_HOST",
    "DOCKER_CONTEXT",
    "DOCKER_CONFIG",
    "DOCKER_CERT_PATH",
    "DOCKER_TLS_VERIFY",
    "DOCKER_API_VERSION",
    "XDG_RUNTIME_DIR",
)


def default_image() -> str:
    return f"python:{sys.version_info.major}.{sys.version_info.minor}-slim"


@functools.cache
def docker_problem() -> str | None:
    """Why no Docker engine can run workers here, or None when one answers (checked once)."""
    docker = shutil.which("docker")
    if docker is None:
        return "the docker command is not installed"
    try:
        done = subprocess.run(
            [docker, "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            timeout=5,
            env=client_env(),
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"docker info failed: {exc}"
    if done.returncode != 0 or not done.stdout.strip():
        last = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        return f"no Docker engine answers (docker info: {last[0][:200]})"
    return None


def client_env() -> dict[str, str]:
    """The docker client's environment: how to reach the engine, nothing else of the host's."""
    env = {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")}
    home = os.environ.get("HOME")
    if home:
        env["HOME"] = home  # where the client keeps its config (~/.docker)
    env.update({k: os.environ[k] for k in CLIENT_VARS if k in os.environ})
    return env


def docker_argv(
    name: str,
    image: str,
    limits: WorkerLimits,
    dirs: list[str],
    docker: str = "docker",
) -> list[str]:
    memory = f"{limits.memory_mib}m"
    env = clean_env("/tmp")
    argv = [
        docker, "run", "-i", "--rm", "--name", name,
        "--network", "none",
        "--read-only",
        "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges",
        "--memory", memory, "--memory-swap", memory,
        "--cpus", "1",
        "--pids-limit", str(limits.max_procs),
        "--ulimit", f"fsize={limits.file_mib * MIB}",
        "--ulimit", f"cpu={limits.cpu_seconds}",
        "--ulimit", "core=0",
        "--tmpfs", f"/tmp:rw,nosuid,nodev,size={memory}",
        "--workdir", "/tmp",
        "--log-driver", "none",
        "-v", f"{WORKER_PATH.parent}:{CONTAINER_DIR}:ro",
    ]  # fmt: skip
    for key, value in env.items():
        argv += ["-e", f"{key}={value}"]
    for path in dirs:
        argv += ["-v", f"{path}:{path}:ro"]
    return [*argv, image, "python", "-I", "-S", "-X", "utf8", f"{CONTAINER_DIR}/worker.py"]


class DockerSandbox(SubprocessSandbox):
    name = "docker"
    drop_caps = False  # the limits are the container's; the client needs none of ours
    use_cgroup = False
    limit_tree = False  # rlimits on the Go client would break it
    binds_paths = True

    def __init__(self, *, image: str | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.image = image or default_image()
        self.container: str | None = None

    def command(self, payload: ContextPayload) -> list[str]:
        assert self.limits is not None
        self.container = f"recursa-{uuid.uuid4().hex[:16]}"
        dirs = payload.host_paths()  # directory roots and mapped files, bound read-only
        docker = shutil.which("docker") or "docker"
        return docker_argv(self.container, self.image, self.limits, dirs, docker)

    def environment(self) -> dict[str, str]:
        return client_env()

    def preexec(self) -> Any:
        # Only die with the host: rlimits on the Go client would break it, and the
        # container carries the real limits.
        return die_with_parent()

    def init_options(self) -> dict[str, Any]:
        # Docker has no address-space ulimit: the worker sets it on itself, so that a memory
        # bomb meets a MemoryError before the container's OOM killer.
        assert self.limits is not None
        return {"rlimits": {"as": self.limits.memory_mib * MIB}}

    def describe_limits(self) -> dict[str, Any]:
        assert self.limits is not None
        return {
            "memory_mib": self.limits.memory_mib,
            "processes": "docker",
            "max_procs": self.limits.max_procs,
            "memory_tree": True,
        }

    def _remove_container(self) -> None:
        name, self.container = self.container, None
        if name is None:
            return
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            subprocess.run(
                [shutil.which("docker") or "docker", "rm", "-f", name],
                capture_output=True,
                timeout=10,
                env=client_env(),
            )

    async def close(self) -> None:
        await super().close()
        await asyncio.to_thread(self._remove_container)

    async def _restart(self) -> None:
        await asyncio.to_thread(self._remove_container)
        await super()._restart()

    def kill_now(self) -> None:
        super().kill_now()
        self._remove_container()
