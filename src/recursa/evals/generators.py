"""The generated task families: deterministic from (family, seed, length), offline, at any
size from 1K to 50M tokens (four characters a token).

- `niah`: one "special magic number" among three decoys in pages of prose (S-NIAH style).
- `oolong`: dated questions by users, each of one of six unstated types (TREC coarse
  labels); asks a count, the most common label, or the whole distribution (OOLONG style;
  the variant is `seed % 3`).
- `pairs`: the same kind of lines; lists every pair of users who both asked a question of
  a rare type (OOLONG-Pairs style, scored by F1).
- `vartrack`: `VAR NAME = VALUE` assignments hidden in prose, chained; which variables end
  up holding a value (multi-hop variable tracking, RULER style, scored by F1).
- `logs`: service logs with an incident: which service logged the first ERROR, and which
  version of it had been deployed last before that (decoy deploys before and a rollback
  after).
- `codeqa`: a generated Python repository (a directory context): the value a function
  returns through two imports, with a decoy constant of the same name and a decoy function
  of the same name elsewhere; multiple choice (LongBench v2 CodeQA style).

The labels of `oolong` and `pairs` are never written in the text: a reader has to infer
them from each question, which is what makes sub-queries worth their cost there.
"""

from __future__ import annotations

import datetime
import itertools
import random
import string
from collections import Counter
from collections.abc import Callable
from typing import Any

from ..errors import ConfigError
from .names import DOCUMENT_FAMILIES, FAMILIES
from .tasks import CHARS_PER_TOKEN, PdfPages, RepoFiles, Task, format_length

LABELS = ("abbreviation", "entity", "description", "human", "location", "numeric")
OOLONG_VARIANTS = ("count", "most_common", "distribution")


def generate(family: str, seed: int, length: int) -> Task:
    """The task of `family` for `seed` at `length` tokens: the same every time."""
    try:
        make = _GENERATORS[family]
    except KeyError:
        known = ", ".join(FAMILIES + DOCUMENT_FAMILIES)
        raise ConfigError(f"unknown task family {family!r}; known: {known}") from None
    rng = random.Random(f"recursa-eval:{family}:{seed}:{length}")
    task = make(rng, length * CHARS_PER_TOKEN, seed)
    task.family, task.seed, task.length = family, seed, length
    task.id = f"{family}-{format_length(length)}-s{seed}"
    return task


def _task(question: str, context: object, expected: object, scorer: str, **kw: object) -> Task:
    return Task(
        family="", id="", question=question, context=context, expected=expected,
        scorer=scorer, length=0, seed=0, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


# ---- prose ---------------------------------------------------------------------------------

_SUBJECTS = (
    "the river", "a quiet village", "the old library", "every traveller", "the committee",
    "a young engineer", "the harbour", "the orchestra", "our neighbour", "the mountain road",
    "a small bakery", "the museum", "the night train", "a careful reader", "the garden",
    "the weather station", "the ferry crew", "a retired teacher", "the market square",
)  # fmt: skip
_VERBS = (
    "remembers", "describes", "changes", "follows", "welcomes", "ignores", "measures",
    "repairs", "celebrates", "questions", "collects", "crosses", "paints", "borrows",
)  # fmt: skip
_OBJECTS = (
    "the morning light", "an unfinished letter", "the price of bread", "a forgotten song",
    "the northern wind", "every careful plan", "the long winter", "a list of names",
    "the evening market", "the silence after rain", "an old photograph", "the shape of the coast",
    "a borrowed umbrella", "the sound of bells",
)  # fmt: skip
_TAILS = (
    "without hurry", "once a year", "in the late afternoon", "as the season turns",
    "with some reluctance", "before anyone notices", "for reasons nobody recalls",
    "more often than before", "in plain words", "with great patience", "at the edge of town",
)  # fmt: skip


def _paragraphs(rng: random.Random, chars: int) -> list[str]:
    """Prose paragraphs (one a line) of about `chars` characters in all."""
    pool = [
        f"{rng.choice(_SUBJECTS).capitalize()} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} "
        f"{rng.choice(_TAILS)}."
        for _ in range(1500)
    ]
    out: list[str] = []
    total = 0
    while total < chars:
        sentences: list[str] = []
        for sentence in rng.choices(pool, k=rng.randint(4, 9)):
            sentences.append(sentence)
            total += len(sentence) + 1
            if total >= chars:
                break
        out.append(" ".join(sentences))
    return out


def _interleave(rng: random.Random, paragraphs: list[str], groups: list[list[str]]) -> str:
    """Place each group's lines between paragraphs, in order within the group."""
    inserts: list[tuple[int, int, str]] = []
    seq = 0
    for lines in groups:
        slots = sorted(rng.sample(range(len(paragraphs) + 1), len(lines)))
        for slot, line in zip(slots, lines, strict=True):
            inserts.append((slot, seq, line))
            seq += 1
    inserts.sort()
    out: list[str] = []
    j = 0
    for i, paragraph in enumerate(paragraphs):
        while j < len(inserts) and inserts[j][0] == i:
            out.append(inserts[j][2])
            j += 1
        out.append(paragraph)
    out.extend(line for _, _, line in inserts[j:])
    return "\n".join(out) + "\n"


# ---- niah ----------------------------------------------------------------------------------

_ADJECTIVES = (
    "quiet", "amber", "hollow", "brisk", "silver", "crooked", "gentle", "distant", "scarlet",
    "frozen", "humble", "restless", "velvet", "bitter", "golden", "narrow",
)  # fmt: skip
_NOUNS = (
    "harbor", "falcon", "lantern", "meadow", "compass", "orchard", "glacier", "violin",
    "quarry", "beacon", "thistle", "canyon", "ember", "pebble", "willow", "anchor",
)  # fmt: skip


def _niah(rng: random.Random, chars: int, seed: int) -> Task:
    keys: list[str] = []
    while len(keys) < 4:
        key = f"{rng.choice(_ADJECTIVES)}-{rng.choice(_NOUNS)}"
        if key not in keys:
            keys.append(key)
    values = rng.sample(range(1_000_000, 10_000_000), 4)
    needles = [
        f"The special magic number for {k} is: {v}." for k, v in zip(keys, values, strict=True)
    ]
    paragraphs = _paragraphs(rng, chars - sum(len(n) + 1 for n in needles))
    text = _interleave(rng, paragraphs, [[n] for n in needles])
    question = (
        f"What is the special magic number for {keys[0]} mentioned in the text? "
        "Answer with the number only."
    )
    return _task(question, text, str(values[0]), "numeric", params={"key": keys[0]})


# ---- oolong and pairs: questions of six unstated types -------------------------------------

_PLACES = (
    "Velmora", "Ostrava Bay", "Karth", "Lindenfeld", "Port Aldo", "Rimska", "Tavoli",
    "Seraphine", "Marrow Hill", "Quenby", "Isolde Falls", "Brackwater", "Neumarkt", "Ardent",
)  # fmt: skip
_THINGS = (
    "telescope", "steam engine", "printing press", "bicycle", "lighthouse", "compass",
    "typewriter", "suspension bridge", "radio", "pocket watch", "sewing machine", "glider",
)  # fmt: skip
_KINDS = ("fruit", "metal", "instrument", "mineral", "grain", "fabric", "spice", "timber")
_ROLES = ("mayor", "governor", "astronomer", "bishop", "harbour master", "librarian")
_WORDS = ("serendipity", "ephemeral", "quorum", "lacuna", "sonder", "petrichor", "halcyon")
_EVENTS = ("regatta", "chess olympiad", "trade fair", "summit", "marathon", "exhibition")

_TEMPLATES: dict[str, tuple[Callable[[random.Random], str], ...]] = {
    "abbreviation": (
        lambda r: f"What does {_acronym(r)} stand for?",
        lambda r: f"What is the full form of {_acronym(r)}?",
        lambda r: f"Which words does the abbreviation {_acronym(r)} come from?",
    ),
    "entity": (
        lambda r: f"What {r.choice(_KINDS)} is used to make a {r.choice(_THINGS)}?",
        lambda r: f"Name a {r.choice(_KINDS)} that grows near {r.choice(_PLACES)}.",
        lambda r: f"What is the most popular {r.choice(_KINDS)} in {r.choice(_PLACES)}?",
    ),
    "description": (
        lambda r: f"Why does the {r.choice(_THINGS)} need regular oiling?",
        lambda r: f"How does a {r.choice(_THINGS)} work?",
        lambda r: f"What is the meaning of the word {r.choice(_WORDS)}?",
    ),
    "human": (
        lambda r: f"Who invented the {r.choice(_THINGS)}?",
        lambda r: f"Who was the first {r.choice(_ROLES)} of {r.choice(_PLACES)}?",
        lambda r: f"Who wrote the first manual for the {r.choice(_THINGS)}?",
    ),
    "location": (
        lambda r: f"Where is the oldest {r.choice(_THINGS)} of {r.choice(_PLACES)} kept?",
        lambda r: f"What country is {r.choice(_PLACES)} in?",
        lambda r: f"In which city was the first {r.choice(_THINGS)} built?",
    ),
    "numeric": (
        lambda r: f"How many {r.choice(_KINDS)} farms are there in {r.choice(_PLACES)}?",
        lambda r: f"When was the {r.choice(_THINGS)} invented?",
        lambda r: f"How far is {r.choice(_PLACES)} from {r.choice(_PLACES)}?",
        lambda r: f"In what year did {r.choice(_PLACES)} host the {r.choice(_EVENTS)}?",
    ),
}

_OOLONG_INTRO = (
    "The context is a list of questions people asked, one per line, each with a date and a "
    "user ID. Every question has exactly one of these six labels, by the type of answer it "
    "asks for: abbreviation, entity, description, human, location, numeric. The labels are "
    "not written anywhere: you have to infer each question's label from its text. "
)


def _acronym(rng: random.Random) -> str:
    return "".join(rng.choices(string.ascii_uppercase, k=rng.randint(3, 5)))


def _instance(rng: random.Random, label: str) -> str:
    return rng.choice(_TEMPLATES[label])(rng)


def _line(rng: random.Random, user: int, label: str) -> str:
    day = datetime.date(2021, 1, 1) + datetime.timedelta(days=rng.randrange(1400))
    return f"Date: {day:%b %d, %Y} || User: {user} || Instance: {_instance(rng, label)}"


def _oolong(rng: random.Random, chars: int, seed: int) -> Task:
    variant = OOLONG_VARIANTS[seed % len(OOLONG_VARIANTS)]
    weights = [rng.uniform(0.3, 1.7) for _ in LABELS]
    users = rng.sample(range(10_000, 100_000), 60)
    lines: list[str] = []
    labels: list[str] = []
    total = 0
    while total < chars:
        label = rng.choices(LABELS, weights)[0]
        line = _line(rng, rng.choice(users), label)
        lines.append(line)
        labels.append(label)
        total += len(line) + 1
    counts = Counter(labels)
    (top, n1), (_, n2) = counts.most_common(2)
    if n1 == n2:  # the most common label must be unique
        lines.insert(rng.randrange(len(lines) + 1), _line(rng, rng.choice(users), top))
        counts[top] += 1
    text = "\n".join(lines) + "\n"
    if variant == "count":
        label = rng.choice(LABELS)
        question = (
            _OOLONG_INTRO + f"How many of the questions should be labelled '{label}'? "
            "Give your final answer in the form 'Answer: number'."
        )
        return _task(
            question, text, counts[label], "numeric",
            score_params={"decay": 0.75}, params={"variant": variant, "label": label},
            paper="oolong",
        )  # fmt: skip
    if variant == "most_common":
        question = (
            _OOLONG_INTRO + "Which label is the most common among the questions? "
            "Give your final answer in the form 'Answer: label'."
        )
        expected = counts.most_common(1)[0][0]
        return _task(question, text, expected, "exact", params={"variant": variant}, paper="oolong")
    question = (
        _OOLONG_INTRO + "How many questions carry each label? Give one line per label in the "
        "form 'label: count', for all six labels."
    )
    per_label = {label: counts[label] for label in LABELS}
    return _task(
        question, text, per_label, "distribution", score_params={"decay": 0.75},
        params={"variant": variant}, paper="oolong",
    )  # fmt: skip


def _pairs(rng: random.Random, chars: int, seed: int) -> Task:
    rare = rng.choice(LABELS)
    common = [label for label in LABELS if label != rare]
    user_count = max(12, min(400, chars // 2000))
    users = rng.sample(range(10_000, 100_000), user_count)
    targets = rng.sample(users, min(rng.randint(5, 9), user_count - 2))
    rare_lines = [_line(rng, u, rare) for u in targets for _ in range(rng.randint(1, 3))]
    budget = chars - sum(len(line) + 1 for line in rare_lines)
    lines: list[str] = []
    total = 0
    while total < budget:
        line = _line(rng, rng.choice(users), rng.choice(common))
        lines.append(line)
        total += len(line) + 1
    for line in rare_lines:
        lines.insert(rng.randrange(len(lines) + 1), line)
    ids = sorted(targets)
    expected = [[a, b] for i, a in enumerate(ids) for b in ids[i + 1 :]]
    question = (
        _OOLONG_INTRO + f"List every pair of user IDs where both users asked at least one "
        f"question labelled '{rare}'. Give each pair once, lower ID first, one pair per line "
        "in the form (ID1, ID2)."
    )
    return _task(
        question, "\n".join(lines) + "\n", expected, "set_f1",
        score_params={"item": "pair"}, params={"label": rare}, paper="pairs",
    )  # fmt: skip


# ---- vartrack ------------------------------------------------------------------------------


def _vartrack(rng: random.Random, chars: int, seed: int) -> Task:
    used: set[str] = set()

    def name() -> str:
        while True:
            candidate = "".join(rng.choices(string.ascii_uppercase, k=5))
            if candidate not in used:
                used.add(candidate)
                return candidate

    values = rng.sample(range(10_000, 100_000), 3)
    groups: list[list[str]] = []
    holders: list[str] = []
    for index, value in enumerate(values):
        hops = rng.randint(2, 5) if index == 0 else rng.randint(1, 4)
        chain = [name() for _ in range(hops + 1)]
        lines = [f"VAR {chain[0]} = {value}"]
        lines += [f"VAR {b} = {a}" for a, b in itertools.pairwise(chain)]
        if index == 0:
            holders = list(chain)
            if rng.random() < 0.5:  # a branch off the chain
                branch = name()
                lines.append(f"VAR {branch} = {rng.choice(chain[:-1])}")
                holders.append(branch)
        groups.append(lines)
    budget = chars - sum(len(line) + 1 for group in groups for line in group)
    text = _interleave(rng, _paragraphs(rng, budget), groups)
    question = (
        "The text hides variable assignments, each on a line of its own in the form "
        "'VAR NAME = VALUE', where VALUE is a number or the name of another variable "
        f"(which passes on that variable's value). Find every variable that ends up holding "
        f"the value {values[0]}, directly or through a chain of assignments. Answer with the "
        "variable names separated by commas."
    )
    return _task(
        question, text, sorted(holders), "set_f1",
        score_params={"item": "word", "pattern": r"\b[A-Z]{5}\b"},
        params={"value": values[0]},
    )  # fmt: skip


# ---- logs ----------------------------------------------------------------------------------

_SERVICES = (
    "auth", "billing", "search", "gateway", "ledger", "mailer", "scheduler", "cache",
    "inventory", "payments", "profile", "reports",
)  # fmt: skip
_INFO = (
    "request {id} served in {ms} ms",
    "cache miss for key user:{n}",
    "job {n} finished",
    "health check ok",
    "rotated log segment {n}",
    "connection pool at {d}0% capacity",
)
_DEBUG = ("cache key session:{n} refreshed", "queue depth {d}", "gc pause {d} ms")
_WARN = ("slow query took {ms} ms", "retrying upstream call (attempt {d})", "disk at {d}0%")
_FAILURES = (
    "connection pool exhausted after {ms} ms",
    "transaction log write failed: no space left on device",
    "certificate verification failed for upstream",
    "deadlock detected while committing batch {n}",
)


def _log_line(rng: random.Random, services: list[str]) -> tuple[str, str, str]:
    roll = rng.random()
    level, templates = ("INFO", _INFO) if roll < 0.7 else ("DEBUG", _DEBUG)
    if roll >= 0.85:
        level, templates = "WARN", _WARN
    message = rng.choice(templates).format(
        id=rng.randrange(10**6), ms=rng.randrange(5, 5000), n=rng.randrange(10**5),
        d=rng.randint(1, 9),
    )  # fmt: skip
    return level, rng.choice(services), message


def _logs(rng: random.Random, chars: int, seed: int) -> Task:
    services = rng.sample(_SERVICES, 8)
    start = datetime.datetime(2026, 3, rng.randint(1, 20), rng.randrange(24))
    # 1. plain lines (level, service, message) with a few deploys, about `chars` in all
    rows: list[list[str]] = []
    total = 0
    while total < chars:
        if rng.random() < 1 / 400:
            row = ["INFO", "deployer", f"deployed {rng.choice(services)} version"]
        else:
            row = list(_log_line(rng, services))
        rows.append(row)
        total += len(row[2]) + 43  # timestamp, level, service, spaces, newline
    count = len(rows)
    culprit = rng.choice(services)
    first_error = int(count * rng.uniform(0.35, 0.8))
    deploy_at = max(0, first_error - rng.randint(8, 40))

    def plain() -> list[str]:
        return list(_log_line(rng, services))

    # 2. the incident: no other deploy of the culprit between its deploy and the first error
    for i in range(deploy_at, first_error):
        if rows[i][1] == "deployer" and rows[i][2].startswith(f"deployed {culprit} "):
            rows[i] = plain()
    rows[deploy_at] = ["INFO", "deployer", f"deployed {culprit} version", "answer"]
    if first_error - deploy_at > 2:  # a decoy: another service deployed in between
        other = rng.choice([s for s in services if s != culprit])
        rows[rng.randint(deploy_at + 1, first_error - 1)] = [
            "INFO", "deployer", f"deployed {other} version",
        ]  # fmt: skip
    failure = rng.choice(_FAILURES).format(ms=rng.randrange(100, 9000), n=rng.randrange(10**5))
    if deploy_at > 0:  # an older deploy of the culprit, which the answer must not name
        rows[rng.randrange(deploy_at)] = ["INFO", "deployer", f"deployed {culprit} version"]
    rows[first_error] = ["ERROR", culprit, failure]
    last = first_error
    span = max(1, min(200, (count - 1 - first_error) // 2))
    for _ in range(rng.randint(5, 30)):
        at = min(count - 1, first_error + rng.randint(1, span))
        victim = rng.choice(services)
        message = failure if victim == culprit else f"upstream {culprit} returned 503"
        rows[at] = ["ERROR", victim, message]
        last = max(last, at)
    if last < count - 1:  # the culprit rolled back after the errors: a deploy after the answer
        rollback = min(count - 1, last + rng.randint(1, 50))
        rows[rollback] = ["INFO", "deployer", f"rolled back {culprit} to version"]
    # 3. back to about `chars`: the incident's lines are longer than the ones they replaced
    size = sum(43 + len(r[2]) + (7 if r[1] == "deployer" else 0) for r in rows)
    while size > chars:
        at = rng.randrange(len(rows))
        if rows[at][0] != "ERROR" and rows[at][1] != "deployer":
            size -= 43 + len(rows.pop(at)[2])
    # 4. versions in order, per service; the rollback restores the one before
    current = {s: [rng.randint(1, 3), rng.randint(0, 9), rng.randint(0, 9)] for s in services}
    previous: dict[str, str] = {}
    expected = ""
    lines: list[str] = []
    moment = start
    for level, service, message, *tag in rows:
        moment += datetime.timedelta(milliseconds=rng.randint(5, 2500))
        if service == "deployer" and message.startswith("deployed "):
            target = message.split()[1]
            version = current[target]
            previous[target] = "v{}.{}.{}".format(*version)
            version[rng.choice((1, 2, 2, 2))] += 1
            if version[2] and rng.random() < 0.3:
                version[2] = 0
            message = f"deployed {target} version " + "v{}.{}.{}".format(*version)
            if tag:
                expected = f"{culprit} " + "v{}.{}.{}".format(*version)
        elif service == "deployer" and message.startswith("rolled back "):
            message = f"deployed {culprit} version {previous[culprit]}"
        stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
        lines.append(f"{stamp} {level:<5} {service:<10} {message}")
    question = (
        "The context is the log of a set of services. At some point an incident began and "
        "services started logging ERROR lines. Which service logged the first ERROR line, and "
        "which version of that service was the most recent one deployed before that first "
        "ERROR? Answer in the form 'service version', for example 'search v1.2.3'."
    )
    return _task(question, "\n".join(lines) + "\n", expected, "exact", params={})


# ---- codeqa --------------------------------------------------------------------------------

_PROJECTS = ("acme", "orbit", "larch", "tessera", "quill", "harbor", "juniper", "cobalt")
_PACKAGES = ("core", "api", "utils", "storage", "jobs", "net", "billing", "search", "auth")
_MOD_WORDS = (
    "cache", "router", "ledger", "tokens", "queue", "report", "window", "records", "buckets",
    "shards", "invoice", "session", "schema", "metrics", "limits", "planner", "catalog",
    "mailer", "retry", "config", "loader", "writer", "index", "events",
)  # fmt: skip
_FN_VERBS = (
    "load", "parse", "merge", "render", "sync", "count", "score", "route", "flush", "index",
    "resolve", "build", "check", "split", "fetch", "store",
)  # fmt: skip
_FN_NOUNS = (
    "ledger", "cache", "token", "order", "batch", "queue", "report", "window", "record",
    "bucket", "shard", "invoice", "entry", "header", "payload", "quota",
)  # fmt: skip
_CONST_WORDS = (
    "MAX", "MIN", "DEFAULT", "BATCH", "RETRY", "SHARD", "QUOTA", "WINDOW", "BUFFER", "POOL",
    "LIMIT", "TIMEOUT", "SIZE", "COUNT", "DEPTH", "RATE",
)  # fmt: skip


class _Names:
    """Unique-enough identifiers; the planted ones are reserved so no filler reuses them."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.reserved: set[str] = set()

    def function(self) -> str:
        while True:
            name = f"{self.rng.choice(_FN_VERBS)}_{self.rng.choice(_FN_NOUNS)}"
            if self.rng.random() < 0.5:
                name += f"_{self.rng.choice(_FN_NOUNS)}"
            if name not in self.reserved:
                return name

    def constant(self) -> str:
        while True:
            a, b = self.rng.sample(_CONST_WORDS, 2)
            name = f"{a}_{b}"
            if name not in self.reserved:
                return name

    def reserve(self, name: str) -> str:
        self.reserved.add(name)
        return name


def _filler_function(rng: random.Random, name: str) -> str:
    a, b = rng.sample(("items", "limit", "factor", "offset", "rows", "size"), 2)
    k, m = rng.randint(2, 9), rng.randint(1, 99)
    body = rng.choice(
        (
            f"    total = 0\n    for item in {a}:\n        if item > {m}:\n"
            f"            total += item * {k}\n    return total + {b}\n",
            f"    result = []\n    for index, value in enumerate({a}):\n"
            f"        if index % {k} == 0:\n            result.append(value + {b})\n"
            "    return result\n",
            f"    if not {a}:\n        return {m}\n    return sorted({a})[:{k}] + [{b}]\n",
        )
    )
    doc = f'    """{name.replace("_", " ").capitalize()} for the given {a}."""\n'
    return f"def {name}({a}, {b}):\n{doc}{body}"


def _module(
    rng: random.Random,
    names: _Names,
    title: str,
    imports: list[tuple[str, str]],
    extra_consts: list[tuple[str, int]],
    extra_defs: list[str],
    budget: int | None = None,
) -> tuple[str, list[str]]:
    """A module's text (3 to 7 filler functions, fewer when `budget` characters are
    reached first), and the names it defines that others may import."""
    consts = [(names.constant(), rng.randint(1, 500)) for _ in range(rng.randint(1, 3))]
    head = [f'"""{title}."""\n']
    if imports:
        head.append("".join(f"from {module} import {name}\n" for module, name in imports))
    head.append("".join(f"{name} = {value}\n" for name, value in consts + extra_consts))
    defs = list(extra_defs)
    size = sum(len(part) + 2 for part in head + defs)
    functions: list[str] = []
    for _ in range(rng.randint(3, 7)):
        if budget is not None and functions and size >= budget:
            break
        functions.append(names.function())
        defs.append(_filler_function(rng, functions[-1]))
        size += len(defs[-1]) + 2
    rng.shuffle(defs)
    exported = [name for name, _ in consts] + functions
    return "\n\n".join(head + defs), exported


def _codeqa(rng: random.Random, chars: int, seed: int) -> Task:
    project = rng.choice(_PROJECTS)
    packages = rng.sample(_PACKAGES, 6)
    names = _Names(rng)
    paths: set[str] = set()

    def new_path(package: str) -> str:
        while True:
            word = rng.choice(_MOD_WORDS)
            if len(paths) > len(_MOD_WORDS) * len(packages) // 2:
                word += f"_{rng.randrange(10**4)}"
            path = f"{project}/{package}/{word}.py"
            if path not in paths:
                paths.add(path)
                return path

    def dotted(path: str) -> str:
        return path[:-3].replace("/", ".")

    const = names.reserve(names.constant())
    offset = names.reserve(names.constant())
    helper = names.reserve(names.function())
    entry = names.reserve(names.function())
    c, o, k = rng.randint(10, 400), rng.randint(2, 60), rng.randint(2, 9)
    decoy_values = rng.sample([v for v in range(10, 400) if v != c], 2)
    legacy = rng.choice([p for p in packages if p not in packages[:3]])
    path_c, path_b, path_a = new_path(packages[0]), new_path(packages[1]), new_path(packages[2])
    decoy_paths = [new_path(legacy), new_path(rng.choice(packages))]

    files: dict[str, str] = {
        f"{project}/README.md": f"# {project}\n\nInternal services. See each package.\n",
    }
    exported: list[tuple[str, str]] = []  # (module, name) that fillers may import

    def add(path: str, **kw: Any) -> None:
        text, names_out = _module(rng, names, f"{path.split('/')[-1][:-3]} module", **kw)
        files[path] = text
        exported.extend((dotted(path), n) for n in names_out[:2])

    add(path_c, imports=[], extra_consts=[(const, c)], extra_defs=[])
    add(
        path_b,
        imports=[(dotted(path_c), const)],
        extra_consts=[(offset, o)],
        extra_defs=[f"def {helper}():\n    return {const} + {offset}\n"],
    )
    add(
        path_a,
        imports=[(dotted(path_b), helper)],
        extra_consts=[],
        extra_defs=[f"def {entry}():\n    return {helper}() * {k}\n"],
    )
    add(decoy_paths[0], imports=[], extra_consts=[(const, decoy_values[0])], extra_defs=[])
    add(
        decoy_paths[1],
        imports=[],
        extra_consts=[(const, decoy_values[1])],
        extra_defs=[f"def {helper}():\n    return {const} - {o}\n"],
    )
    total = sum(len(t) for t in files.values())
    while total < chars:
        path = new_path(rng.choice(packages))
        imports = rng.sample(exported, min(len(exported), rng.randint(0, 3)))
        add(path, imports=imports, extra_consts=[], extra_defs=[], budget=chars - total)
        total += len(files[path])

    answer = (c + o) * k
    options = {answer, c * k, (decoy_values[0] + o) * k, c + o}
    while len(options) < 4:
        options.add(answer + rng.choice((-1, 1)) * rng.randint(1, 50))
    choices = sorted(options)
    rng.shuffle(choices)
    letters = "ABCD"
    listed = " ".join(f"({letter}) {value}" for letter, value in zip(letters, choices, strict=True))
    question = (
        "The context is a Python code repository (a directory: relative path -> file text). "
        f"What value does calling `{entry}()` (defined in `{path_a}`) return? {listed}. "
        "Answer with the letter of the right choice only."
    )
    expected = letters[choices.index(answer)]
    return _task(
        question, RepoFiles(files), expected, "choice",
        params={"entry": entry, "path": path_a}, paper="codeqa",
    )  # fmt: skip


# ---- documents: a fact on one page of a PDF ------------------------------------------------

PAGE_CHARS = 3_000


def _pdfpage(rng: random.Random, chars: int, seed: int) -> Task:
    """A generated PDF (pages of prose) with one access code planted on a known page."""
    key = f"{rng.choice(_ADJECTIVES)}-{rng.choice(_NOUNS)}"
    code = rng.randrange(1_000_000, 10_000_000)
    paragraphs = _paragraphs(rng, chars)
    pages: list[str] = [""]
    for paragraph in paragraphs:
        if len(pages[-1]) + len(paragraph) > PAGE_CHARS and pages[-1]:
            pages.append("")
        pages[-1] += paragraph + "\n"
    page = rng.randrange(len(pages))
    lines = pages[page].splitlines()
    lines.insert(rng.randrange(len(lines) + 1), f"The access code for {key} is: {code}.")
    pages[page] = "\n".join(lines) + "\n"
    question = f"What is the access code for {key} given in the PDF? Answer with the number only."
    return _task(
        question,
        PdfPages(tuple(pages)),
        str(code),
        "numeric",
        params={"key": key, "page": page + 1},
    )


_GENERATORS: dict[str, Callable[[random.Random, int, int], Task]] = {
    "niah": _niah,
    "oolong": _oolong,
    "pairs": _pairs,
    "vartrack": _vartrack,
    "logs": _logs,
    "codeqa": _codeqa,
    "pdfpage": _pdfpage,
}
