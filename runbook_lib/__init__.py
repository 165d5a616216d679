"""runbook_lib: the analysis and remediation library behind the runbook notebooks."""

import sys

__version__ = "0.1.0"

# jsonschema imports rfc3987_syntax, when installed (jupyter-events pulls it in), for its optional "iri" format
# checks, and rfc3987_syntax compiles 38 Lark grammars at import: 1.4-2 s. plotly imports nbformat, nbformat
# imports jsonschema, so every notebook kernel paid that before its first figure, and `runbook run` once more
# (papermill). Nothing in this project checks formats (no jsonschema FormatChecker anywhere): the module is
# marked absent (jsonschema then skips those two checks) unless something imported it already.
# tests/test_startup_imports.py
if "rfc3987_syntax" not in sys.modules:
    sys.modules["rfc3987_syntax"] = None  # type: ignore[assignment]
