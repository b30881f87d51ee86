# %% [markdown] tags=["colab"]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/REPOSITORY-OWNER-NOT-SET/rifelab/blob/main/notebooks/01_baseline.ipynb)
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
# # 01 · Baseline validation of RIFE 4.0
#
# The bundled **RIFE 4.0** weights on triplets (I0, I2 → I1, t = 0.5) of three **real** clips, scored with the official
# RIFE benchmark protocol (prediction rounded to uint8; PSNR; SSIM with an 11×11 Gaussian window), against two naive
# baselines so the reader sees what the model adds: the **average** of the two neighbours and a **repeat** of I0.
# Then efficiency per resolution: latency (median and p10–p90 over repeats after warm-up), FPS, peak memory, GMAC and
# parameters. Parameters live in the `baseline` section of the profile's params file; `overrides` changes one run.
# Every number below comes from this run (`rifelab.studies.baseline`), with the device, torch version and commit.

# %% tags=["parameters"]
profile = "cpu"       # params.yaml (cpu) | params-cuda.yaml (cuda) | params-mps.yaml (mps)
overrides = {}        # e.g. {"n_triplets": 5, "dataset_path": "/data/ucf101"}: this run only
results_root = None   # None: scratch/ (trial run, git ignores it); dvc repro passes "results"

# %%
from IPython.display import Markdown, display

from rifelab.studies import baseline

res = baseline.run(profile, overrides, results_root)

# %% [markdown]
# ## Quality on the real clips (and on your benchmark folder, if given)

# %%
cols = ["source", "method", "n", "psnr", "psnr_ci95_low", "psnr_ci95_high", "ssim", "ie"]
display(res.tables["quality_summary"][cols].round(4))
display(res.figures["triplet_grid"], res.figures["psnr_distribution"])

# %% [markdown]
# ## Efficiency per resolution (FP32 eager)

# %%
cols = ["resolution", "median_ms", "p10_ms", "p90_ms", "fps", "peak_mem_mib", "gmac", "params_m"]
display(res.tables["efficiency"][cols].round(2), res.figures["latency_vs_resolution"])

# %% [markdown]
# ## Published figures beside ours
#
# A published number gets ours beside it only when we measured the same thing: same dataset, same model version,
# same metric. Otherwise the table says n/a and why (the RIFE paper's figures are for its own model, not 4.0).

# %%
res.tables["published_vs_ours"]

# %%
display(Markdown(res.summary_markdown()))
