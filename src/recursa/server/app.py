"""The HTTP API of `recursa serve` (FastAPI; needs the `server` extra).

    POST   /v1/chat/completions   OpenAI-compatible; `stream: true` streams progress + answer
    GET    /v1/models             the models served, as recursa/PROVIDER/MODEL
    POST   /v1/runs               start a run (202); GET /v1/runs lists runs
    GET    /v1/runs/{id}          status, answer, usage
    GET    /v1/runs/{id}/events   server-sent events, live until the run ends
    GET    /v1/runs/{id}/trace    every event as JSON lines
    DELETE /v1/runs/{id}          cancel a run (its workers end before the reply)

`Guard` wraps the whole app: with a token set every request needs `Authorization: Bearer
TOKEN` (401 otherwise), and a request whose Content-Length is over the limit gets 413 before
any of its body is read; a chunked body is counted as it arrives and refused the same way.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import ConfigError
from ..trace.store import RunStore
from . import openai_api
from .openai_api import error_body, sse
from .runs import Busy, Job, RunManager, RunSpec, stored_dict
from .settings import MODEL_PREFIX, RequestError, ServeSettings, request_sources

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

JOB_FIELDS = frozenset({"question", "model", "context", "contexts", "context_path", "limits"})
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
DISCONNECT_POLL_S = 1.0


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(
            f"the request body is over this server's limit of {_mib(limit)} (--max-body)"
        )


def _mib(size: int) -> str:
    return f"{size / 1048576:g} MiB"


async def _send_json(
    send: Send, status: int, body: Any, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


class Guard:
    """Authentication and the request size limit, before anything else sees a request."""

    def __init__(self, app: ASGIApp, *, token: str | None, max_body: int) -> None:
        self.app = app
        self.token = token.encode() if token else None
        self.max_body = max_body

    def _authorized(self, header: bytes | None) -> bool:
        if self.token is None:
            return True
        scheme, _, credentials = (header or b"").partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(), self.token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {name.lower(): value for name, value in scope.get("headers", [])}
        if not self._authorized(headers.get(b"authorization")):
            body = error_body(
                "missing or wrong token: send Authorization: Bearer TOKEN",
                "invalid_request_error",
                "invalid_api_key",
            )
            await _send_json(send, 401, body, [(b"www-authenticate", b"Bearer")])
            return
        length = headers.get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await _send_json(send, 400, error_body("bad Content-Length"))
                return
            if declared > self.max_body:
                message = str(BodyTooLarge(self.max_body)) + f": it declares {declared:,} bytes"
                body = error_body(message, "invalid_request_error", "request_too_large")
                await _send_json(send, 413, body, [(b"connection", b"close")])
                return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise BodyTooLarge(self.max_body)
            return message

        await self.app(scope, counted, send)


def create_app(
    settings: ServeSettings,
    *,
    token: str | None,
    max_body: int,
    max_runs: int,
    store: RunStore | None,
    log: Callable[[str], None] | None = None,
) -> tuple[ASGIApp, RunManager]:
    """The ASGI app (guarded) and the manager of its runs."""
    manager = RunManager(settings, max_runs=max_runs, store=store, log=log)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await manager.shutdown()

    app = FastAPI(
        title="recursa",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    # ---- errors, in OpenAI's shape -------------------------------------------------------------
    @app.exception_handler(RequestError)
    async def _request_error(_: Request, exc: RequestError) -> JSONResponse:
        kind = "invalid_request_error" if exc.status < 500 else "server_error"
        return JSONResponse(error_body(exc.message, kind, exc.code), status_code=exc.status)

    @app.exception_handler(ConfigError)
    async def _config_error(_: Request, exc: ConfigError) -> JSONResponse:
        return JSONResponse(error_body(str(exc), code="invalid_configuration"), status_code=400)

    @app.exception_handler(Busy)
    async def _busy(_: Request, exc: Busy) -> JSONResponse:
        return JSONResponse(
            error_body(str(exc), "rate_limit_error", "too_many_runs"),
            status_code=429,
            headers={"retry-after": str(exc.retry_after)},
        )

    @app.exception_handler(BodyTooLarge)
    async def _too_large(_: Request, exc: BodyTooLarge) -> JSONResponse:
        return JSONResponse(
            error_body(str(exc), code="request_too_large"),
            status_code=413,
            headers={"connection": "close"},
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = "no such endpoint" if exc.status_code == 404 else str(exc.detail)
        return JSONResponse(
            error_body(message, code=str(exc.status_code)),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    # ---- models ------------------------------------------------------------------------------
    def model_entry(name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": 0, "owned_by": "recursa"}

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [model_entry(m) for m in settings.listed_models()]}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str) -> dict[str, Any]:
        return model_entry(MODEL_PREFIX + settings.model_for(model_id))

    # ---- chat completions --------------------------------------------------------------------
    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        manager.check_room()  # before reading a body that could not run anyway
        body = await _read_json(request)
        spec, model = openai_api.chat_spec(body, settings)
        job = await manager.start(spec)
        headers = {"x-recursa-run-id": job.id}
        if body.get("stream") is True:
            options = body.get("stream_options")
            usage = isinstance(options, dict) and options.get("include_usage") is True
            return StreamingResponse(
                _stream_chat(job, model, usage),
                media_type="text/event-stream",
                headers={**headers, **SSE_HEADERS},
            )
        if not await _wait_or_hang_up(job, request):
            return Response(status_code=499)  # nobody is listening any more
        run = job.to_dict()
        if run["status"] in ("error", "cancelled"):
            failed = error_body(f"the run failed: {run['error']}", "server_error", "run_failed")
            failed["recursa"] = openai_api.recursa_part(run)
            return JSONResponse(failed, status_code=502, headers=headers)
        return JSONResponse(openai_api.completion(run, model), headers=headers)

    # ---- the job API -------------------------------------------------------------------------
    @app.post("/v1/runs")
    async def create_run(request: Request) -> JSONResponse:
        manager.check_room()
        spec = _job_spec(await _read_json(request), settings)
        job = await manager.start(spec)
        return JSONResponse(
            job.to_dict(), status_code=202, headers={"location": f"/v1/runs/{job.id}"}
        )

    @app.get("/v1/runs")
    async def list_runs(request: Request) -> dict[str, Any]:
        limit = _int_param(request, "limit", 20)
        return {"object": "list", "data": await manager.listing(max(1, min(limit, 200)))}

    async def find(run_id: str) -> Job | dict[str, Any]:
        job = manager.job(run_id)
        if job is not None:
            return job
        stored = await manager.stored(run_id)
        if stored is None:
            raise RequestError(f"no run {run_id!r}", 404, "run_not_found")
        return stored_dict(stored)

    @app.get("/v1/runs/{run_id}")
    async def get_run(run_id: str) -> dict[str, Any]:
        found = await find(run_id)
        return found.to_dict() if isinstance(found, Job) else found

    @app.get("/v1/runs/{run_id}/events")
    async def run_events(run_id: str, request: Request) -> StreamingResponse:
        last = request.headers.get("last-event-id")
        start = _int_param(request, "after", int(last) if last and last.isdigit() else -1) + 1
        found = await find(run_id)
        if isinstance(found, Job):
            stream = _follow_events(found, start)
        else:
            stream = _replay_events(await manager.stored_events(run_id), start)
        return StreamingResponse(stream, media_type="text/event-stream", headers=SSE_HEADERS)

    @app.get("/v1/runs/{run_id}/trace")
    async def run_trace(run_id: str) -> Response:
        found = await find(run_id)
        if isinstance(found, Job):
            events = found.event_dicts()
        else:
            events = await manager.stored_events(run_id)
        lines = "".join(json.dumps(e, ensure_ascii=False, default=str) + "\n" for e in events)
        return Response(lines, media_type="application/x-ndjson")

    @app.delete("/v1/runs/{run_id}")
    async def cancel_run(run_id: str) -> dict[str, Any]:
        found = await find(run_id)
        if not isinstance(found, Job) or found.done:
            raise RequestError(f"run {run_id} is already over", 409, "run_finished")
        await manager.cancel(found)
        return found.to_dict()

    return Guard(app, token=token, max_body=max_body), manager


# ---- helpers ---------------------------------------------------------------------------------
async def _read_json(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw)
    except ValueError:
        raise RequestError("the request body is not valid JSON") from None
    except RecursionError:
        raise RequestError("the request body is nested too deeply") from None


def _int_param(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise RequestError(f"query parameter {name} must be a whole number") from None


def _job_spec(body: Any, settings: ServeSettings) -> RunSpec:
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    unknown = sorted(set(body) - JOB_FIELDS)
    if unknown:
        raise RequestError(f"unknown field(s) {', '.join(unknown)}: expected {sorted(JOB_FIELDS)}")
    question = body.get("question")
    if not isinstance(question, str) or not question.strip():
        raise RequestError("question must be a non-empty string")
    model = body.get("model")
    prefixed = not isinstance(model, str) or model.startswith(MODEL_PREFIX)
    return RunSpec(
        question=question,
        model=settings.model_for(model, prefixed=prefixed),
        sources=request_sources(body),
        limits=settings.limits_for(body.get("limits")),
    )


async def _wait_or_hang_up(job: Job, request: Request) -> bool:
    """Wait for the run; cancel it (and say False) if the client hangs up first."""
    waiter = asyncio.ensure_future(job.wait())
    try:
        while True:
            done, _ = await asyncio.wait({waiter}, timeout=DISCONNECT_POLL_S)
            if done:
                return True
            if await request.is_disconnected():
                job.request_cancel()
                return False
    finally:
        waiter.cancel()


async def _stream_chat(job: Job, model: str, include_usage: bool) -> AsyncIterator[str]:
    writer = openai_api.ChunkWriter(job.id, model, job.created)
    try:
        yield writer.start()
        async for item in job.follow():
            if item is None:
                yield ": keep-alive\n\n"
                continue
            line = openai_api.progress_line(item[1])
            if line:
                yield writer.progress(line, item[1].type)
        run = job.to_dict()
        if run["status"] in ("error", "cancelled"):
            failed = error_body(f"the run failed: {run['error']}", "server_error", "run_failed")
            yield sse(failed)
        else:
            for part in writer.answer(run, include_usage):
                yield part
        yield "data: [DONE]\n\n"
    finally:
        job.request_cancel()  # a no-op once the run is over; a client that hung up ends it


def _event_sse(seq: int, event: dict[str, Any]) -> str:
    data = json.dumps(event, ensure_ascii=False, default=str)
    return f"id: {seq}\nevent: {event.get('type', 'event')}\ndata: {data}\n\n"


async def _follow_events(job: Job, start: int) -> AsyncIterator[str]:
    async for item in job.follow(start):
        if item is None:
            yield ": keep-alive\n\n"
        else:
            yield _event_sse(item[0], item[1].to_dict())


async def _replay_events(events: list[dict[str, Any]], start: int) -> AsyncIterator[str]:
    for seq in range(max(0, start), len(events)):
        yield _event_sse(seq, events[seq])
