"""Every figure table in README.md agrees with the committed results file(s) it names, rounded as printed.

Above each figure table the README holds a marker: an HTML comment `<!-- figures` ... `-->` whose body is YAML:

    source: eval/results/bench-encode-cpu.json   # the file rows are read from, unless a row names another
    names: {a: {threads: 1}}                      # names every row binds, the row's `where` added to each
    rows:                                         # one entry per table row, in order
      - {r: {backend: reference}}                 # name -> the one record of the file with these key values
      - {r: {file: eval/results/other.json}}      # `file:` reads that file instead (an object is one record)
      - {where: {engine: lsr}}                    # a: the record with threads 1 and engine lsr
      - {skip: why}                               # a row that is not checked (say why)
    columns:                                      # header -> expression(s) over the row's names
      docs/s: r.docs_per_s                        # one number in the cell
      nDCG@10 / R@100: [nDCG10(r), R100(r)]       # several numbers, in order (helpers: see SAFE)
    not_reproduced: [query latency (ms) †]        # columns printed from files that are not committed

`<!-- figures: FILE -->` names the source only: the file must exist, and the test warns that the table's numbers
are not checked until the marker maps its columns.

Figures no committed file holds are marked † in the README: a `skip` row in its first cell, a `not_reproduced`
column in its header.

A results file's records are its list (a JSON list, the `results` / `rows` list of an object, the lines of a
JSON Lines file), or the object itself. A row may override columns with `cells: {header: expression or null}`
(null: not checked). Every number printed in a checked cell must equal its expression rounded to the digits
printed (an integer ending in zeros, like 29,100, is taken as rounded to those zeros).

Figures in prose: a `<!-- figures-text` marker above a paragraph names records the same way and lists `claims`,
phrases of the paragraph with the expression(s) for their numbers (see check_text).
"""
from __future__ import annotations

import json
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
MARKER = re.compile(r"<!--\s*figures(?!-text)\b(.*?)-->", re.S)
NUMBER = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+)?(\.\d+)?(e[-+]?\d+)?")


# -- the README's marked tables --------------------------------------------------------------------------
@dataclass
class Table:
    line: int  # 1-based line of the header row
    spec: dict[str, Any]
    header: list[str]
    rows: list[list[str]]


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def marked_tables(text: str) -> list[Table]:
    tables = []
    for match in MARKER.finditer(text):
        body = match.group(1).strip()
        # `<!-- figures: FILE -->` names the source alone: its numbers are not mapped (check_table says so)
        spec = {"source": body[1:].strip()} if body.startswith(":") else yaml.safe_load(body) or {}
        lines = text[match.end():].splitlines()
        start = text[:match.end()].count("\n")  # 0-based number of the line where the marker ends
        i = 1
        while i < len(lines) and not lines[i].strip():
            i += 1
        assert i < len(lines) and lines[i].lstrip().startswith("|"), \
            f"README line {start + 1}: a figures marker must stand right above its table"
        header = _cells(lines[i])
        body = []
        j = i + 2  # past the |---| line
        while j < len(lines) and lines[j].lstrip().startswith("|"):
            body.append(_cells(lines[j]))
            j += 1
        tables.append(Table(start + i + 1, spec, header, body))
    return tables


def printed_numbers(cell: str) -> list[str]:
    cell = cell.replace("**", "").replace("`", "")
    return [m.group(0) for m in NUMBER.finditer(cell) if m.group(1) or m.group(2)]


def tolerance(token: str) -> float:
    """Half a unit of the last printed digit (an integer's trailing zeros count as rounding)."""
    mantissa, _, exponent = token.replace(",", "").partition("e")
    if "." in mantissa:
        unit = 10.0 ** -len(mantissa.split(".")[1])
    else:
        zeros = len(mantissa) - len(mantissa.rstrip("0")) if mantissa.strip("0") else 0
        unit = 10.0 ** zeros
    return 0.5 * unit * 10.0 ** int(exponent or 0)


def agrees(token: str, value: float) -> bool:
    printed = float(token.replace(",", ""))
    return math.isfinite(value) and abs(value - printed) <= tolerance(token) * (1 + 1e-9) + 1e-12


# -- the results files -----------------------------------------------------------------------------------
class Record:
    """A JSON value with attribute access to its keys (r.docs_per_s, r.metrics["nDCG@10"])."""

    def __init__(self, value: Any) -> None:
        self._value = value

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return self[name]

    def __getitem__(self, key: Any) -> Any:
        try:
            value = self._value[key]
        except (KeyError, IndexError, TypeError):
            raise KeyError(f"no {key!r} in {json.dumps(self._value)[:200]}") from None
        return Record(value) if isinstance(value, (dict, list)) else value


_loaded: dict[str, Any] = {}


def records(path: str) -> list[dict[str, Any]]:
    assert path.startswith("eval/results/"), f"{path}: figures come from committed files under eval/results/"
    if path not in _loaded:
        file = REPO / path
        assert file.is_file(), f"{path} is missing"
        text = file.read_text()
        _loaded[path] = [json.loads(line) for line in text.splitlines() if line.strip()] \
            if file.suffix == ".jsonl" else json.loads(text)
    data = _loaded[path]
    if isinstance(data, dict):
        for key in ("results", "rows"):
            if isinstance(data.get(key), list):
                return data[key]
        return [data]
    return data


def select(where: dict[str, Any], default: str | None) -> Record:
    where = dict(where or {})
    path = where.pop("file", default)
    assert path, f"no file for {where}"
    found = [r for r in records(path) if all(r.get(k) == v for k, v in where.items())]
    assert len(found) == 1, f"{path}: {len(found)} records match {where}, not one"
    return Record(found[0])


class Names(dict):
    """A row's names, each looked up in its file when an expression first uses it (a row may bind names that
    only some columns use, such as a second thread count an engine does not have)."""

    def __init__(self, wheres: dict[str, dict[str, Any]], default: str | None) -> None:
        super().__init__()
        self.wheres, self.default = wheres, default

    def __missing__(self, name: str) -> Record:
        if name not in self.wheres:
            raise KeyError(name)
        self[name] = select(self.wheres[name], self.default)
        return self[name]


def row_names(spec: dict[str, Any], entry: dict[str, Any]) -> Names:
    """The shared `names` with the row's `where` added to each, and the row's own names."""
    where = entry.pop("where", None) or {}
    wheres = {name: {**w, **where} for name, w in (spec.get("names") or {}).items()}
    return Names({**wheres, **entry}, spec.get("source"))


SAFE = {"__builtins__": {}, "min": min, "max": max, "abs": abs, "sum": sum, "len": len,
        # keys that are not Python names: an eval report's metrics, a bench query row's recall
        "nDCG10": lambda r: r.metrics["nDCG@10"], "R100": lambda r: r.metrics["R@100"],
        "RR10": lambda r: r.metrics["RR@10"], "recall10": lambda r: r["recall@10"]}
NOT_REPRODUCED = "†"  # the README's mark on a figure that no committed file holds


def check_table(table: Table) -> list[str]:
    """The disagreements of one marked table, one line each."""
    spec = table.spec
    problems = []
    if "rows" not in spec:  # the source named, no mapping: the file must be there, its numbers go unchecked
        records(spec["source"])
        warnings.warn(f"README line {table.line}: the table names {spec['source']} but maps no columns to it, so "
                      "its numbers are not checked")
        return problems
    entries = spec.get("rows") or []
    assert len(entries) == len(table.rows), \
        f"README line {table.line}: the marker lists {len(entries)} rows, the table has {len(table.rows)}"
    columns = spec.get("columns") or {}
    unknown = set(columns) | set(spec.get("not_reproduced") or [])
    assert unknown <= set(table.header), f"README line {table.line}: no columns {unknown - set(table.header)}"
    for header in spec.get("not_reproduced") or []:
        if NOT_REPRODUCED not in header:
            problems.append(f"README line {table.line}: column {header!r} is not reproduced: mark it {NOT_REPRODUCED}")
    for n, (entry, row) in enumerate(zip(entries, table.rows), start=1):
        entry = dict(entry or {})
        if "skip" in entry:
            if NOT_REPRODUCED not in row[0]:
                problems.append(f"README line {table.line + 1 + n}: an unchecked row ({entry['skip']}): mark it "
                                f"{NOT_REPRODUCED}")
            continue
        cells = {**columns, **(entry.pop("cells", None) or {})}
        names = row_names(spec, entry)
        for header, expressions in cells.items():
            if expressions is None:
                continue
            cell = row[table.header.index(header)]
            if printed_numbers(cell):  # else blank or words ("(same index)")
                problems += compare(f"README line {table.line + 1 + n}, {header!r} ({cell!r})", cell, expressions,
                                    names)
    return problems


def compare(where: str, text: str, expressions, names: Names) -> list[str]:
    """The numbers printed in `text` against their expressions, in order: one line per disagreement."""
    expressions = expressions if isinstance(expressions, list) else [expressions]
    printed = printed_numbers(text)
    if len(printed) != len(expressions):
        return [f"{where}: {len(printed)} numbers printed, {len(expressions)} in the marker"]
    problems = []
    for token, expression in zip(printed, expressions):
        value = float(eval(str(expression), SAFE, names))  # noqa: S307 - the repository's own README
        if not agrees(token, value):
            problems.append(f"{where}: printed {token}, the file gives {value:.6g} ({expression})")
    return problems


TABLES = marked_tables(README.read_text(encoding="utf-8"))


# -- figures in prose ------------------------------------------------------------------------------------
# `<!-- figures-text` ... `-->` above a paragraph: `source` and `names` (name -> the one record with these key
# values, `file:` as in tables), then `claims`: a phrase of the paragraph (as printed, ** and line breaks
# aside) -> the expression(s) for the numbers in it.
TEXT_MARKER = re.compile(r"<!--\s*figures-text\b(.*?)-->\n(.*?)(?:\n\s*\n|\Z)", re.S)


def check_text(spec: dict[str, Any], paragraph: str) -> list[str]:
    flat = " ".join(paragraph.replace("**", "").split())
    names = row_names(spec, {})
    problems = []
    for phrase, expressions in (spec.get("claims") or {}).items():
        if phrase not in flat:
            problems.append(f"{phrase!r} is not in the paragraph {flat[:80]!r}...")
            continue
        problems += compare(repr(phrase), phrase, expressions, names)
    return problems


TEXTS = [(yaml.safe_load(m.group(1)), m.group(2)) for m in TEXT_MARKER.finditer(README.read_text(encoding="utf-8"))]


@pytest.mark.parametrize("spec,paragraph", TEXTS, ids=[f"text{i}" for i in range(len(TEXTS))])
def test_readme_prose_figures_agree_with_their_results_files(spec, paragraph):
    problems = check_text(spec, paragraph)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("table", TABLES, ids=[f"line{t.line}" for t in TABLES])
def test_readme_table_agrees_with_its_results_file(table):
    problems = check_table(table)
    assert not problems, "\n".join(problems)


def test_every_figure_table_has_a_marker():
    """A table printing decimal figures (nDCG, ms, x) says where they come from."""
    text = README.read_text(encoding="utf-8").splitlines()
    marked = {t.line for t in TABLES}
    for i, line in enumerate(text):
        starts = line.lstrip().startswith("|") and (i == 0 or not text[i - 1].lstrip().startswith("|"))
        if not starts:
            continue
        block = []
        for later in text[i:]:
            if not later.lstrip().startswith("|"):
                break
            block.append(later)
        if any(re.search(r"\d\.\d", later) for later in block[2:]):
            assert i + 1 in marked, f"README line {i + 1}: a table of figures without a `<!-- figures` marker"


# -- the checker itself ----------------------------------------------------------------------------------
def test_rounding_as_printed():
    assert agrees(".6435", 0.64349) and agrees("0.6435", 0.64354) and not agrees(".6435", 0.6437)
    assert agrees("29,100", 29068.0) and not agrees("29,100", 29160.0)  # rounded to hundreds
    assert agrees("674", 673.5) and not agrees("674", 672.9)
    assert agrees("5.7e-6", 5.66e-6) and not agrees("5.7e-6", 5.8e-6)
    assert agrees("0", 0.0) and not agrees("1.00", float("nan"))
    assert printed_numbers("**12.6**") == ["12.6"]
    assert printed_numbers("1,122 MB -> 94 MB (12x)") == ["1,122", "94", "12"]
    assert printed_numbers("1484.7 (674)*") == ["1484.7", "674"]
    assert printed_numbers(".6878 / .9180") == [".6878", ".9180"]
    assert printed_numbers("(same index)") == []


def test_a_disagreeing_figure_is_reported(tmp_path):
    table = Table(1, {"source": "eval/results/bench-encode-cpu.json",
                      "rows": [{"r": {"backend": "reference"}}], "columns": {"docs/s": "r.docs_per_s"}},
                  ["encoder", "docs/s"], [["reference", "99.9"]])
    assert len(check_table(table)) == 1
    table.rows = [["reference", "21.8"]]
    assert check_table(table) == []
