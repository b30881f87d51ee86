"""The pipeline: DVC stages (exact deps and per-key params), profiles, study params validation, atomic study
results, the notebook runner, the report, and the layering rules (the library imports no study, no cycles)."""

from __future__ import annotations

import importlib
import json
import os
import re
import stat
from pathlib import Path

import nbformat
import papermill
import pytest
import yaml
from dvc.repo import Repo
from dvc_render import VegaRenderer, render_html

from dvc_checks import DVC, assert_plots_readable
from dvc_checks import stage as _stage
from import_closure import PKG, ROOT, closure, direct_imports, module_file
from notebook_checks import assert_figures_render
from rifelab.cli import main as cli_main
from rifelab.publish.notebooks import parse_set, run_notebook
from rifelab.publish.report import build_report
from rifelab.publish.results import atomic_path, atomic_write_text
from rifelab.studies import STUDIES
from rifelab.studies.base import COMMON, PROFILE_FILES, PROFILES, Param, ParamError, load_study_params, read_params_file

from import_closure import RUNNER, stage_code
MAX_NOTEBOOK_CODE_LINES = 60


def _study(name: str):
    return importlib.import_module(f"rifelab.studies.{name}")


@pytest.mark.parametrize("name", STUDIES)
def test_stage_deps_are_exactly_the_code_the_study_runs(name):
    deps = set(_stage(name)["deps"])
    code = {str(p.relative_to(ROOT)) for p in closure(f"rifelab.studies.{name}")} | set(RUNNER)
    listed = {d for d in deps if d.startswith("rifelab/")}
    assert not code - listed, f"{name}@*: deps miss {sorted(code - listed)}"
    assert not listed - code, f"{name}@*: deps list modules the study does not import: {sorted(listed - code)}"
    # the code-only form of the notebook (jupytext-paired script): a JupyterLab save of the .ipynb reruns nothing
    assert f"notebooks/py/{Path(_study(name).NOTEBOOK).stem}.py" in deps
    assert not [d for d in deps if d.endswith(".ipynb")]


def test_report_stage_deps_are_the_report_builders_code():
    listed = {d for d in _stage("report")["deps"] if d.startswith("rifelab/")}
    assert listed == set(stage_code("report")) and "rifelab/publish/report.py" in listed


@pytest.mark.parametrize("name", STUDIES)
def test_stage_tracks_exactly_the_keys_the_study_reads(name):
    (entry,) = _stage(name)["params"]
    (keys,) = entry.values()
    schema = _study(name).PARAMS
    expected = [f"common.{k}" for k in COMMON] + [f"{name}.{k}" for k, p in schema.items() if p.tracked]
    assert sorted(keys) == sorted(expected)
    # the pipeline, and only the pipeline, writes the committed results (trial runs default to scratch/)
    assert _stage(name)["cmd"] == (f"rifelab notebook notebooks/{_study(name).NOTEBOOK} --profile ${{key}} "
                                   "--results-root results")


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("name", STUDIES)
def test_every_profile_file_is_valid_for_every_study(profile, name):
    params = load_study_params(name, _study(name).PARAMS, profile)
    assert params["device"].split(":")[0] == profile


def test_profiles_share_keys_and_write_to_their_own_folders():
    files = {p: read_params_file(ROOT / f) for p, f in PROFILE_FILES.items()}
    for profile, data in files.items():
        assert list(data) == list(files["cpu"]), profile
        for section in data:
            assert list(data[section]) == list(files["cpu"][section]), (profile, section)
    assert DVC["vars"][0]["profiles"] == {p: {"params": f} for p, f in PROFILE_FILES.items()}
    for name in STUDIES:
        stage = _stage(name)
        outs = [next(iter(o)) if isinstance(o, dict) else o for o in stage["outs"]]
        assert all(o.startswith(("results/${key}/", "results/headlines/${key}/")) for o in outs), name
        assert f"results/headlines/${{key}}/{name}.json" in outs and "metrics" not in stage  # one top-level table


@pytest.mark.parametrize("name", STUDIES)
def test_notebook_is_thin_with_one_parameters_cell(name):
    path = ROOT / "notebooks" / _study(name).NOTEBOOK
    nb = nbformat.read(path, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    assert set(papermill.inspect_notebook(str(path))) == {"profile", "overrides", "results_root"}
    code = [ln for c in nb.cells if c.cell_type == "code" for ln in c.source.splitlines()
            if ln.strip() and not ln.strip().startswith("#")]
    assert len(code) <= MAX_NOTEBOOK_CODE_LINES, f"{path.name}: {len(code)} lines of code"
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "committed sources carry no outputs"


def test_library_imports_no_study_and_has_no_cycles():
    graph = {p: {module_file(m) for m in direct_imports(p)} - {p} for p in PKG.rglob("*.py")}
    for path, files in graph.items():
        if "studies" not in path.relative_to(PKG).parts:
            studies = [f for f in files if "studies" in f.relative_to(PKG).parts]
            assert not studies, f"{path} imports {studies}"
    done: set[Path] = set()

    def visit(node: Path, trail: list[Path]) -> None:
        for nxt in graph.get(node, ()):
            if nxt in trail:
                cycle = trail[trail.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(str(p.relative_to(ROOT)) for p in cycle))
            if nxt not in done:
                visit(nxt, trail + [nxt])
        done.add(node)

    for node in graph:
        visit(node, [node])


# ----------------------------------------------------------------------------- params validation

def _params_file(tmp_path: Path, **baseline) -> Path:
    data = read_params_file(ROOT / "params.yaml")
    data["baseline"].update(baseline)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_unknown_key_is_refused_with_the_close_match(tmp_path):
    schema = _study("baseline").PARAMS
    with pytest.raises(ParamError, match=r"'n_triplet' \(did you mean 'n_triplets'\?\)"):
        load_study_params("baseline", schema, "cpu", {"n_triplet": 2})
    data = read_params_file(ROOT / "params.yaml")
    data["baseline"]["n_tripletz"] = 3
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ParamError, match="unknown parameter 'n_tripletz'"):
        load_study_params("baseline", schema, params_path=tmp_path / "p.yaml")


@pytest.mark.parametrize("key,value,match", [
    ("n_triplets", -1, "too small"), ("n_triplets", 0, "too small"), ("n_triplets", "five", "expected a int"),
    ("n_triplets", 2.5, "expected a int"), ("clips", ["carphone", "nope"], r"one of \['carphone'"),
    ("scale", 3.0, r"one of \[0.25"), ("resolutions", ["1280by720"], "WxH"), ("repeats", None, "is null"),
    ("progress", "yes", "expected a bool"),
])
def test_bad_values_are_refused_naming_key_and_allowed(key, value, match):
    with pytest.raises(ParamError, match=match) as err:
        load_study_params("baseline", _study("baseline").PARAMS, "cpu", {key: value})
    assert f"parameter '{key}" in str(err.value)


def test_missing_key_malformed_yaml_unknown_profile_and_wrong_device(tmp_path):
    schema = _study("baseline").PARAMS
    data = read_params_file(ROOT / "params.yaml")
    del data["baseline"]["stride"]
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ParamError, match="missing parameter 'stride'"):
        load_study_params("baseline", schema, params_path=tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text("common:\n  device: cpu\n baseline: [1,\n")
    with pytest.raises(ParamError, match=r"not valid YAML at line \d+"):
        load_study_params("baseline", schema, params_path=tmp_path / "b.yaml")
    with pytest.raises(ParamError, match="unknown profile 'tpu'"):
        load_study_params("baseline", schema, "tpu")
    with pytest.raises(ParamError, match="profile 'cpu' runs on cpu devices"):
        load_study_params("baseline", schema, "cpu", {"device": "cuda"})


def test_set_needs_key_equals_value():
    assert parse_set(["n_triplets=2", "clips=[bikes]", "dataset_path=null"]) == {
        "n_triplets": 2, "clips": ["bikes"], "dataset_path": None}
    for bad in ("n_triplets", "=3", "clips=[a"):
        with pytest.raises(ValueError, match="--set"):
            parse_set([bad])


def test_param_kinds_are_checked_when_declared():
    with pytest.raises(ValueError, match="unknown parameter kind"):
        Param("integer", "x")


# ----------------------------------------------------------------------------- study runs

TINY = {"clips": ["bikes"], "n_triplets": 1, "resolutions": ["160x96", "96x64"], "repeats": 2, "warmup": 0,
        "dataset_path": None, "examples": 1}


def test_baseline_study_writes_its_profile_folder_and_short_headline(tmp_path):
    res = _study("baseline").run("cpu", TINY, tmp_path)
    base = tmp_path / "cpu"
    assert res.folder.parent == base / "baseline" and res.folder.name == res.env["device_key"]
    for name in ("quality_summary.csv", "quality_summary.md", "efficiency.csv", "triplet_grid.png",
                 "psnr_distribution.png", "latency_vs_resolution.png", "published_vs_ours.md", "metrics.json"):
        assert (res.folder / name).exists(), name
    headline = json.loads((base / "metrics" / "baseline.json").read_text())
    assert set(headline) == {"psnr_bikes", "ms_160x96", "ms_96x64", "environment"}
    assert headline["environment"]["profile"] == "cpu"
    assert res.metrics["quality"]["bikes"]["psnr_gain_vs_average"] > 3  # RIFE beats blending on real motion
    assert res.metrics["quality"]["bikes"]["n"] == 1 and res.metrics["notes"] == []
    assert_plots_readable("baseline", base)
    assert [p.name for p in (base / "baseline").iterdir()] == [res.folder.name]  # no partial folder left


def test_more_triplets_than_a_clip_holds_are_capped_and_said():
    notes: list[str] = []
    assert _study("baseline")._clip_triplet_count("bikes", 500, 1, notes) == 124  # 250 frames, stride 1
    assert notes == ["bikes: 500 triplets asked for, the clip has room for 124 at stride 1; used 124"]
    assert _study("baseline")._clip_triplet_count("bikes", 3, 2, notes) == 3 and len(notes) == 1


def test_failed_study_run_keeps_the_previous_results(tmp_path, monkeypatch):
    baseline = _study("baseline")
    first = baseline.run("cpu", TINY, tmp_path)
    before = {p.name: p.read_bytes() for p in first.folder.iterdir()}
    headline = (tmp_path / "cpu" / "metrics" / "baseline.json").read_bytes()

    def boom(*args, **kwargs):
        raise RuntimeError("bench failed")

    monkeypatch.setattr(baseline, "bench_row", boom)
    with pytest.raises(RuntimeError, match="bench failed"):
        baseline.run("cpu", {**TINY, "n_triplets": 2}, tmp_path)
    assert {p.name: p.read_bytes() for p in first.folder.iterdir()} == before
    assert (tmp_path / "cpu" / "metrics" / "baseline.json").read_bytes() == headline
    assert [p.name for p in (tmp_path / "cpu" / "baseline").iterdir()] == [first.folder.name]


def test_invalid_params_touch_nothing(tmp_path):
    with pytest.raises(ParamError):
        _study("baseline").run("cpu", {"n_triplets": 0}, tmp_path)
    assert not (tmp_path / "cpu").exists()


@pytest.mark.notebook
def test_notebook_command_runs_baseline_and_report_reads_well(tmp_path, capsys):
    out_nb = tmp_path / "01.ipynb"
    sets = [f"--set={k}={json.dumps(v)}" for k, v in TINY.items()]
    assert cli_main(["notebook", "notebooks/01_baseline.ipynb", "-o", str(out_nb), "--results-root",
                     str(tmp_path / "r"), *sets]) == 0
    nb = nbformat.read(out_nb, as_version=4)
    text = json.dumps(nb)
    assert str(ROOT) not in text  # no machine paths of the project in the executed notebook
    assert "RIFE" in text and "dB PSNR" in text  # the generated sentences
    assert_figures_render(out_nb, min_images=3)
    report = build_report([out_nb], tmp_path / "report.html")
    html = report.read_text()
    assert "baseline.run(" not in html  # code hidden
    assert "FutureWarning" not in html and "Warning:" not in html
    assert "What this run measured" in html
    # a bad override fails before anything is written, with one clear line
    capsys.readouterr()
    assert cli_main(["notebook", "notebooks/01_baseline.ipynb", "-o", str(tmp_path / "x.ipynb"),
                     "--results-root", str(tmp_path / "s"), "--set", "n_triplet=2"]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'n_triplets'" in err and not (tmp_path / "x.ipynb").exists()
    assert not (tmp_path / "s" / "cpu" / "baseline").exists()


def test_report_drops_parameters_and_stderr(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("profile = 'cpu'", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("secret_code()", outputs=[
                    nbformat.v4.new_output("stream", name="stderr", text="FutureWarning: noise"),
                    nbformat.v4.new_output("stream", name="stdout", text="kept result")]),
                nbformat.v4.new_markdown_cell("## Story")]
    src = tmp_path / "a.ipynb"
    nbformat.write(nb, src)
    html = build_report([src], tmp_path / "r.html").read_text()
    assert "kept result" in html and "Story" in html
    assert "secret_code" not in html and "FutureWarning" not in html and "profile = " not in html


# ----------------------------------------------------------------------------- runner and writes

def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "x.json") as tmp:
            tmp.write_text("partial")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    atomic_write_text(tmp_path / "y.txt", "ok")
    assert (tmp_path / "y.txt").read_text() == "ok"
    # the renamed file gets the mode of any file the user writes (mkstemp alone would leave 0600)
    umask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "z.txt", "ok")
        assert stat.S_IMODE((tmp_path / "z.txt").stat().st_mode) == 0o644
    finally:
        os.umask(umask)


def test_notebooks_run_on_this_interpreter(tmp_path, monkeypatch):
    """The kernel is this interpreter, not whatever 'python3' kernelspec Jupyter finds first."""
    import sys

    monkeypatch.delenv("JUPYTER_PATH", raising=False)
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("import sys; print(sys.executable, x)")]
    src = tmp_path / "nb.ipynb"
    nbformat.write(nb, src)
    out = run_notebook(src, tmp_path / "out.ipynb", parameters={"x": 7})
    executed = json.loads(out.read_text())
    texts = [o.get("text", "") for o in executed["cells"][-1]["outputs"]]
    printed = "".join(t if isinstance(t, str) else "".join(t) for t in texts)
    assert printed.split() == [sys.executable, "7"]
    assert executed["metadata"]["kernelspec"]["name"] == "python3"  # the output opens like its source
    assert "JUPYTER_PATH" not in os.environ
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nb.ipynb", "out.ipynb"]


def test_cell_timeout_from_environment(monkeypatch):
    from rifelab.publish.notebooks import _env_timeout

    monkeypatch.setenv("RIFELAB_CELL_TIMEOUT", "90")
    assert _env_timeout() == 90.0
    for bad in ("soon", "-5"):
        monkeypatch.setenv("RIFELAB_CELL_TIMEOUT", bad)
        with pytest.raises(ValueError, match="RIFELAB_CELL_TIMEOUT"):
            _env_timeout()
    monkeypatch.delenv("RIFELAB_CELL_TIMEOUT")
    assert _env_timeout() is None


def test_dvc_plots_folder_is_ignored():
    assert "dvc_plots/" in (ROOT / ".gitignore").read_text().split()


CDN_URL = re.compile(r"https?://[^\s\"'<>]*(cdn|jsdelivr|unpkg|googleapis)", re.I)


def test_plots_page_is_the_offline_template_and_loads_nothing_from_a_cdn(tmp_path):
    with Repo(str(ROOT)) as repo:  # DVC reads `[plots] html_template` relative to .dvc/
        template = Path(repo.dvc_dir) / repo.config["plots"]["html_template"]
    assert template.resolve() == ROOT / "vendor" / "vega-offline" / "plots_template.html"
    text = template.read_text(encoding="utf8")
    assert "{plot_divs}" in text and "{scripts}" not in text  # {scripts} is where DVC puts its CDN tags
    assert "vegaEmbed" in text and not CDN_URL.search(text) and "<script src" not in text
    page = tmp_path / "index.html"
    render_html([VegaRenderer([{"step": 0, "loss": 1.0}], "loss.csv", x="step", y="loss")], page, template)
    rendered = page.read_text(encoding="utf8")
    assert "vegaEmbed('#" in rendered and not CDN_URL.search(rendered)


@pytest.mark.parametrize("name", [n for n, s in DVC["stages"].items() if "plots" in s.get("do", {})])
def test_committed_cpu_plots_match_their_declarations(name):
    if not (ROOT / "results" / "cpu" / "plots" / name).is_dir():
        pytest.skip("no committed cpu plots for this study")
    assert_plots_readable(name, ROOT / "results" / "cpu")


# av: a core dependency here, but absent on the GPU machine of the device run, whose modules (frames.images among
# them) must import without it (tests/test_device_run.py): where they use it, it is imported inside the function
OPTIONAL_HEAVY = {"papermill", "nbconvert", "onnx", "onnxruntime", "openvino", "nncf", "torch_tensorrt", "tensorrt",
                  "ray", "pynvml", "ipywidgets", "IPython", "ptflops", "jupytext", "av"}


def test_imports_sit_at_the_top_except_optional_heavy_dependencies():
    import ast

    late = []
    for path in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if isinstance(inner, ast.Import):
                        names = [a.name for a in inner.names]
                    elif isinstance(inner, ast.ImportFrom):
                        names = ["." if inner.level else inner.module or ""]
                    else:
                        continue
                    if any(n.split(".")[0] not in OPTIONAL_HEAVY for n in names):
                        late.append(f"{path.relative_to(ROOT)}:{inner.lineno} {names}")
    assert not late, "imports inside functions:\n" + "\n".join(late)


def test_baseline_scores_a_benchmark_folder_when_given(tmp_path, middlebury):
    """The part that needs ../shared/data: skipped alone where the folder is absent."""
    res = _study("baseline").run("cpu", {**TINY, "dataset_path": str(middlebury), "dataset_limit": 2}, tmp_path)
    rife = res.tables["quality_summary"].query("method == 'rife'").set_index("source")
    assert rife.loc["Middlebury other", "n"] == 2 and rife.loc["Middlebury other", "psnr"] > 25
    claims = res.tables["published_vs_ours"]
    assert claims["ours (RIFE 4.0)"].str.startswith("n/a").all()  # the paper's sets and model are not ours


def test_claims_sit_beside_ours_only_like_with_like():
    from rifelab.publish import claims

    table = claims.claims("baseline")
    ours = {("RIFE (paper model)", "UCF101", "psnr"): 35.0, ("RIFE 4.0", "Vimeo90K", "psnr"): 34.0}
    out = claims.beside_ours(table, ours, "ours")
    by = {(r.dataset, r.metric): r.ours for r in out.itertuples()}
    assert by[("UCF101", "psnr")] == 35.0
    assert by[("UCF101", "ssim")] == "n/a (not measured)"
    assert by[("Vimeo90K", "psnr")].startswith("n/a (different model")
    assert set(claims.claims()["status"]) >= {"published", "estimated, never measured"}


def test_cuda_profile_without_cuda_stops_before_writing(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("checks the refusal on a machine without CUDA")
    with pytest.raises(ParamError, match="profile 'cuda'.*CUDA is not available"):
        _study("baseline").run("cuda", TINY, tmp_path)
    assert not (tmp_path / "cuda").exists()


def test_figures_made_without_pyplot_display_as_png():
    """A Figure built without pyplot (the viewer's) gets an image/png form once a study or the viewer ran."""
    from IPython.core.interactiveshell import InteractiveShell
    from matplotlib.figure import Figure

    from rifelab.publish.inline import figures_as_png

    shell = InteractiveShell.instance()
    try:
        fig = Figure(figsize=(2, 1))
        fig.subplots().plot([0, 1])
        assert figures_as_png()
        data, _ = shell.display_formatter.format(fig)
        assert data["image/png"][:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        InteractiveShell.clear_instance()
