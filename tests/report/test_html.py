"""report.html: self-contained, images embedded, renders in headless Chromium without errors."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]

# Injected into a copy of the page only for the test: it records every image's load state and any
# error event (capture phase also sees failed resource loads) into the DOM that --dump-dom prints.
PROBE = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message || 'resource failed: ' +
  ((e.target && (e.target.src || e.target.href)) || '').slice(0, 60))), true);
window.addEventListener('load', () => {
  const images = [...document.images].map(i => ({data: i.src.startsWith('data:image/png;base64,'),
                                                 width: i.naturalWidth, complete: i.complete}));
  const out = document.createElement('pre');
  out.id = 'stageprobe-check';
  out.textContent = JSON.stringify({images, errors: window.__errors});
  document.body.appendChild(out);
});
</script>"""


def test_page_is_self_contained(good_run: Path) -> None:
    page = (good_run / "report.html").read_text()
    assert not re.search(r"(https?:)?//[\w.-]+\.\w", page.replace("<!DOCTYPE html>", "")), "external URL"
    for forbidden in ("<script src", "<link", "@import", "url(", "<iframe", "fetch(", "xmlhttprequest"):
        assert forbidden not in page.lower()
    assert page.count("<script") == 1  # the inline table sort, nothing else
    sources = re.findall(r'<img src="([^"]+)"', page)
    # the overlay the runner saved + decay curves, retention vs pixels, heatmap
    assert len(sources) == 4
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        assert image.format == "PNG" and image.width > 100


def test_page_has_the_findings_content(good_run: Path) -> None:
    page = (good_run / "report.html").read_text()
    before_first_section = page.split("<h2", 1)[0]
    assert 'class="callout warning"' in before_first_section and "random" in before_first_section.lower()
    findings = (good_run / "FINDINGS.md").read_text()
    for heading in re.findall(r"^#{2,3} (.+)$", findings, flags=re.M):
        assert heading.replace("&", "&amp;") in page, heading
    assert page.count('class="badge pass"') >= 5 and 'class="badge unavailable"' in page
    assert "[0." in page  # CIs are in the tables


def _chromium(args: list[str], tmp_path: Path, name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / ('profile-' + name)}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _load_check(page: Path, tmp_path: Path) -> tuple[dict, list[str]]:
    probed = tmp_path / f"probed-{page.name}"
    probed.write_text(page.read_text().replace("<head>", "<head>\n" + PROBE, 1))
    done = _chromium(
        ["--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000", "--dump-dom", probed.as_uri()],
        tmp_path,
        page.stem,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    match = re.search(r'<pre id="stageprobe-check">(.*?)</pre>', done.stdout, flags=re.S)
    assert match, "the load probe did not run"
    report = json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    # The page logs nothing itself, so any console line at all means something went wrong.
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return report, console


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium)")
def test_chromium_renders_without_errors(good_run: Path, tmp_path: Path) -> None:
    report, console = _load_check(good_run / "report.html", tmp_path)
    assert console == [] and report["errors"] == []
    assert len(report["images"]) == 4
    assert all(i["data"] and i["complete"] and i["width"] > 0 for i in report["images"]), report["images"]
    shot = tmp_path / "screenshot.png"
    done = _chromium(
        [f"--screenshot={shot}", "--window-size=1280,2400", (good_run / "report.html").as_uri()],
        tmp_path,
        "shot",
    )
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    with Image.open(shot) as image:
        assert image.size == (1280, 2400)
        # Not a blank page: a rendered report has many distinct colours.
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 50


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium)")
def test_chromium_check_catches_a_broken_page(tmp_path: Path) -> None:
    broken = tmp_path / "broken.html"
    broken.write_text(
        '<!DOCTYPE html><html><head></head><body><img src="data:image/png;base64,AAAA">'
        "<script>undefinedFunction()</script></body></html>"
    )
    report, console = _load_check(broken, tmp_path)
    assert report["images"][0]["width"] == 0
    assert report["errors"] and any("undefinedFunction" in line for line in console)


# Injected into a copy of the page: where the answer table sits and how tall the page is, as rendered.
LAYOUT_PROBE = """<script>
window.addEventListener('load', () => {
  const heading = document.getElementById('which-stage-to-read-for-what');
  const table = heading && heading.nextElementSibling && heading.nextElementSibling.querySelector('table');
  const box = table ? table.getBoundingClientRect() : null;
  const out = document.createElement('pre');
  out.id = 'stageprobe-layout';
  out.textContent = JSON.stringify({
    table_bottom: box ? box.bottom + window.scrollY : null,
    height: document.documentElement.scrollHeight,
    open_details: document.querySelectorAll('details[open]').length,
    folded_tables: document.querySelectorAll('details table').length});
  document.body.appendChild(out);
});
</script>"""


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium)")
def test_chromium_shows_the_answer_first_on_a_short_page(good_run: Path, tmp_path: Path) -> None:
    probed = tmp_path / "layout.html"
    probed.write_text((good_run / "report.html").read_text().replace("<head>", "<head>\n" + LAYOUT_PROBE, 1))
    done = _chromium(["--window-size=1280,1000", "--virtual-time-budget=10000", "--dump-dom", probed.as_uri()],
                     tmp_path, "layout")
    assert done.returncode == 0, done.stderr[-2000:]
    match = re.search(r'<pre id="stageprobe-layout">(.*?)</pre>', done.stdout, flags=re.S)
    assert match, "the layout probe did not run"
    layout = json.loads(match.group(1).replace("&quot;", '"'))
    assert layout["table_bottom"] is not None and layout["table_bottom"] <= 1000, layout
    assert layout["open_details"] == 0 and layout["folded_tables"] >= 6, layout
    assert layout["height"] < 10_000, layout
