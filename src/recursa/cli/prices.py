"""`recursa prices`: the price table a run would use, with each entry's source and date.

Registered by `recursa.cli.main`; only click is imported at module level.
"""

from __future__ import annotations

import json
from typing import Any

import click

from .options import option
from .output import EXIT_OK

_COLUMNS = ("MODEL", "INPUT", "OUTPUT", "CACHE_READ", "CACHE_WRITE", "AS_OF", "SOURCE")


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


@click.command("prices")
@click.argument("match", required=False)
@option("price_args")
@option("prices_file")
@click.option("--json", "as_json", is_flag=True, help="One JSON object: model -> price.")
def prices_command(
    match: str | None, price_args: tuple[str, ...], prices_file: str | None, as_json: bool
) -> int:
    """List model prices (USD per million tokens): the shipped table with --prices and
    --price applied, as `recursa run` would price. MATCH keeps models containing it."""
    from ..options import price_table

    table = price_table(prices_file, price_args)
    rows = sorted(
        (model, price)
        for model, price in table.prices.items()
        if not match or match.lower() in model
    )
    if as_json:
        out: dict[str, Any] = {
            model: {
                "input_per_mtok": p.input_per_mtok,
                "output_per_mtok": p.output_per_mtok,
                "cache_read_per_mtok": p.cache_read_per_mtok,
                "cache_write_per_mtok": p.cache_write_per_mtok,
                "source": p.source,
                "as_of": p.as_of,
            }
            for model, p in rows
        }
        click.echo(json.dumps(out, indent=2))
        return EXIT_OK
    cells = [_COLUMNS] + [
        (
            model,
            _rate(p.input_per_mtok),
            _rate(p.output_per_mtok),
            _rate(p.cache_read_per_mtok),
            _rate(p.cache_write_per_mtok),
            p.as_of or "-",
            p.source or "(given)",
        )
        for model, p in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(_COLUMNS) - 1)]
    for row in cells:
        head = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
        click.echo(f"{head}  {row[-1]}")
    click.echo(
        "USD per million tokens; a cache rate shown as - is the input rate. Local providers "
        "(ollama, vllm, llamacpp, lmstudio) are free; azure/NAME is priced as openai/NAME. "
        "The shipped rates were entered by hand from each SOURCE: check it before relying "
        "on a cost, and override with --price or --prices.",
        err=True,
    )
    return EXIT_OK
