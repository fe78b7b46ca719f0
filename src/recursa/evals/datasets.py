"""Loaders for the real datasets, from files a user already has: nothing is downloaded.

- **OOLONG** (`oolongbench/oolong-synth`): a `.jsonl`, `.json` or `.parquet` file, or a
  directory of them (a snapshot of the dataset: `data/validation-*.parquet`). Each row has
  `id`, `context_len`, `dataset` (e.g. `trec_coarse`), `context_window_text`, `question`,
  `answer` (a Python list literal such as `[47]` or `['location']`) and `answer_type`.
  Scored with the published OOLONG rubric (`scoring.oolong`).
- **LongBench v2** (`THUDM/LongBench-v2`): `data.json` (a JSON array, read one item at a
  time) or a `.jsonl` of the same items: `_id`, `domain`, `sub_domain`, `difficulty`,
  `length`, `question`, `choice_A` ... `choice_D`, `answer` (a letter), `context`. By
  default only the domain the paper's CodeQA used ("Code Repository Understanding").
- **BrowseComp-Plus** (`Tevatron/browsecomp-plus`, decrypted with the dataset's own script
  into `browsecomp_plus_decrypted.jsonl`): rows with `query_id`, `query`, `answer` and the
  documents `evidence_docs`, `gold_docs`, `negative_docs` (each `{docid, text, url}`).
  With a corpus file (`.jsonl` of `{docid, text, url}` rows, e.g. the
  `Tevatron/browsecomp-plus-corpus` split saved as JSON lines), each query's context is
  padded with random corpus documents to `docs_per_query` (the paper used 1,000). The
  context is a list of documents, one string each. The official benchmark grades answers
  with an LLM judge; here they are scored by normalized exact match, which is stricter.

Parquet needs `pyarrow` (not a dependency of recursa); JSON lines need nothing.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .tasks import CHARS_PER_TOKEN, Task

DATASETS = ("oolong", "longbench", "browsecomp")
FAMILY = {"oolong": "oolong-data", "longbench": "longbench-data", "browsecomp": "browsecomp-data"}
CODE_DOMAIN = "Code Repository Understanding"


def _rows(path: Path) -> Iterator[dict[str, Any]]:
    """Rows of a .jsonl, .json (array or object per line) or .parquet file, or of every
    such file in a directory (sorted)."""
    if not path.exists():
        raise ConfigError(f"dataset path not found: {path}")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in (".jsonl", ".json", ".parquet"))
        if not files:
            raise ConfigError(f"no .jsonl, .json or .parquet files under {path}")
        for file in files:
            yield from _rows(file)
        return
    if path.suffix == ".parquet":
        yield from _parquet_rows(path)
        return
    with path.open("r", encoding="utf-8") as fh:
        head = fh.read(1)
        while head and head.isspace():
            head = fh.read(1)
        fh.seek(0)
        if head == "[":
            yield from _json_array(fh)
            return
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{number}: not a JSON line ({exc.msg})") from None


def _json_array(fh: Any, block: int = 1 << 20) -> Iterator[dict[str, Any]]:
    """The items of a top-level JSON array, one at a time (LongBench v2's data.json is
    465 MB: it is never held whole)."""
    decoder = json.JSONDecoder()
    buffer = fh.read(block).lstrip()
    if not buffer.startswith("["):
        raise ConfigError("expected a JSON array")
    buffer = buffer[1:]
    want = block
    while True:
        buffer = buffer.lstrip().lstrip(",").lstrip()
        if buffer.startswith("]"):
            return
        try:
            item, end = decoder.raw_decode(buffer)
        except json.JSONDecodeError:
            more = fh.read(want)
            if not more:
                if buffer.strip():
                    raise ConfigError("the JSON array ends early") from None
                return
            buffer += more
            want *= 2
            continue
        want = block
        buffer = buffer[end:]
        yield item


def _parquet_rows(path: Path) -> Iterator[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError(
            f"reading {path.name} needs pyarrow (pip install pyarrow), or convert it to "
            "JSON lines first"
        ) from None
    table = pq.ParquetFile(path)
    for batch in table.iter_batches(batch_size=64):
        yield from batch.to_pylist()


def _near(tokens: int, lengths: list[int] | None) -> bool:
    return not lengths or any(abs(tokens - n) <= 0.05 * n for n in lengths)


def load_oolong(
    path: str | Path,
    *,
    subsets: tuple[str, ...] = ("trec_coarse",),
    lengths: list[int] | None = None,
    limit: int | None = None,
) -> list[Task]:
    """OOLONG-synth rows of the given source datasets (`subsets`; empty for all) whose
    `context_len` is within 5% of one of `lengths` (all when None)."""
    out: list[Task] = []
    for row in _rows(Path(path)):
        try:
            source = str(row.get("dataset", ""))
            tokens = int(row["context_len"])
            if subsets and source not in subsets:
                continue
            if not _near(tokens, lengths):
                continue
            out.append(
                Task(
                    family=FAMILY["oolong"],
                    id=f"oolong-{row['id']}",
                    question=str(row["question"]),
                    context=str(row["context_window_text"]),
                    expected=str(row["answer"]),
                    scorer="oolong",
                    length=tokens,
                    seed=int(row["id"]),
                    score_params={"answer_type": str(row.get("answer_type", ""))},
                    params={"dataset": source, "task": row.get("task")},
                    source="oolong",
                    paper="oolong" if source == "trec_coarse" else None,
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"{path}: an OOLONG row lacks a field or has a bad one: {exc}"
            ) from None
        if limit is not None and len(out) >= limit:
            break
    return out


def load_longbench(
    path: str | Path,
    *,
    domains: tuple[str, ...] = (CODE_DOMAIN,),
    limit: int | None = None,
) -> list[Task]:
    """LongBench v2 items of the given domains (empty for all), as multiple choice."""
    out: list[Task] = []
    for index, row in enumerate(_rows(Path(path))):
        try:
            domain = str(row["domain"])
            if domains and domain not in domains:
                continue
            choices = "\n".join(f"({x}) {row[f'choice_{x}']}" for x in "ABCD")
            question = (
                f"{row['question']}\n\n{choices}\n\nAnswer with the letter of the right "
                "choice only."
            )
            context = str(row["context"])
            out.append(
                Task(
                    family=FAMILY["longbench"],
                    id=f"longbench-{row['_id']}",
                    question=question,
                    context=context,
                    expected=str(row["answer"]).strip(),
                    scorer="choice",
                    length=len(context) // CHARS_PER_TOKEN,
                    seed=index,
                    params={"domain": domain, "difficulty": row.get("difficulty")},
                    source="longbench",
                    paper="codeqa" if domain == CODE_DOMAIN else None,
                )
            )
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"{path}: a LongBench v2 item lacks a field: {exc}") from None
        if limit is not None and len(out) >= limit:
            break
    return out


def _doc_text(doc: dict[str, Any]) -> str:
    head = f"[document {doc.get('docid', '?')}]"
    if doc.get("url"):
        head += f" {doc['url']}"
    return f"{head}\n{doc.get('text', '')}"


def load_browsecomp(
    path: str | Path,
    *,
    corpus: str | Path | None = None,
    docs_per_query: int = 1000,
    limit: int | None = None,
    seed: int = 0,
) -> list[Task]:
    """BrowseComp-Plus queries, each over its own documents (plus corpus padding)."""
    rows = []
    for row in _rows(Path(path)):
        rows.append(row)
        if limit is not None and len(rows) >= limit:
            break
    pool: list[dict[str, Any]] = []
    if corpus is not None:
        # one pass, reservoir-sampled: enough distractors for any query, never the whole corpus
        rng = random.Random(f"browsecomp-pool:{seed}")
        size = 2 * docs_per_query
        for seen, doc in enumerate(_rows(Path(corpus))):
            if len(pool) < size:
                pool.append(doc)
            else:
                j = rng.randrange(seen + 1)
                if j < size:
                    pool[j] = doc
    out: list[Task] = []
    for index, row in enumerate(rows):
        try:
            own = [
                doc
                for key in ("evidence_docs", "gold_docs", "negative_docs")
                for doc in row.get(key) or []
            ]
            query_id, query, answer = row["query_id"], row["query"], row["answer"]
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"{path}: a BrowseComp-Plus row lacks a field: {exc}") from None
        docs = _docs_for(own, pool, docs_per_query, f"{seed}:{query_id}")
        question = f"{query}\n\nAnswer with the exact answer only, as short as possible."
        out.append(
            Task(
                family=FAMILY["browsecomp"],
                id=f"browsecomp-{query_id}",
                question=question,
                context=docs,
                expected=str(answer),
                scorer="exact",
                length=sum(len(d) for d in docs) // CHARS_PER_TOKEN,
                seed=index,
                params={"documents": len(docs)},
                source="browsecomp",
                paper="browsecomp",
            )
        )
    return out


def _docs_for(
    own: list[dict[str, Any]], pool: list[dict[str, Any]], total: int, key: str
) -> list[str]:
    seen: set[str] = set()
    mine = []
    for doc in own:
        docid = str(doc.get("docid"))
        if docid not in seen:
            seen.add(docid)
            mine.append(doc)
    rng = random.Random(f"browsecomp-docs:{key}")
    extra = [d for d in pool if str(d.get("docid")) not in seen]
    rng.shuffle(extra)
    docs = mine + extra[: max(0, total - len(mine))]
    rng.shuffle(docs)
    return [_doc_text(d) for d in docs]
