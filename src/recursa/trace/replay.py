"""Replay: re-run a recorded trace with no model, and report where it first differs.

Recorded replies are served by a transport (`ReplayClient`) that knows, through the
gateway's CURRENT_CALL, which RLM of the tree is asking and why: root turns are served in
the order that RLM made them, sub-queries by their prompt. The sandbox re-executes every
block for real, and the replay compares what it sees with the recording: the context's
hash, each root prompt (by hash), each block's output, the answer.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ..context import Context, from_directory, from_file, from_path, from_text, from_value
from ..context_files import mmap_threshold
from ..core.gateway import CURRENT_CALL, messages_sha256
from ..core.profile import Profile
from ..core.programs import RLM, RunResult
from ..errors import ConfigError, LMConnectionError, LMError, LMStatusError
from ..events import BlockExecuted, Event, LMCallEnded, LMCallStarted, RunStarted
from ..lm.base import Completion, LMClient, Message, text_of
from ..lm.models import parse_model
from ..lm.pricing import PriceTable
from ..lm.retry import RetryPolicy
from ..sandbox import resolve_backend
from .reader import TraceFormatError, read_trace
from .source import TraceSource

ROOT_PURPOSES = frozenset({"root", "extract", "compact"})
LOCAL_KINDS = frozenset({"run", "demo", "pipeline"})
"""Stored runs started from this user's command line, whose context paths this user named."""
"""Backends whose code can read this machine's files and reach its network."""
EXCERPT = 300
_INDEXED = frozenset({LMCallStarted.type, LMCallEnded.type, BlockExecuted.type})
"""The events a replay serves from, read as typed events (`Event.from_dict`)."""


class ReplayDiverged(LMError):
    """The replay asked for a reply the recording does not hold."""


@dataclass(slots=True)
class _Outcome:
    text: str | None
    input_tokens: int
    output_tokens: int
    cost_usd: float
    error: str | None
    status: int | None
    prompt_sha256: str | None
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0


@dataclass(slots=True)
class Recording:
    """A trace, read and indexed for replay."""

    events: list[dict[str, Any]]
    run_start: dict[str, Any]
    run_end: dict[str, Any] | None
    context_data: dict[int, dict[str, Any]] = field(default_factory=dict)
    root_calls: dict[str, deque[_Outcome]] = field(default_factory=dict)
    sub_calls: dict[tuple[str, str], deque[_Outcome]] = field(default_factory=dict)
    blocks: dict[tuple[str, int, int], str] = field(default_factory=dict)
    scratch: list[Path] = field(default_factory=list)
    """Temporary folders holding stored contexts laid out again (see `drop_scratch`)."""
    paths_from: Path | None = None
    """Where the recorded context paths may be read again, relative to this folder: set only
    for a run from this user's own run store. A trace file may come from anyone, so the
    paths it names are never read unless given again (--context)."""

    @classmethod
    def load(cls, path: str | Path) -> Recording:
        """A trace file, read as untrusted input."""
        return cls.from_events(read_trace(path), str(path))

    @classmethod
    def from_source(cls, source: TraceSource) -> Recording:
        """A trace file, or a stored run: one this user started here may read its recorded
        paths again (relative to its folder; the current one for runs stored before it was
        kept), but not a run a client of `serve` or `mcp` started, whose names it chose."""
        rec = cls.from_events(source.events(), source.name)
        if source.run is not None and source.run.kind in LOCAL_KINDS:
            rec.paths_from = Path(source.run.cwd or ".")
        return rec

    @classmethod
    def from_events(cls, events: list[dict[str, Any]], name: str = "<trace>") -> Recording:
        try:
            return cls._index(events, name)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise TraceFormatError(
                f"{name}: not a replayable recursa trace (malformed event: {type(exc).__name__}"
                f" {exc})"
            ) from None

    @classmethod
    def _index(cls, events: list[dict[str, Any]], name: str) -> Recording:
        starts = [e for e in events if e.get("type") == RunStarted.type]
        if not starts:
            raise ConfigError(f"{name} holds no run_start event: it is not a recursa trace")
        _check_refs(starts[0].get("contexts") or [])
        ends = [e for e in events if e.get("type") == "run_end"]
        rec = cls(events=events, run_start=starts[0], run_end=ends[-1] if ends else None)
        started: dict[int, LMCallStarted] = {}
        root: dict[str, list[_Outcome]] = defaultdict(list)
        sub: dict[tuple[str, str], list[_Outcome]] = defaultdict(list)
        for event in events:
            kind = event.get("type")
            if kind == "context_data":
                rec.context_data[int(event["index"])] = event
            elif kind in _INDEXED:
                typed = Event.from_dict(event)
                if isinstance(typed, LMCallStarted):
                    started[typed.call_id] = typed
                elif isinstance(typed, LMCallEnded):
                    begin = started.get(typed.call_id)
                    sha = begin.prompt_sha256 if begin is not None else None
                    outcome = _Outcome(
                        text=typed.text,
                        input_tokens=typed.input_tokens,
                        output_tokens=typed.output_tokens,
                        cost_usd=typed.cost_usd,
                        error=typed.error,
                        status=typed.status,
                        prompt_sha256=sha,
                        cache_read_tokens=typed.cache_read_tokens,
                        cache_write_tokens=typed.cache_write_tokens,
                        reasoning_tokens=typed.reasoning_tokens,
                    )
                    if typed.purpose in ROOT_PURPOSES:
                        root[typed.rlm].append(outcome)
                    else:
                        sub[(typed.rlm, sha or "")].append(outcome)
                elif isinstance(typed, BlockExecuted):
                    rec.blocks[(typed.rlm, typed.iteration, typed.index)] = typed.output
        rec.root_calls = {k: deque(v) for k, v in root.items()}
        rec.sub_calls = {k: deque(v) for k, v in sub.items()}
        return rec

    def drop_scratch(self) -> None:
        """Remove the folders `contexts` laid stored contexts out in."""
        while self.scratch:
            shutil.rmtree(self.scratch.pop(), ignore_errors=True)

    def contexts(self, overrides: list[str] | None = None) -> list[Context]:
        """The run's contexts: given again, stored in the trace, or re-read from their paths,
        each loaded as the recorded run loaded it (see `_reload`)."""
        refs = self.run_start.get("contexts") or []
        if overrides:
            if len(overrides) != len(refs):
                raise ConfigError(
                    f"the recorded run had {len(refs)} context(s); {len(overrides)} given"
                )
            return [_reload(p, ref) for p, ref in zip(overrides, refs, strict=True)]
        loaded = []
        for i, ref in enumerate(refs):
            data = self.context_data.get(i)
            recorded = None
            if self.paths_from is not None and ref.get("name"):
                recorded = self.paths_from / ref["name"]
            if data is not None:
                loaded.append(_stored_context(data, ref, self.scratch))
            elif recorded is not None and recorded.exists():
                loaded.append(_reload(str(recorded), ref))
            elif self.paths_from is None:
                raise ConfigError(
                    f"the trace does not hold context {i} ({ref.get('name')}): pass it again "
                    "with --context PATH (a trace's own paths are never read), or record with "
                    "--trace-context"
                )
            else:
                raise ConfigError(
                    f"the stored run's context {i} ({recorded or ref.get('name')}) cannot be "
                    "read again: pass --context PATH"
                )
        return loaded


_REF_TYPES: dict[str, type] = {
    "name": str,
    "kind": str,
    "sha256": str,
    "size": int,
    "mmap_threshold": int,
}


def _check_refs(refs: Any) -> None:
    """The recorded context references, of the types replay loads them by."""
    if not isinstance(refs, list) or not all(isinstance(r, dict) for r in refs):
        raise TypeError("run_start contexts is not a list of references")
    for ref in refs:
        for key, kind in _REF_TYPES.items():
            value = ref.get(key)
            if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
                raise TypeError(f"a context reference's {key} is {type(value).__name__}")
            if isinstance(value, int) and value < 0:
                raise ValueError(f"a context reference's {key} is negative")


def _check_start(start: dict[str, Any]) -> None:
    """The fields of run_start that a replay runs with, of the types it relies on."""
    if not isinstance(start.get("question"), str) or not isinstance(start.get("model"), str):
        raise TraceFormatError("the trace's run_start needs a question and a model, both text")
    if not isinstance(start.get("settings") or {}, dict):
        raise TraceFormatError("the trace's run_start settings is not an object")
    if not isinstance(start.get("sub_model") or "", str):
        raise TraceFormatError("the trace's run_start sub_model is not text")


def _reload(path: str, ref: dict[str, Any]) -> Context:
    """A context read again from its path as the recorded run loaded it, whatever the mmap
    threshold in force now, and named as recorded (a mapped file's description names it):
    a mapped file is mapped again (its hash is then the sampled fingerprint, as recorded),
    a directory maps the files it mapped, and a text is read whole, unless the file grew
    past any text of the recorded length (4 bytes a character): that one is mapped rather
    than read whole, and differs by its hash."""
    kind = ref.get("kind")
    if kind == "file" and Path(path).is_file():
        ctx = from_file(path)
    elif kind == "dir":
        ctx = from_path(path, mmap_threshold=ref.get("mmap_threshold"))
    elif kind == "text":
        most = 4 * int(ref.get("size") or 0) + 1
        ctx = from_path(path, mmap_threshold=max(mmap_threshold(), most))
    else:
        ctx = from_path(path)
    ctx.name = ref.get("name") or ctx.name
    return ctx


def _stored_context(data: dict[str, Any], ref: dict[str, Any], scratch: list[Path]) -> Context:
    """A context the trace holds in full (--trace-context). A directory, or a file the run
    mapped, is laid out again in a fresh temporary folder (added to `scratch`, for the caller
    to remove) and loaded as it was; nothing is written outside that folder."""
    name = str(ref["name"])
    if "files" in data:
        files = _checked_files(data["files"])
        root = Path(tempfile.mkdtemp(prefix="recursa-replay-"))
        scratch.append(root)
        inside = root.resolve()
        try:
            for rel, text in files.items():
                target = root / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                if not target.parent.resolve().is_relative_to(inside):
                    raise ConfigError(f"stored file name {rel!r} leads out of the folder")
                target.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot lay out the stored directory context: {exc}") from None
        return from_directory(root, mmap_threshold=ref.get("mmap_threshold"))
    if "text" in data and not isinstance(data["text"], str):
        raise ConfigError("the trace's stored context holds no text")
    if "text" in data and ref.get("kind") == "file":
        scratch.append(Path(tempfile.mkdtemp(prefix="recursa-replay-")))
        base = Path(name).name
        target = scratch[-1] / (base if base not in ("", ".", "..") else "context")
        target.write_text(data["text"], encoding="utf-8")
        ctx = from_file(target)
        ctx.name = name  # as recorded: the first turn's description names it
        return ctx
    if "text" in data:
        return from_text(data["text"], name)
    return from_value(data["value"], name)


def _checked_files(files: Any) -> dict[str, str]:
    """A stored directory's files, refused whole (one line, before anything is written) when
    a name is not a plain relative path: absolute, or with a `..` part, would write outside
    the replay's own folder."""
    if not isinstance(files, dict):
        raise ConfigError("the trace's stored directory context is not a mapping of files")
    for rel, text in files.items():
        parts = PurePosixPath(rel).parts if isinstance(rel, str) else ()
        if not parts or "\0" in rel or PurePosixPath(rel).is_absolute() or ".." in parts:
            raise ConfigError(
                f"the trace's stored directory context names the file {rel!r}, which is not a "
                "plain relative path: refused (it would be written outside the replay's folder)"
            )
        if not isinstance(text, str):
            raise ConfigError(f"the trace's stored file {rel!r} holds no text")
    return files


@dataclass(slots=True)
class Divergence:
    """Where a replay first differed from its recording."""

    what: str
    rlm: str
    turn: int | None
    expected: Any = None
    got: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "what": self.what,
            "rlm": self.rlm,
            "turn": self.turn,
            "expected": _excerpt(self.expected),
            "got": _excerpt(self.got),
        }


class ReplayClient:
    """An LMClient that answers from a recording, and after a fork point from a live one."""

    def __init__(
        self,
        recording: Recording,
        *,
        live: LMClient | None = None,
        live_model: str | None = None,
        from_turn: int | None = None,
    ) -> None:
        self.rec = recording
        self.live = live
        self.live_model = live_model
        self.from_turn = from_turn
        self.forked = False
        self.root_turns: dict[str, int] = defaultdict(int)
        self.divergences: list[Divergence] = []

    @property
    def takes_images(self) -> bool:
        """A recording answers sub-queries with images (matched by their hashes); after a
        fork, the live client decides."""
        return self.live is None or bool(getattr(self.live, "takes_images", False))

    async def complete(
        self,
        messages: list[Message],
        *,
        model: str,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> Completion:
        info = CURRENT_CALL.get()
        rlm = info.rlm if info else "0"
        is_root = info is not None and info.purpose in ROOT_PURPOSES
        if is_root and rlm == "0" and self.from_turn is not None:
            self.forked = self.forked or self.root_turns[rlm] + 1 >= self.from_turn
        if self.forked and self.live is not None:
            return await self.live.complete(
                messages,
                model=self.live_model or model,
                max_tokens=max_tokens,
                temperature=temperature,
            )
        if is_root:
            queue = self.rec.root_calls.get(rlm)
            turn = self.root_turns[rlm] + 1
            prompt_what, expected_prompt = "root prompt", None
        else:
            prompt = text_of(messages[-1].get("content"))
            queue = self.rec.sub_calls.get((rlm, messages_sha256(messages)))
            turn, prompt_what, expected_prompt = None, "sub-query prompt", prompt
        if not queue:
            self._diverged(
                Divergence("missing reply", rlm, turn, "a recorded reply", expected_prompt)
            )
            raise ReplayDiverged(
                f"the recording holds no reply for this {prompt_what} of RLM {rlm}"
            )
        outcome = queue.popleft()
        if is_root:
            digest = messages_sha256(messages)
            if outcome.prompt_sha256 and digest != outcome.prompt_sha256:
                self._diverged(Divergence(prompt_what, rlm, turn, outcome.prompt_sha256, digest))
        if outcome.error is not None:
            if outcome.status is not None:
                raise LMStatusError(outcome.status, outcome.error)
            raise LMConnectionError(outcome.error)
        if is_root:
            self.root_turns[rlm] += 1
        return Completion(
            text=outcome.text or "",
            input_tokens=outcome.input_tokens,
            output_tokens=outcome.output_tokens,
            cost_usd=outcome.cost_usd,
            model=model,
            cache_read_tokens=outcome.cache_read_tokens,
            cache_write_tokens=outcome.cache_write_tokens,
            reasoning_tokens=outcome.reasoning_tokens,
        )

    async def aclose(self) -> None:
        if self.live is not None:
            await self.live.aclose()

    def _diverged(self, divergence: Divergence) -> None:
        self.divergences.append(divergence)


@dataclass(slots=True)
class ReplayResult:
    result: RunResult
    divergences: list[Divergence]

    @property
    def diverged(self) -> bool:
        return bool(self.divergences)

    def to_dict(self) -> dict[str, Any]:
        data = self.result.to_dict()
        data["diverged"] = self.diverged
        data["first_divergence"] = self.divergences[0].to_dict() if self.divergences else None
        return data


def replay(
    recording: Recording,
    *,
    contexts: list[str] | None = None,
    live: LMClient | None = None,
    live_model: str | None = None,
    from_turn: int | None = None,
    on_event: Any = None,
    sandbox: str | None = None,
) -> ReplayResult:
    """Re-run `recording` offline (or fork it at `from_turn` onto `live`) and compare.
    The recorded code runs in `sandbox` (`auto` when None: never an unisolated backend
    unless the caller names it)."""
    start = recording.run_start
    _check_start(start)
    if start["model"].startswith("pipeline:"):
        raise ConfigError(
            "this trace is of a distilled pipeline, which has no root model to replay: "
            "run the pipeline again with `recursa pipeline`"
        )
    turns = len(recording.root_calls.get("0") or ())
    if from_turn is not None and from_turn > turns:
        raise ConfigError(f"--from-turn {from_turn}: the recorded run has {turns} root turn(s)")
    # A trace may come from anyone: `auto` runs its code only where it is isolated, and a
    # backend that does not isolate runs it only when the user names it.
    backend = resolve_backend(sandbox or "auto")
    wire_model = parse_model(live_model).name if live_model else None
    client = ReplayClient(recording, live=live, live_model=wire_model, from_turn=from_turn)
    divergences = client.divergences
    rlm = _recorded_rlm(start, client, backend)

    def compare(event: Event) -> None:
        if isinstance(event, BlockExecuted) and not client.forked:
            key = (event.rlm, event.iteration, event.index)
            expected = recording.blocks.get(key)
            if expected is None:
                divergences.append(
                    Divergence(
                        "block not in recording", event.rlm, event.iteration, None, event.code
                    )
                )
            elif expected != event.output:
                divergences.append(
                    Divergence("block output", event.rlm, event.iteration, expected, event.output)
                )
        if on_event is not None:
            on_event(event)

    question = start["question"]
    try:
        loaded = recording.contexts(contexts)
        for ref, ctx in zip(start.get("contexts") or [], loaded, strict=True):
            if ref.get("sha256") and ref["sha256"] != ctx.sha256:
                divergences.append(Divergence("context hash", "0", None, ref["sha256"], ctx.sha256))
        if len(loaded) > 1:
            result = rlm.run(question, contexts=loaded, on_event=compare)
        else:
            result = rlm.run(question, loaded[0] if loaded else None, on_event=compare)
    finally:
        recording.drop_scratch()
    recorded = recording.run_end
    if (
        recorded is not None
        and not client.forked
        and recorded.get("answer") != _as_json(result.answer)
    ):
        divergences.append(
            Divergence("answer", "0", result.iterations, recorded.get("answer"), result.answer)
        )
    return ReplayResult(result, divergences)


def _recorded_profile(start: dict[str, Any], settings: dict[str, Any]) -> Profile | None:
    """The profile the run used (its prompts steer the turns a replay rebuilds), or None
    for a trace from before profiles."""
    recorded = settings.get("profile")
    if not isinstance(recorded, dict):
        return None
    try:
        return Profile.from_dict(
            {**recorded, "system_prompt": start.get("system_prompt", "")}, "recorded profile"
        )
    except ConfigError as exc:
        raise TraceFormatError(f"the trace's {exc}") from None


def _recorded_rlm(start: dict[str, Any], client: ReplayClient, backend: str) -> RLM:
    """The RLM of the recorded settings; settings of the wrong type are a malformed trace."""
    settings = dict(start.get("settings") or {})
    try:
        prices = PriceTable.default()
        if settings.get("prices"):
            prices = prices.with_overrides(settings["prices"])
        return RLM(
            start["model"],
            sub_model=start.get("sub_model"),
            client=client,
            max_depth=settings.get("max_depth", 1),
            max_iterations=settings.get("max_iterations", 30),
            max_llm_calls=settings.get("max_llm_calls"),
            max_tokens=settings.get("max_tokens"),
            max_cost=settings.get("max_cost"),
            cell_timeout=settings.get("cell_timeout", 60.0),
            concurrency=settings.get("concurrency", 16),
            max_output_chars=settings.get("max_output_chars", 20_000),
            mode=settings.get("mode", "code"),
            dialect=settings.get("dialect", "recursa"),
            seed=settings.get("seed"),  # the REPL's `random` draws what it drew then
            profile=_recorded_profile(start, settings),
            sandbox=backend,
            prices=prices,
            retry=RetryPolicy(base_delay=0.0, max_delay=0.0, jitter=0.0),
            env={},
        )
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise TraceFormatError(
            f"the trace's recorded settings cannot be used ({type(exc).__name__}: {exc})"
        ) from None


def _as_json(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _excerpt(value: Any) -> Any:
    if isinstance(value, str) and len(value) > EXCERPT:
        return value[:EXCERPT] + f"... [{len(value):,} characters]"
    return value
