"""The parts of ``docs/`` generated from the code, so that they cannot drift from it: the parameter tables of
``docs/configuration.md`` from :class:`pipeline.run.parameters.Parameters`, and the hand-off tables of
``docs/handoffs.md`` from the declarations of :mod:`pipeline.handoffs.contract`.

A page keeps its hand-written text; only the block between ``<!-- generated: NAME -->`` and
``<!-- end generated -->`` is rewritten. After changing a parameter or a hand-off, regenerate with
``.venv/bin/python -m pipeline.handoffs.reference_pages`` (``tests/project/test_docs.py`` fails until then).
It lives in ``handoffs`` because that is the lowest layer allowed to read both the configuration and the contract.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np

from pipeline.handoffs import contract
from pipeline.run.config import PROJECT_ROOT
from pipeline.run.parameters import Parameters, Rule

DOCS = PROJECT_ROOT / "docs"
END = "<!-- end generated -->"


def begin(name: str) -> str:
    """The line that opens the generated block ``name``."""
    return f"<!-- generated: {name} -->"


def markdown_table(header: tuple, rows: list) -> str:
    """A markdown table of ``rows`` (tuples of cell text) under ``header``; ``|`` in a cell is escaped.

    >>> print(markdown_table(("a", "b"), [("1", "x|y")]))
    | a | b |
    | --- | --- |
    | 1 | x\\|y |
    """
    lines = [header, ("---",) * len(header), *rows]
    return "\n".join("| " + " | ".join(str(cell).replace("|", "\\|") for cell in line) + " |" for line in lines)


def toml_value(value) -> str:
    """A parameter value as it is written in the scene TOML.

    >>> toml_value(True), toml_value(("red", "green")), toml_value((0, 1)), toml_value(30.0), toml_value("cnn")
    ('true', '["red", "green"]', '[0, 1]', '30.0', '"cnn"')
    """
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return "[" + ", ".join(f'"{v}"' if isinstance(v, str) else str(v) for v in value) + "]"
    return f'"{value}"' if isinstance(value, str) else str(value)


def flag(name: str, default) -> str:
    """The command-line flag of parameter ``name`` (both forms for a switch), as :mod:`pipeline.run.cli` makes it."""
    text = "--" + name.replace("_", "-")
    return f"`{text}` / `--no-{text[2:]}`" if isinstance(default, bool) else f"`{text}`"


def number(value: float) -> str:
    """A bound as the page shows it: whole numbers in full, others shortest.

    >>> number(4294967295.0), number(0.0), number(1e-06)
    ('4294967295', '0', '1e-06')
    """
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def accepted(rule: Rule, default) -> str:
    """What a parameter accepts, from its :class:`~pipeline.run.config.Rule`."""
    if isinstance(default, bool):
        return "true or false"
    if rule.choices:
        how_many = f"{rule.count} of" if rule.count else "one of" if isinstance(default, str) else "any of"
        return f"{how_many} {', '.join(map(str, rule.choices))}"
    bounds = [f">= {number(rule.minimum)}" if rule.minimum is not None else "",
              f"<= {number(rule.maximum)}" if rule.maximum is not None else "", "odd" if rule.odd else ""]
    kind = "integer" if isinstance(default, int) else "number"
    return ", ".join([kind, *filter(None, bounds)])


def parameter_tables() -> str:
    """One table per TOML section (in the order of :class:`Parameters`): parameter, default, flag, accepted
    values, meaning."""
    sections = {}
    for name, (rule, default) in Parameters.rules().items():
        row = (f"`{name}`", f"`{toml_value(default)}`", flag(name, default), accepted(rule, default), rule.help)
        sections.setdefault(rule.section, []).append(row)
    return "\n\n".join(f"### `[{section}]`\n\n" + markdown_table(("parameter", "default", "flag", "accepts",
                                                                  "meaning"), rows)
                       for section, rows in sections.items())


def declared(kind: type) -> list:
    """The declarations of ``kind`` (HandOff, RasterHandOff) in the contract, in the order they are made there."""
    return [value for value in vars(contract).values() if isinstance(value, kind)]


def shown_name(filename: str) -> str:
    """A hand-off's file name with its fields shown as ``<field>``: ``Samples_classBalanced_<per_class>.mat``."""
    return re.sub(r"\{(\w+)\}", r"<\1>", filename)


def dtype_name(kind) -> str:
    """A declared key type as the page names it."""
    if kind == contract.TEXT:
        return "text"
    if kind == contract.PATCHES:
        return "patches (uint8 steps of `patch_scale`)"
    return np.dtype(kind).name


def nodata_text(value) -> str:
    """A raster's nodata value as the page shows it."""
    if value is None:
        return "none"
    return "NaN" if value != value else f"{value:g}"


def handoff_tables() -> str:
    """A table of the ``.mat`` hand-offs (file, maker, keys and dtypes, MATLAB version) and one of the raster
    hand-offs (file, maker, bands, dtype, nodata, scale, run stamp)."""
    mat_rows = [(f"`{shown_name(h.filename)}`", f"`{h.made_by}`",
                 ", ".join(f"`{key}` {dtype_name(kind)}" for key, kind in h.keys.items()),
                 "v5, arrays compressed where that pays (7.3 past 2 GB)" if h.compressed else "v5 (7.3 past 2 GB)")
                for h in declared(contract.HandOff)]
    raster_rows = [(f"`{r.filename}`", f"`{r.made_by}`",
                    f"{r.bands}: {', '.join(r.band_names)}" if r.band_names else str(r.bands), np.dtype(r.dtype).name,
                    nodata_text(r.nodata), f"1/{round(1 / r.scale)}" if r.scale else "none", f"`{r.run_item}`")
                   for r in declared(contract.RasterHandOff)]
    return "\n\n".join([
        "### MATLAB files\n\n" + markdown_table(("file", "made by", "keys and dtypes", "MATLAB version"), mat_rows),
        "### Rasters (Cloud-Optimized GeoTIFF)\n\n" + markdown_table(
            ("file", "made by", "bands", "dtype", "nodata", "scale", "run stamp"), raster_rows)])


#: Page -> (block name, the function that generates the block).
GENERATED = {"configuration.md": ("parameters", parameter_tables), "handoffs.md": ("handoffs", handoff_tables)}


def block_span(text: str, name: str) -> tuple[int, int]:
    """Where the content of the generated block ``name`` lies in a page's ``text``: between its marker lines."""
    start = text.find(begin(name))
    end = text.find(END, start)
    if start < 0 or end < 0:
        raise ValueError(f"no block between {begin(name)!r} and {END!r}")
    return start + len(begin(name)), end


def block_of(text: str, name: str) -> str:
    """The content of the generated block ``name`` in a page's ``text``."""
    start, end = block_span(text, name)
    return text[start:end].strip("\n")


def with_block(text: str, name: str, content: str) -> str:
    """``text`` with the generated block ``name`` holding ``content``."""
    start, end = block_span(text, name)
    return f"{text[:start]}\n{content}\n{text[end:]}"


def regenerate(folder: Path = DOCS) -> list[str]:
    """Rewrite every generated block under ``folder``; the pages whose block changed."""
    changed = []
    for page, (name, generate) in GENERATED.items():
        path = folder / page
        text = path.read_text()
        new = with_block(text, name, generate())
        if new != text:
            path.write_text(new)
            changed.append(page)
    return changed


def main() -> int:
    changed = regenerate()
    print(f"regenerated: {', '.join(changed)}" if changed else "docs/ is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
