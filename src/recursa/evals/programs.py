"""The oracle's programs, as Python source: the code a good root model would write for each
family, run for real in the sandbox (and by the scripted sub-model on the host).

Each family is three functions, so one program serves every strategy:
- `map_chunk(text) -> dict`: what one chunk holds (the sub-model's job: the oracle's
  sub-model runs exactly this on the chunk text of the prompt it is sent);
- `merge(partials) -> dict`: partial results combined (order kept);
- `finish(partial, question) -> str`: the answer, in the form the question asks for.

`COMMON` holds the chunking shared by all: a text is cut at line ends, a directory (a
mapping of path -> text) into groups of whole files written as `=== path ===` sections, the
same layout the Direct strategy uses for a directory.
"""

from __future__ import annotations

import hashlib

COMMON = r'''
import json
import re


def as_text(ctx):
    """A document (a PDF: it has .pages) as its text, each page after a [page n] line."""
    return str(ctx) if hasattr(ctx, "pages") else ctx


def context_size(ctx):
    ctx = as_text(ctx)
    if isinstance(ctx, str):
        return len(ctx)
    sizes = getattr(ctx, "sizes", None)
    return sum(sizes.values()) if sizes else sum(len(ctx[key]) for key in ctx)


def chunk_size(ctx):
    return min(100_000, max(8_000, context_size(ctx) // 8 + 1))


def make_chunks(ctx, size):
    ctx = as_text(ctx)
    if isinstance(ctx, str):
        out, start = [], 0
        while start < len(ctx):
            end = start + size
            if end < len(ctx):
                cut = ctx.rfind("\n", start, end)
                end = cut + 1 if cut > start else end
            out.append(ctx[start:end])
            start = end
        return out
    out, part, used = [], [], 0
    for path in ctx:
        piece = "=== " + path + " ===\n" + ctx[path]
        if part and used + len(piece) > size:
            out.append("\n".join(part))
            part, used = [], 0
        part.append(piece)
        used += len(piece) + 1
    if part:
        out.append("\n".join(part))
    return out


def split_parts(ctx, n):
    """n parts a child RLM can take as its context: texts, or dicts of path -> text."""
    ctx = as_text(ctx)
    size = context_size(ctx) // n + 1
    if isinstance(ctx, str):
        return make_chunks(ctx, size)
    parts, part, used = [], {}, 0
    for path in ctx:
        if part and used + len(ctx[path]) > size:
            parts.append(part)
            part, used = {}, 0
        part[path] = ctx[path]
        used += len(ctx[path])
    if part:
        parts.append(part)
    return parts


def parse_json(reply):
    try:
        return json.JSONDecoder().raw_decode(reply[reply.index("{"):])[0]
    except (ValueError, TypeError):
        return None
'''


def _keyed_lookup(phrase: str, asked: str, field: str) -> dict[str, str]:
    """The map/merge/finish programs of a family whose facts read "PHRASE for KEY is: N":
    the chunks' facts are collected by key, and the answer is the one the question names
    (found by `asked`, the part of the phrase the question repeats)."""
    return {
        "map": r"""
def map_chunk(text):
    found = re.findall(r"PHRASE for ([a-z]+-[a-z]+) is: (\d+)", text)
    return {"FIELD": dict(found)}
""".replace("PHRASE", phrase).replace("FIELD", field),
        "merge": r"""
def merge(partials):
    FIELD = {}
    for partial in partials:
        if partial:
            FIELD.update(partial.get("FIELD", {}))
    return {"FIELD": FIELD}
""".replace("FIELD", field),
        "finish": r"""
def finish(partial, question):
    key = re.search(r"ASKED for ([a-z]+-[a-z]+)", question).group(1)
    return partial["FIELD"].get(key, "NONE")
""".replace("ASKED", asked).replace("FIELD", field),
    }


LABEL_RULES = r"""
LABELS = ["abbreviation", "entity", "description", "human", "location", "numeric"]
LINE = re.compile(r"^Date: (.+?) \|\| User: (\d+) \|\| Instance: (.*)$", re.M)


def label_of(question):
    if "stand for" in question or "full form of" in question or "abbreviation" in question:
        return "abbreviation"
    if question.startswith("Who "):
        return "human"
    if question.startswith(("Where ", "What country", "In which city")):
        return "location"
    if question.startswith(("How many", "When ", "How far", "In what year")):
        return "numeric"
    if question.startswith(("Why ", "How does", "What is the meaning")):
        return "description"
    return "entity"
"""
OOLONG_MAP = (
    LABEL_RULES
    + r"""

def map_chunk(text):
    counts = {}
    for _date, _user, instance in LINE.findall(text):
        label = label_of(instance)
        counts[label] = counts.get(label, 0) + 1
    return {"counts": counts}
"""
)
OOLONG_MERGE = r"""
def merge(partials):
    counts = {}
    for partial in partials:
        for label, n in (partial or {}).get("counts", {}).items():
            counts[label] = counts.get(label, 0) + n
    return {"counts": counts}
"""
OOLONG_FINISH = r"""
def finish(partial, question):
    counts = partial["counts"]
    asked = re.search(r"How many of the questions should be labelled '(\w+)'", question)
    if asked:
        return "Answer: %d" % counts.get(asked.group(1), 0)
    if "most common" in question:
        return "Answer: " + (max(counts, key=counts.get) if counts else "NONE")
    names = ["abbreviation", "entity", "description", "human", "location", "numeric"]
    return "\n".join("%s: %d" % (label, counts.get(label, 0)) for label in names)
"""

PAIRS_MAP = (
    LABEL_RULES
    + r"""

def map_chunk(text):
    users = {}
    for _date, user, instance in LINE.findall(text):
        users.setdefault(user, set()).add(label_of(instance))
    return {"users": {user: sorted(labels) for user, labels in users.items()}}
"""
)
PAIRS_MERGE = r"""
def merge(partials):
    users = {}
    for partial in partials:
        for user, labels in (partial or {}).get("users", {}).items():
            users.setdefault(user, set()).update(labels)
    return {"users": {user: sorted(labels) for user, labels in users.items()}}
"""
PAIRS_FINISH = r"""
def finish(partial, question):
    label = re.search(r"question labelled '(\w+)'", question).group(1)
    ids = sorted(int(user) for user, labels in partial["users"].items() if label in labels)
    pairs = ["(%d, %d)" % (a, b) for i, a in enumerate(ids) for b in ids[i + 1:]]
    return "\n".join(pairs) or "NONE"
"""

VARTRACK_MAP = r"""
def map_chunk(text):
    return {"assignments": re.findall(r"^VAR ([A-Z]{5}) = (\w+)$", text, re.M)}
"""
VARTRACK_MERGE = r"""
def merge(partials):
    assignments = []
    for partial in partials:
        assignments.extend((partial or {}).get("assignments", []))
    return {"assignments": assignments}
"""
VARTRACK_FINISH = r"""
def finish(partial, question):
    value = re.search(r"holding the value (\d+)", question).group(1)
    holders, changed = set(), True
    while changed:
        changed = False
        for name, source in partial["assignments"]:
            if name not in holders and (source == value or source in holders):
                holders.add(name)
                changed = True
    return ", ".join(sorted(holders)) or "NONE"
"""

LOGS_MAP = r"""
def map_chunk(text):
    first = re.search(r"^(\S+) ERROR +(\S+) ", text, re.M)
    deploys = re.findall(r"^(\S+) INFO +deployer +deployed (\S+) version (\S+)$", text, re.M)
    return {"first_error": list(first.groups()) if first else None, "deploys": deploys}
"""
LOGS_MERGE = r"""
def merge(partials):
    errors = [p["first_error"] for p in partials if p and p.get("first_error")]
    deploys = [d for p in partials if p for d in p.get("deploys", [])]
    return {"first_error": min(errors) if errors else None, "deploys": deploys}
"""
LOGS_FINISH = r"""
def finish(partial, question):
    if not partial["first_error"]:
        return "NONE"
    when, service = partial["first_error"]
    before = [d for d in partial["deploys"] if d[1] == service and d[0] < when]
    return "%s %s" % (service, max(before)[2]) if before else service + " NONE"
"""

CODEQA_MAP = r"""
def map_chunk(text):
    heads = list(re.finditer(r"^=== (.+?) ===$", text, re.M))
    files = {}
    for i, head in enumerate(heads):
        path = head.group(1)
        if not path.endswith(".py"):
            continue
        body = text[head.end():heads[i + 1].start() if i + 1 < len(heads) else len(text)]
        imports = re.findall(r"^from ([\w.]+) import (\w+)$", body, re.M)
        consts = re.findall(r"^([A-Z][A-Z0-9_]*) = (-?\d+)$", body, re.M)
        files[path] = {
            "imports": {name: module for module, name in imports},
            "consts": {name: int(value) for name, value in consts},
            "returns": dict(re.findall(r"^def (\w+)\(\):\n    return (.+)$", body, re.M)),
        }
    return {"files": files}
"""
CODEQA_MERGE = r"""
def merge(partials):
    files = {}
    for partial in partials:
        files.update((partial or {}).get("files", {}))
    return {"files": files}
"""
CODEQA_FINISH = r"""
import ast
import operator

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}


def _arith(node):
    if isinstance(node, ast.Expression):
        return _arith(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_arith(node.left), _arith(node.right))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_arith(node.operand)
    raise ValueError("not plain arithmetic")


def finish(partial, question):
    files = partial["files"]
    entry, path = re.search(r"calling `(\w+)\(\)` \(defined in `([^`]+)`\)", question).groups()

    def value(path, name, call, depth):
        if depth > 30:
            raise RecursionError("import cycle")
        facts = files[path]
        if call and name in facts["returns"]:
            expr = facts["returns"][name]
            def one(m):
                return str(value(path, m.group(1), bool(m.group(2)), depth + 1))

            text = re.sub(r"\b([A-Za-z_]\w*)(\(\))?", one, expr)
            return _arith(ast.parse(text, mode="eval"))
        if not call and name in facts["consts"]:
            return facts["consts"][name]
        module = facts["imports"][name]
        return value(module.replace(".", "/") + ".py", name, call, depth + 1)

    try:
        result = value(path, entry, True, 0)
    except (KeyError, ValueError, RecursionError, SyntaxError):
        return "NONE"
    for letter, number in re.findall(r"\(([A-D])\) (-?\d+)", question):
        if int(number) == result:
            return letter
    return "NONE"
"""


PROGRAMS: dict[str, dict[str, str]] = {
    "niah": _keyed_lookup("special magic number", "magic number", "numbers"),
    "oolong": {"map": OOLONG_MAP, "merge": OOLONG_MERGE, "finish": OOLONG_FINISH},
    "pairs": {"map": PAIRS_MAP, "merge": PAIRS_MERGE, "finish": PAIRS_FINISH},
    "vartrack": {"map": VARTRACK_MAP, "merge": VARTRACK_MERGE, "finish": VARTRACK_FINISH},
    "logs": {"map": LOGS_MAP, "merge": LOGS_MERGE, "finish": LOGS_FINISH},
    "codeqa": {"map": CODEQA_MAP, "merge": CODEQA_MERGE, "finish": CODEQA_FINISH},
    "pdfpage": _keyed_lookup("access code", "access code", "codes"),
}

INSTRUCTIONS: dict[str, str] = {
    "pdfpage": (
        "Find every sentence of the form 'The access code for KEY is: NUMBER.' in the text "
        'below. Reply with one JSON object {"codes": {"KEY": "NUMBER", ...}} ({} inside when '
        "there is none) and nothing else."
    ),
    "niah": (
        "Find every sentence of the form 'The special magic number for KEY is: NUMBER.' in "
        'the text below. Reply with one JSON object {"numbers": {"KEY": "NUMBER", ...}} '
        "({} inside when there is none) and nothing else."
    ),
    "oolong": (
        "Each line below is a question someone asked. Label each question by the type of "
        "answer it asks for: abbreviation, entity, description, human, location or numeric. "
        'Reply with one JSON object {"counts": {"LABEL": COUNT, ...}} and nothing else.'
    ),
    "pairs": (
        "Each line below is a question asked by a user. Label each question by the type of "
        "answer it asks for: abbreviation, entity, description, human, location or numeric. "
        'Reply with one JSON object {"users": {"USER_ID": ["LABEL", ...], ...}} listing the '
        "labels each user's questions have, and nothing else."
    ),
    "vartrack": (
        "List every line of the form 'VAR NAME = VALUE' in the text below, in order. Reply "
        'with one JSON object {"assignments": [["NAME", "VALUE"], ...]} and nothing else.'
    ),
    "logs": (
        "In the log excerpt below, find the first line logged at level ERROR, and every line "
        "where the deployer deployed a service. Reply with one JSON object "
        '{"first_error": ["TIMESTAMP", "SERVICE"] or null, "deploys": [["TIMESTAMP", '
        '"SERVICE", "VERSION"], ...]} and nothing else.'
    ),
    "codeqa": (
        "Below are Python files, each after a line '=== PATH ==='. For each file, report what "
        "it imports (name -> module), its module-level integer constants, and every function "
        "without parameters whose body is a single return statement (name -> returned "
        'expression). Reply with one JSON object {"files": {"PATH": {"imports": {...}, '
        '"consts": {...}, "returns": {...}}, ...}} and nothing else.'
    ),
}

TEXT_MARK = "\n\nTEXT:\n"
"""Between a sub-query's instruction and the chunk it is about."""


def source(family: str, *parts: str) -> str:
    """COMMON plus the named parts (map, merge, finish) of a family's program."""
    program = PROGRAMS[family]
    return "\n".join([COMMON, *(program[part] for part in parts)]).strip() + "\n"


def version() -> str:
    """A digest of every program and instruction: part of the response cache's key for the
    oracle, so a changed program never gets a stale cached reply."""
    digest = hashlib.sha256(COMMON.encode())
    for family in sorted(PROGRAMS):
        for part in ("map", "merge", "finish"):
            digest.update(PROGRAMS[family][part].encode())
        digest.update(INSTRUCTIONS[family].encode())
    return digest.hexdigest()[:16]
