"""One module per study, named like its notebook, its params section and its DVC stage.

Each exposes `PARAMS` (the schema of its params section), `NOTEBOOK` and
`run(profile, overrides, results_root, params_path)`.
Study modules import the library; nothing in the library imports them.
"""

STUDIES = ("interactive", "baseline", "optimisation", "pruning", "coalign")
