"""report.html: one self-contained page — inline CSS, PNGs as base64 data URIs, one small inline
script (sort a table by a header click), no fonts or links to anything outside the file — with
FINDINGS.md's content and every plot.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from stageprobe.report.analysis import RunMeta, analyse
from stageprobe.report.document import Details, Figure, Heading, Table, slug, to_html
from stageprobe.report.findings import (
    artifact_paths,
    build_findings_document,
    experiment_heading,
    experiment_table,
)
from stageprobe.report.schema import MetricRow

CSS = """
:root { --ink:#1f2933; --muted:#52606d; --line:#e4e7eb; --bg:#ffffff; --soft:#f5f7fa;
  --pass:#0f7a3d; --fail:#b42318; --na:#6b7280; --yellow:#a15c07; }
* { box-sizing: border-box; }
body { margin:0; background:var(--soft); color:var(--ink);
  font: 15px/1.55 -apple-system, BlinkMacSystemFont, "Segoe UI", Roboto, "Helvetica Neue", Arial,
  sans-serif; }
main { max-width: 1240px; margin: 0 auto; padding: 28px 36px 64px; background:var(--bg);
  box-shadow: 0 0 0 1px var(--line); min-height: 100vh; }
h1 { font-size: 28px; line-height:1.2; margin: 4px 0 18px; letter-spacing:-0.01em; }
h2 { font-size: 21px; margin: 34px 0 10px; padding-bottom: 6px; border-bottom: 1px solid var(--line); }
h3 { font-size: 17px; margin: 24px 0 6px; }
p { margin: 8px 0; }
code { font: 12.5px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background:var(--soft);
  padding: 1px 4px; border-radius: 4px; }
pre { font: 12.5px/1.35 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background:#0f172a;
  color:#e2e8f0; padding: 14px 16px; border-radius: 8px; overflow-x:auto; }
hr { border:0; border-top: 1px solid var(--line); margin: 26px 0; }
nav { font-size: 13px; color: var(--muted); margin-bottom: 14px; }
nav a { color: var(--muted); text-decoration: none; margin-right: 14px; }
nav a:hover { color: var(--ink); text-decoration: underline; }
.table-wrap { overflow-x: auto; margin: 10px 0 14px; }
table { border-collapse: collapse; width: 100%; font-size: 13.5px; font-variant-numeric: tabular-nums; }
caption { caption-side: bottom; text-align:left; color: var(--muted); font-size: 12px; padding-top: 6px; }
th, td { text-align: left; padding: 6px 10px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: var(--soft); font-weight: 600; white-space: nowrap; }
tbody tr:nth-child(even) td { background: #fbfcfd; }
td.nowrap { white-space: nowrap; }
.ci { color: var(--muted); font-size: 12px; }
.badge { display:inline-block; padding: 1px 7px; border-radius: 999px; font-size: 11.5px; font-weight: 700;
  letter-spacing: .03em; color:#fff; }
.badge.pass, .badge.green { background: var(--pass); }
.badge.fail, .badge.red { background: var(--fail); }
.badge.unavailable { background: var(--na); }
.badge.yellow { background: #d99a06; color:#1f1300; }
.callout { border-radius: 8px; padding: 12px 16px; margin: 12px 0; border: 1px solid; }
.callout.warning { background:#fff7e6; border-color:#f2c46d; color:#5c3b00; }
.callout.note { background:#eef4ff; border-color:#b6ccf5; }
figure { margin: 18px 0; text-align:center; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 6px; }
figcaption { color: var(--muted); font-size: 12.5px; margin-top: 4px; }
details { margin: 10px 0; }
summary { cursor: pointer; font-weight: 600; }
.missing { color: var(--fail); }
table.sortable th { cursor: pointer; }
table.sortable th[aria-sort="ascending"]::after { content: " ▲"; }
table.sortable th[aria-sort="descending"]::after { content: " ▼"; }
"""

#: Click a header to sort its table by that column (numbers by value, text alphabetically); again to reverse.
SORT_SCRIPT = """
document.querySelectorAll('table.sortable th').forEach((th, col) => th.addEventListener('click', () => {
  const table = th.closest('table'), body = table.tBodies[0], index = [...th.parentNode.children].indexOf(th);
  const up = th.getAttribute('aria-sort') !== 'ascending';
  table.querySelectorAll('th').forEach(h => h.removeAttribute('aria-sort'));
  th.setAttribute('aria-sort', up ? 'ascending' : 'descending');
  const key = tr => { const t = tr.children[index].textContent.trim(); const n = parseFloat(t);
                      return isNaN(n) ? t : n; };
  const rows = [...body.rows].sort((a, b) => { const x = key(a), y = key(b);
    const c = typeof x === typeof y ? (x < y ? -1 : x > y ? 1 : 0) : (typeof x === 'number' ? -1 : 1);
    return up ? c : -c; });
  rows.forEach(r => body.appendChild(r));
}));
"""


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _figure_sources(results: Mapping[str, Any], artifacts_dir: Path) -> dict[str, str]:
    """Data URIs for every PNG the results list or the artifacts folder holds, keyed by run path."""
    run_dir = artifacts_dir.parent
    sources: dict[str, str] = {}
    for listed in artifact_paths(results):
        file = run_dir / listed
        if listed.lower().endswith(".png") and file.is_file():
            sources[listed] = data_uri(file)
    if artifacts_dir.is_dir():
        for file in sorted(artifacts_dir.rglob("*.png")):
            sources.setdefault(file.relative_to(run_dir).as_posix(), data_uri(file))
    return sources


def render_html(results: Mapping[str, Any], rows: Sequence[MetricRow], artifacts_dir: str | Path) -> str:
    """The whole page as a string; `artifacts_dir` is the run's `artifacts/` folder."""
    artifacts_dir = Path(artifacts_dir)
    analysis = analyse(rows, RunMeta.from_results(results))
    doc = build_findings_document(results, rows, analysis)
    sources = _figure_sources(results, artifacts_dir)
    listed = set(artifact_paths(results))
    extra = [p for p in sources if p not in listed]
    if extra:
        doc.add(Details(f"Other figures in artifacts/ ({len(extra)})",
                        [Figure(p, p.rsplit("/", 1)[-1].removesuffix(".png").replace("_", " ")) for p in extra]))
    doc.add(Heading(2, "All measurements"))
    for experiment in analysis.experiment_status:
        table = experiment_table(rows, experiment, analysis.suite, metrics=sorted({r.metric for r in rows
                                                                     if r.experiment == experiment}))
        if table.rows:
            doc.add(Details(f"{experiment_heading(experiment, analysis.suite)} — every metric", [table]))
    run_info = {k: results.get(k) for k in ("model", "weights_random", "protocol", "suite", "stages",
                                            "started_at", "completed_at", "executed_by")}
    doc.add(Details("Run details, configuration and environment",
                    [Table(["Key", "Value"], [[k, f"`{v}`"] for k, v in run_info.items()])],
                    pre=json.dumps({"config": results.get("config") or {}, "env": results.get("env") or {}},
                                   indent=2, default=str)))
    body = to_html(doc, sources)
    sections = [b.text for b in doc.blocks if isinstance(b, Heading) and b.level == 2]
    nav = " ".join(f'<a href="#{slug(s)}">{html.escape(s)}</a>' for s in sections)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{html.escape(analysis.suite.title)} — {html.escape(str(results.get('model', '')))}</title>\n"
        f"<style>{CSS}</style>\n</head>\n<body>\n<main>\n<nav>{nav}</nav>\n{body}\n</main>\n"
        f"<script>{SORT_SCRIPT}</script>\n</body>\n</html>\n"
    )
