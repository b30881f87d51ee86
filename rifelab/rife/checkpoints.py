"""Reading official RIFE 4.x checkpoints (weights_only), detecting the layout, one clear `CheckpointError`, `load_rife`."""

from __future__ import annotations

import functools
import logging
import os
import pickle
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from rifelab.frames.assets import fetch
from rifelab.measure.profiling import resolve_device
from rifelab.rife.layouts import LAYOUTS, SUPPORTED_RANGE, Layout, get_layout
from rifelab.rife.model import RIFE, CheckpointInfo
from rifelab.rife.network import SKIPPED_GROUPS, IFNet

log = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable or does not fit the network."""


OFFICIAL_HINT = "an official RIFE 4.x flow checkpoint (flownet.pkl / rife46.pth / flownet_v4.25.pkl, a state_dict of tensors)"


def _describe_file(path: Path) -> str:
    """What a file looks like from its first bytes (for checkpoint error messages)."""
    with open(path, "rb") as fh:
        head = fh.read(512)
    if not head:
        return "an empty file (0 bytes)"
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive (the torch.save format)"
    if head.startswith(b"\x80"):
        return "a Python pickle"
    if head.startswith(b"version https://git-lfs"):
        return "a Git LFS pointer, not the weights themselves (run `git lfs pull`)"
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<?xml")):
        return "an HTML/XML page (a download that saved an error or login page instead of the file)"
    try:
        sample = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"binary data of an unknown format (starts with {head[:8].hex(' ')})"
    first = sample.strip().splitlines()[0][:60] if sample.strip() else ""
    return f"a text file (starting {first!r})"


def _names_module_class(name: str) -> bool:
    """Whether a pickle GLOBAL names an nn.Module subclass (looked up only among modules already imported)."""
    mod, _, attr = name.rpartition(".")
    obj = getattr(sys.modules.get(mod), attr, None)
    return name.startswith("torch.nn.modules.") or (isinstance(obj, type) and issubclass(obj, nn.Module))


def _unpickling_refusal(path: Path, exc: BaseException) -> CheckpointError:
    """The CheckpointError for a file that weights_only=True loading refuses (pickled objects, code)."""
    msg = str(exc)
    found = re.search(r"GLOBAL ([\w.]+)", msg)
    warning = re.search(r"Re-running `torch\.load`[^\n]*?arbitrary code execution\.(?:\s*Do it only[^\n]*?source\.)?",
                        msg)
    torch_warning = warning.group(0).strip() if warning else (
        "Re-running `torch.load` with `weights_only` set to `False` can result in arbitrary code execution.")
    malicious = bool(found) and found.group(1).split(".")[0] in ("posix", "nt", "os", "subprocess", "builtins", "sys")
    if found and _names_module_class(found.group(1)):
        what = (f"a whole pickled network object ({found.group(1)}), saved with torch.save(model) instead of "
                "torch.save(model.state_dict())")
    elif malicious:
        what = f"a pickle that calls {found.group(1)} when loaded, which is how malicious files run code"
    elif found:
        what = f"pickled Python objects ({found.group(1)}), not only tensors"
    else:
        detail = re.search(r"WeightsUnpickler error:\s*(.+)", msg)
        what = "pickled Python objects, not only tensors" + (
            f" (torch: {detail.group(1).strip()})" if detail else "")
    todo = (
        "Do not load it with weights_only=False anywhere; delete it and download the official file"
        if malicious
        else "If you trust the file, re-save its weights once as a state_dict "
        "(torch.save(torch.load(PATH, weights_only=False).state_dict(), NEW.pth)), else download the official file"
    )
    return CheckpointError(
        f"checkpoint {path} holds {what}; expected {OFFICIAL_HINT}. rifelab loads checkpoints with "
        f"weights_only=True, which refused it. torch warns: {torch_warning} {todo}"
    )


def _read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise CheckpointError(
            f"checkpoint not found: {path}. Pass the path of an official RIFE 4.x file (flownet.pkl, rife46.pth) "
            "or call load_rife() with no argument for the bundled RIFE 4.0 weights"
        )
    if path.is_dir():
        raise CheckpointError(f"checkpoint path {path} is a folder; pass the .pkl/.pth file inside it")
    try:
        size = path.stat().st_size
        kind = _describe_file(path)
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror or exc}; check its permissions") from exc
    if size == 0:
        raise CheckpointError(
            f"checkpoint {path} is empty (0 bytes): a download or copy that did not complete. "
            f"Expected {OFFICIAL_HINT}; download it again"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" in str(exc) and kind.startswith(("a zip", "a Python pickle")):
            raise _unpickling_refusal(path, exc) from exc
        raise CheckpointError(
            f"cannot read checkpoint {path} ({kind}, {size} bytes): it is corrupt, truncated or not a torch file "
            f"(unpickling failed: {_first_line(exc)}). Expected {OFFICIAL_HINT}; download it again"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - torch.load raises KeyError, EOFError, RuntimeError... on bad files
        raise CheckpointError(
            f"cannot read checkpoint {path} ({kind}, {size} bytes): it is corrupt, truncated or not a torch file "
            f"(torch.load: {type(exc).__name__}: {_first_line(exc)}). Expected {OFFICIAL_HINT}; download it again"
        ) from exc
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            f"checkpoint {path} holds a {type(obj).__name__}, not a state_dict of tensors; expected {OFFICIAL_HINT}"
        )
    return obj


def _first_line(exc: BaseException) -> str:
    """First non-empty line of an exception's message, whole (or '(no message)')."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0] if lines else "(no message)"


FLOW_GROUP = re.compile(r"^(block\d+|encode)$")


@functools.lru_cache(maxsize=None)
def expected_shapes(layout: Layout) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a layout's state dict (built on the meta device: no memory, no time)."""
    with torch.device("meta"):
        net = IFNet(layout)
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


@dataclass
class LayoutFit:
    """How a state dict compares with one layout: keys missing, unexpected, of another shape."""

    layout: Layout
    missing: list[str]
    unexpected: list[str]
    mismatched: list[str]

    @property
    def errors(self) -> int:
        return len(self.missing) + len(self.unexpected) + len(self.mismatched)

    def describe(self, limit: int = 5) -> str:
        parts = []
        if self.missing:
            parts.append(f"missing keys ({len(self.missing)}): {', '.join(self.missing[:limit])}")
        if self.unexpected:
            parts.append(f"unexpected keys ({len(self.unexpected)}): {', '.join(self.unexpected[:limit])}")
        if self.mismatched:
            parts.append(f"shape mismatches ({len(self.mismatched)}): {'; '.join(self.mismatched[:limit])}")
        return " | ".join(parts)


def fit_layout(flow_sd: dict[str, torch.Tensor], layout: Layout) -> LayoutFit:
    """Compare the flow-network keys of a state dict (no `module.` prefix) with one layout."""
    expected = expected_shapes(layout)
    missing = [k for k in expected if k not in flow_sd]
    unexpected = [k for k in flow_sd if k not in expected]
    mismatched = [f"{k} {tuple(flow_sd[k].shape)} != {expected[k]}"
                  for k in expected if k in flow_sd and tuple(flow_sd[k].shape) != expected[k]]
    return LayoutFit(layout, missing, unexpected, mismatched)


def detect_layout(flow_sd: dict[str, torch.Tensor], path: str | os.PathLike = "checkpoint") -> Layout:
    """The one layout whose keys and shapes the state dict has exactly; else a CheckpointError naming the closest."""
    if not any(k.startswith("block0.") for k in flow_sd):
        present = ", ".join(sorted(flow_sd)[:5]) or "(none)"
        raise CheckpointError(
            f"{path}: no 'block0' weights, so this is not a RIFE 4.x flow network checkpoint; first keys: {present}. "
            f"Supported: {SUPPORTED_RANGE}"
        )
    fits = sorted((fit_layout(flow_sd, lay) for lay in LAYOUTS), key=lambda f: f.errors)
    if fits[0].errors == 0:
        return fits[0].layout
    best = fits[0]
    raise CheckpointError(
        f"checkpoint {path} fits none of the RIFE v4 layouts; the closest is RIFE {best.layout.name}: "
        f"{best.describe()}. Supported: {SUPPORTED_RANGE}; use an official Practical-RIFE flow checkpoint"
    )


def split_groups(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, int], list[str]]:
    """(flow-network keys, skipped group -> count, unknown keys) of a state dict, `module.` prefixes stripped."""
    skipped: dict[str, int] = {}
    flow_sd: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for k, v in sd.items():
        k = k.removeprefix("module.")
        group = k.split(".", 1)[0]
        if group in SKIPPED_GROUPS:
            skipped[group] = skipped.get(group, 0) + 1
        elif FLOW_GROUP.match(group):
            flow_sd[k] = v
        else:
            unknown.append(k)
    return flow_sd, skipped, unknown


def load_state_dict(
    net: IFNet, path: str | os.PathLike, raw: dict[str, torch.Tensor] | None = None
) -> CheckpointInfo:
    """Load an official checkpoint into `net`, strictly on the flow network; returns what was used/skipped."""
    path = Path(path)
    sd = raw if raw is not None else _read_checkpoint(path)
    flow_sd, skipped, unknown = split_groups(sd)
    fit = fit_layout(flow_sd, net.layout)
    fit.unexpected += unknown
    if fit.errors:
        raise CheckpointError(
            f"checkpoint {path} does not fit the RIFE {net.variant} flow network: " + fit.describe()
            + f". Use an official RIFE flow checkpoint of that layout ({net.layout.name}); supported: {SUPPORTED_RANGE}"
        )
    bad = [k for k, v in flow_sd.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(
            f"checkpoint {path} has non-finite weights (NaN or inf) in {len(bad)} of {len(flow_sd)} tensors "
            f"({', '.join(bad[:5])}{', ...' if len(bad) > 5 else ''}): it would produce black or garbage frames. "
            "The file is damaged or comes from a diverged training run; use an official RIFE 4.x checkpoint"
        )
    net.load_state_dict(flow_sd, strict=True)
    if skipped:
        log.debug("%s: skipped groups not used by the fast path: %s", path.name, skipped)
    return CheckpointInfo(str(path), net.variant, len(flow_sd), skipped, net.layout.name)


def checkpoint_layout(checkpoint: str | os.PathLike | None = None) -> Layout:
    """The layout of a checkpoint file (None: the bundled RIFE 4.0), read without building the network."""
    if checkpoint is None:
        return get_layout("4.0")
    path = Path(checkpoint).expanduser()
    return detect_layout(split_groups(_read_checkpoint(path))[0], path)


def load_rife(
    checkpoint: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> RIFE:
    """RIFE v4 model (any layout of 4.0-4.26, detected from the keys) in eval mode.

    `checkpoint=None` uses the bundled RIFE 4.0 weights (fetched once). `.pkl` and `.pth` files alike, keys with or
    without the `module.` prefix, loaded with weights_only=True.
    """
    if checkpoint is None:
        checkpoint = fetch("rife40")
    path = Path(checkpoint).expanduser()
    raw = _read_checkpoint(path)
    layout = detect_layout(split_groups(raw)[0], path)
    net = IFNet(layout)
    info = load_state_dict(net, path, raw=raw)
    model = RIFE(net, info).eval()
    log.debug("%s: RIFE %s", path.name, layout.name)
    return model.to(device=resolve_device(device), dtype=dtype)
