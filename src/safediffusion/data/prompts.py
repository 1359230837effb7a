"""Prompt files: plain text (one per line), CSV (a named column) and JSONL (a named key).

Every problem — a missing, empty or binary file, a CSV without the column, a bad JSONL line — raises a
:class:`~safediffusion.errors.UserError` naming the file (and line) and the fix.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from safediffusion.errors import UserError

_BINARY_SNIFF_BYTES = 8192


def read_text_file(path: str | Path, what: str = "prompt file") -> str:
    """The file's text, refusing missing, binary or non-UTF-8 files with one clear line."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{what} '{path}' does not exist", "check the path")
    if p.is_dir():
        raise UserError(f"{what} '{path}' is a directory", "pass a .txt, .csv or .jsonl file")
    raw = p.read_bytes()
    if b"\x00" in raw[:_BINARY_SNIFF_BYTES]:
        raise UserError(f"{what} '{path}' is a binary file, not text",
                        "pass a UTF-8 .txt (one prompt per line), .csv or .jsonl file")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise UserError(f"{what} '{path}' is not UTF-8 text (line {line})", "re-save it as UTF-8") from None


def _from_txt(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _from_csv(text: str, path: str, column: str) -> list[str]:
    reader = csv.DictReader(text.splitlines())
    fields = reader.fieldnames or []
    if column not in fields:
        shown = ", ".join(f for f in fields if f) or "(none)"
        raise UserError(f"CSV file '{path}' has no column '{column}' (columns: {shown})",
                        "pass the right column name (e.g. data.prompt_column=... or --column)")
    prompts = []
    for row in reader:
        value = (row.get(column) or "").strip()
        if value:
            prompts.append(value)
    return prompts


def _from_jsonl(text: str, path: str, column: str) -> list[str]:
    prompts = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise UserError(f"JSONL file '{path}' line {lineno} is not valid JSON",
                            "write one JSON object per line") from None
        if isinstance(record, str):
            value = record
        elif isinstance(record, dict):
            if column not in record:
                raise UserError(f"JSONL file '{path}' line {lineno} has no key '{column}'",
                                "add the key or pass the right one (e.g. data.prompt_column=...)")
            value = record[column]
        else:
            raise UserError(f"JSONL file '{path}' line {lineno} is neither an object nor a string",
                            "write one JSON object per line")
        if not isinstance(value, str):
            raise UserError(f"JSONL file '{path}' line {lineno}: '{column}' is not a string", "fix that line")
        if value.strip():
            prompts.append(value.strip())
    return prompts


def load_prompts(path: str | Path, column: str = "prompt", what: str = "prompt file") -> list[str]:
    """Prompts from a ``.txt`` / ``.csv`` / ``.jsonl`` file (format by extension; other extensions: text).

    Text files skip blank lines and lines starting with ``#``.
    """
    text = read_text_file(path, what)
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        prompts = _from_csv(text, str(path), column)
    elif suffix in (".jsonl", ".ndjson"):
        prompts = _from_jsonl(text, str(path), column)
    else:
        prompts = _from_txt(text)
    if not prompts:
        raise UserError(f"{what} '{path}' contains no prompts", "add at least one non-empty prompt")
    return prompts
