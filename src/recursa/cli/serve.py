"""The `recursa serve` and `recursa mcp` commands over `recursa.server` (registered by
`recursa.cli.main`).

Only click is imported here: FastAPI, uvicorn and the MCP SDK are imported when a command
runs, and a missing one is a one-line usage error naming the extra to install (exit 2).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

import click
from click.core import ParameterSource

from ..errors import ConfigError, RecursaError
from .options import LIMITS, option, stack


def require_extra(modules: tuple[str, ...], extra: str, command: str) -> None:
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            raise ConfigError(
                f"{command} needs the '{extra}' extra ({module} is not installed): "
                f"pip install 'recursa[{extra}]'"
            ) from None


_shared_options = stack(
    option("profile"),
    option("sub_model"),
    option("base_url", help="Base URL of the served provider's server."),
    click.option(
        "--allow-path",
        "allow_paths",
        multiple=True,
        metavar="DIR",
        help="A directory whose files and subdirectories requests may name (repeatable).",
    ),
    *(option(name) for name in LIMITS),
    option("sandbox"),
    option(
        "mode", help="actions: served runs use the action protocol; no model-written code runs."
    ),
    option("memory_limit"),
    option("dialect", help="official: served runs use the official library's REPL conventions."),
    option("price_args"),
    option("prices_file"),
    option("no_store", help="Do not keep runs in the run store."),
    option("quiet", help="No log lines on standard error."),
)
"""What `serve` and `mcp` share: the sub-model, the provider's URL, allowed paths and the
limits of `recursa run`, which here are maxima a request may lower but not raise."""


def _settings(opts: dict[str, Any], models: list[str], *, any_path: bool = False) -> Any:
    from ..core.profile import resolve
    from ..sandbox import resolve_backend
    from ..server.settings import LIMIT_TYPES, ServeSettings

    limits = {name: opts.get(name) for name in LIMIT_TYPES}
    if limits["max_iterations"] is None:  # the cap is the profile's turns unless given
        limits["max_iterations"] = resolve(opts.get("profile")).max_iterations
    settings = ServeSettings(
        models=models,
        sub_model=opts.get("sub_model") or None,
        base_url=opts.get("base_url"),
        limits=limits,
        allow_paths=list(opts.get("allow_paths") or ()),
        any_path=any_path and not opts.get("allow_paths"),
        max_output_chars=opts["max_output_chars"],
        sandbox=resolve_backend(opts["sandbox"]),
        mode=opts["mode"],
        dialect=opts["dialect"],
        memory_limit=opts.get("memory_limit"),
        prices_file=opts.get("prices_file"),
        price_args=tuple(opts.get("price_args") or ()),
        profile=opts.get("profile"),
    )
    for model in dict.fromkeys(filter(None, [*models, settings.default_model])):
        settings.make_rlm(model, settings.limits)  # a bad provider, key or price: fail now
    return settings


def _warn_sandbox(settings: Any, log: Callable[[str], None]) -> None:
    """Say at start what the chosen sandbox cannot hold back from model code."""
    if settings.sandbox == "local":
        log("WARNING: --sandbox local runs model code inside this server, keys and token in reach")
    elif settings.sandbox == "subprocess":
        log(
            "WARNING: --sandbox subprocess cannot enforce --allow-path: model code can read "
            "every file this user can (--allow-path only limits the paths requests name)"
        )


def _store(opts: dict[str, Any]) -> Any:
    if opts.get("no_store"):
        return None
    from ..trace.store import RunStore

    store = RunStore()
    store.list(1)  # an unusable store is a configuration error now, not a lost run later
    return store


def _log(quiet: bool, prefix: str) -> Callable[[str], None]:
    def log(line: str) -> None:
        if not quiet:
            click.echo(f"{prefix}: {line}", err=True)

    return log


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8000,
    show_default=True,
    help="Port to listen on.",
)
@click.option(
    "--token",
    envvar="RECURSA_SERVER_TOKEN",
    help=(
        "Clients must send Authorization: Bearer TOKEN (required off loopback). Prefer "
        "RECURSA_SERVER_TOKEN: a command line is readable by every process in /proc."
    ),
)
@click.option(
    "--max-body",
    type=click.FloatRange(min=0, min_open=True),
    default=256.0,
    show_default=True,
    metavar="MIB",
    help="Largest request body; a larger one gets 413.",
)
@click.option(
    "--max-runs",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Runs at once; one more gets 429.",
)
@click.option(
    "--model",
    "models",
    multiple=True,
    metavar="PROVIDER/MODEL",
    help="A model clients may use (repeatable; default: any, RECURSA_MODEL listed).",
)
@_shared_options
def serve(
    host: str,
    port: int,
    token: str | None,
    max_body: float,
    max_runs: int,
    models: tuple[str, ...],
    **opts: Any,
) -> int:
    """Serve an OpenAI-compatible API and a job API for long runs (extra: server).

    The limits are maxima: a request may ask for lower ones, never for higher. See
    docs/SERVING.md."""
    from ..server.settings import is_loopback

    token = (token or "").strip() or None
    if token is None and not is_loopback(host):
        raise ConfigError(
            f"refusing to listen on {host} without a token: set --token or "
            "RECURSA_SERVER_TOKEN (clients then send Authorization: Bearer TOKEN)"
        )
    require_extra(("fastapi", "uvicorn"), "server", "recursa serve")
    log = _log(opts["quiet"], "recursa serve")
    settings = _settings(opts, list(models))
    source = click.get_current_context().get_parameter_source("token")
    if token is not None and source is ParameterSource.COMMANDLINE:
        log(
            "WARNING: --token on the command line can be read in /proc/PID/cmdline by every "
            "process here, model code under --sandbox subprocess included: set "
            "RECURSA_SERVER_TOKEN instead"
        )
    _warn_sandbox(settings, log)
    store = _store(opts)
    from ..server.app import create_app

    app, manager = create_app(
        settings,
        token=token,
        max_body=int(max_body * 1024 * 1024),
        max_runs=max_runs,
        store=store,
        log=log,
    )
    where = f"runs stored in {store.path}" if store is not None else "runs not stored"
    auth = "token required" if token else "no token (loopback only)"
    _run_uvicorn(
        app,
        manager,
        host,
        port,
        lambda: log(f"sandbox {settings.sandbox}; {where}; {auth}; at most {max_runs} run(s)"),
    )
    return 0


def _run_uvicorn(
    app: Any, manager: Any, host: str, port: int, announce: Callable[[], None]
) -> None:
    import asyncio
    import socket

    import uvicorn

    name = host.strip("[]")
    try:
        infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"--host {host}: {exc.strerror or exc}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise RecursaError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    bound = sock.getsockname()[1]
    announce()
    url = f"http://[{name}]:{bound}" if ":" in name else f"http://{name}:{bound}"

    class Server(uvicorn.Server):
        loop: asyncio.AbstractEventLoop | None = None

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            self.loop = asyncio.get_running_loop()
            await super().startup(sockets=sockets)
            if self.started:
                click.echo(f"recursa serve: listening on {url}", err=True)
                sys.stderr.flush()

        def handle_exit(self, sig: int, frame: Any) -> None:
            if self.loop is not None and not self.should_exit:
                # Cancel the runs first, so streams and event followers end promptly.
                self.loop.call_soon_threadsafe(manager.cancel_all)
            super().handle_exit(sig, frame)

    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="on",
        loop="asyncio",
        timeout_graceful_shutdown=5,
    )
    server = Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    if not server.started:
        raise RecursaError("the server did not start")


@click.command("mcp")
@option("model")
@_shared_options
def mcp(model: str | None, **opts: Any) -> int:
    """Serve an MCP tool over standard input and output (extra: mcp).

    Without --allow-path the tool may read any path this user can; with it, only those."""
    if not model:
        raise ConfigError("no model: pass --model PROVIDER/MODEL or set RECURSA_MODEL")
    require_extra(("mcp",), "mcp", "recursa mcp")
    settings = _settings(opts, [model], any_path=True)
    log = _log(opts["quiet"], "recursa mcp")
    _warn_sandbox(settings, log)
    store = _store(opts)
    from ..mcp_server import run_stdio

    run_stdio(settings, store, log=log)
    return 0
