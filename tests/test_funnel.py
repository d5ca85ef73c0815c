"""Matryoshka funnel retrieval: exact when K covers the catalogue, the size-m shortlist reranked at full
size otherwise, and a saved index is refused for another catalogue."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from recbole_fmrl.checkpoint import item_order_sha256, run_identity
from recbole_fmrl.deploy.evaluate import evaluate
from recbole_fmrl.deploy.funnel import INDEX_KINDS, UNION_SHARE, FunnelIndex, index_path_beside, rerank
from recbole_fmrl.deploy.funnel import main as funnel_main
from recbole_fmrl.deploy.serving import Recommender
from recbole_fmrl.errors import PluginError
from recbole_fmrl.files import torch_save_atomic

from test_serving import N_ITEMS, build, data_path, random_history  # noqa: F401 (data_path: fixture)

REPO = Path(__file__).resolve().parent.parent


def histories(n_users=5):
    return [random_history(3 + user, seed=10 + user) for user in range(n_users)]


@pytest.mark.parametrize("kind", INDEX_KINDS)
def test_funnel_with_whole_catalogue_shortlist_equals_exact_scoring(data_path, kind):
    model, _, dataset = build(data_path)
    rec = Recommender(model, item_tokens=dataset.field2id_token["item_id"])
    batch = rec.start_many(histories())
    single = rec.start(random_history(6, seed=3))
    everything = rec.n_items  # K covers the catalogue (padding is never indexed)
    for size in (4, 8):
        for state in (batch, single):
            for exclude_seen in (True, False):
                exact = rec.recommend(state, k=everything, exclude_seen=exclude_seen)
                funnel = rec.recommend(state, k=everything, exclude_seen=exclude_seen, funnel=(size, everything),
                                       index=kind)
                assert torch.equal(funnel, exact), (size, kind, exclude_seen)
    assert rec.funnel_index(4, kind) is rec.funnel_index(4, kind)  # built once per (size, kind)


def test_funnel_shortlists_at_size_m_and_reranks_at_full_size(data_path):
    """Against a hand computation: the K best unseen items by the size-m score, ordered by the full score."""
    model, _, _ = build(data_path)
    rec = Recommender(model)
    users = histories(4)
    state = rec.start_many(users)
    table = model.item_table().detach()
    m, shortlist, k = 4, 9, 5
    top = rec.recommend(state, k=k, funnel=(m, shortlist))
    for user, history in enumerate(users):
        hidden = state.hidden[user]
        coarse = table[:, :m] @ hidden[:m]
        coarse[[0, *history]] = float("-inf")
        kept = torch.topk(coarse, shortlist).indices
        full = table[kept] @ hidden
        assert top[user].tolist() == kept[torch.topk(full, k).indices].tolist()
    exact = rec.recommend(state, k=k)
    assert not torch.equal(top, exact)  # a size-4 shortlist of 9 out of 39 does lose items here


def test_rerank_scores_each_users_candidates_at_full_size_on_both_paths():
    generator = torch.Generator().manual_seed(0)
    users = UNION_SHARE  # enough users for the union path
    table, hidden = torch.randn(400, 8, generator=generator), torch.randn(users, 8, generator=generator)
    distinct = torch.randperm(399, generator=generator)[: users * 4].view(users, 4) + 1  # per-user gathers
    shared = torch.randint(1, 4, (users, 4), generator=generator)  # a union of 3 items: one product with it
    for candidates in (distinct, shared, distinct[:3], shared[:3]):
        expected = torch.stack([table[row] @ user for row, user in zip(candidates, hidden)])
        torch.testing.assert_close(rerank(hidden[: len(candidates)], table, candidates), expected)


def test_a_batched_funnel_result_is_as_wide_as_an_exact_one_when_k_exceeds_the_catalogue(data_path):
    """k past the catalogue: every row has n_items columns, the shortlist's items first, then -1."""
    model, _, _ = build(data_path)
    rec = Recommender(model)
    state = rec.start_many(histories(3))
    exact = rec.recommend(state, k=rec.n_items + 10, exclude_seen=False)
    funnel = rec.recommend(state, k=rec.n_items + 10, exclude_seen=False, funnel=(4, 5))
    assert funnel.shape == exact.shape == (3, rec.n_items)
    assert (funnel[:, :5] > 0).all() and (funnel[:, 5:] == -1).all()


@pytest.mark.parametrize("kind", ["hnsw", "ivfpq"])
def test_saved_index_is_reused_and_refused_for_another_catalogue(data_path, tmp_path, kind):
    model, _, dataset = build(data_path)
    tokens = [str(t) for t in dataset.field2id_token["item_id"]]
    rec = Recommender(model, item_tokens=tokens)
    path = rec.funnel_index(8, kind).save(str(tmp_path / f"tiny.m8-{kind}.faiss"))
    manifest = json.loads(Path(path + ".json").read_text())
    assert manifest["item_order_sha256"] == item_order_sha256(tokens) and manifest["size"] == 8
    assert manifest["kind"] == kind

    fresh = Recommender(model, item_tokens=tokens)
    loaded = fresh.load_funnel_index(path)
    state = fresh.start_many(histories())
    assert torch.equal(fresh.recommend(state, 5, funnel=(8, 12), index=loaded),
                       rec.recommend(state, 5, funnel=(8, 12), index=kind))

    swapped = tokens[:1] + [tokens[2], tokens[1]] + tokens[3:]  # same items, another order
    with pytest.raises(PluginError, match=rf"tiny.m8-{kind}.faiss was built for another catalogue"):
        Recommender(model, item_tokens=swapped).load_funnel_index(path)
    with pytest.raises(PluginError, match="no item token list"):
        Recommender(model).load_funnel_index(path)


def test_evaluator_funnel_equals_exact_and_cli_refuses_foreign_index_in_one_line(data_path, tmp_path, monkeypatch):
    model, config, dataset = build(data_path)
    checkpoint = str(tmp_path / "model.pth")
    torch_save_atomic({"model": "fMRLRec", "dataset": "tiny", "overrides": config.overrides(), "config": config.to_dict(),
                 "identity": run_identity(dataset, model), "state_dict": model.state_dict()}, checkpoint)
    exact = evaluate(checkpoint, size=8)
    funnel = evaluate(checkpoint, size=8, funnel=(4, N_ITEMS), index="flat")
    assert funnel["test_result"] == exact["test_result"]
    assert funnel["funnel"] == {"size": 4, "shortlist": N_ITEMS, "index": "flat"}
    narrow = evaluate(checkpoint, size=8, funnel=(4, 10), index="flat")["test_result"]
    assert narrow != exact["test_result"]  # a real shortlist changes the ranking on this model

    monkeypatch.setattr(sys, "argv", ["funnel", checkpoint, "--size=4", "--index=ivf"])
    funnel_main()  # python -m recbole_fmrl.deploy.funnel: build once, save beside the checkpoint
    saved = index_path_beside(checkpoint, 4, "ivf")
    assert saved == str(tmp_path / "model.m4-ivf.faiss") and Path(saved + ".json").is_file()
    reused = evaluate(checkpoint, size=8, funnel=(4, N_ITEMS), index_file=saved)
    assert reused["test_result"] == exact["test_result"] and reused["funnel"]["index"] == "ivf"

    tokens = [str(t) for t in dataset.field2id_token["item_id"]]
    foreign = FunnelIndex.build(model.item_table().detach(), 4, "flat", item_order_sha256(tokens[::-1]))
    foreign_path = foreign.save(index_path_beside(checkpoint, 4, "flat"))
    done = subprocess.run(
        [sys.executable, "-m", "recbole_fmrl.deploy.evaluate", checkpoint, "--funnel=4,10", f"--index-file={foreign_path}"],
        cwd=tmp_path, capture_output=True, text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "model.m4-flat.faiss was built for another catalogue" in errors[0]
    assert done.stderr.strip().splitlines()[-1] == errors[0] and "Traceback" not in done.stderr
