"""`recursa doctor`: what this machine offers recursa, checked for real, in a few lines.

Which sandbox backends work (each probed: the landlock backend starts a real worker and
reads back what it confined) and why the others do not, what `--sandbox auto` picks, the
kernel's Landlock ABI, cgroups, a Docker engine, the providers whose key variables are set
(names only: a key's value is never read into the report) and the optional extras installed.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from typing import Any

from .errors import ConfigError
from .lm.models import PROVIDERS

EXTRAS: dict[str, str] = {
    "otel": "opentelemetry",
    "eval": "matplotlib",
    "server": "fastapi",
    "mcp": "mcp",
    "llm": "llm",
    "ray": "ray",
    "bedrock": "botocore",
    "litellm": "litellm",
}
"""Each optional extra of pyproject.toml, by the module that shows it is installed."""


def _probe_landlock() -> tuple[str | None, dict[str, Any]]:
    """(why the landlock backend fails here or None, what its worker reported)."""
    from .sandbox import ContextPayload, LandlockSandbox, landlock_problem

    if problem := landlock_problem():
        return problem, {}

    async def start() -> dict[str, Any]:
        sandbox = LandlockSandbox(cell_timeout=10)
        try:
            await sandbox.start(ContextPayload())
            return sandbox.confinement
        finally:
            await sandbox.close()

    try:
        return None, asyncio.run(start())
    except Exception as exc:  # any failure to start is the answer, in one line
        return f"a confined worker did not start: {' '.join(str(exc).split())}", {}


def diagnose() -> dict[str, Any]:
    """The whole report, as JSON-ready values."""
    from .sandbox import bwrap_problem, docker_problem, resolve_backend
    from .sandbox.landlock import landlock_abi
    from .sandbox.limits import cgroup_problem

    landlock, confined = _probe_landlock()
    docker = docker_problem()
    backends = {
        "bwrap": {
            "works": bwrap_problem() is None,
            "why_not": bwrap_problem(),
            "note": "namespaces: no network, no view of your files, own pid namespace",
        },
        "landlock": {"works": landlock is None, "why_not": landlock, **confined},
        "docker": {"works": docker is None, "why_not": docker},
        "subprocess": {"works": True, "why_not": None, "note": "NOT isolated: files, network"},
        "local": {"works": True, "why_not": None, "note": "in-process, debugging only"},
    }
    try:
        auto: dict[str, Any] = {"picks": resolve_backend("auto"), "refuses": None}
    except ConfigError as exc:
        auto = {"picks": None, "refuses": str(exc)}
    cgroup = cgroup_problem()
    return {
        "backends": backends,
        "auto": auto,
        "landlock_abi": landlock_abi(),
        "cgroup": {"works": cgroup is None, "why_not": cgroup},
        "docker_engine": docker is None,
        "provider_keys": {
            name: bool(os.environ.get(info.key_env))
            for name, info in PROVIDERS.items()
            if info.key_env
        },
        "extras": {
            name: importlib.util.find_spec(module) is not None for name, module in EXTRAS.items()
        },
    }


def render(report: dict[str, Any]) -> str:
    """The report for a terminal, one fact a line."""
    lines = ["sandbox backends:"]
    for name, info in report["backends"].items():
        if info["works"]:
            extra = info.get("note") or ", ".join(info.get("protections", []))
            lines.append(f"  {name:<10} works" + (f" ({extra})" if extra else ""))
        else:
            lines.append(f"  {name:<10} unavailable: {info['why_not']}")
    auto = report["auto"]
    lines.append(
        f"--sandbox auto: {auto['picks']}"
        if auto["picks"]
        else f"--sandbox auto refuses: {auto['refuses']}"
    )
    lines.append(f"Landlock ABI: {report['landlock_abi'] or 'none'}")
    cgroup = report["cgroup"]
    lines.append(
        "cgroup: " + ("workers get one" if cgroup["works"] else f"none ({cgroup['why_not']})")
    )
    lines.append("Docker engine: " + ("answers" if report["docker_engine"] else "none"))
    keys = report["provider_keys"]
    set_keys = [name for name, present in keys.items() if present]
    lines.append("provider keys set: " + (", ".join(set_keys) or "none"))
    extras = report["extras"]
    installed = [name for name, present in extras.items() if present]
    missing = [name for name, present in extras.items() if not present]
    lines.append("extras installed: " + (", ".join(installed) or "none"))
    if missing:
        lines.append("extras not installed: " + ", ".join(missing))
    return "\n".join(lines)
