"""Publishing results: result folders and atomic writes, notebooks (papermill), report, plots, claims table."""
