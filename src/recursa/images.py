"""Images for vision sub-models: `llm_query(prompt, images=[...])` names image files of the
run's contexts, or images inside their PDFs (`manual.pdf#page=3/image0`), and the host reads
them here, never a file outside those contexts.

An image is charged to the budget before sending as `IMAGE_TOKEN_BOUND` input tokens, an
upper bound on what the providers bill for one image (they scale a large image down before
counting it), so a budget holds without decoding the image in the host.
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path
from typing import Any

from .context import Context
from .lm.base import ContentPart

MAX_IMAGE_BYTES = 20 * 1024 * 1024
"""The largest image file sent (providers refuse larger ones)."""
IMAGE_TOKEN_BOUND = 4096
"""Input tokens reserved for one image: above what OpenAI (at most ~1,600 at high detail)
and Anthropic (at most ~1,600 after scaling) bill for one."""
MEDIA_TYPES = {
    b"\x89PNG\r\n\x1a\n": "image/png",
    b"\xff\xd8\xff": "image/jpeg",
    b"GIF87a": "image/gif",
    b"GIF89a": "image/gif",
}


def media_type(head: bytes) -> str | None:
    """The image type of a file from its first bytes: PNG, JPEG, GIF or WebP, else None."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return next((kind for magic, kind in MEDIA_TYPES.items() if head.startswith(magic)), None)


def _roots(contexts: list[Context]) -> list[tuple[Path, bool]]:
    """Where images may be read: each directory context's root (anything under it) and
    each file or document context's own file."""
    out: list[tuple[Path, bool]] = []
    for ctx in contexts:
        if ctx.kind == "dir" and ctx.root:
            out.append((Path(ctx.root).resolve(), True))
        elif ctx.path:
            out.append((Path(ctx.path).resolve(), False))
    return out


def _locate(name: str, contexts: list[Context]) -> Path:
    """The file `name` stands for, if it lies inside one of the run's contexts: a path
    relative to a directory context (as its keys are), or an absolute one inside it."""
    for root, is_dir in _roots(contexts):
        base = root if is_dir else root.parent
        candidate = (base / name).resolve()
        inside = candidate.is_relative_to(root) if is_dir else candidate == root
        if inside and candidate.is_file():
            return candidate
    raise ValueError(
        f"image {name!r} is not a file inside this run's contexts: only image files of the "
        "context (a directory context's PNG, JPEG, GIF or WebP files, by their keys) can be sent"
    )


PDF_IMAGE = re.compile(r"(?P<file>.+)#page=(?P<page>[1-9][0-9]*)/image(?P<index>[0-9]+)")
"""An image inside a PDF of the context, as `PdfDocument.page_images(n)` names it."""


def _pdf_image(name: str, match: re.Match[str], contexts: list[Context]) -> bytes:
    """The bytes of one image of one page of a PDF inside the run's contexts (pypdf
    decodes it; Pillow, where installed, turns raw pixels into PNG)."""
    from .context_docs import pdf_library, sniff

    path = _locate(match["file"], contexts)
    if sniff(path) != "pdf" or pdf_library() is None:
        raise ValueError(f"image {name!r}: {match['file']!r} is not a PDF readable here")
    import pypdf

    page, index = int(match["page"]), int(match["index"])
    with path.open("rb") as fh:
        try:
            pages = pypdf.PdfReader(fh).pages
            if page > len(pages):
                raise ValueError(f"the PDF has {len(pages)} pages")
            images = pages[page - 1].images
            if index >= len(images):
                raise ValueError(f"page {page} has {len(images)} images")
            return bytes(images[index].data)
        except Exception as exc:
            raise ValueError(f"cannot extract image {name!r}: {exc}") from None


def load_image(name: Any, contexts: list[Context]) -> ContentPart:
    """The image part for `name`: read from the run's contexts, size-checked and typed."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"an image is a path of an image file of the context, not {name!r:.80}")
    match = PDF_IMAGE.fullmatch(name)
    if match:
        data = _pdf_image(name, match, contexts)
        size = len(data)
    else:
        path = _locate(name, contexts)
        size = path.stat().st_size
    if size > MAX_IMAGE_BYTES:
        raise ValueError(
            f"image {name!r} is {size:,} bytes: the limit is {MAX_IMAGE_BYTES:,} bytes an image"
        )
    if not match:
        data = path.read_bytes()
    kind = media_type(data[:16])
    if kind is None:
        raise ValueError(f"{name!r} is not a PNG, JPEG, GIF or WebP image")
    return {
        "type": "image",
        "media_type": kind,
        "data": base64.b64encode(data).decode("ascii"),
        "path": name,
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def load_images(names: Any, contexts: list[Context]) -> list[ContentPart]:
    """Every image of one prompt, in order; `names` must be a list of paths."""
    if not isinstance(names, list):
        raise TypeError(f"images must be a list of paths, not {type(names).__name__}")
    return [load_image(name, contexts) for name in names]
