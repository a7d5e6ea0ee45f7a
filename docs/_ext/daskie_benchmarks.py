"""``.. benchmark-table::``: a table of measured records read from ``benchmarks/results/`` when
the docs are built, with the command that made them and the machine they ran on.

The numbers are never retyped into the docs: a changed JSON file changes the page at the next
build. The command and machine lines come from the records' own fields (``command``,
``host_cores``, ``torch``, ``torch_threads``, ``load_1m``, ``date``, ...); where older records
lack them, the directive's ``:command:`` / ``:machine:`` options say what the README said about
them, and the page marks that text as not taken from the records.

Usage::

    .. benchmark-table:: benchmarks/results/operator.json
       :where: phase=accuracy
       :columns: family, optimizer, n_train, rel_l2_median, rel_l2_p95, train_s
       :command: python benchmarks/operator.py --out operator.json
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective

MACHINE_FIELDS = ("host_cores", "cores", "platform", "torch", "torch_threads", "threads",
                  "workers", "load_1m", "load_at_start", "load_start", "loadavg_before", "date")


def _fmt(value) -> str:
    if value is None:
        return "--"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if value == 0:
            return "0"
        if abs(value) < 1e-3 or abs(value) >= 1e5:
            return f"{value:.2e}"
        return f"{value:.3g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    return str(value).replace("|", "/")


def _matches(record: dict, where: dict) -> bool:
    for key, allowed in where.items():
        value = record.get(key)
        if _fmt(value) not in allowed and str(value) not in allowed:
            return False
    return True


def _parse_where(text: str | None) -> dict:
    where = {}
    for clause in (text or "").split(";"):
        if clause.strip():
            key, _, values = clause.partition("=")
            where[key.strip()] = {v.strip() for v in values.split(",")}
    return where


def _span(values) -> str:
    values = sorted({_fmt(v) for v in values if v is not None})
    if not values:
        return ""
    return values[0] if len(values) == 1 else f"{values[0]} to {values[-1]}"


def machine_line(records, meta) -> str:
    """What the records say about the machine, or '' when they say nothing."""
    source = [meta] + list(records)
    parts = []
    cores = _span([r.get("host_cores", r.get("cores")) for r in source])
    if cores:
        parts.append(f"{cores} cores")
    platform = _span([r.get("platform") for r in source])
    if platform:
        parts.append(platform)
    torch = _span([r.get("torch") for r in source])
    if torch:
        parts.append(f"torch {torch}")
    threads = _span([r.get("torch_threads", r.get("threads")) for r in source])
    if threads:
        parts.append(f"torch threads: {threads}")
    loads = []
    for r in source:
        for key in ("load_1m", "load_at_start", "load_start"):
            if isinstance(r.get(key), (int, float)):
                loads.append(float(r[key]))
        if isinstance(r.get("loadavg_before"), list) and r["loadavg_before"]:
            loads.append(float(r["loadavg_before"][0]))
    if loads:
        parts.append(f"load average (1 min) {min(loads):.1f} to {max(loads):.1f}")
    dates = sorted({str(r.get("date", r.get("date_utc")))[:10] for r in source
                    if r.get("date", r.get("date_utc"))})
    if dates:
        parts.append("measured " + (dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]}"))
    return ", ".join(parts)


def commands(records, meta) -> list[str]:
    """The distinct ``command`` fields, as runnable lines from the repository root."""
    out = []
    for r in [meta] + list(records):
        c = r.get("command")
        if isinstance(c, str) and c and c not in out:
            out.append(c)
    return [c if c.startswith(("python", "benchmarks/")) else f"python benchmarks/{c}"
            for c in out]


class BenchmarkTable(SphinxDirective):
    """Render records of one ``benchmarks/results`` JSON file as a table."""

    required_arguments = 1
    has_content = False
    option_spec = {
        "columns": directives.unchanged_required,
        "where": directives.unchanged,
        "key": directives.unchanged,
        "command": directives.unchanged,
        "machine": directives.unchanged,
        "caption": directives.unchanged,
    }

    def run(self):
        root = Path(self.env.srcdir).parent
        rel = self.arguments[0]
        path = root / rel
        self.env.note_dependency(str(path))
        data = json.loads(path.read_text())
        meta = {}
        if isinstance(data, dict):
            meta = data.get("meta", {}) if isinstance(data.get("meta"), dict) else {}
            meta = {**(data.get("settings") or {}), **meta} if isinstance(
                data.get("settings"), dict) else meta
            data = data[self.options.get("key", "records")]
        where = _parse_where(self.options.get("where"))
        records = [r for r in data if isinstance(r, dict) and _matches(r, where)]
        if not records:
            raise self.error(f"benchmark-table: no record of {rel} matches {where}")
        columns = [c.strip() for c in self.options["columns"].split(",") if c.strip()]
        missing = [c for c in columns if not any(c in r for r in records)]
        if missing:
            raise self.error(f"benchmark-table: {rel} has no field {missing}")
        lines = []
        caption = self.options.get("caption")
        if caption:
            lines += [f"**{caption}**", ""]
        lines += [f"From ``{rel}`` ({len(records)} record{'s' * (len(records) != 1)}).", ""]
        cmds = commands(records, meta)
        if cmds:
            # records may annotate their commands in prose ("(DATA: ...)"), which bash
            # highlighting refuses: plain text then
            plain = all(not set("()'\"") & set(c) for c in cmds)
            lines += ["Command (from the records):", "",
                      f".. code-block:: {'bash' if plain else 'text'}", ""]
            lines += [f"   {c}" for c in cmds] + [""]
        elif self.options.get("command"):
            lines += ["Command (the records do not carry one; as the README gave it):", "",
                      ".. code-block:: bash", "", f"   {self.options['command']}", ""]
        machine = machine_line(records, meta)
        if machine:
            lines += [f"Machine (from the records): {machine}.", ""]
        if self.options.get("machine"):
            lines += [f"Machine ({'more, ' if machine else ''}not in the records): "
                      f"{self.options['machine']}", ""]
        lines += [".. list-table::", "   :header-rows: 1", "   :class: benchmark-table", ""]
        for row in [[f"``{c}``" for c in columns]] + [[_fmt(r.get(c)) or "--" for c in columns]
                                                        for r in records]:
            lines.append(f"   * - {row[0]}")
            lines += [f"     - {cell}" for cell in row[1:]]
        lines.append("")
        container = nodes.container(classes=["benchmark"])
        self.state.nested_parse(StringList(lines, source=str(path)), self.content_offset,
                                container)
        return [container]


def setup(app):
    """Register the ``benchmark-table`` directive."""
    app.add_directive("benchmark-table", BenchmarkTable)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
