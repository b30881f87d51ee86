"""Pruning study: sensitivity-guided channel plans, distillation, and the lite width cut as the baseline to beat.

Two stages per device profile, both driven by the `pruning` section of the profile's params file:

- `finetune` (`python -m rifelab.studies.pruning --profile cpu`, DVC stage `finetune@cpu`): measures each prunable group's
  sensitivity (PSNR drop on held-out triplets when it alone is pruned) and latency savings (on this device),
  allocates per-group ratios within each loss budget, prunes the configurations named in `finetune`, and
  fine-tunes each by distillation from the unpruned model on real triplets that evaluation never sees. Each
  checkpoint (plan + state_dict + how it was trained) is written to `results/<profile>/finetune/`; a run that is
  interrupted resumes from its saved state, and a checkpoint whose settings have not changed is not trained again.
- `pruning` (`run`, notebook 03): evaluates every configuration (the naive-global and architecture-aware sweep, the
  lite cut, the sensitivity plans, other importance criteria, the fine-tuned checkpoints) on held-out triplets and
  Middlebury "other" (where present), times them side by side in one interleaved run, and judges the target.

Modules: `params` (schema, what feeds the finetune stage, fingerprints, frame splits), `planning` (tables and
plans), `finetune` (the stage), `study` (the run, step by step), `verdict`, `figures`, `cli`.
"""

from rifelab.studies.pruning.cli import main
from rifelab.studies.pruning.finetune import finetune, finetune_source
from rifelab.studies.pruning.params import NOTEBOOK, PARAMS, FinetuneSpec, finetune_dir, parse_finetune
from rifelab.studies.pruning.study import run

__all__ = ["PARAMS", "NOTEBOOK", "run", "finetune", "finetune_dir", "finetune_source", "main", "FinetuneSpec", "parse_finetune"]
