"""RollingDepth co-alignment study: report 004's early stopping and our closed-form solver, on a SYNTHETIC truth.

For each video length and resolution a synthetic depth video is rendered (`rifelab.depth.synthetic`: a ray-cast room,
so the truth is known exactly) and cut into snippets by the spec's recipe. On that input the study runs the
reference (Adam, `iterations` steps), every early-stopping rule, the reference at a second λ3, our least-squares
solver (optionally refined by Adam steps) and three baselines (naive mean, dilation 1 only, the oracle). Every
timed method is timed with `harness.time_interleaved` (in-process; one untimed first call, then `timing_repeats` interleaved
rounds), and every result is scored against the reference (report 004's agreement metrics) and against the
synthetic truth (AbsRel, δ1). Real snippets saved from a RollingDepth run (`snippets_npz`) are aligned too (no
truth there: agreement only). The algorithms live in `rifelab.depth`; this module holds the study glue.
"""

from rifelab.studies.coalign.figures import loss_curves_figure, quality_vs_time_figure, frames_figure
from rifelab.studies.coalign.study import PARAMS, RULE_PARAMS, NOTEBOOK, CaseResult, check_params, measure_case, report004_quantities, targets, summary_lines, run

__all__ = ["PARAMS", "RULE_PARAMS", "NOTEBOOK", "CaseResult", "check_params", "measure_case", "loss_curves_figure", "quality_vs_time_figure", "frames_figure", "report004_quantities", "targets", "summary_lines", "run"]
