"""What every study shares: validated params per device profile, seed, threads, device, model, result folder, publish.

A study run writes into a hidden temporary folder beside its result folder and swaps it into place only when the
run succeeds, so a failed or interrupted run never leaves a mix of old and new results. Files land under
`<results root>/<profile>/`: `<study>/<device_key>/` (everything), `metrics/<study>.json` (the headline, with the
environment) and `plots/<study>/*.csv` (for `dvc plots show`), and `<results root>/headlines/<profile>/<study>.json`
(two or three numbers under shared column names: one row of `dvc metrics show`).

Only the pipeline writes the committed `results/`: its stages pass `--results-root results`. Any other run (a
notebook in JupyterLab or Colab, `rifelab notebook` without `--results-root`) writes into the scratch folder
`scratch/` of the project (ignored by git) and says so in its first output line. Read-only inputs that an earlier
stage made (notebook 03's fine-tuned checkpoints) are looked up in the run's own results root first, then in the
committed `results/`, whatever the root.
"""

from __future__ import annotations

import difflib
import logging
import math
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import yaml

from rifelab.measure.benchmark import parse_resolution
from rifelab.params import FOLDER as PACKAGED_PARAMS
from rifelab.rife.model import RIFE
from rifelab.rife.checkpoints import load_rife
from rifelab.measure.profiling import environment_record, resolve_device
from rifelab.publish.headlines import headline_path, short_headline
from rifelab.publish.inline import figures_as_png
from rifelab.publish.results import (COMMITTED_RESULTS, PROFILE_FILES, PROFILES, atomic_path, find_project_root,
                                    results_base, save_figure, save_json, save_table)

log = logging.getLogger(__name__)

__all__ = [
    "PROFILES", "PROFILE_FILES", "COMMON", "Param", "ParamError", "params_file", "read_params_file",
    "load_study_params", "StudyRun", "StudyResult",
]

KINDS = ("int", "float", "bool", "str", "resolution", "list", "dict", "any")


class ParamError(ValueError):
    """A study parameter, params file or profile is wrong; the message says which and what is allowed."""


@dataclass(frozen=True)
class Param:
    """Schema of one study parameter.

    `kind` is one of KINDS; a `list` checks each item against `item` (a kind) and the bounds/choices. `tracked=False`
    marks a cosmetic key (progress bars, live widgets): DVC does not rerun the study when it changes. `feeds` names
    the study's cached products made from this key by another DVC stage of the study (the pruning study's
    finetune stage: see `rifelab.studies.pruning.params`): that stage tracks the key, and the products' fingerprints
    are derived from these flags, so the stage's params and the cache follow one declaration.
    """

    kind: str
    help: str
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] | None = None
    item: str | None = None
    nullable: bool = False
    tracked: bool = True
    feeds: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS or (self.item is not None and self.item not in KINDS):
            raise ValueError(f"unknown parameter kind {self.kind!r}/{self.item!r}; expected one of {KINDS}")

    def allowed(self) -> str:
        """The allowed values, in words."""
        kind = f"a list of {self.item or 'values'}" if self.kind == "list" else f"a {self.kind}"
        if self.kind == "resolution" or self.item == "resolution":
            kind += " (WxH, e.g. 1280x720)"
        parts = [kind]
        if self.choices is not None:
            parts.append(f"one of {list(self.choices)}")
        if self.low is not None:
            parts.append(f">= {self.low:g}")
        if self.high is not None:
            parts.append(f"<= {self.high:g}")
        return ", ".join(parts) + (", or null" if self.nullable else "")

    def check(self, key: str, value: Any) -> Any:
        """The value, normalised (ints as int, floats as float); raises ParamError naming the key otherwise."""
        if value is None:
            if self.nullable:
                return None
            raise ParamError(f"parameter {key!r} is null; expected {self.allowed()} ({self.help})")
        if self.kind == "list":
            if not isinstance(value, (list, tuple)):
                raise ParamError(f"parameter {key!r} = {value!r}: expected {self.allowed()} ({self.help})")
            return [self._scalar(f"{key}[{i}]", v, self.item or "any") for i, v in enumerate(value)]
        return self._scalar(key, value, self.kind)

    def _scalar(self, key: str, value: Any, kind: str) -> Any:
        def bad(why: str = "") -> ParamError:
            return ParamError(f"parameter {key!r} = {value!r}{why}: expected {self.allowed()} ({self.help})")

        if kind == "bool":
            if not isinstance(value, bool):
                raise bad()
        elif kind == "int":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or float(value) != int(value):
                raise bad()
            value = int(value)
        elif kind == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise bad()
            value = float(value)
        elif kind == "str":
            if not isinstance(value, str) or not value:
                raise bad()
        elif kind == "resolution":
            try:
                w, h = parse_resolution(value)
            except (ValueError, TypeError) as exc:
                raise bad(f" ({exc})") from None
            value = f"{w}x{h}"
        elif kind == "dict":
            if not isinstance(value, dict):
                raise bad()
        if self.choices is not None and value not in self.choices:
            raise bad()
        if kind in ("int", "float"):
            if self.low is not None and value < self.low:
                raise bad(" is too small")
            if self.high is not None and value > self.high:
                raise bad(" is too large")
        return value


COMMON: dict[str, Param] = {
    "device": Param("str", "torch device of this profile: cpu, cuda, cuda:N or mps"),
    "seed": Param("int", "seed of torch, numpy and random", low=0),
    "checkpoint": Param("str", "RIFE 4.x checkpoint path; null = the bundled RIFE 4.0 weights", nullable=True),
    "threads": Param("int", "torch CPU threads; null = torch's default", low=1, nullable=True),
}


def params_file(profile: str, root: str | os.PathLike | None = None) -> Path:
    """The params file of a profile (params.yaml for cpu, params-cuda.yaml, params-mps.yaml) in `root`.

    Without `root`: the project's file, else (outside a project: Colab, an installed wheel) the package's copy.
    """
    if profile not in PROFILES:
        raise ParamError(f"unknown profile {profile!r}; expected one of {list(PROFILES)}")
    local = Path(root or find_project_root()) / PROFILE_FILES[profile]
    return local if root is not None or local.is_file() else PACKAGED_PARAMS / PROFILE_FILES[profile]


def read_params_file(path: str | os.PathLike) -> dict[str, Any]:
    """A params file's sections; a missing file or broken YAML is a ParamError that says where and how to fix it."""
    path = Path(path)
    if not path.is_file():
        raise ParamError(f"params file not found: {path}; run from the project root (where params.yaml is) "
                         "or pass params_path=")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ParamError(f"{path} is not valid YAML{where}: {problem}; fix that line (indentation, a missing "
                         "colon or an unclosed bracket are the usual causes)") from None
    if not isinstance(data, dict):
        raise ParamError(f"{path}: expected a mapping of sections (common, baseline, ...) at the top level")
    return data


def _checked(where: str, values: Mapping[str, Any], schema: Mapping[str, Param], complete: bool) -> dict[str, Any]:
    unknown = [k for k in values if k not in schema]
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(str(k), list(schema), n=1)
            hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ParamError(f"{where}: unknown parameter {', '.join(hints)}; known: {', '.join(schema)}")
    missing = [k for k in schema if k not in values]
    if complete and missing:
        raise ParamError(f"{where}: missing parameter {', '.join(repr(k) for k in missing)} "
                         f"({'; '.join(schema[k].help for k in missing)})")
    return {k: schema[k].check(k, v) for k, v in values.items()}


def load_study_params(
    study: str,
    schema: Mapping[str, Param],
    profile: str = "cpu",
    overrides: Mapping[str, Any] | None = None,
    params_path: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """`common` + the study's section of the profile's params file, with `overrides`, all validated up front."""
    path = Path(params_path) if params_path is not None else params_file(profile)
    data = read_params_file(path)
    for section in ("common", study):
        if not isinstance(data.get(section), dict):
            raise ParamError(f"{path} has no section {section!r} (sections: {', '.join(map(str, data))})")
    common = _checked(f"{path} [common]", data["common"], COMMON, complete=True)
    own = _checked(f"{path} [{study}]", data[study], schema, complete=True)
    merged = {**common, **own}
    if overrides:
        both = {**COMMON, **schema}
        merged.update(_checked(f"overrides of {study}", dict(overrides), both, complete=False))
    dev = str(merged["device"])
    if dev != "auto" and torch.device(dev).type != profile:
        raise ParamError(f"profile {profile!r} runs on {profile} devices, but device = {dev!r}; use the "
                         f"{torch.device(dev).type} profile ({PROFILE_FILES.get(torch.device(dev).type)}) instead")
    return merged


@dataclass
class StudyResult:
    """What a study run produced: tables, figures, metrics, a headline and result sentences."""

    study: str
    profile: str
    folder: Path
    env: dict[str, Any]
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    headline: dict[str, Any] = field(default_factory=dict)
    summary: list[str] = field(default_factory=list)

    def summary_markdown(self, title: str = "What this run measured") -> str:
        """The result sentences as a Markdown list under a heading naming the device and commit."""
        env = self.env
        head = (f"### {title}\n*{env['device_name']}, torch {env['torch_version']}, commit "
                f"{env['git_commit'][:12]}, profile {self.profile}*\n\n")
        return head + "\n".join(f"- {line}" for line in self.summary)


class StudyRun:
    """One run of a study: use as `with StudyRun.start(...) as run:` and end with `run.finish(...)`."""

    def __init__(self, study: str, profile: str, params: dict[str, Any], results_root: str | os.PathLike | None):
        self.study, self.profile, self.params = study, profile, params
        random.seed(params["seed"])
        np.random.seed(params["seed"])
        torch.manual_seed(params["seed"])
        if params.get("threads"):
            torch.set_num_threads(int(params["threads"]))
        try:
            self.device = resolve_device(params["device"])
        except RuntimeError as exc:
            raise ParamError(f"profile {profile!r}: {exc}") from None
        if self.device.type != profile:
            raise ParamError(f"profile {profile!r} needs a {profile} device, but this machine gives {self.device}; "
                             f"run the profile of this machine (rifelab notebook ... --profile {self.device.type})")
        self.env = environment_record(self.device)
        self.env["profile"] = profile
        figures_as_png()  # figures this run returns display as images in a notebook, whatever made them
        self.base = results_base(profile, results_root)
        if results_root is None:  # the first output line of a trial run says where its files went
            print(f"Trial run: results go to {self.base} (scratch, ignored by git); only the pipeline "
                  f"(dvc repro) writes {COMMITTED_RESULTS}/{profile}/.", flush=True)
        self.final = self.base / study / self.env["device_key"]
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self._clean_partial()
        self.out = self.final.parent / f".{self.final.name}.partial-{os.getpid()}"
        self.out.mkdir()
        self.tables: dict[str, pd.DataFrame] = {}
        self.figures: dict[str, Any] = {}
        self._model: RIFE | None = None

    @classmethod
    def start(
        cls,
        study: str,
        schema: Mapping[str, Param],
        profile: str = "cpu",
        overrides: Mapping[str, Any] | None = None,
        results_root: str | os.PathLike | None = None,
        params_path: str | os.PathLike | None = None,
    ) -> "StudyRun":
        """Validate the params (nothing is touched before that), then set seed, threads and device."""
        params = load_study_params(study, schema, profile, overrides, params_path)
        return cls(study, profile, params, results_root)

    def _clean_partial(self) -> None:
        for stale in self.final.parent.glob(f".{self.final.name}.partial-*"):
            log.warning("removing %s, left by an interrupted run of %s", stale.name, self.study)
            shutil.rmtree(stale, ignore_errors=True)

    def __enter__(self) -> "StudyRun":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self.out.exists():  # the run failed before finish(): the previous results stay as they were
            shutil.rmtree(self.out, ignore_errors=True)

    @property
    def progress(self) -> bool:
        """Whether to show progress bars (the study's `progress` param; off in saved notebooks)."""
        return bool(self.params.get("progress", False))

    def model(self) -> RIFE:
        """The RIFE model of `checkpoint` on this run's device, loaded once."""
        if self._model is None:
            self._model = load_rife(self.params["checkpoint"], device=self.device)
        return self._model

    def table(self, df: pd.DataFrame, name: str, floatfmt: str = ".4g") -> pd.DataFrame:
        """Save a table (CSV + Markdown) in the run's folder and keep it for the result."""
        save_table(df, self.out, name, floatfmt=floatfmt)
        self.tables[name] = df
        return df

    def figure(self, fig: Any, name: str) -> Any:
        """Save a figure (PNG) in the run's folder and keep it for the result."""
        save_figure(fig, self.out, name)
        plt.close(fig)  # shown where the notebook displays it, not at the end of the cell that made it
        self.figures[name] = fig
        return fig

    def finish(
        self,
        metrics: dict[str, Any],
        headline: dict[str, float],
        plots: Mapping[str, pd.DataFrame] | None = None,
        summary: list[str] | None = None,
    ) -> StudyResult:
        """Write metrics, swap the run's folder into place, publish the headline and plot data; return the result."""
        save_json({**metrics, "params": self.params, "environment": self.env}, self.out / "metrics.json")
        old = self.final.parent / f".{self.final.name}.old-{os.getpid()}"
        if self.final.exists():
            os.replace(self.final, old)
        os.replace(self.out, self.final)
        shutil.rmtree(old, ignore_errors=True)
        env = {k: self.env[k] for k in ("device_name", "torch_version", "git_commit", "profile")}
        save_json({**headline, "environment": env}, self.base / "metrics" / f"{self.study}.json")
        save_json(short_headline(self.study, headline), headline_path(self.base.parent, self.profile, self.study),
                  with_environment=False)
        for name, df in (plots or {}).items():
            with atomic_path(self.base / "plots" / self.study / f"{name}.csv") as tmp:
                df.to_csv(tmp, index=False)
        return StudyResult(self.study, self.profile, self.final, self.env, self.tables, self.figures, metrics,
                           headline, list(summary or []))
