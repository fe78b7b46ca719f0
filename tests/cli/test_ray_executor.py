"""`--executor ray`: batch questions and eval jobs as Ray tasks, on a local Ray cluster bound
to 127.0.0.1.

One cluster for the module (starting Ray takes seconds), with 2 CPUs; its HOME is a
temporary folder, so Ray's token file lands there and not in the user's home. The same 20
questions run with the local executor and on Ray, against the same scripted model, and must
give the same answers; so must an eval's jobs, whose nodes share the response cache.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e_helpers import host_env, run_cli
from recursa import RLM
from recursa.batch import BatchConfig, run_batch
from recursa.testing import LMRequest, ScriptedLM

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None, reason="ray is not installed (extra: ray)"
)


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    names = ("HOME", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    saved = {name: os.environ.get(name) for name in names}
    os.environ["HOME"] = str(tmp_path_factory.mktemp("ray-home"))

    def restore() -> None:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    from recursa.executors import start_local_ray

    try:
        temp = tmp_path_factory.mktemp("ray")  # its session files, not /tmp/ray
        ray = start_local_ray(num_cpus=2, _temp_dir=str(temp))
    except Exception as exc:  # no shared memory, no ports ...: say why, run the rest
        restore()
        pytest.skip(f"a local Ray cluster cannot start here: {type(exc).__name__}: {exc}")
    try:
        yield ray
    finally:
        ray.shutdown()
        restore()


def root(request: LMRequest) -> str:
    """FINAL(the number of times the question's word is in `context`)."""
    word = request.messages[1]["content"].split("count the word ")[1].split()[0]
    return f'```repl\nFINAL(context.count("{word}"))\n```'


@pytest.fixture
def twenty(tmp_path: Path) -> Path:
    """20 questions, each over a file of its own (so each answer differs)."""
    lines = []
    for i in range(20):
        path = tmp_path / "docs" / f"doc{i:02d}.txt"
        path.parent.mkdir(exist_ok=True)
        path.write_text(("alpha " * i) + ("beta " * (20 - i)) + "\n")
        word = "alpha" if i % 2 else "beta"
        row = {"id": i, "question": f"count the word {word} please", "context": str(path)}
        lines.append(json.dumps(row))
    questions = tmp_path / "questions.jsonl"
    questions.write_text("\n".join(lines) + "\n")
    return questions


def test_the_local_ray_cluster_listens_on_localhost_only(ray_cluster):
    assert ray_cluster.get_runtime_context().gcs_address.startswith("127.0.0.1:")
    assert {node["NodeManagerAddress"] for node in ray_cluster.nodes()} == {"127.0.0.1"}


def test_twenty_questions_on_ray_give_the_answers_of_the_local_executor(ray_cluster, serve, twenty):
    server = serve(ScriptedLM(root=root))
    factory = functools.partial(RLM, "openai/scripted", base_url=server.url, env={})
    local = run_batch(BatchConfig(twenty, twenty.parent / "local.jsonl", concurrency=4), factory)
    on_ray = run_batch(
        BatchConfig(twenty, twenty.parent / "ray.jsonl", executor="ray", concurrency=4), factory
    )
    assert not local.interrupted and not on_ray.interrupted
    by_local = {r["id"]: r for r in local.ran}
    by_ray = {r["id"]: r for r in on_ray.ran}
    assert sorted(by_ray) == sorted(by_local) == list(range(20))
    for i in range(20):
        assert by_local[i]["status"] == by_ray[i]["status"] == "ok", (by_local[i], by_ray[i])
        assert by_ray[i]["answer"] == by_local[i]["answer"] == (i if i % 2 else 20 - i)
        assert by_ray[i]["executor"] == "ray" and by_ray[i]["node"] == "127.0.0.1"
    assert len((twenty.parent / "ray.jsonl").read_text().splitlines()) == 20


def test_the_cli_runs_a_batch_on_a_given_ray_cluster(ray_cluster, serve, twenty):
    server = serve(ScriptedLM(root=root))
    lines = twenty.read_text().splitlines()[:3]
    (twenty.parent / "three.jsonl").write_text("\n".join(lines) + "\n")
    out = twenty.parent / "cli.jsonl"
    address = ray_cluster.get_runtime_context().gcs_address
    done = run_cli(
        [
            "batch",
            str(twenty.parent / "three.jsonl"),
            "--out",
            str(out),
            "--executor",
            "ray",
            "--ray-address",
            address,
            "--model",
            "openai/scripted",
            "--base-url",
            server.url,
        ],
        env=host_env(),
        timeout=120,
    )
    assert done.rc == 0, done.err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted((r["id"], r["answer"], r["executor"]) for r in rows) == [
        (0, 20, "ray"),
        (1, 1, "ray"),
        (2, 18, "ray"),
    ]


def test_an_eval_on_ray_scores_as_the_local_executor_and_each_node_keeps_a_cache(
    ray_cluster, serve, tmp_path
):
    from recursa.evals import EvalConfig, run_eval
    from recursa.evals.oracle import Oracle

    server = serve(Oracle("logs"))  # the oracle answering over real sockets

    def config(out: Path, executor: str, **extra: Any) -> EvalConfig:
        return EvalConfig(
            out=out, families=["logs"], lengths=[4_000], seeds=[0, 1],
            strategies=["direct", "rlm", "rlm-nosub"], model="openai/scripted",
            base_url=server.url, executor=executor, concurrency=3, progress=False,
            plots=False, **extra,
        )  # fmt: skip

    local = run_eval(config(tmp_path / "local", "local"))
    before = server.request_count
    on_ray = run_eval(config(tmp_path / "ray", "ray"))
    sent_by_ray = server.request_count - before

    def by_job(records: list[dict[str, Any]]) -> dict[tuple[int, str], dict[str, Any]]:
        return {(r["seed"], r["strategy"]): r for r in records}

    assert not on_ray.interrupted and len(on_ray.ran) == 6
    mine, theirs = by_job(local.ran), by_job(on_ray.ran)
    assert sorted(mine) == sorted(theirs)
    for key, record in theirs.items():
        assert record["status"] == "ok" and record["score"] == 1.0, record
        assert record["answer"] == mine[key]["answer"] == record["expected"]
        assert record["llm_calls"] == mine[key]["llm_calls"]
        assert record["executor"] == "ray" and record["node"] == "127.0.0.1"
        assert mine[key]["executor"] == "local"
    assert sent_by_ray == sum(r["llm_calls"] for r in on_ray.ran)  # the ray cache was empty
    assert on_ray.report is not None and on_ray.report.exists()

    # the nodes wrote their answers to the cache file at the configured path: a rerun into a
    # new directory with that cache sends nothing
    again = run_eval(config(tmp_path / "again", "ray", cache_path=tmp_path / "ray/cache.sqlite"))
    assert server.request_count == before + sent_by_ray
    assert len(again.ran) == 6
    for record in again.ran:
        assert record["score"] == 1.0 and record["cache_misses"] == 0
        assert record["cache_hits"] == record["llm_calls"] > 0


def test_the_cli_runs_an_eval_on_a_given_ray_cluster(ray_cluster, tmp_path):
    address = ray_cluster.get_runtime_context().gcs_address
    out = tmp_path / "eval"
    done = run_cli(
        ["eval", "--oracle", "--families", "niah,codeqa", "--lengths", "2k",
         "--strategies", "rlm", "--executor", "ray", "--ray-address", address,
         "--out", str(out), "--no-plots", "--quiet"],
        env=host_env(),
        timeout=180,
    )  # fmt: skip
    assert done.rc == 0, done.err
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted((r["family"], r["score"], r["executor"]) for r in rows) == [
        ("codeqa", 1.0, "ray"),  # a directory context, written out on the node
        ("niah", 1.0, "ray"),
    ]
    assert "niah" in done.out and (out / "report.md").exists()


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1:1", "cannot reach the Ray cluster at 127.0.0.1:1: Connection refused"),
        ("ray://nohost.invalid:10001", "cannot reach the Ray cluster at ray://nohost.invalid"),
        ("nonsense", "bad Ray address 'nonsense': expected HOST:PORT or ray://HOST:PORT"),
    ],
)
def test_an_unreachable_ray_cluster_is_one_line_at_once_and_writes_nothing(tmp_path, address, why):
    questions = tmp_path / "questions.jsonl"
    questions.write_text('{"id": 1, "question": "q"}\n')
    out = tmp_path / "results.jsonl"
    batch = run_cli(
        ["batch", str(questions), "--out", str(out), "--executor", "ray", "--ray-address",
         address, "--model", "openai/x", "--base-url", "http://127.0.0.1:9"],
        env=host_env(),
        timeout=60,
    )  # fmt: skip
    evaluation = run_cli(
        ["eval", "--oracle", "--families", "niah", "--lengths", "2k", "--strategies", "rlm",
         "--executor", "ray", "--ray-address", address, "--out", str(tmp_path / "eval"),
         "--quiet"],
        env=host_env(),
        timeout=60,
    )  # fmt: skip

    for done in (batch, evaluation):
        assert done.rc == 2
        assert done.err_lines[-1].startswith(f"recursa: error: {why}"), done.err
    assert not out.exists() and not (tmp_path / "eval" / "results.jsonl").exists()


def test_the_ray_extra_brings_rays_client_for_ray_addresses():
    import tomllib

    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    extras = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]
    assert any(req.startswith("ray[client]") for req in extras["ray"]), extras["ray"]


def test_a_ray_address_without_rays_client_is_one_line_and_exit_2(tmp_path):
    """`ray://HOST:PORT` (the form docs/CONTEXTS.md shows) where Ray's client part (grpc)
    cannot import: one line naming the fix, not Ray's traceback."""
    import socket

    blocked = tmp_path / "no-grpc" / "grpc"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text("raise ImportError('No module named grpc')\n")
    questions = tmp_path / "questions.jsonl"
    questions.write_text('{"id": 1, "question": "q"}\n')
    out = tmp_path / "results.jsonl"
    with socket.create_server(("127.0.0.1", 0)) as listener:  # reachable, so Ray is asked
        address = f"ray://127.0.0.1:{listener.getsockname()[1]}"
        done = run_cli(
            ["batch", str(questions), "--out", str(out), "--executor", "ray", "--ray-address",
             address, "--model", "openai/x", "--base-url", "http://127.0.0.1:9"],
            env=host_env(PYTHONPATH=str(blocked.parent)),
            timeout=120,
        )  # fmt: skip
    assert done.rc == 2, done.err
    assert done.err_lines == [
        f"recursa: error: cannot join the Ray cluster at {address}: Ray's client part is not "
        "installed: pip install 'recursa[ray]'"
    ]
    assert not out.exists()
