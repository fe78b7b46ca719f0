"""The REPL worker. It runs INSIDE the sandbox as `python -I -S worker.py`.

It imports nothing from recursa but `framing` (found beside this file), holds no secret,
and talks to the host only through two private file descriptors: the standard streams are
moved aside first, so model-written code that prints or writes to fd 1 cannot corrupt the
channel. Sub-queries leave the sandbox as `call` frames and block until the host replies.

Model code shares this interpreter, so it can patch what the worker uses. The worker's own
functions look names up in a private copy of the builtins (bound below, before any of them
is defined), the channel's system calls are bound at import, and the `builtins` module is
put back as it was after every block and whenever the worker itself runs during one (a host
call). Whatever else model code breaks breaks its own worker: the host rejects what comes out
of it and starts a new one.
"""

from __future__ import annotations

# Only modules that are cheap to import, or already loaded at interpreter start: the worker
# starts once per RLM and its imports are most of that time (`ast`, `signal`, `json`,
# `typing` and `collections` would pull in enum, re and more; their C cores are enough here).
import _ast
import _collections_abc
import _operator
import _thread
import builtins
import io
import mmap
import os
import resource
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # typeshed has no stub for `_signal`: `signal` re-exports what is used here
    import signal as _signal
    from collections.abc import Iterator
    from typing import Any
else:
    import _signal

BUILTINS_SNAPSHOT = dict(vars(builtins))
"""The builtins as they were before any model code ran."""
BUILTINS_VALUES = list(BUILTINS_SNAPSHOT.values())
globals()["__builtins__"] = dict(BUILTINS_SNAPSHOT)  # every function below is bound to this copy

if TYPE_CHECKING:  # the checker reads the package's module; a script finds the same file
    from . import framing
else:
    try:  # imported as part of recursa (the local backend)
        from . import framing
    except ImportError:  # run as a script inside the sandbox
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import framing

_os_read, _os_write = os.read, os.write
_setitimer, _ITIMER_REAL = _signal.setitimer, _signal.ITIMER_REAL
_getsignal, _SIGALRM = _signal.getsignal, _signal.SIGALRM

MAX_HOST_BODY = 1 << 40
"""The host is trusted; bodies it sends (contexts) may be as large as memory allows."""
MAX_FINAL_CHARS = 64 * 1024 * 1024


class CellTimeout(BaseException):
    """Raised by SIGALRM when a block runs past its time; `except Exception` won't catch it."""


def _on_alarm(signum: int, frame: Any) -> None:
    raise CellTimeout()


class Channel:
    """Blocking framed I/O on the private descriptors."""

    def __init__(self, fd_in: int, fd_out: int) -> None:
        self.fd_in = fd_in
        self.fd_out = fd_out

    def _read_exact(self, n: int) -> bytes:
        chunks: list[bytes] = []
        while n:
            chunk = _os_read(self.fd_in, min(n, 1 << 24))
            if not chunk:
                raise EOFError("host closed the channel")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def read(self) -> tuple[dict[str, Any], bytes]:
        header_len, body_len = framing.parse_prefix(
            self._read_exact(framing.PREFIX_SIZE), MAX_HOST_BODY
        )
        header = framing.decode_header(self._read_exact(header_len))
        body = self._read_exact(body_len) if body_len else b""
        return header, body

    def write(self, header: dict[str, Any], body: bytes = b"") -> None:
        self.write_parts(framing.coalesce(framing.encode_parts(header, body)))

    def write_parts(self, parts: Any) -> None:
        """Write the byte strings of `parts` in order (an iterable: produced as written)."""
        for part in parts:
            view = memoryview(part)
            while view:
                written = _os_write(self.fd_out, view)
                view = view[written:]


class CappedText(io.TextIOBase):
    """A stdout/stderr stand-in that keeps the head and the tail and counts the rest.

    It never holds more than about twice the limit, however much is written, and never
    copies a long write whole: a huge print costs the model's own string and nothing more.
    """

    def __init__(self, limit: int) -> None:
        self.half = max(limit // 2, 1)
        self.head: list[str] = []
        self.head_len = 0
        self.tail: list[str] = []
        self.tail_len = 0
        self.total = 0

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        n = len(s)
        self.total += n
        taken = 0
        if self.head_len < self.half:
            take = s[: self.half - self.head_len]
            taken = len(take)
            self.head.append(take)
            self.head_len += taken
        rest = n - taken
        if rest <= 0:
            return n
        if rest >= self.half:
            self.tail = [s[-self.half :]]
            self.tail_len = self.half
        else:
            piece = s[taken:]
            self.tail.append(piece)
            self.tail_len += rest
            if self.tail_len > 2 * self.half:
                kept = "".join(self.tail)[-self.half :]
                self.tail = [kept]
                self.tail_len = len(kept)
        return n

    def render(self) -> tuple[str, int]:
        """The kept text, cut in the middle when too long, and the true length."""
        head = "".join(self.head)
        tail = "".join(self.tail)[-self.half :] if self.tail else ""
        if self.total <= self.head_len + len(tail):
            return head + tail, self.total
        cut = self.total - self.head_len - len(tail)
        marker = f"\n... [{cut:,} characters cut; {self.total:,} in all] ...\n"
        return head + marker + tail, self.total


class LazyDir(_collections_abc.Mapping):
    """A directory context: relative path -> text, each file read when it is first asked for.
    A file of at least `mmap_threshold` bytes is a MappedText instead (see mapped.py), as
    a `file` context is: reading it whole could exhaust the worker's memory limit."""

    def __init__(
        self,
        root: str,
        files: list[list[Any]],
        mmap_threshold: int,
        docs: dict[str, str] | None = None,
        lib: str | None = None,
        arrow: str | None = None,
    ) -> None:
        self.root = root
        self.arrow = arrow
        self.docs = dict(docs or {})  # path -> document format: opened as documents.py says
        self.lib = lib
        self.sizes: dict[str, int] = {rel: int(size) for rel, size in files}
        self.mmap_threshold = mmap_threshold
        self._cache: dict[str, Any] = {}

    def __getitem__(self, rel: str) -> Any:
        if rel not in self.sizes:
            raise KeyError(rel)
        value = self._cache.get(rel)
        if value is None:
            path = os.path.join(self.root, rel)
            size = self.sizes[rel]
            if rel in self.docs:
                value = _sibling("documents").open_document(
                    path, self.docs[rel], self.lib, self.arrow
                )
                if self.docs[rel] == "pdf":  # its images are named by this key
                    value.name = rel
            elif size and size >= self.mmap_threshold:
                value = _sibling("mapped").MappedText(path)
            else:
                with open(path, "rb") as fh:
                    value = fh.read().decode("utf-8", errors="replace")
            self._cache[rel] = value
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self.sizes)

    def __len__(self) -> int:
        return len(self.sizes)

    def __repr__(self) -> str:
        return (
            f"<directory {self.root!r}: {len(self.sizes)} files, {sum(self.sizes.values())} bytes>"
        )


class Calls:
    """The calls of one block in flight, from any number of model code's threads.

    Frames go out whole under `write_lock`. One waiting thread at a time reads the channel
    and files each reply under its call's id; the others sleep until a frame has been read,
    then look again (and one of them reads next). The block's clock stops while any call is
    in flight. Once the block ends (`open` false) a new call is refused at once, and the
    block's thread reads until every call still in flight has its reply, so each call gets
    exactly one reply and none is left for a later block to misread.
    """

    def __init__(self) -> None:
        self.lock = _thread.allocate_lock()
        """Guards every field below; `_thread` locks: `threading` is slow to import."""
        self.write_lock = _thread.allocate_lock()
        self.open = False
        self.in_flight: set[int] = set()
        self.replies: dict[int, dict[str, Any]] = {}
        self.reading = False
        self.sleepers: list[Any] = []
        self.paused = 0.0

    def begin(self, call_id: int) -> None:
        """(Under `lock`.) A call goes out: the first one in flight stops the block's clock."""
        if not self.in_flight:
            self.paused, _ = _setitimer(_ITIMER_REAL, 0)
        self.in_flight.add(call_id)

    def end(self, call_id: int) -> None:
        """(Under `lock`.) A call is over: the last one in flight restarts the clock."""
        self.in_flight.discard(call_id)
        self.replies.pop(call_id, None)
        if not self.in_flight and self.open and self.paused > 0:
            _setitimer(_ITIMER_REAL, self.paused)
            self.paused = 0.0

    def pump(self, chan: Channel, call_id: int | None) -> dict[str, Any]:
        """The reply to `call_id`; with None, wait until no call is in flight."""
        self.lock.acquire()
        try:
            while (call_id not in self.replies) if call_id is not None else self.in_flight:
                if self.reading:
                    self._sleep()
                    continue
                self.reading = True
                self.lock.release()
                try:
                    header, _ = chan.read()
                finally:
                    self.lock.acquire()
                    self.reading = False
                    for sleeper in self.sleepers:
                        sleeper.release()
                    self.sleepers.clear()
                if header.get("op") == "reply" and header.get("id") in self.in_flight:
                    self.replies[header["id"]] = header  # anything else: stale, dropped
            return self.replies.pop(call_id) if call_id is not None else {}
        finally:
            self.lock.release()

    def _sleep(self) -> None:
        """(Under `lock`, which it lets go meanwhile.) Until the reader has read a frame."""
        sleeper = _thread.allocate_lock()
        sleeper.acquire()
        self.sleepers.append(sleeper)
        self.lock.release()
        try:
            sleeper.acquire()
        finally:
            self.lock.acquire()
            if sleeper in self.sleepers:
                self.sleepers.remove(sleeper)


class Reserve:
    """Address space held back for reporting a `MemoryError`: a block that fills memory up to
    RLIMIT_AS leaves its data in the namespace, and formatting the error, importing
    `traceback` and framing the result need room. An untouched anonymous mapping costs no
    RAM, only address space, which is what the limit counts."""

    SIZE = 8 << 20

    def __init__(self) -> None:
        self.held: mmap.mmap | None = None
        self.refill()

    def release(self) -> None:
        if self.held is not None:
            self.held.close()
            self.held = None

    def refill(self) -> None:
        if self.held is None:
            try:
                self.held = mmap.mmap(-1, self.SIZE)
            except (MemoryError, OSError):  # still full: try again after the next block
                self.held = None


class Worker:
    """One persistent namespace; executes blocks and relays sub-queries to the host."""

    def __init__(self, channel: Channel) -> None:
        self.chan = channel
        self.ns: dict[str, Any] = {"__name__": "__repl__", "__builtins__": builtins}
        self.builtin_names: dict[str, Any] = {}
        self.builtin_fns: list[Any] = []
        self.builtin_parts: list[tuple[Any, ...]] = []
        self.builtin_cells: list[Any] = []
        self.builtin_contents: list[Any] = []
        self.contexts: dict[str, Any] = {}
        self.values: list[Any] = []
        self.extra: dict[str, Any] = {}
        self.next_call = 0
        self.calls = Calls()
        self.final: dict[str, Any] | None = None
        self.exc_types: dict[str, type[Exception]] = {}
        self.max_output = 20_000
        self.tools: list[str] = []
        self.reserve = Reserve()

    # ---- setup ---------------------------------------------------------------------------
    def init(self, header: dict[str, Any], body: bytes) -> dict[str, Any]:
        _harden(header.get("harden") or {})
        _lower_rlimits(header.get("rlimits") or {})
        # The landlock backend: confined for good before any context or model code is seen
        confined = _sibling("confine").confine(header["confine"]) if "confine" in header else None
        self.max_output = int(header.get("max_output", self.max_output))
        self.values = [self._load_context(spec, body) for spec in header.get("contexts", [])]
        self.extra = dict(header.get("vars", {}))
        self._name_contexts()
        self.tools = list(header.get("tools", []))
        self._install_builtins()
        if header.get("seed") is not None:  # the run's seed: a replay draws the same numbers
            import random

            random.seed(header["seed"])
        return {"op": "ready", "confined": confined} if confined else {"op": "ready"}

    def _name_contexts(self) -> None:
        """One context is `context`; several are the list `context` and context_0, ..."""
        self.contexts = dict(self.extra)
        if len(self.values) == 1:
            self.contexts["context"] = self.values[0]
        elif self.values:
            self.contexts["context"] = list(self.values)
            for i, value in enumerate(self.values):
                self.contexts[f"context_{i}"] = value

    def add(self, header: dict[str, Any], body: bytes) -> dict[str, Any]:
        """More contexts (a session's later turn) or host-set variables such as `history`."""
        self.values += [self._load_context(spec, body) for spec in header.get("contexts", [])]
        self.extra.update(header.get("vars", {}))
        self._name_contexts()
        self._restore()
        return {"op": "added", "contexts": len(self.values)}

    def _load_context(self, spec: dict[str, Any], body: bytes) -> Any:
        raw = body[spec.get("offset", 0) : spec.get("offset", 0) + spec.get("length", 0)]
        kind = spec["kind"]
        if kind == "text":
            return raw.decode("utf-8", errors="replace")
        if kind == "json":
            return framing.loads(raw.decode("utf-8"))
        if kind == "dir":
            return LazyDir(
                spec["root"],
                spec["files"],
                spec["mmap_threshold"],
                spec.get("docs"),
                spec.get("lib"),
                spec.get("arrow"),
            )
        if kind == "file":  # a large file: mapped here, by path (see mapped.py beside this)
            return _sibling("mapped").MappedText(spec["path"])
        if kind == "doc":  # a document: opened here, by path (see documents.py beside this)
            return _sibling("documents").open_document(
                spec["path"], spec["format"], spec["lib"], spec.get("arrow")
            )
        raise ValueError(f"unknown context kind {kind!r}")

    def _install_builtins(self) -> None:
        budget_exc = type("BudgetExceeded", (Exception,), {"__module__": "recursa"})
        query_exc = type("LLMQueryError", (Exception,), {"__module__": "recursa"})
        self.exc_types = {"BudgetExceeded": budget_exc, "LLMQueryError": query_exc}

        def llm_query(
            prompt: str, model: str | None = None, images: list[str] | None = None
        ) -> str:
            """Ask a sub-model one prompt (sent alone, no history); returns its reply.
            `images`: paths of image files of the context (a directory context's keys),
            sent with the prompt to a vision model."""
            if images is None:
                return self.call("llm_query", prompt=_as_text(prompt), model=model)
            return self.call(
                "llm_query", prompt=_as_text(prompt), model=model, images=_image_names(images)
            )

        def llm_query_batched(
            prompts: list[str], model: str | None = None, images: list[list[str]] | None = None
        ) -> list[str]:
            """Ask many prompts concurrently; failed items come back as '[error] ...'.
            `images`: one list of context image paths per prompt."""
            texts = [_as_text(p) for p in _as_list(prompts)]
            if images is None:
                return self.call("llm_query_batched", prompts=texts, model=model)
            per_prompt = [_image_names(each) for each in _as_list(images)]
            if len(per_prompt) != len(texts):
                raise ValueError(f"images must hold one list per prompt ({len(texts)})")
            return self.call("llm_query_batched", prompts=texts, model=model, images=per_prompt)

        def rlm_query(prompt: str, context: Any = None, model: str | None = None) -> str:
            """Start a child RLM over `context` (or the prompt); returns its final answer."""
            return self.call("rlm_query", prompt=_as_text(prompt), context=context, model=model)

        def rlm_query_batched(
            prompts: list[str], contexts: list[Any] | None = None, model: str | None = None
        ) -> list[str]:
            """Start several child RLMs concurrently; failed items come back as '[error] ...'."""
            prompts = [_as_text(p) for p in _as_list(prompts)]
            if contexts is not None and len(_as_list(contexts)) != len(prompts):
                raise ValueError("rlm_query_batched: prompts and contexts differ in length")
            return self.call(
                "rlm_query_batched",
                prompts=prompts,
                contexts=None if contexts is None else list(contexts),
                model=model,
            )

        def FINAL(value: Any) -> None:
            """End the run with `value` as the answer."""
            self.final = {"kind": "value", **_encode_value(value)}

        def FINAL_VAR(name: Any) -> None:
            """End the run with the variable called `name` as the answer."""
            if isinstance(name, str) and name.isidentifier():
                if name not in self.ns:
                    raise NameError(f"FINAL_VAR: no variable named {name!r}")
                value = self.ns[name]
            else:
                value = name
            self.final = {"kind": "value", **_encode_value(value)}

        def SUBMIT(**fields: Any) -> None:
            """End the run with typed output fields, validated by the host."""
            self.final = {"kind": "submit", **_encode_value(fields)}

        def SHOW_VARS() -> dict[str, str]:
            """The variables you have made, with their types and sizes."""
            return {name: _describe(value) for name, value in self._user_vars().items()}

        names: dict[str, Any] = {
            "llm_query": llm_query,
            "llm_query_batched": llm_query_batched,
            "rlm_query": rlm_query,
            "rlm_query_batched": rlm_query_batched,
            "FINAL": FINAL,
            "FINAL_VAR": FINAL_VAR,
            "SUBMIT": SUBMIT,
            "SHOW_VARS": SHOW_VARS,
            **self.exc_types,
        }
        for tool in self.tools:
            names[tool] = self._make_tool(tool)
        self.builtin_names = names
        self.builtin_fns = [fn for fn in names.values() if type(fn) is _FUNCTION]
        self.builtin_parts = list(map(_PARTS, self.builtin_fns))
        self.builtin_cells = [cell for fn in self.builtin_fns for cell in fn.__closure__ or ()]
        self.builtin_contents = list(map(_CONTENTS, self.builtin_cells))
        self._restore()

    def _make_tool(self, name: str) -> Any:
        def tool(*args: Any, **kwargs: Any) -> Any:
            return self.call("tool", name=name, args=list(args), kwargs=kwargs)

        tool.__name__ = name
        return tool

    def _restore(self) -> None:
        """Put back the names the REPL gives model code, and the insides of those that are
        functions (code, defaults, closed-over values): model code may patch them in place.
        The check is two C-speed list comparisons (the caveat of `_put_back` applies)."""
        try:
            intact = (
                list(map(_PARTS, self.builtin_fns)) == self.builtin_parts
                and list(map(_CONTENTS, self.builtin_cells)) == self.builtin_contents
            )
        except ValueError:  # a closed-over value was deleted
            intact = False
        if not intact:
            for fn, (code, defaults, kwdefaults) in zip(
                self.builtin_fns, self.builtin_parts, strict=True
            ):
                fn.__code__, fn.__defaults__, fn.__kwdefaults__ = code, defaults, kwdefaults
            for cell, value in zip(self.builtin_cells, self.builtin_contents, strict=True):
                cell.cell_contents = value
        self.ns.update(self.builtin_names)
        self.ns.update(self.contexts)
        self.ns["__builtins__"] = builtins

    def _restore_builtins(self) -> None:
        """Undo what model code did to the `builtins` module (cheap when nothing was done)."""
        _put_back(vars(builtins), BUILTINS_SNAPSHOT, BUILTINS_VALUES)

    def _user_vars(self) -> dict[str, Any]:
        hidden = set(self.builtin_names) | set(self.contexts) | {"__name__", "__builtins__"}
        return {
            k: v
            for k, v in self.ns.items()
            if k not in hidden and not k.startswith("_") and not _is_module(v)
        }

    # ---- calls to the host -------------------------------------------------------------------
    def call(self, fn: str, **args: Any) -> Any:
        self._restore_builtins()  # json and the framing use them
        with self.calls.lock:
            self.next_call += 1
            call_id = self.next_call
        try:
            frame = framing.OutgoingCall({"op": "call", "id": call_id, "fn": fn, "args": args})
        except (TypeError, ValueError):
            raise TypeError(f"{fn}: arguments must be plain text, lists or dicts") from None
        if frame.size > framing.MAX_CALL:
            raise ValueError(
                f"{fn}: {frame.size:,} bytes of arguments in one call is more than "
                f"{framing.MAX_CALL:,}; split it into several calls"
            )
        header = self.exchange(call_id, frame)
        if header.get("ok"):
            return header.get("value")
        kinds: dict[str, type[Exception]] = {
            "TypeError": TypeError,
            "ValueError": ValueError,
            **self.exc_types,
        }
        exc_type = kinds.get(header.get("error_type", ""), self.exc_types["LLMQueryError"])
        raise exc_type(header.get("message", "sub-query failed"))

    def exchange(self, call_id: int, frame: Any) -> dict[str, Any]:
        """Send an encoded call and wait for its reply (from any thread of model code)."""
        calls = self.calls
        with calls.lock:
            if not calls.open:
                raise self.exc_types["LLMQueryError"](
                    "a thread that outlived its block called the host: calls are served only "
                    "while a block runs (join your threads before the block ends)"
                )
            calls.begin(call_id)
        try:
            with calls.write_lock:
                self.chan.write_parts(frame.parts())
            return calls.pump(self.chan, call_id)
        finally:
            with calls.lock:
                calls.end(call_id)

    # ---- running code ---------------------------------------------------------------------
    def _redirect(self, out: CappedText, err: CappedText) -> Any:
        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = out, err
        return saved

    def _unredirect(self, saved: Any) -> None:
        sys.stdout, sys.stderr = saved

    def _arm(self, timeout: float) -> None:
        if _getsignal(_SIGALRM) is not _on_alarm:  # model code may have moved it
            _signal.signal(_SIGALRM, _on_alarm)
        if timeout > 0:
            _setitimer(_ITIMER_REAL, timeout)

    def _disarm(self) -> None:
        _setitimer(_ITIMER_REAL, 0)

    def execute(self, header: dict[str, Any]) -> dict[str, Any]:
        code = header["code"]
        limit = int(header.get("max_output", self.max_output))
        out, err = CappedText(limit), CappedText(limit)
        before = set(self.ns)
        self.final = None
        error = None
        saved = self._redirect(out, err)
        timeout = float(header.get("timeout") or 0)
        with self.calls.lock:
            self.calls.open = True
        try:
            self._arm(timeout)
            self._run(code)
        except CellTimeout:
            error = (
                f"TimeoutError: the block ran past its {timeout:g} s limit and was interrupted; "
                "variables assigned before that point are kept"
            )
        except KeyboardInterrupt:
            error = "KeyboardInterrupt: the block was interrupted; variables are kept"
        except SystemExit as exc:
            error = f"SystemExit({exc.code!r}): exiting is not allowed; the REPL goes on"
        except BaseException as exc:
            if isinstance(exc, MemoryError):
                self.reserve.release()  # room to report it while the block's data fills memory
            error = _format_exception(exc)
        finally:
            self._disarm()
            self._settle_calls()
            self._restore_builtins()
            self._unredirect(saved)
            self._restore()
        stdout, stdout_len = out.render()
        stderr, stderr_len = err.render()
        after = self._user_vars()
        self.reserve.refill()
        return {
            "op": "result",
            "id": header.get("id"),
            "stdout": stdout,
            "stdout_len": stdout_len,
            "stderr": stderr,
            "stderr_len": stderr_len,
            "error": error,
            "final": self.final,
            "new_vars": sorted(set(after) - before),
            "vars": {k: _describe(v) for k, v in list(after.items())[:200]},
        }

    def _settle_calls(self) -> None:
        """End the block's calls: refuse new ones, and read the replies to those that
        threads still have in flight (the host answers each before it reads the result)."""
        with self.calls.lock:
            self.calls.open = False
        self.calls.pump(self.chan, None)

    def _run(self, code: str) -> None:
        tree = compile(code, "<repl>", "exec", _ast.PyCF_ONLY_AST)
        assert isinstance(tree, _ast.Module)  # "exec" mode parses to a Module
        last_expr = None
        last = tree.body[-1] if tree.body else None
        if isinstance(last, _ast.Expr):
            tree.body.pop()
            last_expr = _ast.Expression(last.value)
        exec(compile(tree, "<repl>", "exec"), self.ns)
        if last_expr is not None:
            value = eval(compile(last_expr, "<repl>", "eval"), self.ns)
            if value is not None and self.final is None:
                print(repr(value))

    def get_value(self, header: dict[str, Any]) -> dict[str, Any]:
        name = header.get("name", "")
        if name not in self.ns:
            return {"op": "value", "found": False}
        try:
            return {"op": "value", "found": True, **_encode_value(self.ns[name])}
        except ValueError:
            return {"op": "value", "found": False}

    def serve(self) -> None:
        while True:
            try:
                header, body = self.chan.read()
            except (KeyboardInterrupt, CellTimeout):
                continue  # a signal that arrived between blocks
            except EOFError:
                return
            op = header["op"]
            try:
                if op == "init":
                    reply = self.init(header, body)
                elif op == "exec":
                    reply = self.execute(header)
                elif op == "get":
                    reply = self.get_value(header)
                elif op == "add":
                    reply = self.add(header, body)
                elif op == "ping":
                    reply = {"op": "pong"}
                elif op == "shutdown":
                    return
                else:
                    continue  # stale replies and unknown ops are ignored
            except (KeyboardInterrupt, CellTimeout):
                reply = {"op": "result", "id": header.get("id"), "error": "interrupted"}
            self.chan.write(reply)
            if op == "init":
                _late_site()


def _late_site() -> None:
    """Started with -S, the worker adds site-packages (packages model code may import) only
    once it has answered `ready`: the host goes on meanwhile, usually waiting for the model's
    first reply, and the first block waits at most for this."""
    if sys.flags.no_site and "site" not in sys.modules:
        import site

        site.main()
        # site adds exit, quit, help ... to the builtins: they belong to the snapshot too
        BUILTINS_SNAPSHOT.clear()
        BUILTINS_SNAPSHOT.update(vars(builtins))
        BUILTINS_VALUES[:] = BUILTINS_SNAPSHOT.values()


def _put_back(current: dict[str, Any], snapshot: dict[str, Any], values: list[Any]) -> None:
    """Make `current` hold exactly `snapshot`'s entries again, in order. The check is a
    C-speed list comparison against `values` (snapshot's values): a value that is not the
    original and whose `__eq__` claims it is would survive it, and could only break this
    worker, which the host then replaces."""
    if len(current) == len(snapshot) and list(current.values()) == values:
        return
    current.clear()
    current.update(snapshot)


def _harden(options: dict[str, Any]) -> None:
    """What a worker outside any namespace does to itself before running model code: die
    with the host, adopt its orphans (so a process that leaves the session stays in its
    tree), and under root give up every capability for good. Fails closed: an error here
    ends the worker, and the host reports that it could not start."""
    if not options:
        return
    import ctypes  # only here: bwrap and docker workers never need it

    libc = ctypes.CDLL(None, use_errno=True)
    parent = options.get("parent")
    if parent:
        libc.prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG, SIGKILL
        if os.getppid() != parent:  # the host died before that: nobody to serve
            os._exit(70)
    if options.get("subreaper"):
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    if options.get("drop_caps"):
        # The bounding set goes where allowed (CAP_SETPCAP); what makes the loss final is
        # no_new_privs with nothing permitted: an exec can then grant nothing, even to root.
        libc.prctl(47, 4, 0, 0, 0)  # PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL
        for cap in range(int(options.get("last_cap") or 40) + 1):
            libc.prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP
        header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, self
        data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable: none, twice
        if libc.prctl(38, 1, 0, 0, 0) != 0 or libc.capset(header, data) != 0:  # NO_NEW_PRIVS
            raise OSError(ctypes.get_errno(), "could not drop the worker's capabilities")


def _lower_rlimits(limits: dict[str, Any]) -> None:
    """Apply the limits the host asked for (backends that cannot set them before exec)."""
    for name, value in limits.items():
        which = getattr(resource, f"RLIMIT_{name.upper()}", None)
        if which is None:
            continue
        try:
            _, hard = resource.getrlimit(which)
            value = int(value) if hard == resource.RLIM_INFINITY else min(int(value), hard)
            resource.setrlimit(which, (value, value))
        except (ValueError, OSError):
            continue


def _sibling(name: str) -> Any:
    """A module beside this file, imported only when needed (as `framing` is found)."""
    import importlib

    return importlib.import_module(f"{__package__}.{name}" if __package__ else name)


_FUNCTION = type(_on_alarm)
_PARTS = _operator.attrgetter("__code__", "__defaults__", "__kwdefaults__")
_CONTENTS = _operator.attrgetter("cell_contents")


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def _image_names(images: Any) -> list[str]:
    """Image paths as sent to the host: a list of str (os.PathLike paths become str)."""
    if isinstance(images, (str, os.PathLike)):
        images = [images]
    return [os.fspath(name) if isinstance(name, os.PathLike) else name for name in images]


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, str | bytes) or not hasattr(value, "__iter__"):
        raise TypeError("expected a list of prompts")
    return list(value)


def _is_module(value: Any) -> bool:
    return type(value).__name__ == "module"


def _encode_value(value: Any) -> dict[str, Any]:
    """The answer as JSON where it is JSON-serialisable, else its str(). One over
    MAX_FINAL_CHARS is refused whole (ValueError): never cut and passed off as the answer.
    The host checks the same cap on what it receives (`sandbox/received.py`)."""
    try:
        text = framing.dumps(value)
    except (TypeError, ValueError, RecursionError):
        text = None
    shown = str(value) if text is None else text
    if len(shown) > MAX_FINAL_CHARS:
        raise ValueError(
            f"the answer is {len(shown):,} characters, more than the {MAX_FINAL_CHARS:,} "
            "allowed; it was not accepted (give a shorter answer)"
        )
    return {"text": shown} if text is None else {"json": value}


def _describe(value: Any) -> str:
    kind = type(value).__name__
    try:
        size = len(value)
    except Exception:
        return kind
    return f"{kind} (len {size:,})"


def _format_exception(exc: BaseException) -> str:
    """The traceback of model code only: frames of this worker are dropped."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != "<repl>":
        tb = tb.tb_next
    try:
        import traceback  # only when there is an error to show: it is slow to import

        text = "".join(traceback.format_exception(type(exc), exc, tb))
    except MemoryError:  # model code holds what memory is left: the error line alone
        text = f"{type(exc).__name__}: {exc}\n" if str(exc) else f"{type(exc).__name__}\n"
    return text if len(text) <= 4000 else text[:1500] + "\n...\n" + text[-2000:]


def main() -> None:
    # Move the channel off the standard descriptors, so that prints (even from C code) and
    # reads of stdin by model code cannot touch it. fds from os.dup are not inheritable.
    fd_in, fd_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    os.close(devnull)
    _signal.signal(_signal.SIGINT, _signal.default_int_handler)
    _signal.signal(_SIGALRM, _on_alarm)
    sys.stdin = open(os.devnull)  # noqa: SIM115 (lives as long as the process)
    Worker(Channel(fd_in, fd_out)).serve()


if __name__ == "__main__":
    main()
