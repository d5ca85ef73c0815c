"""The benchmark runner works end to end on tiny sizes (its numbers are not checked: not a benchmark)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_quick_tiny_run_writes_every_case_with_numeric_ratios(tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--tiny", "--no-profile", "--threads", "1",
         "--out", str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["preset"] == "tiny"
    for key in ("torch", "device_name", "threads", "date", "git_commit"):
        assert key in result["machine"], key
    assert sorted(result["cases"]) == list("abcdefg")
    for case, rows in result["cases"].items():
        assert rows, case
        for row in rows:
            assert isinstance(row["ratio"], float) and math.isfinite(row["ratio"]) and row["ratio"] > 0, row
            assert row["status"] in ("PASS", "MISS", "INFO")
    goals = {case: [r for r in rows if r["goal"]] for case, rows in result["cases"].items()}
    assert all(goals[case] for case in "abdeg")  # every case with a goal is judged
    assert len(result["cases"]["g"]) == 3  # sequence / prefix for fMRLRec and LRURec, fMRLRec / LRURec
    assert len(result["cases"]["d"]) == 4  # one row per nested size m in M = [8, 16, 32, 64]
    assert "PASS" in done.stdout or "MISS" in done.stdout  # the table is printed


def test_cli_rejects_unknown_cases(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--tiny", "--cases", "az", "--out", str(tmp_path / "x.json")],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode != 0 and "unknown cases" in done.stderr
