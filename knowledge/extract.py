"""Text out of uploaded files: PDF (pypdf), HTML (Beautiful Soup), Markdown and plain text (UTF-8).

`extract(kind, data)` returns the text page by page (one page for everything but PDF), or raises
`ExtractionError` with a reason a person understands; nothing here writes to the database.
"""

from __future__ import annotations

import io
import logging
import re
from pathlib import PurePath

logger = logging.getLogger(__name__)

KINDS_BY_SUFFIX = {
    ".pdf": "pdf",
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
    ".text": "text",
    ".html": "html",
    ".htm": "html",
}
KINDS_BY_CONTENT_TYPE = {
    "application/pdf": "pdf",
    "text/markdown": "markdown",
    "text/x-markdown": "markdown",
    "text/plain": "text",
    "text/html": "html",
}


class ExtractionError(Exception):
    """The file's text could not be read; `str(exc)` says why, for the person who uploaded it."""


def kind_of(filename: str, content_type: str = "") -> str | None:
    """The document kind (`pdf`, `markdown`, `text`, `html`) from the file name's suffix, else its content
    type; None when chatsite cannot read such files."""
    kind = KINDS_BY_SUFFIX.get(PurePath(filename).suffix.lower())
    if kind is None:
        kind = KINDS_BY_CONTENT_TYPE.get((content_type or "").split(";")[0].strip().lower())
    return kind


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ExtractionError(f"The file is not UTF-8 text (a byte at position {exc.start} is not valid).") from None


def _clean(text: str) -> str:
    # NUL cannot be stored in PostgreSQL text; other control characters are noise from PDF extraction.
    text = re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f]", " ", text)
    return re.sub(r"\n{3,}", "\n\n", text.replace("\r\n", "\n")).strip()


def _pdf_pages(data: bytes) -> list[str]:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            raise ExtractionError("The PDF is protected by a password; upload an unprotected copy.")
        pages = [page.extract_text() or "" for page in reader.pages]
    except ExtractionError:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        # pypdf raises several kinds of errors on damaged files; all mean the same to the uploader.
        logger.info("unreadable PDF: %r", exc)
        raise ExtractionError(f"The file is not a readable PDF ({exc.__class__.__name__}: {exc}).") from None
    if not pages:
        raise ExtractionError("The PDF has no pages.")
    return pages


def _html_text(data: bytes) -> str:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(data, "html.parser")
    for tag in soup(["script", "style", "noscript", "template", "head"]):
        tag.decompose()
    return soup.get_text("\n")


def extract(kind: str, data: bytes) -> list[str]:
    """The text of a file, one string per page (PDF) or a single string (the other kinds), cleaned.

    Raises:
        ExtractionError: the file is damaged, protected, not UTF-8 (text kinds), or holds no text.
    """
    if kind == "pdf":
        pages = [_clean(page) for page in _pdf_pages(data)]
    elif kind == "html":
        pages = [_clean(_html_text(data))]
    elif kind in ("markdown", "text"):
        pages = [_clean(_decode(data))]
    else:
        raise ExtractionError(f"chatsite cannot read '{kind}' files.")
    if not any(pages):
        hint = " (a scanned PDF has only images; chatsite does not read text from images)" if kind == "pdf" else ""
        raise ExtractionError(f"The file holds no text{hint}.")
    return pages
