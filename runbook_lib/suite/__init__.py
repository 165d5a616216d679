"""Runs the notebooks through papermill into a run folder; ``golden`` regenerates the golden notebooks."""
