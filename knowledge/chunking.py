"""Splitting text into chunks of a set size in tokens, with overlap, keeping each chunk's offsets.

The splitter is semchunk (https://github.com/isaacus-dev/semchunk): it splits at the most meaningful
boundary that fits (blank lines, then lines, sentences, words) and reports each chunk's character span. It
makes pieces of `size - overlap` tokens with no overlap; each piece then reaches back into the one before by
up to `overlap` tokens, from the earliest sentence start (else word start) that fits. (semchunk's own overlap
builds chunks out of `overlap`-sized pieces, which left them at about half the size asked for, often starting
mid-sentence.)
Tokens are counted with the default embedding model's WordPiece tokenizer (all-MiniLM-L6-v2's
`tokenizer.json`, through the `tokenizers` library), so a chunk of N tokens is what that model reads; for
other embedding models it is a close estimate.
"""

from __future__ import annotations

import bisect
import functools
import re
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


SENTENCE_START = re.compile(r"(?:(?<=[.!?:;])\s+|\n+)(?=\S)")
WORD_START = re.compile(r"\s+(?=\S)")


def _reach_back(text: str, earliest: int, start: int, overlap: int) -> int:
    """The earliest sentence start (else word start) in `text[earliest:start]` from which at most `overlap`
    tokens lead up to `start`; `start` itself when none fits."""
    for pattern in (SENTENCE_START, WORD_START):
        starts = [m.end() for m in pattern.finditer(text, earliest, start) if m.end() < start]
        # Fewer tokens the later the start: find the first that fits by bisection.
        first = bisect.bisect_left(starts, True, key=lambda p: count_tokens(text[p:start]) <= overlap)
        if first < len(starts):
            return starts[first]
    return start


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
    chunker = _chunker(size - overlap)
    text_parts: list[str] = []
    pieces: list[Piece] = []
    offset = 0
    for number, page in enumerate(pages, start=1):
        if number > 1:
            text_parts.append("\n\n")
            offset += 2
        text_parts.append(page)
        if page.strip():
            _, spans = chunker(page, offsets=True)
            previous_start = 0
            for start, end in spans:
                if not page[start:end].strip():
                    continue
                begin = _reach_back(page, previous_start, start, overlap) if overlap and start > 0 else start
                previous_start = start
                chunk = page[begin:end]
                pieces.append(
                    Piece(
                        text=chunk,
                        start=offset + begin,
                        end=offset + end,
                        page=number if paged else None,
                        token_count=count_tokens(chunk),
                    )
                )
        offset += len(page)
    return "".join(text_parts), pieces
