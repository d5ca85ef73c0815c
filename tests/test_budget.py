"""Picking a size by a latency budget: the pure choice on a fake timing table, and the command end to end."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from recbole_fmrl.deploy.budget import pick_size
from recbole_fmrl.runner import run

REPO = Path(__file__).resolve().parent.parent


def fake_row(mode, size, latency_ms, resident_mb):
    return {"mode": mode, "size": size, "latency_ms": latency_ms, "resident_mb": resident_mb}


FAKE_TABLE = [
    fake_row("exact", 8, 1.0, 10.0),
    fake_row("exact", 16, 2.5, 20.0),
    fake_row("exact", 32, 4.0, 40.0),
    fake_row("exact", 64, 9.0, 80.0),
    fake_row("funnel", 8, 0.5, 90.0),
    fake_row("funnel", 32, 3.0, 120.0),  # faster than exact 32 but not a size choice
]


@pytest.mark.parametrize(
    "latency_ms, memory_mb, expected",
    [
        (100.0, None, 64),
        (9.0, None, 64),  # the budget is inclusive
        (8.99, None, 32),
        (3.0, None, 16),
        (2.0, None, 8),
        (100.0, 40.0, 32),  # memory binds before latency
        (3.0, 100.0, 16),  # latency binds before memory
        (0.9, None, None),  # nothing fits
        (100.0, 5.0, None),
    ],
)
def test_pick_size_on_fake_timing_table(latency_ms, memory_mb, expected):
    picked = pick_size(FAKE_TABLE, latency_ms, memory_mb)
    assert (picked and picked["size"]) == expected
    assert picked is None or picked["mode"] == "exact"


def test_budget_command_measures_every_size_and_reports_the_pick(tiny_config, tmp_path):
    sizes = [4, 8, 16]
    trained = run("fMRLRec", "tiny", config_dict={**tiny_config, "mrl_hidden_sizes": sizes, "modalities": ["id"],
                                                  "n_layers": 1})
    done = subprocess.run(
        [sys.executable, "-m", "recbole_fmrl.deploy.budget", trained["checkpoint"], "--latency-ms=100000", "--users=3",
         "--warmup=0", "--repeats=1", "--index=flat", "--funnel-k=5"],
        cwd=tmp_path, capture_output=True, text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    table = [line.split() for line in lines if line.startswith(("exact", "funnel"))]
    assert [(row[0], int(row[1])) for row in table] == [("exact", m) for m in sizes] + [("funnel", 4), ("funnel", 8)]
    resident = [float(row[5]) for row in table if row[0] == "exact"]
    assert resident == sorted(resident) and len(set(resident)) == 3  # a larger size holds more
    with open(trained["checkpoint"].replace(".pth", ".results.json")) as f:
        ndcg16 = json.load(f)["sizes"]["16"]["ndcg@10"]
    assert table[2][-1] == f"{ndcg16:.4f}"
    assert lines[-1].startswith("largest size within 100000 ms: m = 16 ")
    assert lines[-1].endswith(f"test NDCG@10 {ndcg16:.4f} (from {trained['checkpoint'][:-4]}.results.json)")
