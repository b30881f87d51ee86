# %% [markdown] tags=["colab"]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/REPOSITORY-OWNER-NOT-SET/rifelab/blob/main/notebooks/05_device_run.ipynb)
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
# # 05 · The cuda profile's device run
#
# What `bash scripts/device_run.sh $OUT` measured on a lent GPU machine (H100/H200): FP32, TF32 + cuDNN benchmark, FP16, bf16, channels_last, CUDA graphs with static buffers, `torch.compile`, batch 1/4/8 and 2 CUDA streams at 1920x1080 and 1280x720 on real frames; PSNR against FP32 on real pairs (FP16 also at 3840x2160); model calls/s and VSGAN-style 2x output fps; peak GPU memory; the profiler's top-5 kernels.
#
# This notebook **re-times nothing**: it renders the archive the run wrote (`results/cuda/device_run.tar.gz`), and every sentence names the machine and time of the measurement. See the README, *GPU run*.

# %% tags=["parameters"]
# parameters
archive = "results/cuda/device_run.tar.gz"  # the landed archive (rifelab device-report)
results_root = None  # None: a scratch folder; the DVC stage passes results

# %%
from IPython.display import Image, Markdown, display

from rifelab.devicerun.render import render

result = render(archive, results_root)
display(Markdown(result.summary_markdown()))

# %% [markdown]
# ## Throughput and quality per configuration

# %%
for path in result.figures.values():
    display(Image(filename=str(path)))
for name, df in result.tables.items():
    if name.startswith("summary_"):
        display(Markdown(f"**{name.removeprefix('summary_')}**"), df.round(2))

# %% [markdown]
# ## Half precision at 3840x2160, batch and streams, torch.compile, top-5 kernels

# %%
for name in ("fp16_4k", "batch_streams", "compile", "kernels_top5"):
    if name in result.tables:
        display(Markdown(f"**{name}**"), result.tables[name].round(3))

# %% [markdown]
# ## What was not run, and why

# %%
display(result.tables["not_run"])
