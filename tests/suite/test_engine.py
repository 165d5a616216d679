"""The run's papermill engine writes the output notebook as each code cell starts, and ends with the same
notebook as papermill's own engine (issue 16: suite speed)."""

from __future__ import annotations

import json

import nbformat
import papermill
import papermill.engines

from runbook_lib.suite.engine import ENGINE_NAME


def _notebook(path):
    v4 = nbformat.v4
    nb = v4.new_notebook(cells=[v4.new_markdown_cell("# title"), v4.new_code_cell("print('one')"),
                                v4.new_markdown_cell("between"), v4.new_code_cell("print('two')"),
                                v4.new_markdown_cell("end")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def _comparable(path) -> list:
    """Cells without the kernel's and papermill's timings."""
    cells = json.loads(path.read_text())["cells"]
    for c in cells:
        c["metadata"].pop("execution", None)
        for k in ("start_time", "end_time", "duration"):
            c["metadata"]["papermill"].pop(k)
    return cells


def test_saves_at_code_cell_starts_and_ends_like_papermills_engine(tmp_path, monkeypatch):
    src = _notebook(tmp_path / "in.ipynb")
    seen = []
    real = papermill.engines.write_ipynb

    def counting(nb, path):
        seen.append([(c.cell_type, c.metadata.papermill["status"], len(c.get("outputs", []))) for c in nb.cells])
        real(nb, path)

    monkeypatch.setattr(papermill.engines, "write_ipynb", counting)
    papermill.execute_notebook(str(src), str(tmp_path / "ours.ipynb"), kernel_name="python3", progress_bar=False,
                               engine_name=ENGINE_NAME)
    ours = len(seen)
    # the notebook's start, then each code cell's start (that cell running, every earlier output in), then
    # papermill's engine's own save at the end
    assert ours == 4 and all(s[1] == "completed" for s in seen[3])
    assert [s[1] for s in seen[1]][:3] == ["completed", "running", "pending"] and seen[1][1][2] == 0
    assert [s[1] for s in seen[2]][:4] == ["completed", "completed", "completed", "running"] and seen[2][1][2] == 1
    seen.clear()
    papermill.execute_notebook(str(src), str(tmp_path / "theirs.ipynb"), kernel_name="python3",
                               progress_bar=False)
    assert len(seen) == 2 * 5 + 2  # papermill's own engine: every cell's start and end as well
    assert _comparable(tmp_path / "ours.ipynb") == _comparable(tmp_path / "theirs.ipynb")
