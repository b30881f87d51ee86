"""Reading official RIFE 4.x checkpoints (weights_only), detecting the layout, one clear `CheckpointError`, `load_rife`."""

from __future__ import annotations

import logging
import os
import pickle
import re
import sys
from pathlib import Path

import torch
import torch.nn as nn

from rifelab.frames.assets import fetch
from rifelab.measure.profiling import resolve_device
from rifelab.rife.model import RIFE, CheckpointInfo
from rifelab.rife.network import SKIPPED_GROUPS, IFNet

log = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable or does not fit the network."""


OFFICIAL_HINT = "an official RIFE 4.x flow checkpoint (flownet.pkl / rife46.pth, a state_dict of tensors)"


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


def _detect_variant(sd: dict[str, torch.Tensor], path: Path) -> str:
    w = sd.get("block0.lastconv.weight")
    if w is None:
        w = sd.get("block0.lastconv.0.weight")
    if w is None:
        present = ", ".join(sorted(sd)[:5]) or "(none)"
        raise CheckpointError(
            f"{path}: no 'block0.lastconv' weight, so this is not a RIFE 4.x flow network checkpoint; "
            f"first keys: {present}"
        )
    if w.dim() == 4 and w.shape[1] == 5:
        return "4.0"
    if w.dim() == 4 and w.shape[1] == 24:
        return "4.6"
    raise CheckpointError(f"{path}: block0.lastconv weight has shape {tuple(w.shape)}; expected (c,5,4,4) or (c,24,4,4)")


def load_state_dict(
    net: IFNet, path: str | os.PathLike, raw: dict[str, torch.Tensor] | None = None
) -> CheckpointInfo:
    """Load an official checkpoint into `net`, strictly on the flow blocks; returns what was used/skipped."""
    path = Path(path)
    sd = raw if raw is not None else _read_checkpoint(path)
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}
    skipped: dict[str, int] = {}
    flow_sd: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for k, v in sd.items():
        group = k.split(".", 1)[0]
        if group in SKIPPED_GROUPS:
            skipped[group] = skipped.get(group, 0) + 1
        elif group in ("block0", "block1", "block2", "block3"):
            flow_sd[k] = v
        else:
            unknown.append(k)
    expected = net.state_dict()
    missing = [k for k in expected if k not in flow_sd]
    unexpected = [k for k in flow_sd if k not in expected] + unknown
    mismatched = [
        f"{k} {tuple(flow_sd[k].shape)} != {tuple(expected[k].shape)}"
        for k in expected
        if k in flow_sd and flow_sd[k].shape != expected[k].shape
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {', '.join(missing[:5])}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected[:5])}")
        if mismatched:
            parts.append(f"shape mismatches ({len(mismatched)}): {'; '.join(mismatched[:5])}")
        raise CheckpointError(
            f"checkpoint {path} does not fit the RIFE {net.variant} flow network: " + " | ".join(parts)
            + ". Use an official RIFE 4.0 or 4.6 flow checkpoint (flownet.pkl / rife46.pth)"
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
    return CheckpointInfo(str(path), net.variant, len(flow_sd), skipped)


def load_rife(
    checkpoint: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> RIFE:
    """RIFE v4 model in eval mode; `checkpoint=None` uses the bundled RIFE 4.0 weights (fetched once)."""
    if checkpoint is None:
        checkpoint = fetch("rife40")
    path = Path(checkpoint).expanduser()
    raw = _read_checkpoint(path)
    stripped = {k[len("module."):] if k.startswith("module.") else k: v for k, v in raw.items()}
    net = IFNet(_detect_variant(stripped, path))
    info = load_state_dict(net, path, raw=raw)
    model = RIFE(net, info).eval()
    return model.to(device=resolve_device(device), dtype=dtype)
