"""tune on a real 2-node Ray cluster on this machine: a head and a worker node (each `ray start --block` with
1 CPU and 1 GPU resource, on the loopback only, their own temp dirs and ports), a 2-trial sweep through the
tune command whose trials land on both nodes, each on the GPU id Ray gave it; the nodes are stopped by
process id and nothing is left running."""

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest


from conftest import free_ports, read_csv

REPO = Path(__file__).resolve().parents[1]
# 127.0.0.1 stays 127.0.0.1 (for `ray start` and the driver): Ray rewrites a loopback --node-ip-address or --address
# to the machine's outward address (services.resolve_ip_for_localhost), which this test must never contact.
LOOPBACK_KEPT = "import sys, ray._private.services as services; services.resolve_ip_for_localhost = lambda host: host; "
RAY_START = LOOPBACK_KEPT + "from ray.scripts.scripts import main; sys.argv[0] = 'ray'; main()"
# The sweep's driver, in a process of its own (a user's `python -m recbole_fmrl.experiments.tune --address=...`,
# with the same loopback patch): Ray state left in this process by earlier tests must not decide the sweep.
DRIVER = LOOPBACK_KEPT + "from recbole_fmrl.experiments.tune import main; sys.exit(main(sys.argv[1:]))"
LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1"}


def node_command(temp_dir, gcs_port, head):
    """The `ray start` flags of one node: loopback address, own temp dir and ports, 1 CPU, 1 GPU resource."""
    manager, objects, agent, agent_grpc, runtime_env, metrics, client = free_ports(7)
    workers = free_ports(1, span=16)[0]
    flags = ["start", "--block", "--node-ip-address=127.0.0.1", f"--temp-dir={temp_dir}", "--num-cpus=1", "--num-gpus=1",
             "--object-store-memory=100000000", "--disable-usage-stats", "--include-log-monitor=false", f"--node-manager-port={manager}",
             f"--object-manager-port={objects}", f"--min-worker-port={workers}", f"--max-worker-port={workers + 15}",
             f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
             f"--runtime-env-agent-port={runtime_env}", f"--metrics-export-port={metrics}"]
    if head:
        flags += ["--head", f"--port={gcs_port}", "--include-dashboard=false", f"--ray-client-server-port={client}"]
    else:
        flags += [f"--address=127.0.0.1:{gcs_port}"]
    return [sys.executable, "-c", RAY_START, *flags]


def tree(pid):
    """The process and all its descendants (Ray's workers start their own sessions but stay children)."""
    try:
        process = psutil.Process(pid)
        return [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def stop(starts, root):
    """Stop each `ray start --block` by its pid (it stops its node's processes), kill what is left of its
    tree, then kill and return the processes still naming the cluster's temp dir ``root`` (none if all
    went well: orphans of a node that crashed)."""
    processes = [p for start in starts for p in tree(start.pid)]
    for start in starts:
        start.terminate()
    for start in starts:
        try:
            start.wait(timeout=30)
        except subprocess.TimeoutExpired:
            start.kill()
    _, alive = psutil.wait_procs(processes, timeout=10)
    for process in alive:
        process.kill()
    psutil.wait_procs(alive, timeout=10)
    left = [p for p in psutil.process_iter(["cmdline"]) if root in " ".join(p.info["cmdline"] or ())]
    for process in left:
        process.kill()
    psutil.wait_procs(left, timeout=10)
    return left


@pytest.fixture
def ray_cluster():
    """A head and a worker node on 127.0.0.1; yields ``(address, {node_id: gpu id}, processes, environment)``."""
    root = tempfile.mkdtemp(prefix="fmrl-ray-", dir="/tmp")  # short: Ray's socket paths are limited to 107 bytes
    gcs_port = free_ports(1)[0]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": "disabled",
           "RAY_USAGE_STATS_ENABLED": "0"}
    starts, logs, gpus = [], [], {"head": "2", "worker": "3"}  # each node's one GPU id, as CUDA_VISIBLE_DEVICES names it
    try:
        for name, gpu in gpus.items():
            log = Path(root) / f"{name}.log"
            with open(log, "w") as out:
                starts.append(subprocess.Popen(node_command(f"{root}/{name}", gcs_port, name == "head"), stdout=out,
                                               stderr=subprocess.STDOUT, env={**env, "CUDA_VISIBLE_DEVICES": gpu},
                                               start_new_session=True))
            logs.append(log)
        deadline = time.time() + 90
        while not all("Ray runtime started." in log.read_text() for log in logs):  # printed once the node is in the GCS
            assert time.time() < deadline and all(s.poll() is None for s in starts), [log.read_text()[-2000:] for log in logs]
            time.sleep(0.2)
        node_gpus = {}
        for start, gpu in zip(starts, gpus.values()):
            raylet = [p for p in tree(start.pid) if p.name() == "raylet"]
            node_id = next(a for a in raylet[0].cmdline() if a.startswith("--node_id=")).split("=", 1)[1]
            node_gpus[node_id] = gpu
        yield f"127.0.0.1:{gcs_port}", node_gpus, starts, env
    finally:
        left = stop(starts, root)
        shutil.rmtree(root, ignore_errors=True)
        assert left == [], f"processes left running: {[p.pid for p in left]}"


def test_a_two_trial_sweep_runs_on_both_nodes_of_a_ray_cluster(tiny_config, tmp_path, ray_cluster):
    address, node_gpus, starts, env = ray_cluster
    space = tmp_path / "space.yaml"
    space.write_text("hidden_size: {grid: [8, 16]}\n")
    flags = {**{k: v for k, v in tiny_config.items() if k not in ("hidden_size", "epochs", "use_gpu")},
             "modalities": "[id]", "n_layers": 1, "state": "warning", "use_gpu": True}  # no CUDA here: trials train on the CPU
    driver = subprocess.run(
        [sys.executable, "-c", DRIVER, "--model=fMRLRec", "--dataset=tiny", f"--space={space}", "--num_samples=1",
         "--epochs=1", "--scheduler=fifo", f"--address={address}", f"--out={tmp_path / 'results'}",
         f"--storage={tmp_path / 'shared'}", *(f"--{k}={v}" for k, v in flags.items())],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert driver.returncode == 0, driver.stderr[-3000:]

    table = read_csv(tmp_path / "results" / "tiny" / "tune_fMRLRec.csv")
    assert sorted(row["hidden_size"] for row in table) == ["16", "8"]
    assert all(row["error"] == "" and row["epochs"] == "1" and 0 <= float(row["ndcg@10"]) <= 1 for row in table)
    # 1 CPU per trial (the default on 1-CPU nodes) on two 1-CPU nodes: one trial on each, on its node's GPU id
    # (RecBole's gpu_id would have pointed both at GPU 0)
    assert {row["node_id"]: row["gpu_id"] for row in table} == node_gpus
    assert [p.name[:8] for p in (tmp_path / "shared").iterdir()] == ["fMRLRec-"]  # --storage holds Ray's folder
    assert not (tmp_path / "results" / "tiny" / "ray_tune").exists()

    # nothing but the loopback was contacted: every connection of the nodes' processes is to 127.0.0.1
    remote = set()
    for start in starts:
        for process in tree(start.pid):
            try:
                remote |= {c.raddr.ip for c in process.net_connections("inet") if c.raddr}
            except psutil.Error:
                pass
    assert remote and remote <= LOOPBACK
