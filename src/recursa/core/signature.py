"""Signatures: the typed contract of a program, whatever strategy runs it.

A signature names its inputs and types its outputs: a pydantic model, or a string such as
`"question, context -> answer: int, evidence: list[str]"`. Strings are parsed by a small
grammar (never `eval`): str, int, float, bool, list[T], dict[K, V], tuple[T, ...],
Optional[T], T | None and Literal['a', 'b'].
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ValidationError, create_model

from ..errors import ConfigError

_SCALARS: dict[str, Any] = {"str": str, "int": int, "float": float, "bool": bool, "Any": Any}
_NAME = re.compile(r"^[A-Za-z_]\w*$")


class SignatureError(ValueError):
    """SUBMIT's fields do not satisfy the signature; the message says exactly how."""


@dataclass(frozen=True, slots=True)
class Signature:
    inputs: tuple[str, ...]
    output: type[BaseModel]
    instructions: str = ""
    spec: str = field(default="", compare=False)

    @classmethod
    def of(cls, value: str | type[BaseModel] | Signature) -> Signature:
        if isinstance(value, Signature):
            return value
        if isinstance(value, type) and issubclass(value, BaseModel):
            return cls(("question", "context"), value, (value.__doc__ or "").strip())
        if isinstance(value, str):
            return parse_signature(value)
        raise ConfigError(f"a signature is a string or a pydantic model, not {value!r}")

    @property
    def fields(self) -> list[str]:
        return list(self.output.model_fields)

    def describe(self) -> str:
        """`answer: int, evidence: list[str]`, as the model is told."""
        return ", ".join(
            f"{name}: {_type_name(info.annotation)}"
            for name, info in self.output.model_fields.items()
        )

    def validate(self, fields: Any) -> BaseModel:
        if not isinstance(fields, dict):
            raise SignatureError(f"expected the fields {self.describe()}, got {fields!r}")
        try:
            return self.output.model_validate(fields)
        except ValidationError as exc:
            raise SignatureError(self._explain(exc, fields)) from None

    def _explain(self, exc: ValidationError, fields: dict[str, Any]) -> str:
        lines = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error["loc"]) or "(fields)"
            got = error.get("input")
            shown = "" if error["type"] == "missing" else f" (got {_short(got)})"
            lines.append(f"- {where}: {error['msg']}{shown}")
        extra = sorted(set(fields) - set(self.fields))
        if extra:
            lines.append(f"- unexpected field(s): {', '.join(extra)}")
        return f"SUBMIT needs {self.describe()}; it was rejected:\n" + "\n".join(lines)


def parse_signature(spec: str) -> Signature:
    """`"question, context -> answer: int"` to a Signature; ConfigError on a bad spec."""
    if spec.count("->") != 1:
        raise ConfigError(f"bad signature {spec!r}: expected 'inputs -> outputs'")
    left, right = spec.split("->")
    inputs = tuple(name.strip() for name in left.split(",") if name.strip())
    for name in inputs:
        if not _NAME.match(name):
            raise ConfigError(f"bad signature {spec!r}: input {name!r} is not a name")
    outputs: dict[str, Any] = {}
    for part in _split_top(right):
        name, _, type_text = part.partition(":")
        name = name.strip()
        if not _NAME.match(name):
            raise ConfigError(f"bad signature {spec!r}: output {name!r} is not a name")
        try:
            annotation = _parse_type(type_text.strip() or "str")
        except (ValueError, SyntaxError) as exc:
            raise ConfigError(f"bad signature {spec!r}: {name}: {exc}") from None
        outputs[name] = (annotation, None if _allows_none(annotation) else ...)
    if not outputs:
        raise ConfigError(f"bad signature {spec!r}: no outputs")
    model = create_model("Outputs", **outputs)
    return Signature(inputs or ("question", "context"), model, spec=spec)


def _allows_none(annotation: Any) -> bool:
    return type(None) in getattr(annotation, "__args__", ())


def _split_top(text: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in text:
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    if "".join(current).strip():
        parts.append("".join(current).strip())
    return parts


def _parse_type(text: str) -> Any:
    return _from_node(ast.parse(text, mode="eval").body)


def _from_node(node: ast.AST) -> Any:
    if isinstance(node, ast.Name):
        if node.id in _SCALARS:
            return _SCALARS[node.id]
        raise ValueError(f"unknown type {node.id!r}")
    if isinstance(node, ast.Constant) and node.value is None:
        return type(None)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return Union[_from_node(node.left), _from_node(node.right)]  # noqa: UP007
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
        args = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        base = node.value.id
        if base == "Literal":
            constants = [a for a in args if isinstance(a, ast.Constant)]
            if len(constants) != len(args):
                raise ValueError("Literal takes constants")
            return Literal[tuple(a.value for a in constants)]
        if base == "tuple" and len(args) == 2 and isinstance(args[1], ast.Constant):
            return tuple[_from_node(args[0]), ...]  # type: ignore[misc]
        parsed = [_from_node(a) for a in args]
        if base == "list" and len(parsed) == 1:
            return list[parsed[0]]  # type: ignore[valid-type]
        if base == "dict" and len(parsed) == 2:
            return dict[parsed[0], parsed[1]]  # type: ignore[valid-type]
        if base == "tuple":
            return tuple[tuple(parsed)]  # type: ignore[misc]
        if base == "Optional" and len(parsed) == 1:
            return Optional[parsed[0]]  # noqa: UP045
    raise ValueError(f"unsupported type {ast.unparse(node)!r}")


def _type_name(annotation: Any) -> str:
    text = repr(annotation) if not isinstance(annotation, type) else annotation.__name__
    return text.replace("typing.", "")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
