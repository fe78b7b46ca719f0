"""What the commands print and the exit code they end with: one place for the contract's
exit codes and the one-line report of a run, shared by `run`, `demo`, `batch` and
`pipeline`."""

from __future__ import annotations

import json
import re
import sys
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from ..core.programs import RunResult

from ..core.status import LIMIT_STATUSES

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_LIMIT, EXIT_DIVERGED = 0, 1, 2, 3, 4


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """Text from a model, a trace or the run store, safe to show on a terminal: control
    characters (an escape sequence could rewrite the screen, the title or the clipboard)
    are shown as `\\xNN`; newlines and tabs stay."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def answer_text(answer: object) -> str:
    """An answer as printed without --json: as it is when piped, made printable on a
    terminal (the bytes a script reads are the answer itself)."""
    text = answer if isinstance(answer, str) else json.dumps(answer, ensure_ascii=False)
    return printable(text) if sys.stdout.isatty() else text


def fail(message: str, code: int) -> int:
    """Print `recursa: error: MESSAGE` on standard error; returns `code`."""
    click.echo(f"recursa: error: {printable(message)}", err=True)
    return code


def one_line(exc: BaseException) -> str:
    """An exception as one line of text (its name where it says nothing)."""
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())


def status_code(status: str) -> int:
    """The exit code for a run that ended with `status`."""
    if status == "ok":
        return EXIT_OK
    return EXIT_LIMIT if status in LIMIT_STATUSES else EXIT_ERROR


def report(result: RunResult, as_json: bool) -> int:
    """Print a run's answer (or its JSON) on standard output and why it stopped, if it did
    not end well, on standard error; returns the exit code."""
    code = status_code(result.status)
    if as_json:
        click.echo(json.dumps(result.to_dict(), ensure_ascii=False))
    elif result.answer is not None:
        answer = result.answer
        click.echo(answer_text(answer))
    if code == EXIT_ERROR:
        click.echo(f"recursa: error: {result.error or 'the run failed'}", err=True)
    elif code == EXIT_LIMIT:
        why = f": {result.error}" if result.error else ""
        click.echo(f"recursa: stopped ({result.status}){why}", err=True)
    return code


def note_stdin(paths: tuple[str, ...]) -> None:
    """`--context -` from a terminal waits for typing: say so, or it looks like a hang."""
    if "-" in paths and sys.stdin.isatty():
        click.echo(
            "recursa: reading the context from standard input; end it with Ctrl-D "
            "(or pipe a file in: ... --context - < FILE)",
            err=True,
        )
