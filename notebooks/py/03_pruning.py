# %% [markdown] tags=["colab"]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/REPOSITORY-OWNER-NOT-SET/rifelab/blob/main/notebooks/03_pruning.ipynb)
#
# *In Colab, pick a GPU runtime and set `profile = "cuda"` below: the cuda profile (`params-cuda.yaml`) is the one sized for Colab's GPU. The first cell installs rifelab there; where rifelab already imports it does nothing.*
#
# *The repository address is not set yet (`REPOSITORY-OWNER-NOT-SET` in pyproject.toml's `[project.urls]`): it is set when the repository is published.*

# %% tags=["colab"]
# Colab, or a Python without rifelab: install it (does nothing where rifelab already imports)
import importlib.util, subprocess, sys
if importlib.util.find_spec("rifelab") is None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "rifelab[colab] @ git+https://github.com/REPOSITORY-OWNER-NOT-SET/rifelab"], check=True)

# %% [markdown]
# # 03 · Pruning RIFE 4.0: sensitivity-guided plans, distillation, and the lite width cut to beat
#
# Channel pruning removes whole output channels of IFNet's convs. Which channels go, and how many per layer, decides
# both what it costs in quality and what it buys in **measured** time. This notebook compares:
#
# - the sweep of earlier work: **naive global** (one L1 threshold over all layers) and **architecture-aware** (protected
#   first convs, the same share cut from every other group), as **masks** (weights zeroed, shapes kept) and **physical**
#   removal;
# - **sensitivity-guided plans**: every prunable channel group is cut alone at a few ratios to measure its PSNR drop on
#   held-out triplets, and the time it saves is measured on this device (not read from MACs); a knapsack picks the ratios
#   that save the most time within a loss budget, and torch-pruning picks the channels (L1, group norm or Taylor);
# - the **lite** baseline: a uniform width cut of every block (192/128/96/64 → 144/96/72/48), as Practical-RIFE's
#   hand-designed lite models do;
# - each configuration named in `finetune`, **fine-tuned by distillation** from the unpruned model with the same budget, on
#   real triplets that evaluation never sees. The `finetune` stage trains them once and saves plan + weights; this
#   notebook loads them.
#
# **Target** (CPU profile, one run): ≥ 1.4× measured speedup over the unpruned model, the 95 % interval's lower end
# ≥ 1.3×, at ≤ 0.3 dB PSNR loss on held-out triplets. Every number below comes from this run
# (`rifelab.studies.pruning`).

# %% tags=["parameters"]
profile = "cpu"       # params.yaml (cpu) | params-cuda.yaml (cuda) | params-mps.yaml (mps)
overrides = {}        # e.g. {"timing_rounds": 3}: this run only (fine-tuning keys must match the finetune stage)
results_root = None   # None: scratch/ (trial run, git ignores it); dvc repro passes "results"

# %%
from IPython.display import Markdown, display

from rifelab.studies import pruning

res = pruning.run(profile, overrides, results_root)
display(Markdown(res.summary_markdown()))

# %% [markdown]
# ## Where the time goes, and what each group costs
#
# First: each channel group's share of the forward pass as **measured** on this device (forward hooks around every conv)
# beside its share of MACs; the rest of the pass (warps, resizes, concatenations) is the bar `other`, which no channel
# cut shortens. Then: the PSNR change on held-out triplets when one group alone loses a share of its channels, and the
# ratios each loss budget's plan chose.

# %%
display(res.figures["latency_share"])
if "sensitivity" in res.figures:
    display(res.figures["sensitivity"], res.tables["allocations"].query("ratio > 0"))

# %% [markdown]
# ## Every configuration, timed side by side
#
# One interleaved run times every distinct architecture (a mask model has the unpruned shapes and its time; a fine-tuned
# model has its untrained twin's shapes). Speedup is the ratio of medians with a bootstrap 95 % interval; quality is PSNR
# on the held-out triplets and, where `../shared/data/middlebury-other` exists, the interpolation error (IE) on Middlebury
# "other".

# %%
cols = ["config", "speedup", "speedup_ci_low", "speedup_ci_high", "psnr", "dpsnr", "middlebury_ie", "gmac_ratio",
        "params_m", "latency_ms"]
display(res.tables["sweep"][cols].round(3), res.figures["pareto"])

# %% [markdown]
# ## Fine-tuning, importance criteria and the mask trap
#
# The loss curves of the `finetune` stage; the same sensitivity plan with other importance criteria (same shapes, so the
# same time; untrained); and why masks buy no speed and are not the physical model: a masked channel still emits
# PReLU(bias).

# %%
for name in ("finetuning", "importance_comparison", "mask_trap"):
    if name in res.tables:
        display(res.tables[name])
if "finetuning_loss" in res.figures:
    display(res.figures["finetuning_loss"])

# %% [markdown]
# ## Published figures and report 001's claims
#
# Claims only, never measured here: they concern other networks, or report 001's own masks. Our numbers for the same
# questions are in the tables above.

# %%
res.tables["published_claims"][["source", "model", "metric", "value", "unit", "status"]]

# %% [markdown]
# ## Closing note
#
# The Pareto table (physical models: speedup with its 95 % interval, PSNR change, Middlebury IE) and the verdict, both
# generated from this run. The best model is saved as `best.pt` beside the tables; `rifelab.pruning.apply.load_pruned(path)`
# returns a model with the usual `interpolate(img0, img1, timestep, scale)`.

# %%
pareto = res.tables["sweep"].query("mode != 'mask'")
cols = ["config", "speedup", "speedup_ci_low", "speedup_ci_high", "dpsnr", "middlebury_ie"]
display(Markdown(pareto[cols].round(3).to_markdown(index=False)))
display(Markdown(res.summary_markdown("Verdict")))
