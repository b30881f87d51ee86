# %% [markdown] tags=["colab"]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/REPOSITORY-OWNER-NOT-SET/rifelab/blob/main/notebooks/00_interactive.ipynb)
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
# # 00 · Interactive: RIFE at any timestep, and the `rifelab interpolate` pipeline
#
# RIFE 4.x takes the time *t* of the wanted frame as an input, so one model makes a frame anywhere between two
# frames, not only the middle one. This notebook shows that on **real** clip frames with the bundled **RIFE 4.0**
# weights: I0, the frame RIFE makes at *t*, I1 and the clip's true middle frame, with a slider for *t* and dropdowns
# for the triplet and the flow scale (opened in JupyterLab or Colab).
#
# It also records a strip of frames at several timesteps, the quality of the middle frame against two naive
# baselines, and the throughput of the `rifelab interpolate` pipeline. Parameters live in the `interactive` section of
# the profile's params file (`params.yaml` for the CPU); `overrides` changes one run. Every number below comes from
# this run (`rifelab.studies.interactive`), with the device, torch version and commit.

# %% tags=["parameters"]
profile = "cpu"                     # params.yaml (cpu) | params-cuda.yaml (cuda) | params-mps.yaml (mps)
overrides = {"show_widgets": True}  # this run only; headless runs (dvc repro) inject {}, keeping the params file's false
results_root = None                 # None: scratch/ (trial run, git ignores it); dvc repro passes "results"

# %%
from IPython.display import Markdown, display

from rifelab.studies import interactive

res = interactive.run(profile, overrides, results_root)

# %% [markdown]
# ## Move the slider
#
# The slider sets *t*, the dropdowns the triplet and the flow scale (smaller scales estimate flow on a coarser grid:
# faster, and better for large motion in big frames). While a frame is made the status line says
# **computing t = …**; if you move on before it is done, the old request is dropped and only the latest value is
# drawn. Frames already made are cached, so moving back is instant. On a CPU, **scale 4** first shows its estimated
# cost and runs only when you press the button. The fourth panel is the clip's real frame at *t* = 0.5, so the PSNR
# in its title means something at *t* = 0.5 only. Headless runs save the view at the parameter values instead.

# %%
display(interactive.controls(res))
display(res.figures["view"])

# %% [markdown]
# ## Frames at several timesteps
#
# The same pair at every timestep of `strip_timesteps`: the motion should advance evenly from I0 to I1.

# %%
display(res.figures["timestep_strip"])

# %% [markdown]
# ## How good is the middle frame?
#
# PSNR and SSIM (official RIFE protocol) of the frame at *t* = 0.5 against the clip's real middle frame, per
# triplet, beside repeating I0 (what a frame-duplicating rate converter shows) and the pixel average of I0 and I1.
# A handful of triplets from one clip: a sanity check that the viewer shows the real model, not a benchmark
# (notebook 01 scores many triplets with confidence intervals).

# %%
quality = res.tables["middle_frame_quality"]
display(quality.pivot(index="triplet", columns="method", values="psnr_db").round(2))
display(quality.groupby("method", sort=False)[["psnr_db", "ssim"]].mean().round(4))

# %% [markdown]
# ## Throughput of `rifelab interpolate`
#
# The first `bench_frames` frames of `bench_clip` are written as PNGs, then three ways of making the same output with
# the same model calls are timed (one warm-up, `bench_repeats` repeats taken in turn so that load changes hit all
# alike; median and p10–p90): **model only** (the batched calls on frames already in memory), **pipeline (threads)**
# (PNG folder to PNG folder: reader thread, model, writer thread) and **pipeline (serial)** (the same in one thread).
# *model share* is the model-only time over the mode's time: 100 % means the I/O is fully hidden. On a CPU the
# model's own threads and the reader/writer threads share the cores; on a GPU the CPU threads decode and encode while
# the accelerator computes, which is where the pipeline helps most.

# %%
cols = ["mode", "median_s", "p10_s", "p90_s", "output_fps", "model_share"]
display(res.tables["pipeline_benchmark"][cols].round(3), res.figures["pipeline_benchmark"])

# %%
display(Markdown(res.summary_markdown()))
