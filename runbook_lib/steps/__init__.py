"""One module per notebook: the glue a notebook cell calls (``context.open_step`` opens a step)."""
