"""Serving from cached LRU states: same scores and top-k as the full forward pass, O(1) updates."""

import random

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from recbole_fmrl.checkpoint import run_identity
from recbole_fmrl.config import Config
from recbole_fmrl.data.loading import create_dataset
from recbole_fmrl.deploy.serving import Recommender
from recbole_fmrl.errors import PluginError
from recbole_fmrl.files import torch_save_atomic
from recbole_fmrl.model import LRURec, fMRLRec
from recbole_fmrl.model.layers import fmrl as fmrl_layers

from conftest import write_multimodal_tiny

SIZES = [4, 8, 16]
MAX_LEN = 12
N_ITEMS = 40
OVERRIDES = {
    "hidden_size": 16,
    "mrl_hidden_sizes": SIZES,
    "n_layers": 2,
    "ffn_expansion": 2,
    "MAX_ITEM_LIST_LENGTH": MAX_LEN,
    "use_gpu": False,
    "feature_files": {"text": "tiny.text.npy", "image": "tiny.image.npy"},
    "modalities": ["text", "image", "id"],
}


@pytest.fixture
def data_path(tmp_path, monkeypatch):
    """Dataset ``tiny``: 30 users over 40 items, with text (dim 12) and image (dim 10) features."""
    monkeypatch.chdir(tmp_path)
    return write_multimodal_tiny(tmp_path, N_ITEMS)


def build(data_path, model_class=fMRLRec, **overrides):
    config = Config(model_class.__name__, "tiny", config_dict={"data_path": data_path, **OVERRIDES, **overrides})
    torch.manual_seed(0)
    dataset = create_dataset(config)
    model = model_class(config, dataset).eval()
    with torch.no_grad():  # stronger recurrences than the |λ| <= 0.1 initialisation, so history matters
        for block in model.encoder.blocks:
            block.lru.params_log[0].fill_(np.log(0.05))  # |λ| = exp(-0.05) ≈ 0.95
    return model, config, dataset


def full_forward_scores(model, history, size=None):
    """``full_sort_predict`` on ``history`` as RecBole feeds it: right-padded to MAX_ITEM_LIST_LENGTH."""
    seq = torch.zeros(1, model.max_seq_length, dtype=torch.long)
    seq[0, : len(history)] = torch.tensor(history)
    if size is not None:
        model.eval_size = size
    with torch.no_grad():
        scores = model.full_sort_predict({model.ITEM_SEQ: seq, model.ITEM_SEQ_LEN: torch.tensor([len(history)])})
    return scores[0]


def reference_top_k(scores, k, seen=()):
    scores = scores.clone()
    scores[0] = float("-inf")
    scores[list(seen)] = float("-inf")
    return torch.topk(scores, k).indices


def random_history(length, seed=0):
    return random.Random(seed).sample(range(1, N_ITEMS), length)


@pytest.mark.parametrize("size", [16, 8])
def test_recurrent_serving_equals_full_forward_after_each_event(data_path, size):
    model, _, dataset = build(data_path)
    rec = Recommender(model, size=size)
    events = random_history(MAX_LEN, seed=1)
    state = rec.start(events[:3])
    for n in range(3, MAX_LEN + 1):
        if n > 3:
            state = rec.update(state, events[n - 1])
        reference = full_forward_scores(model, events[:n], size=size)
        assert torch.allclose(rec.scores(state), reference, atol=1e-5, rtol=0), n
        assert torch.equal(rec.recommend(state, 5), reference_top_k(reference, 5, seen=events[:n])), n
        assert torch.equal(rec.recommend(state, 5, exclude_seen=False), reference_top_k(reference, 5)), n
        assert state.seen_items() == events[:n]


def test_exclude_seen_removes_every_seen_item_and_padding(data_path):
    model, _, dataset = build(data_path)
    rec = Recommender(model)
    events = random_history(8, seed=2)
    state = rec.start(events[:5])
    for item in events[5:]:
        state = rec.update(state, item)
    everything_else = rec.recommend(state, k=rec.n_items)  # k larger than what is left
    assert len(everything_else) == rec.n_items - 1 - len(events)
    assert set(everything_else.tolist()) == set(range(1, rec.n_items)) - set(events)
    with_seen = rec.recommend(state, k=rec.n_items, exclude_seen=False)
    assert set(with_seen.tolist()) == set(range(1, rec.n_items))  # only padding is never recommended


def test_start_scan_state_equals_recurrent_steps(data_path):
    model, _, _ = build(data_path)
    rec = Recommender(model)
    events = random_history(9, seed=3)
    scanned = rec.start(events)
    stepped = rec.start([])
    with pytest.raises(PluginError, match="no events yet"):
        rec.recommend(stepped)
    for item in events:
        stepped = rec.update(stepped, item)
    assert torch.allclose(scanned.lru, stepped.lru, atol=1e-5, rtol=0)
    assert torch.allclose(scanned.hidden, stepped.hidden, atol=1e-5, rtol=0)
    assert scanned.seen_items() == stepped.seen_items() == events
    assert scanned.length == stepped.length == (9,)


def test_batched_states_equal_one_user_states(data_path):
    model, _, _ = build(data_path)
    rec = Recommender(model)
    histories = [random_history(n, seed=n) for n in (2, 7, 4)]
    batch = rec.start_many(histories)
    new = [5, 6, 7]
    batch = rec.update(batch, new)
    top = rec.recommend(batch, 4)
    for user, history in enumerate(histories):
        single = rec.update(rec.start(history), new[user])
        assert torch.allclose(batch.hidden[user], single.hidden[0], atol=1e-5, rtol=0)
        assert torch.equal(top[user], rec.recommend(single, 4))
        assert batch.seen_items(user) == history + [new[user]]


class OpLog(TorchFunctionMode):
    """Every torch function called, with the shapes of its tensor arguments."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        shapes = tuple(tuple(a.shape) for a in args if isinstance(a, torch.Tensor))
        self.calls.append((getattr(func, "__name__", str(func)), shapes))
        return func(*args, **(kwargs or {}))


def test_update_is_constant_time_and_leaves_the_old_state_alone(data_path):
    """The same torch calls on the same shapes whatever the history length: update reads only the
    state (one recurrent step per block), never the history."""
    model, _, _ = build(data_path)
    rec = Recommender(model)
    logs = []
    for length in (1, MAX_LEN, 5 * MAX_LEN):  # even beyond the training window
        rng = random.Random(length)
        events = [rng.randrange(1, N_ITEMS) for _ in range(length)]
        state = rec.start(events[:MAX_LEN])
        for item in events[MAX_LEN:]:
            state = rec.update(state, item)
        assert state.length == (length,)
        before = (state.lru.clone(), state.hidden.clone(), state.seen, state.length)
        with OpLog() as log:
            new_state = rec.update(state, 3)
        logs.append(log.calls)
        assert torch.equal(state.lru, before[0]) and torch.equal(state.hidden, before[1])
        assert state.seen is before[2] and state.length == before[3]
        assert new_state.seen[0][1] is state.seen[0]  # the history is shared, not copied
    assert logs[0] == logs[1] == logs[2]
    assert len(logs[0]) > 0


def test_load_real_export_file_with_tokens(data_path, tmp_path):
    """A size-m file written by ``recbole_fmrl.deploy.export`` serves like the full model at eval_size m."""
    from recbole_fmrl.deploy.export import export

    model, config, dataset = build(data_path)
    checkpoint = tmp_path / "full.pth"
    torch_save_atomic({"model": "fMRLRec", "dataset": "tiny", "overrides": config.overrides(), "config": config.to_dict(),
                 "identity": run_identity(dataset, model), "state_dict": model.state_dict()}, str(checkpoint))
    export(str(checkpoint), 8, str(tmp_path / "small.pth"))

    small = Recommender.load(str(tmp_path / "small.pth"))  # builds the dataset named in the file
    assert small.size == 8 and small.model.hidden_size == 8
    assert small.item_tokens == list(dataset.field2id_token["item_id"])
    assert small.to_ids(small.to_tokens([3, 4])) == [3, 4]
    events = random_history(6, seed=5)
    state = small.update(small.start(events[:5]), events[5])
    reference = full_forward_scores(model, events, size=8)
    assert torch.allclose(small.scores(state), reference, atol=1e-5, rtol=0)
    assert torch.equal(small.recommend(state, 5), reference_top_k(reference, 5, seen=events))
    tokens = small.to_tokens(small.recommend(state, 5))
    assert all(isinstance(t, str) and t.startswith("i") for t in tokens)

    with_dataset = Recommender.load(torch.load(tmp_path / "small.pth", weights_only=True), dataset=dataset)
    assert torch.equal(with_dataset.recommend(with_dataset.start(events), 5), small.recommend(state, 5))


def test_in_memory_model_and_errors(data_path):
    model, _, dataset = build(data_path)
    rec = Recommender.load(model, dataset=dataset)
    assert rec.size == 16 and rec.item_tokens[0] == "[PAD]"
    with pytest.raises(PluginError, match="internal ids"):
        rec.start([0, 1])
    with pytest.raises(PluginError, match="internal ids"):
        rec.update(rec.start([1]), rec.n_items)
    with pytest.raises(ValueError, match="one item per user"):
        rec.update(rec.start_many([[1], [2]]), [3])
    with pytest.raises(PluginError, match="not one of the model's sizes"):
        Recommender(model, size=5)
    config = Config("LRURec", "tiny", config_dict={"data_path": data_path, **OVERRIDES})
    with pytest.raises(PluginError, match="cannot be served recurrently"):
        Recommender(LRURec(config, dataset))



def test_padding_of_a_batched_top_k_never_becomes_an_item(data_path):
    model, _, dataset = build(data_path)
    rec = Recommender.load(model, dataset=dataset)
    last = rec.n_items - 1
    history_a = list(range(4, rec.n_items))  # every item but 1, 2, 3; the last catalogue item included
    state = rec.start_many([history_a[:MAX_LEN], [1, 2]])
    for item in history_a[MAX_LEN:]:
        state = rec.update(state, [item, 5])
    top = rec.recommend(state, k=5)
    assert sorted(top[0, :3].tolist()) == [1, 2, 3] and top[0, 3:].tolist() == [-1, -1]
    assert (top[1] >= 1).all()
    tokens = rec.to_tokens(top)
    assert tokens[0] == [rec.item_tokens[i] for i in top[0, :3].tolist()]  # 3 items, no padding
    assert len(tokens[1]) == 5 and rec.item_tokens[last] not in tokens[0]
    assert rec.to_tokens(-1) is None and rec.to_tokens([-1, 0]) == []
    with pytest.raises(PluginError, match=rf"item id {rec.n_items} is not in the catalogue \(ids 1 to {last}\)"):
        rec.to_tokens(rec.n_items)


def test_a_checkpoint_is_refused_once_its_feature_files_changed(data_path, tmp_path):
    model, config, dataset = build(data_path)
    checkpoint = tmp_path / "full.pth"
    torch_save_atomic({"model": "fMRLRec", "dataset": "tiny", "overrides": config.overrides(), "config": config.to_dict(),
                 "identity": run_identity(dataset, model), "state_dict": model.state_dict()}, str(checkpoint))
    assert Recommender.load(str(checkpoint)).n_items == dataset.item_num
    manifest = tmp_path / "tiny" / "tiny.image.npy.json"
    manifest.write_text(manifest.read_text().replace('"random"', '"another encoder"'))
    with pytest.raises(PluginError) as refused:
        Recommender.load(str(checkpoint))
    assert str(refused.value) == f"{checkpoint}: was trained with other image features of 'tiny' (their manifest changed)"


def build_transformer(data_path):
    """fMRLRec with the Transformer encoder (heads of 4 dims) on the same tiny data."""
    config = Config("fMRLRec", "tiny", config_dict={"data_path": data_path, **OVERRIDES, "encoder": "transformer",
                                                    "attention_head_size": 4})
    torch.manual_seed(0)
    return fMRLRec(config, create_dataset(config)).eval()


@pytest.mark.parametrize("size", SIZES)
def test_kv_cache_serving_equals_the_full_pass_at_every_size_and_past_the_window(data_path, size):
    """Below MAX_ITEM_LIST_LENGTH an update extends the cache; past it the model reads the last
    MAX_ITEM_LIST_LENGTH events, as RecBole's truncated history."""
    model = build_transformer(data_path)
    rec = Recommender(model, size=size)
    events = random_history(MAX_LEN + 6, seed=4)
    state = rec.start(events[:3])
    for n in range(3, len(events) + 1):
        if n > 3:
            state = rec.update(state, events[n - 1])
        reference = full_forward_scores(model, events[:n][-MAX_LEN:], size=size)
        assert torch.allclose(rec.scores(state), reference, atol=1e-5, rtol=0), n
        assert torch.equal(rec.recommend(state, 5), reference_top_k(reference, 5, seen=events[:n])), n
        assert state.encoder_state.lengths.tolist() == [min(n, MAX_LEN)] and state.length == (n,)
    long_start = rec.start(events)  # start keeps the last window too
    assert torch.allclose(rec.scores(long_start), rec.scores(state), atol=1e-5, rtol=0)


@pytest.mark.parametrize("builder", [lambda path: build(path)[0], build_transformer], ids=["lru", "transformer"])
def test_scoring_and_serving_in_row_tiles_equal_the_dense_products(data_path, monkeypatch, builder):
    """Every fMRL map in row tiles (the width threshold lowered): without autograd, full_sort_predict
    and a served state score as the one dense product per map does (autograd on)."""
    monkeypatch.setattr(fmrl_layers, "TILED_MIN_WIDTH", 1)
    model = builder(data_path)
    layers = [layer for layer in model.modules() if isinstance(layer, fmrl_layers.FMRLLinear)]
    assert layers and all(len(layer.row_tiles) == len(layer.in_sizes) for layer in layers)  # K = 3 blocks: a tile each
    events = random_history(MAX_LEN - 2, seed=5)
    seq = torch.zeros(1, model.max_seq_length, dtype=torch.long)
    seq[0, : len(events)] = torch.tensor(events)
    dense = model.full_sort_predict({model.ITEM_SEQ: seq, model.ITEM_SEQ_LEN: torch.tensor([len(events)])})[0]
    assert dense.requires_grad  # autograd on: the dense products
    rec = Recommender(model)
    served = rec.scores(rec.update(rec.start(events[:-1]), events[-1]))
    torch.testing.assert_close(full_forward_scores(model, events), dense.detach(), atol=1e-5, rtol=0)
    torch.testing.assert_close(served, dense.detach(), atol=1e-5, rtol=0)


def test_kv_cache_start_equals_updates_and_batched_states_equal_one_user_states(data_path):
    model = build_transformer(data_path)
    rec = Recommender(model)
    events = random_history(9, seed=3)
    scanned, stepped = rec.start(events), rec.start([])
    for item in events:
        stepped = rec.update(stepped, item)
    assert torch.allclose(scanned.hidden, stepped.hidden, atol=1e-5, rtol=0)
    assert torch.allclose(scanned.encoder_state.kv[:, :, :, :9], stepped.encoder_state.kv[:, :, :, :9], atol=1e-5, rtol=0)
    histories = [random_history(n, seed=n) for n in (2, 7, MAX_LEN)]
    batch = rec.update(rec.start_many(histories), [5, 6, 7])  # the third user re-encodes its last window
    top = rec.recommend(batch, 4)
    for user, history in enumerate(histories):
        single = rec.update(rec.start(history), [5, 6, 7][user])
        assert torch.allclose(batch.hidden[user], single.hidden[0], atol=1e-5, rtol=0)
        assert torch.equal(top[user], rec.recommend(single, 4))


def test_kv_cache_update_is_one_query_below_the_window_and_leaves_the_old_state_alone(data_path):
    """Below MAX_ITEM_LIST_LENGTH the same torch calls on the same shapes whatever the history's length,
    and no attention over a sequence (one query against the cache: O(L·D) per block); at the window's
    end the last window is re-encoded (attention over MAX_ITEM_LIST_LENGTH queries)."""
    rec = Recommender(build_transformer(data_path))
    logs, queries = [], []
    for length in (1, 5, MAX_LEN - 1, MAX_LEN):
        state = rec.start(random_history(length, seed=length))
        before = (state.encoder_state.kv.clone(), state.encoder_state.inputs.clone(), state.hidden.clone())
        with OpLog() as log:
            rec.update(state, 3)
        logs.append(log.calls)
        queries.append({shapes[0][-2] for name, shapes in log.calls if name == "scaled_dot_product_attention"})
        assert ("matmul", ((1, MAX_LEN, 16), (1, 16, 4))) in log.calls  # one query's scores per head (4 heads)
        assert torch.equal(state.encoder_state.kv, before[0]) and torch.equal(state.encoder_state.inputs, before[1])
        assert torch.equal(state.hidden, before[2]) and state.encoder_state.lengths.tolist() == [length]
    assert logs[0] == logs[1] == logs[2] and len(logs[0]) > 0
    assert queries == [set()] * 3 + [{MAX_LEN}]
