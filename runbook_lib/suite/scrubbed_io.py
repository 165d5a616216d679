"""papermill writes what it injects into the output notebook; this keeps credentials out of it.

``papermill nb.ipynb out.ipynb -y '{"redis": {"url": "redis://:S3CRET@host"}}'`` puts the injected values in
two places of ``out.ipynb`` before the kernel sees them: the ``injected-parameters`` cell and
``metadata.papermill.parameters``. The notebook refuses such a value, but the refusal cannot reach papermill's
copy. papermill's I/O handlers are its documented extension point (entry point group ``papermill.io``,
registered last-in-first-out), so this package registers a handler under the scheme ``local``, and every write
of a notebook to a local path goes through :func:`scrub_notebook` first.

Two papermill details shape the code. It picks the *last* handler named ``local`` in its list (its own), so
resolving the entry point also takes papermill's own ``local`` entry out of the list (a private attribute;
tests/suite/test_scrubbed_io.py runs the papermill CLI, so a papermill that changes it fails the suite). And it
loads entry points while ``papermill.iorw`` is still being imported, so this module imports nothing from papermill
at its top (a user may import it first) and the handler is resolved through the module's ``__getattr__``.
"""

from __future__ import annotations

from typing import Any

import nbformat

from runbook_lib.redaction import scrub

INJECTED_TAG = "injected-parameters"
ENTRY_POINT_NAME = "papermill_handler"


def scrub_notebook(nb: dict[str, Any]) -> bool:
    """Mask credentials in the injected parameters (metadata and cell) in place; True when anything changed."""
    pm = nb.get("metadata", {}).get("papermill")
    if not isinstance(pm, dict) or not isinstance(pm.get("parameters"), dict):
        return False
    params = pm["parameters"]
    clean = scrub(params)
    if clean == params:
        return False
    from papermill.translators import translate_parameters  # see the module docstring

    pm["parameters"] = clean
    kernel = nb["metadata"].get("kernelspec", {})
    language = nb["metadata"].get("language_info", {}).get("name") or kernel.get("language") or "python"
    source = translate_parameters(kernel.get("name", "python3"), language, clean, "Parameters")
    for cell in nb.get("cells", []):
        if INJECTED_TAG in cell.get("metadata", {}).get("tags", []):
            cell["source"] = source
            cell["outputs"] = []  # an echo of the value would carry it too
    return True


class ScrubbingLocalHandler:
    """papermill's local file handler (wrapped, not subclassed: see the module docstring), with credentials
    scrubbed from a notebook's injected parameters on every write."""

    def __init__(self) -> None:
        from papermill.iorw import LocalHandler

        self._local = LocalHandler()

    def __getattr__(self, name: str) -> Any:  # read, listdir, pretty_path, cwd: papermill's own
        return getattr(self._local, name)

    def write(self, buf: str, path: str) -> None:
        if isinstance(path, str) and path.endswith(".ipynb"):
            try:
                nb = nbformat.reads(buf, as_version=nbformat.NO_CONVERT)
            except Exception:  # noqa: BLE001 - not a notebook after all: written as it is
                nb = None
            if nb is not None and scrub_notebook(nb):
                buf = nbformat.writes(nb)
        return self._local.write(buf, path)


_handler: ScrubbingLocalHandler | None = None


def __getattr__(name: str) -> Any:
    """The ``papermill.io`` entry point: the scrubbing handler, installed as papermill's only ``local`` one."""
    global _handler
    if name != ENTRY_POINT_NAME:
        raise AttributeError(name)
    if _handler is None:
        import sys

        _handler = ScrubbingLocalHandler()
        io = sys.modules["papermill.iorw"].papermill_io
        io._handlers = [(scheme, h) for scheme, h in io._handlers if scheme != "local"]
    return _handler
