"""`recursa mcp`: an MCP server over standard input and output (needs the `mcp` extra).

One tool, `ask`: answers a question with a Recursive Language Model over a file, a directory
or given text, within limits (each capped by the command's own), and returns the answer,
the run's status and its usage. Runs are kept in the run store (kind "mcp"). This module
imports the MCP SDK at import time: only `recursa mcp` imports it.
"""

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from mcp.server.fastmcp import Context, FastMCP
from mcp.server.fastmcp.exceptions import ToolError

from .errors import ConfigError
from .events import TurnEnded
from .server.runs import Busy, RunManager, RunSpec
from .server.settings import RequestError, ServeSettings, Source
from .trace.store import RunStore

MAX_RUNS = 4

INSTRUCTIONS = (
    "recursa answers questions over inputs far larger than a model's window (a big log, a "
    "whole repository, many documents): give the `ask` tool a question and a path or text; "
    "a Recursive Language Model explores it with code and sub-queries and returns the answer."
)

ASK_DESCRIPTION = (
    "Answer a question over a file, a directory or given text with a Recursive Language "
    "Model: the input is never put in a prompt whole, so it can be far larger than a model's "
    "window. Give `path` (a file, or a directory whose files are read as needed) and/or "
    "`text`. Optional limits: max_iterations, max_llm_calls, max_tokens, max_cost (USD), "
    "timeout (seconds), max_depth. Returns the answer, the status (ok, or the limit that "
    "stopped the run) and the usage (LM calls, tokens, cost)."
)


def build_server(
    settings: ServeSettings,
    store: RunStore | None,
    log: Callable[[str], None] | None = None,
) -> tuple[FastMCP, RunManager]:
    manager = RunManager(settings, max_runs=MAX_RUNS, store=store, log=log, kind="mcp")
    server = FastMCP("recursa", instructions=INSTRUCTIONS, log_level="WARNING")

    @server.tool(name="ask", description=ASK_DESCRIPTION)
    async def ask(
        ctx: Context,
        question: str,
        path: str | None = None,
        text: str | None = None,
        max_iterations: int | None = None,
        max_llm_calls: int | None = None,
        max_tokens: int | None = None,
        max_cost: float | None = None,
        timeout: float | None = None,
        max_depth: int | None = None,
    ) -> dict[str, Any]:
        requested = {
            "max_iterations": max_iterations,
            "max_llm_calls": max_llm_calls,
            "max_tokens": max_tokens,
            "max_cost": max_cost,
            "timeout": timeout,
            "max_depth": max_depth,
        }
        sources = []
        if path is not None:
            sources.append(Source("path", path, path))
        if text is not None:
            sources.append(Source("text", text, "<text>"))
        try:
            if not question.strip():
                raise RequestError("question must not be empty")
            spec = RunSpec(
                question=question,
                model=settings.model_for(None),
                sources=sources,
                limits=settings.limits_for(requested),
            )
            job = await manager.start(spec)
        except (RequestError, ConfigError, Busy) as exc:
            raise ToolError(getattr(exc, "message", None) or str(exc)) from None
        try:
            async for item in job.follow():
                event = item[1] if item else None
                if isinstance(event, TurnEnded) and event.depth == 0:
                    with contextlib.suppress(Exception):
                        await ctx.report_progress(event.iteration, spec.limits["max_iterations"])
            await job.wait()
        except BaseException:
            job.request_cancel()  # the client cancelled the call, or went away
            raise
        run = job.to_dict()
        if run["status"] in ("error", "cancelled"):
            raise ToolError(f"the run failed: {run['error']} (run {run['id']})")
        return {
            "answer": run["answer"],
            "status": run["status"],
            "iterations": run["iterations"],
            "usage": run["usage"],
            "run_id": run["id"],
        }

    return server, manager


def run_stdio(
    settings: ServeSettings,
    store: RunStore | None,
    log: Callable[[str], None] | None = None,
) -> None:
    """Serve until the client closes standard input; then cancel any run still going."""
    server, manager = build_server(settings, store, log)

    async def main() -> None:
        try:
            await server.run_stdio_async()
        finally:
            await manager.shutdown()

    asyncio.run(main())
