"""Notebooks that survive a user's hands: trial runs never touch the committed results, figures render."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from notebook_checks import assert_figures_render
from rifelab.publish.nbsave import KERNELSPEC, committed_form
from rifelab.publish.results import COMMITTED_RESULTS, SCRATCH, input_folders, results_base

ROOT = Path(__file__).resolve().parent.parent
# notebook 04 (synthetic depth, no model) with the tiny parameters of tests/test_coalign.py
COALIGN_TINY = {"frames": [20], "resolutions": ["32x24"], "dilations": [1, 3], "factor": 2, "iterations": 60,
                "stopping_rules": [{"rule": "plateau", "tol": 1e-4, "patience": 10}], "refine_iterations": [0, 10],
                "timing_repeats": 1, "example_frames": 3}


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A committed copy of the project's notebook-facing files, with committed results, as a fresh clone has them."""
    proj = tmp_path / "proj"
    for rel in (".gitignore", "params.yaml", "params-cuda.yaml", "params-mps.yaml", "dvc.yaml",
                "notebooks/04_coalign.ipynb"):
        (proj / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, proj / rel)
    committed = proj / COMMITTED_RESULTS / "cpu" / "metrics" / "coalign.json"
    committed.parent.mkdir(parents=True)
    committed.write_text('{"committed": true}\n')
    _git(proj, "init", "-q")
    _git(proj, "add", "-A")
    _git(proj, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "clone")
    return proj


def _notebook_cli(proj: Path, *extra: str) -> subprocess.CompletedProcess:
    sets = [f"--set={k}={json.dumps(v)}" for k, v in COALIGN_TINY.items()]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "rifelab.cli", "notebook", "notebooks/04_coalign.ipynb", *sets, *extra],
                          cwd=proj, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.notebook
def test_trial_runs_leave_the_committed_results_and_git_status_alone(project, tmp_path):
    """`rifelab notebook` without --results-root (what JupyterLab and Colab runs do: results_root = None) writes into
    the ignored scratch folder and names it first; with --results-root the executed notebook goes there too."""
    committed = (project / "results/cpu/metrics/coalign.json").read_text()
    run = _notebook_cli(project)
    assert run.returncode == 0, run.stderr[-2000:]
    scratch = project / SCRATCH / "cpu"
    assert str(scratch) in run.stdout.splitlines()[0] and "scratch" in run.stdout.splitlines()[0]
    executed = scratch / "notebooks" / "04_coalign.ipynb"
    first = next(o for c in json.loads(executed.read_text())["cells"] for o in c.get("outputs", []))
    assert "Trial run" in "".join(first.get("text", "")) and str(scratch) in "".join(first.get("text", ""))
    assert (scratch / "metrics" / "coalign.json").is_file()
    assert_figures_render(executed, min_images=3)

    elsewhere = tmp_path / "x"
    run = _notebook_cli(project, "--results-root", str(elsewhere))
    assert run.returncode == 0, run.stderr[-2000:]
    assert (elsewhere / "cpu" / "notebooks" / "04_coalign.ipynb").is_file()  # the executed notebook follows the root
    assert (elsewhere / "cpu" / "metrics" / "coalign.json").is_file()
    assert not (project / COMMITTED_RESULTS / "cpu" / "notebooks").exists()
    assert (project / "results/cpu/metrics/coalign.json").read_text() == committed
    assert _git(project, "status", "--porcelain", "--untracked-files=all") == ""


def test_read_only_inputs_come_from_the_committed_results_whatever_the_root(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert results_base("cpu") == ROOT / SCRATCH / "cpu"
    assert results_base("cpu", tmp_path) == tmp_path / "cpu"
    assert input_folders("cpu", tmp_path, "finetune") == [tmp_path / "cpu" / "finetune",
                                                           ROOT / "results" / "cpu" / "finetune"]
    assert input_folders("cpu", ROOT / "results", "finetune") == [ROOT / "results" / "cpu" / "finetune"]


@pytest.mark.skipif(not (ROOT / "results" / "cpu" / "finetune" / "lite.pt").is_file(), reason="no committed checkpoints")
def test_notebook_03_in_a_trial_folder_finds_the_committed_checkpoints(tmp_path, monkeypatch):
    from rifelab.studies import pruning
    from rifelab.studies.base import load_study_params

    monkeypatch.chdir(ROOT)
    p = load_study_params("pruning", pruning.PARAMS, "cpu")
    assert pruning.finetune_source(p, "cpu", tmp_path / "try") == ROOT / "results" / "cpu" / "finetune"
    assert not (tmp_path / "try").exists()


# ----------------------------------------------------------------------------- JupyterLab: pairing and git filter

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_and_its_paired_script_agree(path):
    """The script DVC depends on holds exactly the notebook's code and text, as jupytext writes it."""
    import jupytext
    from jupytext.config import load_jupytext_config

    from rifelab.publish.notebooks import check_paired, paired_script

    assert check_paired(path) == paired_script(path)
    nb = jupytext.read(path)
    assert jupytext.writes(nb, fmt="py:percent", config=load_jupytext_config(str(path))) == \
        paired_script(path).read_text(encoding="utf-8")
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")
    committed = json.loads(path.read_text())
    assert committed["metadata"] == {"kernelspec": KERNELSPEC}, "front-end metadata stays out of git"
    assert committed_form(json.loads(path.read_text())) == committed  # what JupyterLab saves is what is committed


def test_a_notebook_out_of_sync_with_its_script_is_refused(tmp_path):
    from rifelab.publish.notebooks import NotebookOutOfSync, run_notebook

    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks")
    nb_path = tmp_path / "notebooks" / "04_coalign.ipynb"
    nb = json.loads(nb_path.read_text())
    nb["cells"][-1]["source"] = ["print('edited without jupytext')"]
    nb_path.write_text(json.dumps(nb))
    with pytest.raises(NotebookOutOfSync, match=r"jupytext --sync .*04_coalign.ipynb"):
        run_notebook(nb_path, tmp_path / "out.ipynb")
    assert not (tmp_path / "out.ipynb").exists()


def _jupyterlab_save(nb: dict) -> dict:
    """The notebook as JupyterLab saves it after a run: kernel metadata, outputs, execution counts, cell metadata."""
    nb = json.loads(json.dumps(nb))
    nb["metadata"].update({
        "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
        "language_info": {"codemirror_mode": {"name": "ipython", "version": 3}, "file_extension": ".py",
                          "mimetype": "text/x-python", "name": "python", "nbconvert_exporter": "python",
                          "pygments_lexer": "ipython3", "version": "3.11.7"},
        "widgets": {"application/vnd.jupyter.widget-state+json": {"state": {}, "version_major": 2, "version_minor": 0}},
    })
    for k, cell in enumerate(c for c in nb["cells"] if c["cell_type"] == "code"):
        cell["execution_count"] = k + 1
        cell["metadata"].update({"scrolled": True, "execution": {"iopub.execute_input": "2026-12-07T04:00:00Z"}})
        cell["outputs"] = [
            {"output_type": "stream", "name": "stdout", "text": ["Trial run: results go to scratch/cpu\n"]},
            {"output_type": "display_data", "metadata": {},
             "data": {"image/png": "iVBORw0KGgo=", "text/plain": ["<Figure size 640x480 with 1 Axes>"]}},
        ]
    return nb


def test_a_jupyterlab_save_changes_neither_dvc_status_nor_git_status(tmp_path):
    """Open, run and save every notebook as JupyterLab with jupytext and rifelab's server configuration does, in a
    fresh clone (no git filter, no set-up): git sees no change, and no stage dependency changes its hash."""
    from jupytext import TextFileContentsManager
    from traitlets.config import Config

    from dvc_checks import DVC

    clone = tmp_path / "clone"
    files = [".gitignore", "jupytext.toml", *[p.relative_to(ROOT).as_posix() for p in (ROOT / "notebooks").rglob("*.py")],
             *[p.relative_to(ROOT).as_posix() for p in NOTEBOOKS]]
    for rel in files:
        (clone / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, clone / rel)
    _git(clone, "init", "-q")
    _git(clone, "add", "-A")
    _git(clone, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "clone")
    deps = sorted({d for s in DVC["stages"].values() for d in s.get("do", s).get("deps", []) if d.startswith("notebooks")})
    assert deps and not [d for d in deps if d.endswith(".ipynb")]
    before = {d: (clone / d).read_bytes() for d in deps}

    # the Jupyter server configuration that installing rifelab ships (pyproject's data-files)
    config = Config(json.loads((ROOT / "jupyter-config" / "rifelab.json").read_text()))
    manager = TextFileContentsManager(root_dir=str(clone), config=config)
    for path in NOTEBOOKS:
        rel = f"notebooks/{path.name}"
        model = manager.get(rel)
        manager.save({"type": "notebook", "format": "json", "content": _jupyterlab_save(model["content"])}, rel)
    assert {d: (clone / d).read_bytes() for d in deps} == before  # dvc status: no dependency hash changed
    assert _git(clone, "status", "--porcelain") == ""

    # a notebook outside a study folder is saved as it is, outputs included
    other = clone / "mine.ipynb"
    shutil.copy2(NOTEBOOKS[0], other)
    manager.save({"type": "notebook", "format": "json", "content": _jupyterlab_save(manager.get("mine.ipynb")["content"])},
                 "mine.ipynb")
    assert json.loads(other.read_text())["metadata"]["kernelspec"]["name"] == "python3"


# ----------------------------------------------------------------------------- Colab: badges, packaged params, a wheel


def test_badges_and_install_cells_agree_with_the_repository_address():
    from rifelab.publish.colab import PLACEHOLDER_OWNER, colab_url, repository_url, sync_all

    repo = repository_url(ROOT / "pyproject.toml")
    assert sync_all(ROOT, write=False) == []  # notebooks, paired scripts and README are what pyproject generates
    readme = (ROOT / "README.md").read_text()
    for path in NOTEBOOKS:
        nb = json.loads(path.read_text())
        badge, install = ("".join(c["source"]) for c in nb["cells"][:2])
        assert colab_url(repo, f"notebooks/{path.name}") in badge and colab_url(repo, f"notebooks/{path.name}") in readme
        assert f"rifelab[colab] @ git+{repo}" in install and "find_spec(\"rifelab\") is None" in install
    if PLACEHOLDER_OWNER in repo:
        assert "set when the repository is published" in readme


def test_packaged_params_are_the_project_params():
    from rifelab.params import FOLDER
    from rifelab.studies.base import PROFILE_FILES

    for name in PROFILE_FILES.values():
        assert (FOLDER / name).read_bytes() == (ROOT / name).read_bytes(), f"copy {name} to rifelab/params/"


def test_a_study_outside_the_project_uses_the_packaged_params_or_a_given_file(tmp_path, monkeypatch):
    from rifelab.params import FOLDER
    from rifelab.studies import coalign
    from rifelab.studies.base import load_study_params, params_file

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("rifelab.publish.results.REPO_ROOT", tmp_path)  # as installed from a wheel
    assert params_file("cuda") == FOLDER / "params-cuda.yaml"
    own = tmp_path / "mine.yaml"
    own.write_text((ROOT / "params.yaml").read_text().replace("iterations: 2000", "iterations: 7"))
    assert load_study_params("coalign", coalign.PARAMS, "cpu", params_path=own)["iterations"] == 7


@pytest.mark.slow
@pytest.mark.notebook
def test_colab_like_install_runs_a_notebook_outside_the_repository(tmp_path):
    """As Colab would: rifelab from a built wheel in a fresh virtual environment, one notebook copied to an empty
    folder outside the repository, executed with papermill and tiny overrides; nothing is written into the repo."""
    status = _git(ROOT, "status", "--porcelain", "--untracked-files=all")
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
                    str(ROOT)], check=True, capture_output=True, cwd=tmp_path, timeout=600)
    (wheel,) = wheels.glob("rifelab-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--ignore-installed", str(wheel)], check=True,
                   capture_output=True,
                   timeout=600)
    work = tmp_path / "content"  # Colab's working folder
    work.mkdir()
    shutil.copy2(ROOT / "notebooks" / "04_coalign.ipynb", work / "04_coalign.ipynb")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RIFELAB_DATA_DIR")}
    script = (
        "import json, sys, rifelab\n"
        "from pathlib import Path\n"
        "from rifelab.publish.notebooks import run_notebook\n"
        f"assert Path(rifelab.__file__).is_relative_to({str(venv)!r}), rifelab.__file__\n"
        f"run_notebook('04_coalign.ipynb', 'out.ipynb', parameters={{'overrides': {COALIGN_TINY!r}}})\n"
        "print(rifelab.__file__)\n"
    )
    run = subprocess.run([str(py), "-c", script], cwd=work, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert str(venv) in run.stdout
    assert (venv / "etc" / "jupyter" / "jupyter_server_config.d" / "rifelab.json").is_file()
    executed = work / "out.ipynb"
    assert_figures_render(executed, min_images=3)
    assert "Trial run" in executed.read_text() and (work / SCRATCH / "cpu" / "metrics" / "coalign.json").is_file()
    assert _git(ROOT, "status", "--porcelain", "--untracked-files=all") == status


# ----------------------------------------------------------------------------- readable outputs


def test_dvc_metrics_show_is_one_short_row_per_profile_and_study(tmp_path):
    """Short headlines share a few column names, so `dvc metrics show` (all studies, three profiles) fits 120 columns."""
    from dvc_checks import DVC
    from rifelab.publish.headlines import COLUMNS, headline_path, short_headline

    assert DVC["metrics"] == ["results/headlines"]
    full = {"interactive": {"rife_psnr_db": 31.481, "average_psnr_db": 26.2, "pipeline_output_fps": 8.351},
            "baseline": {"psnr_carphone": 31.5, "psnr_bikes": 36.7, "ms_320x192": 39.06, "ms_1280x720": 883.7,
                         "ms_640x360": 136.16},
            "optimisation": {"baseline_ms": 728.233, "best_fp32_quality_speedup": 2.9144, "not_run": 0, "noisy": True},
            "pruning": {"target_met": False, "unpruned_psnr": 33.583, "best_speedup": 1.257, "best_dpsnr": -0.625},
            "coalign": {"es_iterations": 382, "solver_speedup": 438.6, "synthetic_abs_rel_solver": 0.00531}}
    rows = {s: short_headline(s, h) for s, h in full.items()}
    assert rows["baseline"] == {"psnr_db": 34.1, "ms": 883.7}  # mean of the sources; the largest resolution
    assert rows["pruning"]["loss_db"] == 0.62 and rows["interactive"] == {"psnr_db": 31.48, "fps": 8.35}
    columns = set().union(*rows.values())
    assert rows["optimisation"]["noisy"] == 1 and "noisy" not in rows["baseline"]  # the flag travels with the numbers
    assert columns <= set(COLUMNS) and all(1 <= len(r) - ("noisy" in r) <= 3 for r in rows.values())
    width = len(str(headline_path("results", "cuda", "optimisation"))) + sum(4 + max(len(c), 7) for c in columns)
    assert width <= 120


def test_report_opens_with_a_summary_and_links_to_each_section(tmp_path):
    import nbformat

    from rifelab.publish.headlines import headline_path, short_headline
    from rifelab.publish.report import build_report

    books = tmp_path / "results" / "cpu" / "notebooks"
    books.mkdir(parents=True)
    paths = []
    for study, title in (("interactive", "00 · Interactive"), ("coalign", "04 · Co-alignment")):
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_markdown_cell("[![Open In Colab](x)](y)", metadata={"tags": ["colab"]}),
                    nbformat.v4.new_code_cell("install()", metadata={"tags": ["colab"]}),
                    nbformat.v4.new_markdown_cell(f"# {title}\n\nstory"),
                    nbformat.v4.new_code_cell("show()", outputs=[nbformat.v4.new_output(
                        "display_data", data={"text/html": f"<p>{study} table</p>"})])]
        paths.append(books / f"{'00' if study == 'interactive' else '04'}_{study}.ipynb")
        nbformat.write(nb, paths[-1])
    for study, full in (("interactive", {"rife_psnr_db": 31.481, "pipeline_output_fps": 8.351}),
                        ("coalign", {"solver_speedup": 438.6, "synthetic_abs_rel_solver": 0.00531})):
        path = headline_path(tmp_path / "results", "cpu", study)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(short_headline(study, full)))
    html = build_report(paths, tmp_path / "report.html").read_text()
    assert "In short" in html and "PSNR 31.48 dB" in html and "8.35 output frames/s" in html and "438.6x" in html
    assert 'href="#nb-00_interactive"' in html and 'id="nb-04_coalign"' in html and "00 · Interactive</a>" in html
    assert "Open In Colab" not in html and "install()" not in html  # the Colab cells are not for the reader


def test_tables_read_with_meaningful_digits_and_an_empty_one_is_a_sentence():
    import pandas as pd
    from IPython.core.interactiveshell import InteractiveShell

    from rifelab.publish.inline import EMPTY_TABLE, figures_as_png

    shell = InteractiveShell.instance()
    old = pd.get_option("display.float_format")
    try:
        figures_as_png()
        data, _ = shell.display_formatter.format(pd.DataFrame({"iterations": [377.0], "psnr": [31.4812]}))
        assert ">377<" in data["text/html"] and ">31.48<" in data["text/html"] and "377.0000" not in data["text/html"]
        data, _ = shell.display_formatter.format(pd.DataFrame({"skipped": []}))
        assert data == {"text/plain": EMPTY_TABLE, "text/html": f"<p><em>{EMPTY_TABLE}</em></p>"}
    finally:
        pd.set_option("display.float_format", old)
        InteractiveShell.clear_instance()


def test_report_summary_says_when_a_study_timing_was_noisy():
    from rifelab.publish.headlines import headline_sentence

    assert "noisy" in headline_sentence("optimisation", {"speedup": 2.5, "ms": 786.8, "noisy": 1})
    assert "noisy" not in headline_sentence("optimisation", {"speedup": 2.5, "ms": 786.8})
