"""The postmortem export on the fixture incident: Markdown with PNG charts, a self-contained HTML page, a PDF.

One fixture run per module (``runbook run --no-export`` then ``runbook export --interactive``), with planted
secrets: a password through an environment variable the parameters reference, and DSN credentials and a token in
an event label of the source (a copy of the bundle). The charts are checked where people see them: the HTML opened
in headless Chromium (every image decoded at its PNG's size; every interactive chart drawn as SVG with its lines),
the PDF's pages (poppler's pdfimages and pdftotext: every chart's image on the page of its caption).
"""

import html
import json
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from runbook_lib.errors import ExportError
from runbook_lib.report import postmortem as pm
from runbook_lib.report.static_export import BROWSER_ENV, BrowserMissing, find_browser
from runbook_lib.signal_catalog import CATALOG

ROOT = Path(__file__).resolve().parents[2]
RUNBOOK = str(Path(sys.executable).with_name("runbook"))
PASSWORD_ENV = "RUNBOOK_PM_TEST_PASSWORD"
PASSWORD = "PwPlanted-5e1f9c"
DSN_PASSWORD, TOKEN = "DsnPlanted-77aa31", "TokPlanted-88bb42"
PLANTED_EVENT = (f"on-call ran psql postgresql://ops:{DSN_PASSWORD}@db:5432/app and curl "
                 f"https://status.example/api?token={TOKEN}")
MAX_HTML_BYTES = 1_500_000
CLI_TIMEOUT_S = 300
BROWSER_TIMEOUT_S = 60
RESULT_ID = "runbook-test-result"
# After the page's load event (and plotly's drawing), every chart's state into the DOM that --dump-dom prints.
PROBE = """<script>
addEventListener('load', () => setTimeout(() => {
  const out = {};
  for (const d of document.querySelectorAll('div.chart')) {
    const img = d.querySelector('img');
    out[d.id] = {img: img ? [img.complete, img.naturalWidth, img.naturalHeight] : null,
                 svgs: d.querySelectorAll('svg.main-svg').length,
                 lines: [...d.querySelectorAll('path.js-line')].filter(p => /^M[^Z]*L/.test(p.getAttribute('d') || '')).length};
  }
  const pre = document.createElement('pre');
  pre.id = 'RESULT_ID';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
}, 100));
</script>""".replace("RESULT_ID", RESULT_ID)


def _cli(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([RUNBOOK, *map(str, args)], capture_output=True, text=True, timeout=CLI_TIMEOUT_S, cwd=ROOT,
                          env=env, check=False)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("postmortem")
    bundle = tmp / "bundle"
    shutil.copytree(ROOT / "fixtures" / "d2-latency", bundle)
    manifest = yaml.safe_load((bundle / "bundle.yaml").read_text())
    deploy = next(e for e in manifest["events"] if e["kind"] == "deploy")
    planted_at = (pd.Timestamp(deploy["time"]) + pd.Timedelta(seconds=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    manifest["events"].append({"time": planted_at, "label": PLANTED_EVENT, "kind": "alert"})  # inside the incident
    manifest["events"].sort(key=lambda e: pd.Timestamp(e["time"]))
    (bundle / "bundle.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    params = tmp / "params.yaml"
    params.write_text((ROOT / "parameters" / "fixtures.yaml").read_text().replace("bundle: fixtures/d2-latency",
                                                                                 f"bundle: {bundle}")
                      + f"postgres: {{dsn: 'host=127.0.0.1 dbname=app user=app', password: {{env: {PASSWORD_ENV}}}}}\n"
                      + f"redis: {{url: 'redis://127.0.0.1:6379/0', password: {{env: {PASSWORD_ENV}}}}}\n")
    env = {**os.environ, PASSWORD_ENV: PASSWORD}
    env.pop(BROWSER_ENV, None)
    out = tmp / "run"
    r = _cli("run", "-p", params, "--out", out, "--no-export", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    e = _cli("export", "--interactive", out, env=env)
    assert e.returncode == 0, e.stderr[-3000:]
    for secret in (PASSWORD, DSN_PASSWORD, TOKEN):
        assert secret not in r.stdout + r.stderr + e.stdout + e.stderr
    assert e.stdout.split() == [str(out / n) for n in (pm.MD_FILE, pm.CHARTS_DIR, pm.HTML_FILE, pm.PDF_FILE,
                                                      pm.INTERACTIVE_FILE)]
    return out


def _expected_charts(run: Path) -> list[str]:
    return [name for name, _ in pm.EXPORT_FIGURES if (run / "figures" / f"{name}.json").exists()]


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", data[16:24])


def _poppler(tool: str, *args) -> str:
    if shutil.which(tool) is None:
        pytest.fail(f"{tool} is missing: apt-get install poppler-utils (scripts/setup.sh APT_PACKAGES)")
    return subprocess.run([tool, *map(str, args)], capture_output=True, text=True, check=True,
                          timeout=BROWSER_TIMEOUT_S).stdout


def _pdf_text(pdf: Path, page: int | None = None) -> str:
    pages = ["-f", page, "-l", page] if page else []
    return _poppler("pdftotext", "-layout", *pages, pdf, "-")


def _open_in_chromium(page: Path, tmp_path: Path) -> dict:
    """The page with PROBE added, loaded by headless Chromium: each chart's rendered state, by its div id."""
    probe = tmp_path / f"probe-{page.name}"
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    cmd = [find_browser(), "--headless", "--disable-gpu", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
           "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()]
    if os.geteuid() == 0:
        cmd.insert(1, "--no-sandbox")
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=BROWSER_TIMEOUT_S, check=False).stdout
    m = re.search(rf'<pre id="{RESULT_ID}">(.*?)</pre>', dom, re.DOTALL)
    assert m, f"the page did not finish loading in Chromium: {dom[-500:]}"
    return json.loads(html.unescape(m.group(1)))


def test_the_export_writes_markdown_with_png_charts_a_small_html_page_and_a_pdf(run):
    charts = _expected_charts(run)
    assert len(charts) == 5
    md = (run / pm.MD_FILE).read_text()
    refs = re.findall(r"!\[Figure (\d+): [^\]]+\]\(([^)]+)\)", md)
    assert [ref for _, ref in refs] == [f"{pm.CHARTS_DIR}/{name}.png" for name in charts]
    assert [int(n) for n, _ in refs] == list(range(1, len(charts) + 1))
    for _, ref in refs:
        width, height = _png_size(run / ref)
        assert width == pm.CHART_WIDTH_PX * pm.CHART_SCALE and height > 300
    page = (run / pm.HTML_FILE).read_bytes()
    assert len(page) < MAX_HTML_BYTES, len(page)
    text = page.decode()
    assert "<script" not in text and not re.search(r'(src|href)="(https?:)?//', text)  # no code, nothing fetched
    assert text.count('<div id="fig-') == len(charts) and text.count("data:image/png;base64,") == len(charts)
    assert (run / pm.PDF_FILE).read_bytes()[:5] == b"%PDF-"
    interactive = (run / pm.INTERACTIVE_FILE).read_text()
    assert interactive.count("* plotly.js v") == 1  # the library's banner: included once, offline
    assert interactive.count('class="plotly-graph-div"') == len(charts)


def test_every_chart_renders_in_headless_chromium(run, tmp_path):
    charts = _expected_charts(run)
    static = _open_in_chromium(run / pm.HTML_FILE, tmp_path)
    assert sorted(static) == sorted(f"fig-{name}" for name in charts)
    for name in charts:
        width, height = _png_size(run / pm.CHARTS_DIR / f"{name}.png")
        assert static[f"fig-{name}"]["img"] == [True, width, height], name  # decoded, at the PNG's size
    live = _open_in_chromium(run / pm.INTERACTIVE_FILE, tmp_path)
    assert sorted(live) == sorted(static)
    for name in charts:
        fig = json.loads((run / "figures" / f"{name}.json").read_text())
        lines = sum(1 for t in fig["data"] if t.get("type", "scatter") == "scatter")
        assert live[f"fig-{name}"]["svgs"] >= 1 and live[f"fig-{name}"]["lines"] == lines, (name, live[f"fig-{name}"])


def test_every_pdf_page_with_a_caption_shows_its_chart(run):
    pdf = run / pm.PDF_FILE
    rows = [line.split() for line in _poppler("pdfimages", "-list", pdf).splitlines()[2:] if line.strip()]
    images = [(int(r[0]), int(r[3]), int(r[4])) for r in rows]  # page, width, height
    charts = _expected_charts(run)
    assert sorted((w, h) for _, w, h in images) == sorted(_png_size(run / pm.CHARTS_DIR / f"{n}.png") for n in charts)
    pages = int(re.search(r"Pages:\s+(\d+)", _poppler("pdfinfo", pdf)).group(1))
    captions = {}
    for page in range(1, pages + 1):
        for n in re.findall(r"Figure (\d+):", _pdf_text(pdf, page)):
            captions[int(n)] = page
    assert sorted(captions) == list(range(1, len(charts) + 1))
    with_images = {p for p, _, _ in images}
    assert all(page in with_images for page in captions.values()), (captions, with_images)
    text = _pdf_text(pdf)
    for heading in ("Summary", "Impact", "Timeline", "Root cause", "Actions and their measured effect",
                    "What was not done, and why", "Validation", "Action items"):
        assert heading in text


def test_no_planted_secret_reaches_the_exports(run):
    exports = [run / pm.MD_FILE, run / pm.HTML_FILE, run / pm.INTERACTIVE_FILE, *(run / pm.CHARTS_DIR).glob("*.png")]
    pdf_text = _pdf_text(run / pm.PDF_FILE)
    for secret in (PASSWORD, DSN_PASSWORD, TOKEN):
        assert secret not in pdf_text
        for f in exports:
            assert secret.encode() not in f.read_bytes(), (secret, f.name)
    # the password (through an environment variable) is in no file of the run folder at all
    for f in run.rglob("*"):
        if f.is_file():
            assert PASSWORD.encode() not in f.read_bytes(), f
    # the event that carried the others is in the postmortem, its credentials masked
    assert "postgresql://ops:***@db:5432/app" in pdf_text and "token=***" in (run / pm.MD_FILE).read_text()


def test_no_planted_secret_in_any_file_of_the_run_folder(run):
    leaks = [f.relative_to(run) for f in run.rglob("*") if f.is_file()
             for s in (DSN_PASSWORD, TOKEN) if s.encode() in f.read_bytes()]
    assert not leaks, leaks


def test_the_fixture_postmortem_is_in_words(run):
    md = (run / pm.MD_FILE).read_text()
    for text in (md, (run / pm.HTML_FILE).read_text()):
        assert "None" not in text and "/tmp/runbook-lab" not in text and "nan" not in text.split()
    # prose: without image paths (file names) and the rule files' code
    prose = re.sub(r"!\[[^\]]*\]\([^)]*\)|```.*?```", "", md, flags=re.DOTALL)
    page = re.sub(r'src="data:[^"]*"|<pre>.*?</pre>', "", (run / pm.HTML_FILE).read_text(), flags=re.DOTALL)
    for text in (prose, re.sub(r"<[^>]+>", " ", page)):
        raw = [n for n in CATALOG if re.search(rf"\b{n}\b", text)]
        assert not raw, raw
    w = json.loads((run / "symptoms.json").read_text())["window"]
    summary = prose.split("## Summary\n\n", 1)[1].split("\n", 1)[0]
    assert summary.startswith(f"API latency p95 rose from {pm.fmt(w['baseline_level'], 'latency_p95_ms')} to "
                              f"{pm.fmt(w['incident_level'], 'latency_p95_ms')} ({pm.times(w['ratio'])}) for ")
    assert re.search(r"requests were served during the incident; about [\d,]+ failed", summary), summary
    assert "Root cause: the database" in summary and "the connection pool is exhausted" in summary
    assert re.search(r"\| Error budget \| [\d,]+ failed requests against an SLO of at most 1%", md)
    assert re.search(r"- 1\d% of the requests failed with a server error \(normally 0%\)", md)  # the 5xx
    if (run / "alerts.rules.yml").exists():  # 05 wrote the alert rules: listed, and the file in the appendix
        assert "## Alert rules" in md and "## Appendix: alerts.rules.yml" in md
    timeline = prose.split("## Timeline", 1)[1].split("## Root cause", 1)[0]
    assert re.search(r"\| deploy \| degraded profile[^|]*\(chart marker \d+\)", timeline)  # the event and its marker
    for what in ("| deploy | degraded profile", "| alert | on-call ran psql", "Notebook 01 Symptom",
                 "Notebook 05 Validation", "Planned: Set app cache_key_scheme=normalized (dry run: nothing applied)"):
        assert what in timeline, what
    assert "| planned (dry run: nothing applied) | dry run: nothing applied |" in md
    # what the runbook applied when the incident was live (the bundle's recorded run), with its measured effect
    live = prose.split("## Applied when the incident was live", 1)[1].split("## What was not done", 1)[0]
    rows = [r for r in live.splitlines() if r.startswith("| ") and "| applied | lab, ticket LAB | helped:" in r]
    assert len(rows) >= 4 and "<lab redis>" in live and "Index orders(user_id, created_at)" in live, live
    assert "the runbook's own run applied" in summary
    verdict = prose.split("## Validation", 1)[1]
    assert verdict.lstrip().startswith("**pass** (score 100/100). Every critical signal improved"), verdict[:300]
    items = prose.split("## Action items", 1)[1]
    assert "| Index orders(user_id, created_at) | database team (unassigned) | short-term |" in items
    assert "| Batch the per-item query into one JOIN / IN (...) query | database team (unassigned) | long-term |" in items


def test_without_a_browser_the_text_is_still_written_and_the_error_says_what_to_install(run, tmp_path, monkeypatch):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "extra.rules.yml").write_text("groups:\n- name: api\n  rules:\n  - alert: ApiLatencyP95High\n"
                                          "    expr: latency_p95_ms > 100\n")
    monkeypatch.setenv(BROWSER_ENV, str(tmp_path / "no-such-chromium"))
    with pytest.raises(BrowserMissing) as err:
        pm.export_run(copy)
    assert "apt-get install chromium" in err.value.hint
    md = (copy / pm.MD_FILE).read_text()
    assert "chart not drawn" in md and "| ApiLatencyP95High | unset | at once |" in md
    assert "## Appendix: extra.rules.yml" in md and "alert: ApiLatencyP95High" in md
    assert "<h2>Alert rules</h2>" in (copy / pm.HTML_FILE).read_text()
    assert not (copy / pm.PDF_FILE).exists()  # the old one no longer matches the record


def test_a_team_template_replaces_the_packaged_one(run, tmp_path):
    ctx = pm.build_context(run)
    (tmp_path / pm.MD_TEMPLATE).write_text("# {{ title }}\n\n{{ summary[0] }}\n")
    assert pm.render(pm.MD_TEMPLATE, ctx, tmp_path).startswith("# Postmortem: d2-latency\n\nAPI latency p95 rose")
    assert "<h2>Timeline</h2>" in pm.render(pm.HTML_TEMPLATE, {**ctx, "charts": {}, "plotlyjs": None}, tmp_path)
    (tmp_path / pm.MD_TEMPLATE).write_text("# {{ title }\n")
    with pytest.raises(ExportError, match="postmortem template .*postmortem.md.j2 line 1"):
        pm.render(pm.MD_TEMPLATE, ctx, tmp_path)
    for name in (pm.MD_TEMPLATE, pm.HTML_TEMPLATE):  # shipped with the package
        assert (Path(pm.__file__).parent / "templates" / name).is_file()
