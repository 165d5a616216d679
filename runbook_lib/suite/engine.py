"""papermill's nbclient engine, saving the output notebook when a code cell starts rather than at every cell's
start and end (issue 16: suite speed).

papermill writes the whole output notebook (every figure's JSON, re-encoded) when any cell starts and when it
ends, Markdown cells included: 184 writes for the five notebooks, each up to 60 ms once 05 holds its charts.
What a reader of a notebook still running needs, and what ``runner`` reads after an interruption, is which
code cell runs, with every output before it: the write as a code cell starts holds exactly that. A cell's
end is followed by the next code cell's start, or by papermill's final write (which also records a failed
cell before it raises), so skipping those writes changes no file's final content. Output arriving during a
long cell is still saved by papermill's autosave.
"""

from __future__ import annotations

from papermill.engines import NBClientEngine, NotebookExecutionManager, papermill_engines

ENGINE_NAME = "runbook"


class _Manager(NotebookExecutionManager):
    _hold = False

    def save(self, **kwargs):
        if not self._hold:
            super().save(**kwargs)

    def cell_start(self, cell, cell_index=None, **kwargs):
        self._hold = cell.get("cell_type") != "code"
        try:
            super().cell_start(cell, cell_index, **kwargs)
        finally:
            self._hold = False

    def cell_complete(self, cell, cell_index=None, **kwargs):
        self._hold = True
        try:
            super().cell_complete(cell, cell_index, **kwargs)
        finally:
            self._hold = False


class Engine(NBClientEngine):
    @classmethod
    def execute_notebook(cls, nb, kernel_name, output_path=None, progress_bar=True, log_output=False,
                         autosave_cell_every=30, **kwargs):
        # papermill's Engine.execute_notebook (2.x) with this module's manager
        nb_man = _Manager(nb, output_path=output_path, progress_bar=progress_bar, log_output=log_output,
                          autosave_cell_every=autosave_cell_every)
        nb_man.notebook_start()
        try:
            cls.execute_managed_notebook(nb_man, kernel_name, log_output=log_output, **kwargs)
        finally:
            nb_man.cleanup_pbar()
            nb_man.notebook_complete()
        return nb_man.nb


papermill_engines.register(ENGINE_NAME, Engine)
