"""The package's layout as its import graph reads it (no cycles, the runner imported only for what it
does, serving through the encoder's own interface, the runtime free of the preparation commands), and the ideas shared between its parts: one
item-order hash for checkpoints and funnel indexes, one exclusion of seen items whatever the padding."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import torch

from recbole_fmrl.checkpoint import run_identity
from recbole_fmrl.deploy.funnel import FunnelIndex, shortlist_and_rerank
from recbole_fmrl.deploy.serving import Recommender
from recbole_fmrl.model.layers import LRUBlock, LRUEncoder, PostNormLRUBlock

from test_serving import build, data_path  # noqa: F401 (data_path: fixture)

REPO = Path(__file__).resolve().parent.parent
PACKAGE_DIRS = {"recbole_fmrl": REPO / "recbole_fmrl", "recbole_fmrl.dataset_prep": REPO / "dataset_prep"}


def package_modules():
    """``{module name: parsed source}`` of every module installed under ``recbole_fmrl``."""
    modules = {}
    for prefix, root in PACKAGE_DIRS.items():
        for path in root.rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join((prefix, *parts[:-1])) if parts[-1] == "__init__" else ".".join((prefix, *parts))
            modules[name] = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return modules


def imported_names(tree, name, is_package):
    """``(module, [names])`` of every import in ``tree`` (function-level ones too), absolute."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name if is_package else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}".rstrip(".")
            yield base, [alias.name for alias in node.names]


def import_graph(modules):
    """Edges module -> every plugin module its imports execute (the module, its packages, and a
    module named in ``from package import module``)."""
    graph = {name: set() for name in modules}
    for name, tree in modules.items():
        is_package = name in PACKAGE_DIRS or any(other.startswith(name + ".") for other in modules)
        for base, names in imported_names(tree, name, is_package):
            targets = [base] + [f"{base}.{n}" for n in names if f"{base}.{n}" in modules]
            for target in targets:
                while target:
                    if target in modules and target != name and not name.startswith(target + "."):
                        graph[name].add(target)
                    target = target.rpartition(".")[0]
    return graph


def find_cycle(graph):
    """One import cycle as a list of modules, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_import_graph_has_no_cycle():
    modules = package_modules()
    assert {"recbole_fmrl.runner", "recbole_fmrl.deploy.serving", "recbole_fmrl.dataset_prep.amazon2014",
            "recbole_fmrl.benchmarks.run", "recbole_fmrl.experiments.params"} <= set(modules)
    graph = import_graph(modules)
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
    # the cycle finder finds one when there is one
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


PREP = "recbole_fmrl.dataset_prep"

BLOCKED_PREP_RUN = """
import importlib, importlib.abc, json, os, sys

class Unimportable(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] == "dataset_prep" or name == PREP or name.startswith(PREP + "."):
            raise ImportError(f"{name} is the preparation commands")

PREP = "recbole_fmrl.dataset_prep"
sys.meta_path.insert(0, Unimportable())
modules = json.loads(sys.argv[1])
for name in modules:
    importlib.import_module(name)
from recbole_fmrl.data.embedded import ensure_embedded_dataset

written = ensure_embedded_dataset("toys", sys.argv[2])
with open(os.path.join(sys.argv[2], "toys", "toys.inter"), encoding="utf-8") as f:
    rows = sum(1 for _ in f) - 1
print(json.dumps({"imported": len(modules), "written": written, "rows": rows,
                  "prep": sorted(m for m in sys.modules if "dataset_prep" in m)}))
"""


def prep_imports(tree, name, is_package):
    """The imports of the preparation commands (``recbole_fmrl.dataset_prep`` or a bare ``dataset_prep``) in ``tree``."""
    return [base for base, names in imported_names(tree, name, is_package)
            if base == PREP or base.startswith(PREP + ".") or base.split(".")[0] == "dataset_prep"
            or (base == "recbole_fmrl" and "dataset_prep" in names)]


def test_the_runtime_never_imports_the_preparation_commands(tmp_path):
    """dataset_prep builds on data/ (the on-disk format, the shipped tables), never the other way round."""
    modules = package_modules()
    runtime = sorted(name for name in modules if name != PREP and not name.startswith(PREP + "."))
    assert {"recbole_fmrl.data.embedded", "recbole_fmrl.data.dataset", "recbole_fmrl.deploy.funnel"} <= set(runtime)
    importers = {name: prep_imports(modules[name], name, any(o.startswith(name + ".") for o in modules))
                 for name in runtime}
    assert {name: found for name, found in importers.items() if found} == {}
    assert [name for name, tree in modules.items()  # no package path trick, in the runtime or in the prep
            if any(isinstance(node, ast.Attribute) and node.attr == "__path__" for node in ast.walk(tree))] == []
    # the scan finds each spelling of such an import
    for source, package in [("from recbole_fmrl.dataset_prep.steps import step_done", False),
                            ("from ..dataset_prep import steps", False), ("import recbole_fmrl.dataset_prep", False),
                            ("from recbole_fmrl import dataset_prep", False), ("from . import dataset_prep", True)]:
        assert prep_imports(ast.parse(source), "recbole_fmrl.data.embedded" if not package else "recbole_fmrl",
                            package), source
    # with the preparation commands unimportable, every runtime module imports and an embedded dataset is written
    done = subprocess.run([sys.executable, "-c", BLOCKED_PREP_RUN, json.dumps(runtime), str(tmp_path)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "imported": len(runtime), "written": True, "rows": 167597, "prep": []}  # Table 1's Toys interactions


def test_no_module_imports_the_runner_for_a_constant():
    modules = package_modules()
    runner = modules["recbole_fmrl.runner"]
    functions = {node.name for node in runner.body if isinstance(node, ast.FunctionDef)}
    users = {}
    for name, tree in list(modules.items()) + [("run_recbole_fmrl", ast.parse((REPO / "run_recbole_fmrl.py").read_text()))]:
        for base, names in imported_names(tree, name, False):
            if base == "recbole_fmrl.runner":
                users[name] = names
    assert users, "the runner is imported somewhere"
    for name, names in users.items():
        assert names and set(names) <= functions, f"{name} imports {names} from the runner"
        assert "main_guarded" not in names and "REPORTED_METRICS" not in names


def test_serving_reads_no_private_part_of_the_encoder():
    tree = ast.parse((REPO / "recbole_fmrl" / "deploy" / "serving.py").read_text(encoding="utf-8"))
    attributes = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    assert not attributes & {"encoder", "blocks", "out_proj", "in_proj", "register_forward_pre_hook", "register_forward_hook"}
    assert not any(a.startswith("_") and not a.startswith("__") for a in attributes if a not in {
        "_start", "_scan", "_score", "_check_ids", "_check_started", "_histories", "_funnel_indexes",
        "_token_ids", "_recommend_funnel"})  # only the Recommender's own private members


def test_the_encoder_returns_the_state_that_step_continues_from():
    torch.manual_seed(0)
    for blocks in ([LRUBlock([4, 8], 1, 0.0, 0.0, 0.5, 0.9) for _ in range(2)],
                   [PostNormLRUBlock(8, 0.0, 0.0, 0.5, 0.9) for _ in range(2)]):
        encoder = LRUEncoder(blocks).eval()
        x, lengths = torch.randn(3, 5, 8), torch.tensor([5, 3, 1])
        mask = torch.arange(5) < lengths.unsqueeze(1)
        with torch.no_grad():
            output, states = encoder(x, mask, return_state=True)
            assert torch.equal(output, encoder(x, mask))
            assert states.shape == (2, 3, 5, encoder.state_size)
            state = encoder.init_state(3)
            for t in range(5):
                stepped, state = encoder.step(x[:, t], state, mask[:, t])
                torch.testing.assert_close(stepped[mask[:, t]], output[mask[:, t], t], atol=1e-5, rtol=1e-5)
                torch.testing.assert_close(state[:, mask[:, t]], states[:, mask[:, t], t], atol=1e-5, rtol=1e-5)


def test_funnel_indexes_and_checkpoints_hash_the_item_order_alike(data_path, tmp_path):
    model, _, dataset = build(data_path)
    rec = Recommender.load(model, dataset=dataset)
    path = rec.funnel_index(4, "flat").save(str(tmp_path / "tiny.m4-flat.faiss"))
    manifest = json.loads(Path(path + ".json").read_text())
    assert manifest["item_order_sha256"] == run_identity(dataset, model)["item_order_sha256"]


def test_padding_in_a_funnel_history_never_excludes_or_returns_an_item():
    """Histories right-padded with 0 (RecBole) or -1 exclude exactly their real items: a -1 would
    otherwise hit the previous user's last item (row * n_items - 1), a 0 the padding row."""
    torch.manual_seed(0)
    n_items, dim = 12, 8
    table = torch.randn(n_items, dim)
    hidden = torch.randn(3, dim)
    index = FunnelIndex.build(table, dim, "flat")
    lists = [[3, 5], [7], []]
    everything = n_items - 1
    expected_candidates, expected_scores = shortlist_and_rerank(hidden, table, index, everything, lists)
    for pad in (0, -1):
        padded = torch.tensor([[3, 5], [7, pad], [pad, pad]])
        candidates, scores = shortlist_and_rerank(hidden, table, index, everything, padded)
        assert torch.equal(candidates, expected_candidates) and torch.equal(scores, expected_scores)
    for user, seen in enumerate(lists):
        kept = expected_candidates[user][expected_candidates[user] >= 0].tolist()
        assert sorted(kept) == [i for i in range(1, n_items) if i not in seen]  # item n-1 kept, 0 never
