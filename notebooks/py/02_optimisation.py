# %% [markdown] tags=["colab"]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/REPOSITORY-OWNER-NOT-SET/rifelab/blob/main/notebooks/02_optimisation.ipynb)
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
# # 02 · Optimisation: is rifelab the fast way to run RIFE?
#
# People who want speed from RIFE rarely run plain PyTorch: they export it to **ONNX Runtime**, **OpenVINO** (with
# INT8) or **TensorRT**. This study times every PyTorch configuration of `rifelab.engines.torch_engine` (precision, memory format,
# cached grids, torch.compile, CUDA graphs) **and** those engines, through `rifelab.engines.backends`, side by side in one run:
# each timed round calls every configuration once, so a change of load on a shared machine hits all of them alike.
# Speedups are relative to PyTorch FP32 eager timed in the same rounds.
#
# Each configuration declares what it needs (CUDA, MPS, native CPU bf16/fp16, a compile toolchain, a backend
# package). Where this machine lacks it, the configuration is listed as **skipped, with the reason**; one whose warm
# calls take far longer than the baseline's is stopped and listed as **too slow**. Nothing is faked or dropped.
# Quality is measured against the FP32 eager output on real frame pairs (PSNR, SSIM, max abs difference); INT8 is
# also scored against the ground-truth middle frames of held-out real triplets. INT8 calibration uses other frames
# of the bundled clips, never scored (checked before the run). Parameters: the `optimisation` section of the
# profile's params file (`rifelab.studies.optimisation`).

# %% tags=["parameters"]
profile = "cpu"       # params.yaml (cpu) | params-cuda.yaml (cuda) | params-mps.yaml (mps)
overrides = {}        # e.g. {"resolutions": ["640x360"], "target_resolution": "640x360"}: this run only
results_root = None   # None: scratch/ (trial run, git ignores it); dvc repro passes "results"

# %%
from IPython.display import Markdown, display

from rifelab.studies import optimisation

res = optimisation.run(profile, overrides, results_root)

# %% [markdown]
# ## Every configuration, every resolution
#
# Latency is the median over the interleaved rounds (p10–p90 beside it); `first_call_s` includes compilation,
# graph capture, export or INT8 calibration. On a Linux CPU, `peak_mem_mib` is the process's peak resident memory
# while the configuration scored the quality pairs (it includes everything the process holds).

# %%
cols = ["config", "backend", "dtype", "resolution", "status", "median_ms", "p10_ms", "p90_ms", "fps", "speedup",
        "first_call_s", "peak_mem_mib", "psnr_vs_fp32_db", "ssim_vs_fp32", "max_abs_diff"]
display(res.tables["results"].query("status == 'ran'")[cols].round(4))
display(res.tables["skipped_or_stopped"])

# %% [markdown]
# ## Speedup over FP32 eager (same run) and quality against speed

# %%
display(res.tables["speedup"].round(3), res.figures["speedup_bars"], res.figures["quality_vs_speed"])

# %% [markdown]
# ## INT8 against the ground truth
#
# Post-training INT8 (NNCF, OpenVINO) changes the output; what matters is how far it moves from the truth. The
# held-out triplets' middle frames are the truth; the change is INT8's PSNR minus FP32 eager's on the same triplets.

# %%
if "int8_vs_ground_truth" in res.tables:
    display(res.tables["int8_vs_ground_truth"].round(3))

# %% [markdown]
# ## Public figures beside ours (theirs, labelled)
#
# What users quote for RIFE on other engines. Their model (RIFE 4.6), GPU and engine differ from ours, so no number
# of ours is set beside theirs as if it measured the same thing; the `engine` and `fps_kind` columns say what they
# counted (output frames, or a ratio).

# %%
display(res.tables["published_anchors"])

# %%
display(Markdown(res.summary_markdown()))
