"""Splitting text into chunks of a set size in tokens, with overlap, keeping each chunk's offsets.

The splitter is semchunk (https://github.com/isaacus-dev/semchunk): it splits at the most meaningful
boundary that fits (blank lines, then lines, sentences, words) and reports each chunk's character span.
Tokens are counted with the default embedding model's WordPiece tokenizer (all-MiniLM-L6-v2's
`tokenizer.json`, through the `tokenizers` library), so a chunk of N tokens is what that model reads; for
other embedding models it is a close estimate.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import semchunk


@dataclass(frozen=True)
class Piece:
    """One chunk: its text, its character span `[start, end)` in the document text, page, tokens."""

    text: str
    start: int
    end: int
    page: int | None
    token_count: int


@functools.cache
def _tokenizer():
    from tokenizers import Tokenizer

    from knowledge.embeddings.local import default_model_path

    tokenizer = Tokenizer.from_file(str(default_model_path() / "tokenizer.json"))
    # The file pads and cuts every text to 128 tokens (as the model was trained); counting needs neither.
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def count_tokens(text: str) -> int:
    """Tokens of `text` for the default embedding model (no special tokens)."""
    return len(_tokenizer().encode(text, add_special_tokens=False).ids)


@functools.cache
def _chunker(size: int):
    return semchunk.chunkerify(count_tokens, chunk_size=size)


def split_pages(pages: list[str], *, size: int, overlap: int, paged: bool) -> tuple[str, list[Piece]]:
    """Join `pages` into the document text (blank line between pages) and split each page into chunks.

    Args:
        size: most tokens per chunk (>= 16).
        overlap: tokens neighbouring chunks share (< size).
        paged: whether `pages` are real pages (PDF): chunks then carry their page number, from 1.

    Returns:
        `(text, pieces)`: the document text and its chunks in order; chunks never cross a page.
    """
    overlap = max(0, min(overlap, size // 2))
    chunker = _chunker(size)
    text_parts: list[str] = []
    pieces: list[Piece] = []
    offset = 0
    for number, page in enumerate(pages, start=1):
        if number > 1:
            text_parts.append("\n\n")
            offset += 2
        text_parts.append(page)
        if page.strip():
            chunks, spans = chunker(page, offsets=True, overlap=overlap or None)
            for chunk, (start, end) in zip(chunks, spans, strict=True):
                if not chunk.strip():
                    continue
                pieces.append(
                    Piece(
                        text=chunk,
                        start=offset + start,
                        end=offset + end,
                        page=number if paged else None,
                        token_count=count_tokens(chunk),
                    )
                )
        offset += len(page)
    return "".join(text_parts), pieces
