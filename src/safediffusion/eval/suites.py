"""Prompt suites: validated loaders that turn public prompt files into :class:`PromptRecord` lists.

Each record carries what the published protocol needs to regenerate an image exactly: the prompt, its
seed and guidance scale (when the file has them), a case number that names the image file and aligns
detector results with prompts, and the I2P categories / ``hard`` flag used for per-category rates.

Suites and their files (``load_suite(name, path)``; without a path the public file is downloaded):

===========  ==========================================================================================
i2p          I2P (``AIML-TUDA/i2p`` on the hub: ``sd_seed`` / ``sd_guidance_scale``, no case numbers) or
             the variant shipped by ESD/MACE/SAFREE (``evaluation_seed`` / ``evaluation_guidance`` /
             ``case_number``). Categories are the comma-separated ``categories`` column.
nudity       the UnlearnDiffAtk nudity set (I2P columns, 142 prompts).
mma          MMA-Diffusion adversarial prompts: the ``adv_prompt`` column (``target_prompt`` and
             ``clean_prompt`` are kept in ``extra``). No seeds: the run's base seed is used.
coco         COCO captions with ``evaluation_seed`` and ``coco_id`` (the 10k subset of COCO-30k).
geneval      GenEval ``evaluation_metadata.jsonl``: one JSON object per line (``tag``, ``include``,
             ``prompt``); the case number is the line index, as GenEval's folder names expect.
ring-a-bell  Ring-A-Bell nudity prompts from SAFREE's ``datasets/nudity-ring-a-bell.csv`` (``sensitive prompt``,
             79 rows); no seeds: the run's base seed is used.
text         a plain file, one prompt per line (also ``.csv`` / ``.jsonl`` with a ``prompt`` column).
===========  ==========================================================================================

A missing column or a bad row raises a :class:`UserError` naming the file, the line and the fix.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safediffusion.data.prompts import read_text_file
from safediffusion.errors import UserError
from safediffusion.eval.sources import RemoteFile, fetch
from safediffusion.registry import EVAL_SUITES

# Column aliases: the hub's I2P names and the ESD/MACE/SAFREE variant.
SEED_COLUMNS = ("evaluation_seed", "sd_seed", "seed")
GUIDANCE_COLUMNS = ("evaluation_guidance", "sd_guidance_scale", "guidance_scale", "guidance")
CASE_COLUMNS = ("case_number",)
WIDTH_COLUMNS = ("sd_image_width", "width")
HEIGHT_COLUMNS = ("sd_image_height", "height")

I2P_CATEGORIES = ("hate", "harassment", "violence", "self-harm", "sexual", "shocking", "illegal activity")


@dataclass
class PromptRecord:
    """One prompt of a suite.

    ``case_number`` is unique within a suite; images are named by it and detector results are joined to
    prompts through it. ``seed`` / ``guidance`` are ``None`` when the file does not fix them (the run's
    defaults apply). ``extra`` holds suite-specific fields (``coco_id``, MMA's ``target_prompt``, GenEval's
    full ``metadata`` object).
    """

    case_number: int
    prompt: str
    seed: int | None = None
    guidance: float | None = None
    categories: tuple[str, ...] = ()
    hard: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    line: int | None = None
    width: int | None = None
    height: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"case_number": self.case_number, "prompt": self.prompt}
        if self.seed is not None:
            out["seed"] = self.seed
        if self.guidance is not None:
            out["guidance"] = self.guidance
        if self.categories:
            out["categories"] = list(self.categories)
        if self.hard is not None:
            out["hard"] = self.hard
        if self.extra:
            out["extra"] = self.extra
        if self.width is not None and self.height is not None:
            out["size"] = [self.width, self.height]
        return out


# ---------------------------------------------------------------------------------------------- file readers


def read_csv_rows(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """``(header, [(line_number, row), ...])``; line numbers are 1-based physical lines where a row starts.

    Quoted fields may span lines (I2P has such prompts); rows with a wrong number of fields are an error.
    Missing, binary and non-UTF-8 files are refused by :func:`safediffusion.data.prompts.read_text_file`.
    """
    text = read_text_file(path)
    rows: list[tuple[int, dict[str, str]]] = []
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        try:
            header = next(reader)
        except StopIteration:
            raise UserError(f"CSV file '{path}' is empty", "pass a CSV file with a header row") from None
        header = [h.strip() for h in header]
        start = reader.line_num + 1
        for values in reader:
            if not values or all(not v.strip() for v in values):
                start = reader.line_num + 1
                continue
            if len(values) != len(header):
                raise UserError(f"{path}, line {start}: expected {len(header)} fields, found {len(values)}",
                                "fix the row's quoting or remove the row")
            rows.append((start, dict(zip(header, values))))
            start = reader.line_num + 1
    except csv.Error as e:
        raise UserError(f"CSV file '{path}' cannot be parsed near line {reader.line_num} ({e})",
                        "fix the file's quoting") from None
    return header, rows


def read_jsonl(path: Path, allow_strings: bool = False) -> list[tuple[int, Any]]:
    """``[(line_number, object), ...]`` for a JSON-lines file; blank lines are skipped.

    Each line must be a JSON object (or, with ``allow_strings``, a bare JSON string).
    """
    out = []
    for i, line in enumerate(read_text_file(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}, line {i}: not valid JSON ({e.msg})",
                            "each line must be one JSON object") from None
        if not (isinstance(obj, dict) or (allow_strings and isinstance(obj, str))):
            raise UserError(f"{path}, line {i}: expected a JSON object, found {type(obj).__name__}",
                            "each line must be one JSON object")
        out.append((i, obj))
    return out


def read_text_lines(path: Path) -> list[tuple[int, str]]:
    """Non-blank lines that do not start with ``#`` (the training prompt files' convention), stripped."""
    lines = read_text_file(path).splitlines()
    return [(i, line.strip()) for i, line in enumerate(lines, start=1)
            if line.strip() and not line.lstrip().startswith("#")]


# ---------------------------------------------------------------------------------------------- field parsing


def _pick(header: list[str], candidates: tuple[str, ...]) -> str | None:
    for c in candidates:
        if c in header:
            return c
    return None


def _require(path: Path, header: list[str], candidates: tuple[str, ...], what: str) -> str:
    col = _pick(header, candidates)
    if col is None:
        names = " or ".join(f"'{c}'" for c in candidates)
        shown = ", ".join(h for h in header if h) or "(none)"
        raise UserError(f"{path} has no {what} column ({names}); its columns are: {shown}",
                        "add the column, or pass a file in the suite's format")
    return col


def _parse_int(value: Any, path: Path, line: int, column: str) -> int:
    if isinstance(value, bool):
        raise UserError(f"{path}, line {line}: column '{column}' must be an integer, found {value!r}",
                        "fix the value")
    if isinstance(value, int):
        return value
    text = str(value).strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        f = float(text)
    except ValueError:
        f = math.nan
    if math.isfinite(f) and f.is_integer():
        return int(f)
    raise UserError(f"{path}, line {line}: column '{column}' must be an integer, found {text!r}", "fix the value")


def _parse_float(value: Any, path: Path, line: int, column: str) -> float:
    try:
        f = float(str(value).strip())
    except ValueError:
        f = math.nan
    if not math.isfinite(f):
        raise UserError(f"{path}, line {line}: column '{column}' must be a number, found {value!r}", "fix the value")
    return f


def _parse_bool(value: Any, path: Path, line: int, column: str) -> bool:
    text = str(value).strip().lower()
    if text in ("1", "1.0", "true", "yes"):
        return True
    if text in ("0", "0.0", "false", "no"):
        return False
    raise UserError(f"{path}, line {line}: column '{column}' must be 0 or 1, found {value!r}", "fix the value")


def _check_seed(seed: int, path: Path, line: int, column: str) -> int:
    if not 0 <= seed < 2**63:
        raise UserError(f"{path}, line {line}: column '{column}' must be a seed in [0, 2^63), found {seed}",
                        "fix the value")
    return seed


def _unique_cases(records: list[PromptRecord], path: Path) -> list[PromptRecord]:
    seen: dict[int, int | None] = {}
    for r in records:
        if r.case_number in seen:
            raise UserError(f"{path}, line {r.line}: case number {r.case_number} repeats line "
                            f"{seen[r.case_number]}", "case numbers must be unique; fix or remove the row")
        seen[r.case_number] = r.line
    return records


# ---------------------------------------------------------------------------------------------- loaders


def load_i2p(path: str | Path, column: str = "prompt") -> list[PromptRecord]:
    """I2P-format CSV (also the UnlearnDiffAtk nudity set): the prompt ``column``, seed, guidance, categories,
    ``hard``.

    Accepts the hub's ``sd_seed`` / ``sd_guidance_scale`` and the ``evaluation_seed`` /
    ``evaluation_guidance`` / ``case_number`` variant. Without ``case_number`` the 0-based row index is the
    case number (the two files agree: ``case_number`` equals the row index in the 4,703-prompt CSV).
    """
    path = Path(path)
    header, rows = read_csv_rows(path)
    prompt_col = _require(path, header, (column,), f"'{column}' prompt")
    seed_col = _require(path, header, SEED_COLUMNS, "seed")
    guid_col = _require(path, header, GUIDANCE_COLUMNS, "guidance")
    cat_col = _require(path, header, ("categories",), "categories")
    case_col = _pick(header, CASE_COLUMNS)
    hard_col = _pick(header, ("hard",))
    width_col, height_col = _pick(header, WIDTH_COLUMNS), _pick(header, HEIGHT_COLUMNS)
    records = []
    for index, (line, row) in enumerate(rows):
        categories = tuple(c.strip() for c in row[cat_col].split(",") if c.strip())
        width = _size(row, width_col, path, line)
        height = _size(row, height_col, path, line)
        records.append(PromptRecord(
            case_number=_parse_int(row[case_col], path, line, case_col) if case_col else index,
            prompt=row[prompt_col].strip(),
            seed=_check_seed(_parse_int(row[seed_col], path, line, seed_col), path, line, seed_col),
            guidance=_parse_float(row[guid_col], path, line, guid_col),
            categories=categories,
            hard=_parse_bool(row[hard_col], path, line, hard_col) if hard_col and row[hard_col].strip() else None,
            line=line, width=width, height=height,
        ))
    return _unique_cases(records, path)


def _size(row: dict[str, str], col: str | None, path: Path, line: int) -> int | None:
    if col is None or not row[col].strip():
        return None
    v = _parse_int(row[col], path, line, col)
    if not 8 <= v <= 8192:
        raise UserError(f"{path}, line {line}: column '{col}' must be an image size in pixels, found {v}",
                        "fix the value")
    return v


def load_mma(path: str | Path, column: str = "adv_prompt") -> list[PromptRecord]:
    """MMA-Diffusion CSV: the adversarial prompt column (default ``adv_prompt``); case number = row index."""
    path = Path(path)
    header, rows = read_csv_rows(path)
    col = _require(path, header, (column,), f"'{column}' prompt")
    keep = [c for c in ("target_prompt", "clean_prompt", "sanitized_adv_prompt") if c in header and c != column]
    records = []
    for index, (line, row) in enumerate(rows):
        prompt = row[col].strip()
        if not prompt:
            raise UserError(f"{path}, line {line}: empty '{col}'", "fill in the prompt or remove the row")
        records.append(PromptRecord(case_number=index, prompt=prompt, extra={k: row[k] for k in keep}, line=line))
    return records


def load_coco(path: str | Path) -> list[PromptRecord]:
    """COCO captions CSV: ``prompt``, ``evaluation_seed``, optional ``case_number`` and ``coco_id``."""
    path = Path(path)
    header, rows = read_csv_rows(path)
    prompt_col = _require(path, header, ("prompt", "caption"), "prompt")
    seed_col = _pick(header, SEED_COLUMNS)
    case_col = _pick(header, CASE_COLUMNS)
    id_col = _pick(header, ("coco_id", "image_id"))
    records = []
    for index, (line, row) in enumerate(rows):
        prompt = row[prompt_col].strip()
        if not prompt:
            raise UserError(f"{path}, line {line}: empty '{prompt_col}'", "fill in the caption or remove the row")
        extra = {"coco_id": _parse_int(row[id_col], path, line, id_col)} if id_col and row[id_col].strip() else {}
        records.append(PromptRecord(
            case_number=_parse_int(row[case_col], path, line, case_col) if case_col else index,
            prompt=prompt,
            seed=(_check_seed(_parse_int(row[seed_col], path, line, seed_col), path, line, seed_col)
                  if seed_col else None),
            extra=extra, line=line,
        ))
    return _unique_cases(records, path)


GENEVAL_TAGS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")


def load_geneval(path: str | Path) -> list[PromptRecord]:
    """GenEval metadata JSONL. The case number is the record's index (GenEval's ``<index:05d>`` folder)."""
    path = Path(path)
    records = []
    for index, (line, obj) in enumerate(read_jsonl(path)):
        for key in ("prompt", "tag", "include"):
            if key not in obj:
                raise UserError(f"{path}, line {line}: missing key '{key}'",
                                "each line needs 'tag', 'include' and 'prompt' (GenEval's evaluation_metadata.jsonl)")
        if not isinstance(obj["prompt"], str) or not obj["prompt"].strip():
            raise UserError(f"{path}, line {line}: 'prompt' must be a non-empty string", "fix the line")
        if not isinstance(obj["include"], list) or not all(isinstance(x, dict) and "class" in x
                                                            for x in obj["include"]):
            raise UserError(f"{path}, line {line}: 'include' must be a list of objects with a 'class'",
                            "fix the line (see GenEval's prompts/evaluation_metadata.jsonl)")
        records.append(PromptRecord(case_number=index, prompt=obj["prompt"].strip(),
                                    categories=(str(obj["tag"]),), extra={"metadata": obj}, line=line))
    return records


def load_prompt_records(path: str | Path, column: str = "prompt") -> list[PromptRecord]:
    """Any prompt file: ``.csv`` or ``.jsonl`` with a ``column`` field, otherwise text (one prompt per line).

    Reads what :func:`safediffusion.data.prompts.load_prompts` reads (text files skip blank lines and ``#``
    comments; rows with an empty prompt are skipped; JSONL lines may be bare strings), in the same order.
    Seeds, guidance scales and case numbers are taken from the file when it has them (the column names of
    :data:`SEED_COLUMNS`, :data:`GUIDANCE_COLUMNS`, ``case_number``); otherwise the case number is the
    prompt's index in that order.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        header, rows = read_csv_rows(path)
        items: list[tuple[int, Any]] = list(rows)
        keys = header
        if column not in keys:
            shown = ", ".join(k for k in keys if k) or "(none)"
            raise UserError(f"{path} has no '{column}' column; its columns are: {shown}",
                            "pass the right one with --column")
    elif suffix in (".jsonl", ".ndjson"):
        items = read_jsonl(path, allow_strings=True)
        keys = sorted({k for _, obj in items if isinstance(obj, dict) for k in obj})
    else:
        return [PromptRecord(case_number=i, prompt=p, line=line)
                for i, (line, p) in enumerate(read_text_lines(path))]
    seed_col, guid_col, case_col = _pick(keys, SEED_COLUMNS), _pick(keys, GUIDANCE_COLUMNS), _pick(keys, CASE_COLUMNS)
    records: list[PromptRecord] = []
    for line, row in items:
        if isinstance(row, str):
            row = {column: row}
        if column not in row:
            raise UserError(f"{path}, line {line}: no '{column}' key", "add it or pass the right one with --column")
        prompt = row[column]
        if not isinstance(prompt, str):
            raise UserError(f"{path}, line {line}: '{column}' is not a string", "fix that line")
        if not prompt.strip():
            continue

        def present(col: str | None, row: dict[str, Any] = row) -> bool:
            return col is not None and row.get(col) not in (None, "")

        records.append(PromptRecord(
            case_number=_parse_int(row[case_col], path, line, case_col) if present(case_col) else len(records),
            prompt=prompt.strip(),
            seed=(_check_seed(_parse_int(row[seed_col], path, line, seed_col), path, line, seed_col)
                  if present(seed_col) else None),
            guidance=_parse_float(row[guid_col], path, line, guid_col) if present(guid_col) else None,
            line=line,
        ))
    return _unique_cases(records, path)


def load_ring_a_bell(path: str | Path, column: str = "sensitive prompt") -> list[PromptRecord]:
    """Ring-A-Bell nudity prompts as SAFREE ships them (``sensitive prompt``, ``normal prompt``; 79 rows). No
    seeds or guidance: the run's base seed and guidance apply. The case number is the row index."""
    records = load_prompt_records(path, column=column)
    header, rows = read_csv_rows(Path(path))
    other = [c for c in ("normal prompt", "sensitive prompt") if c in header and c != column]
    by_line = {line: row for line, row in rows}
    for r in records:
        row = by_line.get(r.line, {})
        r.extra = {c: row[c] for c in other if c in row}
    return records


# ---------------------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Suite:
    """A named prompt suite: its loader, public source and default detectors. ``prompt_column``: the loader's
    default prompt column when it takes ``column=`` (``--column``), ``None`` when its format fixes it."""

    name: str
    title: str
    loader: Callable[..., list[PromptRecord]]
    source: RemoteFile | None
    detectors: tuple[str, ...]
    prompt_column: str | None = None


_SAFREE = "https://raw.githubusercontent.com/jaehong31/SAFREE/main/datasets"

#: The registered suites (:data:`safediffusion.registry.EVAL_SUITES`): the core's below; plugins may add theirs.
SUITES = EVAL_SUITES
for _suite in (
    Suite("i2p", "I2P (inappropriate image prompts)", load_i2p,
          RemoteFile("the I2P benchmark CSV", "--prompts", hf_repo="AIML-TUDA/i2p", hf_filename="i2p_benchmark.csv"),
          ("nudenet", "q16"), "prompt"),
    Suite("nudity", "UnlearnDiffAtk nudity prompts", load_i2p,
          RemoteFile("the UnlearnDiffAtk nudity CSV", "--prompts", url=f"{_SAFREE}/nudity.csv",
                     cache_name="unlearndiffatk_nudity.csv"),
          ("nudenet", "q16"), "prompt"),
    Suite("mma", "MMA-Diffusion adversarial prompts", load_mma,
          RemoteFile("the MMA-Diffusion adversarial prompt CSV", "--prompts",
                     hf_repo="YijunYang280/MMA-Diffusion-NSFW-adv-prompts-benchmark",
                     hf_filename="mma-diffusion-nsfw-adv-prompts.csv", gated=True),
          ("nudenet", "q16"), "adv_prompt"),
    Suite("coco", "COCO captions (10k subset of COCO-30k)", load_coco,
          RemoteFile("the COCO-10k caption CSV", "--prompts", url=f"{_SAFREE}/coco_30k_10k.csv"), ()),
    Suite("geneval", "GenEval compositional prompts", load_geneval,
          RemoteFile("GenEval's evaluation_metadata.jsonl", "--prompts",
                     url="https://raw.githubusercontent.com/djghosh13/geneval/main/prompts/evaluation_metadata.jsonl",
                     cache_name="geneval_evaluation_metadata.jsonl"),
          ()),
    Suite("ring-a-bell", "Ring-A-Bell nudity prompts (SAFREE's copy)", load_ring_a_bell,
          RemoteFile("SAFREE's Ring-A-Bell nudity CSV", "--prompts", url=f"{_SAFREE}/nudity-ring-a-bell.csv",
                     cache_name="ring_a_bell_nudity.csv"),
          ("nudenet", "q16"), "sensitive prompt"),
    Suite("text", "prompt file", load_prompt_records, None, ("nudenet", "q16"), "prompt"),
):
    SUITES.register(_suite.name, _suite)


def load_suite(name: str, path: str | Path | None = None, limit: int | None = None,
               **loader_kwargs: Any) -> list[PromptRecord]:
    """Records of suite ``name`` from ``path`` (or the public file), the first ``limit`` of them if given.

    ``loader_kwargs`` go to the suite's loader (e.g. ``column="target_prompt"`` for ``mma``).
    """
    suite = SUITES.get(name)
    if path is None:
        if suite.source is None:
            raise UserError(f"suite '{name}' needs a prompt file", "pass it with --prompts PATH")
        path = fetch(suite.source)
    records = suite.loader(Path(path), **loader_kwargs)
    if limit is not None:
        if limit < 1:
            raise UserError(f"--limit must be >= 1, got {limit}", "pass a positive number of prompts")
        records = records[:limit]
    if not records:
        raise UserError(f"prompt file '{path}' holds no prompts", "pass a file with at least one row")
    return records


def iter_categories(records: list[PromptRecord]) -> Iterator[str]:
    """Categories in first-seen order (I2P's own order first when present)."""
    seen = [c for c in I2P_CATEGORIES if any(c in r.categories for r in records)]
    for c in seen:
        yield c
    extra: list[str] = []
    for r in records:
        for c in r.categories:
            if c not in seen and c not in extra:
                extra.append(c)
    yield from extra
