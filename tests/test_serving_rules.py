"""Serving's rules to the letter: every refusal with its whole message, the funnel's index cache and
its edges (a shortlist narrower than k, a given index of another size), the token list."""

import pytest
import torch

from recbole_fmrl.checkpoint import run_identity
from recbole_fmrl.config import Config
from recbole_fmrl.deploy.funnel import FunnelIndex, item_order_sha256
from recbole_fmrl.deploy.serving import Recommender
from recbole_fmrl.errors import PluginError
from recbole_fmrl.files import torch_save_atomic
from recbole_fmrl.model import LRURec

from test_serving import build, data_path, random_history  # noqa: F401 (data_path: fixture)


@pytest.fixture
def model(data_path):
    return build(data_path)[0]


def refused(call, message):
    with pytest.raises(PluginError) as error:
        call()
    assert str(error.value) == message


def test_token_lists_and_their_refusals(model, data_path):
    _, _, dataset = build(data_path)
    no_tokens = Recommender(model)
    missing = "this Recommender has no item token list (load it with its dataset)"
    refused(lambda: no_tokens.to_tokens(3), missing)
    refused(lambda: no_tokens.to_ids("i3"), missing)
    rec = Recommender.load(model, dataset=dataset)
    refused(lambda: rec.to_ids(["i3", "nope"]), "unknown item token 'nope'")
    assert rec.to_ids(rec.item_tokens[5]) == 5 and rec.to_tokens(torch.tensor([5, 0])) == [rec.item_tokens[5]]

    class NoItemField:  # a dataset object without RecBole's item field: no tokens, not an error
        field2id_token = {}

    assert Recommender.load(model, dataset=NoItemField()).item_tokens is None


def test_state_refusals(model):
    rec = Recommender(model)
    refused(lambda: rec.recommend(rec.start([])), "a user has no events yet: update the state with one before recommending")
    refused(lambda: rec.scores(rec.start_many([[1], []])), "a user has no events yet: update the state with one before recommending")
    refused(lambda: rec.start([3, rec.n_items]), f"item ids must be internal ids in [1, {rec.n_items - 1}]")
    with pytest.raises(ValueError, match=r"^no histories given$"):
        rec.start_many([])
    with pytest.raises(ValueError, match=r"^update needs one item per user \(2\), got 3$"):
        rec.update(rec.start_many([[1], [2]]), [3, 4, 5])
    refused(lambda: Recommender(model, size=5), "size 5 is not one of the model's sizes [4, 8, 16]")


def test_funnel_indexes_are_kept_per_size_and_kind_and_refused_beyond_the_served_size(model, monkeypatch):
    rec = Recommender(model, size=8)
    built = []
    build_index = FunnelIndex.build.__func__
    monkeypatch.setattr(FunnelIndex, "build", classmethod(lambda cls, *a, **kw: built.append((a[1:3], kw)) or build_index(cls, *a, **kw)))
    small, flat = rec.funnel_index(4), rec.funnel_index(8)
    assert (small.size, small.kind, flat.size, flat.kind) == (4, "flat", 8, "flat")
    assert rec.funnel_index(8, "flat") is flat and rec.funnel_index(8, "hnsw", ef_search=7).ef_search == 7
    assert [args for args, _ in built] == [(4, "flat"), (8, "flat"), (8, "hnsw")]
    refused(lambda: rec.funnel_index(16), "funnel size 16 is larger than the served size 8")
    refused(lambda: rec.funnel_index(5), "funnel size 5 is not one of the model's sizes [4, 8, 16]")

    state = rec.start_many([random_history(4, seed=1), random_history(6, seed=2)])
    rec.recommend(state, k=3, funnel=(4, 9), index="ivf")
    assert [args for args, _ in built][-1] == (4, "ivf")  # the index kind asked for is the one built


def test_a_loaded_or_given_index_must_fit(model, data_path, tmp_path):
    _, _, dataset = build(data_path)
    tokens = [str(t) for t in dataset.field2id_token["item_id"]]
    rec = Recommender(model, item_tokens=tokens, size=8)
    path = Recommender(model, item_tokens=tokens).funnel_index(8, "hnsw").save(str(tmp_path / "m8.faiss"))
    loaded = rec.load_funnel_index(path)  # the served size itself is allowed
    assert rec.funnel_index(8, "hnsw") is loaded
    too_big = Recommender(model, item_tokens=tokens).funnel_index(16).save(str(tmp_path / "m16.faiss"))
    refused(lambda: rec.load_funnel_index(too_big),
            f"funnel index {too_big} (size 16, {rec.n_items} items) does not fit this model (size 8, {rec.n_items} items)")
    other_catalogue = FunnelIndex.build(model.item_table().detach()[:-1], 4, "flat", item_order_sha256(tokens))
    path = other_catalogue.save(str(tmp_path / "short.faiss"))
    refused(lambda: rec.load_funnel_index(path),
            f"funnel index {path} (size 4, {rec.n_items - 1} items) does not fit this model (size 8, {rec.n_items} items)")
    state = rec.start(random_history(5))
    refused(lambda: rec.recommend(state, 3, funnel=(8, 5), index=rec.funnel_index(4)),
            f"the given index is of size 4 over {rec.n_items} items, not the funnel's size 8 over this model's {rec.n_items}")
    refused(lambda: rec.recommend(state, 3, funnel=(4, 5), index=other_catalogue),
            f"the given index is of size 4 over {rec.n_items - 1} items, not the funnel's size 4 over this model's {rec.n_items}")


def test_a_shortlist_narrower_than_k_gives_only_its_items(model):
    rec = Recommender(model)
    users = [random_history(4, seed=3), random_history(5, seed=4)]
    batch, single = rec.start_many(users), rec.start(users[0])
    top = rec.recommend(batch, k=6, funnel=(4, 3))
    assert top.shape == (2, 6) and (top[:, 3:] == -1).all() and (top[:, :3] >= 1).all()
    assert torch.equal(rec.recommend(single, k=6, funnel=(4, 3)), top[0, :3])
    for user, history in enumerate(users):  # the 3 items are the best unseen ones by the size-4 score, reranked
        coarse = model.item_table().detach()[:, :4] @ batch.hidden[user, :4]
        coarse[[0, *history]] = float("-inf")
        shortlist = torch.topk(coarse, 3).indices
        full = model.item_table().detach()[shortlist] @ batch.hidden[user]
        assert top[user, :3].tolist() == shortlist[torch.argsort(full, descending=True)].tolist()


def test_the_served_size_is_the_asked_one_else_the_models_eval_size(data_path, tmp_path, monkeypatch):
    model, config, dataset = build(data_path)
    model.eval_size = 8
    assert Recommender(model).size == 8 and Recommender.load(model, dataset=dataset, size=4).size == 4
    path = tmp_path / "full.pth"
    torch_save_atomic({"model": "fMRLRec", "dataset": "tiny", "overrides": config.overrides(),
                       "identity": run_identity(dataset, model), "state_dict": model.state_dict()}, str(path))
    assert Recommender.load(str(path), size=4).size == 4 and Recommender.load(str(path)).size == 16
    monkeypatch.setattr("recbole_fmrl.data.loading.create_dataset", lambda config: pytest.fail("the dataset was built again"))
    given = Recommender.load(str(path), dataset=dataset, size=8)  # the given dataset is used, not rebuilt
    assert given.size == 8 and given.item_tokens == [str(t) for t in dataset.field2id_token["item_id"]]


def test_what_cannot_be_served_is_refused_with_its_whole_message(model, data_path):
    refused(lambda: Recommender.load({"model": "fMRLRec"}), "the given checkpoint: not a checkpoint of this plugin, or "
            "one written before run identities: no dataset, overrides, state_dict, identity")
    config = Config("LRURec", "tiny", config_dict={"data_path": data_path, "hidden_size": 16, "use_gpu": False})
    refused(lambda: Recommender(LRURec(config, build(data_path)[2])),
            "LRURec cannot be served recurrently: it keeps no encoder state (use fMRLRec)")
