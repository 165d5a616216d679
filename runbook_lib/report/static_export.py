"""Static renderings of the postmortem: chart PNGs and the PDF, both drawn by a headless Chromium.

* ``write_pngs``: plotly figures to PNG through plotly's ``kaleido`` (1.x drives a Chrome/Chromium it is
  pointed at, through ``choreographer``). The rendering runs in a child process with a time limit, so a browser
  that hangs cannot hang ``runbook run``; its whole process group is ended when it is done or overdue.
* ``print_pdf``: ``chromium --headless --print-to-pdf`` of the (static, script-free) postmortem HTML, without
  the browser's header and footer (they would print the file's path and the date).

The browser: ``$RUNBOOK_CHROMIUM`` when set, else the first of chromium, chromium-browser, google-chrome on
PATH (Debian's ``chromium`` package: ``scripts/setup.sh`` installs it). Nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from runbook_lib.errors import ExportError

BROWSER_ENV = "RUNBOOK_CHROMIUM"
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
# Bounds: browser start plus every chart (the fixture's five take ~6 s), and one print of the page (~2 s).
PNG_TIMEOUT_S = 180.0
PNG_PER_CHART_TIMEOUT_S = 60.0
PDF_TIMEOUT_S = 120.0
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class BrowserMissing(ExportError):
    hint = (f"install chromium: apt-get install chromium (scripts/setup.sh does), or set {BROWSER_ENV} to a "
            "Chrome/Chromium binary")


class KaleidoMissing(ExportError):
    hint = "pip install 'kaleido>=1.5,<2' (a dependency of runbook: scripts/setup.sh installs it)"


class RenderFailed(ExportError):
    hint = (f"check that the browser starts: {BROWSER_ENV}=... or `chromium --headless --dump-dom about:blank`; "
            "postmortem.md and postmortem.html are written without the failed part")


@dataclass(frozen=True)
class PngJob:
    """One chart to render: a plotly figure (JSON file) to a PNG of ``width`` x ``height`` CSS px times ``scale``."""

    figure: str
    png: str
    width: int
    height: int
    scale: float


def find_browser() -> str:
    """The Chrome/Chromium binary to drive; BrowserMissing (with the install hint) when there is none."""
    chosen = os.environ.get(BROWSER_ENV)
    if chosen:
        path = shutil.which(chosen) or (chosen if os.access(chosen, os.X_OK) else None)
        if not path:
            raise BrowserMissing(f"{BROWSER_ENV}={chosen} is not an executable browser")
        return path
    for name in BROWSER_NAMES:
        path = shutil.which(name)
        if path:
            return path
    raise BrowserMissing("no Chromium or Chrome found (looked for " + ", ".join(BROWSER_NAMES) + " on PATH) "
                         "to render the postmortem's charts and PDF")


def _run_bounded(cmd: list[str], timeout: float, what: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``cmd`` in its own process group; past ``timeout`` the group is killed and RenderFailed raised.
    The group is also ended after a normal exit (a browser may leave helpers behind)."""
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env=env)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        proc.communicate()
        raise RenderFailed(f"{what} took longer than {timeout:.0f} s and was stopped") from None
    finally:
        _kill_group(proc.pid)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _last_line(text: str) -> str:
    lines = [ln for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1].strip()[:300] if lines else "no output"


def write_pngs(jobs: list[PngJob], timeout: float = PNG_TIMEOUT_S) -> None:
    """Render every job's figure to its PNG (one browser for all), in a child process bounded by ``timeout``."""
    if not jobs:
        return
    if importlib.util.find_spec("kaleido") is None:
        raise KaleidoMissing("plotly's kaleido (1.x) is not installed: the charts cannot be drawn as PNG")
    browser = find_browser()
    with tempfile.TemporaryDirectory(prefix="runbook-png-") as tmp:
        spec = Path(tmp) / "jobs.json"
        spec.write_text(json.dumps({"browser": browser, "jobs": [asdict(j) for j in jobs]}))
        r = _run_bounded([sys.executable, "-m", "runbook_lib.report.static_export", str(spec)], timeout,
                         f"rendering {len(jobs)} chart(s) with {browser}")
    if r.returncode != 0:
        raise RenderFailed(f"rendering the charts with {browser} failed: {_last_line(r.stderr)}")
    for j in jobs:
        p = Path(j.png)
        if not p.is_file() or p.read_bytes()[:8] != PNG_MAGIC:
            raise RenderFailed(f"the chart {p.name} was not rendered ({_last_line(r.stderr)})")


def print_pdf(html: Path, pdf: Path, timeout: float = PDF_TIMEOUT_S) -> Path:
    """Print ``html`` (a self-contained page) to ``pdf`` with headless Chromium; atomic (temp file + rename)."""
    browser = find_browser()
    html, pdf = Path(html).resolve(), Path(pdf)
    with tempfile.TemporaryDirectory(prefix="runbook-pdf-") as tmp:
        out = Path(tmp) / "out.pdf"
        cmd = [browser, "--headless", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
               "--disable-extensions", "--disable-background-networking", "--hide-scrollbars",
               f"--user-data-dir={Path(tmp) / 'profile'}", "--no-pdf-header-footer", f"--print-to-pdf={out}",
               html.as_uri()]
        if os.geteuid() == 0:  # Chromium refuses to start as root with its sandbox on
            cmd.insert(1, "--no-sandbox")
        r = _run_bounded(cmd, timeout, f"printing {html.name} to PDF with {browser}")
        if not out.is_file() or out.read_bytes()[:5] != b"%PDF-":
            raise RenderFailed(f"{browser} did not print {html.name} to PDF (exit {r.returncode}: "
                               f"{_last_line(r.stderr)})")
        tmp_pdf = pdf.with_name(pdf.name + ".tmp")
        shutil.copyfile(out, tmp_pdf)
        os.replace(tmp_pdf, pdf)
    return pdf


def _render(spec_file: Path) -> None:
    """Child process: every job of the spec through one kaleido browser; raise on the first failure."""
    import kaleido

    spec = json.loads(spec_file.read_text())
    figs = [{"fig": json.loads(Path(j["figure"]).read_text()), "path": j["png"],
             "opts": {"format": "png", "width": j["width"], "height": j["height"], "scale": j["scale"]}}
            for j in spec["jobs"]]
    # mathjax False: no formulas here, and its default is a CDN (the export works offline)
    kaleido.write_fig_from_object_sync(figs, kopts={"path": spec["browser"], "mathjax": False,
                                                    "timeout": PNG_PER_CHART_TIMEOUT_S}, cancel_on_error=True)


if __name__ == "__main__":
    try:
        _render(Path(sys.argv[1]))
    except Exception as e:  # noqa: BLE001 - the parent reports it as one line
        print(f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}", file=sys.stderr)
        sys.exit(1)
