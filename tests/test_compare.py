"""`rifelab bench --compare`: configurations parsed from the command line, isolated, interleaved, flagged."""

from __future__ import annotations

import json
import os

import pytest

from rifelab.cli import main
from rifelab.measure.compare import parse_compare_config


def test_config_strings_parse_and_bad_ones_say_what_is_allowed():
    c = parse_compare_config("torch:bf16+channels_last")
    assert (c.backend, c.precision, dict(c.options)) == ("torch", "bf16", {"channels_last": True})
    assert parse_compare_config("openvino:int8").precision == "int8"
    assert parse_compare_config("onnxruntime").precision == "fp32"
    with pytest.raises(ValueError, match="not one of"):
        parse_compare_config("tensorflow")
    with pytest.raises(ValueError, match="runs fp32"):
        parse_compare_config("onnxruntime:int8")
    with pytest.raises(ValueError, match="takes none"):
        parse_compare_config("openvino+channels_last")
    with pytest.raises(ValueError, match="unknown engine option"):
        parse_compare_config("torch+chanels_last")


def test_compare_prints_each_configuration_with_its_worker_and_the_load(tmp_path, capsys):
    out = tmp_path / "cmp.json"
    rc = main(["bench", "--device", "cpu", "--compare", "torch+channels_last", "--resolution", "64x48",
               "--warmup", "0", "--repeats", "2", "--max-spread", "100", "--attempts", "1", "--json", str(out)])
    text = capsys.readouterr().out
    assert rc == 0 and "torch+channels_last" in text and "# load at 64x48" in text
    data = json.loads(out.read_text())
    rows = {r["config"]: r for r in data["rows"]}
    assert set(rows) == {"torch", "torch+channels_last"}  # FP32 eager added as the baseline
    assert rows["torch"]["speedup"] == pytest.approx(1.0) and rows["torch"]["psnr_vs_fp32_db"] == 99
    assert rows["torch+channels_last"]["psnr_vs_fp32_db"] > 45
    assert rows["torch"]["worker"] != rows["torch+channels_last"]["worker"] != os.getpid()
    assert "load" in data["timing"]["64x48"] and isinstance(data["noisy"], bool)


def test_frames_without_compare_are_refused(capsys):
    assert main(["bench", "--frames", "a.png", "b.png"]) == 2
    assert "--frames needs --compare" in capsys.readouterr().err
