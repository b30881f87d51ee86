"""The `rifelab` command: help for every subcommand, info, bench output, bad options."""

from __future__ import annotations

import json

import pytest

from rifelab.cli import build_parser, main


def test_every_subcommand_has_help(capsys):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {"fetch", "info", "bench"} <= set(sub.choices)
    for name, p in sub.choices.items():
        for action in p._actions:
            if action.dest != "help":
                assert action.help, f"option {action.dest} of {name} has no help"


def test_info_json(capsys):
    assert main(["info", "--device", "cpu", "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["device"] == "cpu" and rec["torch_version"]


def test_bench_prints_latency_fps_memory_gmac(capsys, tmp_path):
    out_json = tmp_path / "bench.json"
    assert main(["bench", "--resolution", "160x96", "--device", "cpu", "--warmup", "0", "--repeats", "2",
                 "--json", str(out_json)]) == 0
    text = capsys.readouterr().out
    for col in ("median_ms", "p10_ms", "p90_ms", "fps", "peak_mem_mib", "gmac", "params_m"):
        assert col in text
    data = json.loads(out_json.read_text())
    assert data["rows"][0]["resolution"] == "160x96" and data["environment"]["device"] == "cpu"
    assert data["rows"][0]["params_m"] == pytest.approx(5.16, abs=0.01)


def test_bench_bad_resolution(capsys):
    assert main(["bench", "--resolution", "big", "--device", "cpu", "--repeats", "1", "--warmup", "0"]) == 2
    assert "1280x720" in capsys.readouterr().err
