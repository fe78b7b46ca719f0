"""A FakeLMServer in a process of its own, for the benchmarks (see `common.ServerProcess`).

    python -m recursa.evals.perf.fake_server MODE LATENCY [ARGS...]

Prints the OpenAI base URL on one line, then serves until its stdin closes. A line `stats`
on stdin is answered with one JSON line (requests seen, most in flight at once) and resets
the counters.

Modes:
  const          every request (root or sub) is answered with a trivial ```repl block
  turns N        root: N trivial turns (`x = K` and `print(x)`, K the turn: each turn differs,
                 as real ones do, so the engine's stall guards stay quiet), then FINAL(done);
                 sub-queries: "ok"
  fanout N       root: one block with llm_query_batched of N prompts, then FINAL; subs: "ok"
  demo           the demo's scripted model (recursa.demo.scripted_model)
  demo_fast      the demo's root script, with sub-query answers found by str.find instead
                 of the demo's regex (same answers, ~10 ms less fake-model CPU per chunk)
"""

from __future__ import annotations

import json
import sys

from recursa.testing import FakeLMServer, LMRequest, ScriptedLM

TRIVIAL = "Next step.\n```repl\nx = 1\n```"


def trivial_turns(n: int) -> list[str]:
    """n trivial root turns that differ from each other, then FINAL."""
    return [f"Next step.\n```repl\nx = {k}\nprint(x)\n```" for k in range(n)] + ["FINAL(done)"]


def fanout_block(n: int) -> str:
    return (
        "Ask every chunk at once.\n```repl\n"
        f"answers = llm_query_batched([f'question {{i}}' for i in range({n})])\n"
        "print(len(answers), answers[0])\n```"
    )


def responder(mode: str, args: list[str]) -> ScriptedLM:
    if mode == "const":
        return ScriptedLM(root=lambda r: TRIVIAL, sub=lambda r: TRIVIAL)
    if mode == "turns":
        n = int(args[0])
        return ScriptedLM(root=trivial_turns(n), sub=lambda r: "ok")
    if mode == "fanout":
        n = int(args[0])
        return ScriptedLM(root=[fanout_block(n), "FINAL(done)"], sub=lambda r: "ok")
    if mode == "demo":
        from recursa.demo import scripted_model

        return scripted_model()
    if mode == "demo_fast":
        from recursa.demo import scripted_model

        return ScriptedLM(root=scripted_model()._root, sub=_fast_demo_sub)
    raise SystemExit(f"unknown mode {mode!r}")


_PLANTED = " emergency override issued, access code "


def _fast_demo_sub(request: LMRequest) -> str:
    """The demo's sub-model answer without its regex, which costs ~10 ms per 200 KB chunk
    (`(\\w+)\\s+emergency...` retries at every position): same answer, found by str.find."""
    text = request.last_user
    at = text.find(_PLANTED)
    if at < 0:
        return "NONE"
    service = text[:at].rstrip().rsplit(None, 1)[-1]
    code = text[at + len(_PLANTED) :].split(None, 1)[0]
    return f"CODE {code} SERVICE {service}"


def main() -> None:
    mode, latency, *args = sys.argv[1:]
    with FakeLMServer(responder(mode, args), latency=float(latency)) as server:
        print(server.url, flush=True)
        for line in sys.stdin:
            if line.strip() == "stats":
                stats = {
                    "requests": server.request_count,
                    "max_in_flight": server.max_in_flight,
                    "errors": server.errors[:3],
                }
                server.reset()
                print(json.dumps(stats), flush=True)


if __name__ == "__main__":
    main()
