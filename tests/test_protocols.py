"""SASRec trained as the field trains it (every position, sampled softmax) and the two evaluation
protocols (seen items ranked, RecBole's; seen items excluded, a deployment's)."""

import csv
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from recbole.data import data_preparation as recbole_data_preparation
from recbole.model.sequential_recommender.sasrec import SASRec as RecBoleSASRec
from recbole.trainer import Trainer

from recbole_fmrl.config import Config
from recbole_fmrl.data import SeenExcludingEvalDataLoader, data_preparation
from recbole_fmrl.data.loading import create_dataset
from recbole_fmrl.deploy.evaluate import evaluate
from recbole_fmrl.errors import ConfigError, PluginError
from recbole_fmrl.model import LRURec, SASRec, fMRLRec
from recbole_fmrl.model.layers import nested_cross_entropy, sampled_cross_entropy
from recbole_fmrl.runner import build as build_run
from recbole_fmrl.runner import run

from test_sequence_training import config_for, data_path, train_split  # noqa: F401 (data_path: fixture)

SASREC = {"n_layers": 1, "n_heads": 1, "hidden_dropout_prob": 0.0, "attn_dropout_prob": 0.0}


def test_sasrec_outputs_at_every_position_are_recboles_prefix_outputs(data_path):
    config = config_for("SASRec", data_path, train_mode="prefix", **SASREC)
    dataset, prefix = train_split(config)
    torch.manual_seed(0)
    model = SASRec(config, dataset).eval()
    rows = prefix.inter_feat
    every_position = model.encode(rows["item_id_list"])
    last = every_position[torch.arange(len(rows)), rows["item_length"] - 1]
    torch.testing.assert_close(last, RecBoleSASRec.forward(model, rows["item_id_list"], rows["item_length"]))
    torch.testing.assert_close(model.forward(rows["item_id_list"], rows["item_length"]), last)


def test_sasrec_prefix_training_is_recboles(data_path):
    config = config_for("SASRec", data_path, train_mode="prefix", hidden_dropout_prob=0.0, attn_dropout_prob=0.0)
    dataset, prefix = train_split(config)
    torch.manual_seed(0)
    plugin = SASRec(config, dataset)
    torch.manual_seed(0)
    recbole = RecBoleSASRec(config, dataset)
    assert all(torch.equal(a, b) for a, b in zip(plugin.state_dict().values(), recbole.state_dict().values()))
    torch.testing.assert_close(plugin.calculate_loss(prefix.inter_feat), recbole.calculate_loss(prefix.inter_feat))


def test_sasrec_sequence_loss_is_the_mean_of_recboles_prefix_losses(data_path):
    """Sequence mode trains on exactly RecBole's augmented (history, target) pairs
    (test_sequence_training: the pairs), and its loss is the mean of RecBole's prefix losses."""
    config = config_for("SASRec", data_path, train_mode="sequence", MAX_ITEM_LIST_LENGTH=20, **SASREC)
    dataset, sequence = train_split(config)
    torch.manual_seed(0)
    model = SASRec(config, dataset).eval()
    _, prefix = train_split(config_for("SASRec", data_path, train_mode="prefix", MAX_ITEM_LIST_LENGTH=20, **SASREC))
    per_pair = [RecBoleSASRec.calculate_loss(model, prefix.inter_feat[i: i + 1]) for i in range(len(prefix))]
    torch.testing.assert_close(model.calculate_loss(sequence.inter_feat), torch.stack(per_pair).mean(), atol=1e-5, rtol=1e-5)


def full_ce(hidden, table, targets, bias=None):
    logits = hidden @ table.T + (0 if bias is None else bias)
    return F.cross_entropy(logits, targets)


@pytest.mark.parametrize("with_bias", [False, True])
def test_sampled_softmax_over_the_whole_catalogue_is_the_full_cross_entropy(with_bias):
    torch.manual_seed(0)
    hidden, table, targets = torch.randn(7, 8, dtype=torch.float64), torch.randn(11, 8, dtype=torch.float64), torch.randint(0, 11, (7,))
    bias = torch.randn(11, dtype=torch.float64) if with_bias else None
    catalogue = torch.arange(11)
    expected = full_ce(hidden, table, targets, bias)
    torch.testing.assert_close(sampled_cross_entropy(hidden, table, targets, catalogue, bias=bias), expected)
    shuffled = torch.stack([torch.randperm(11) for _ in range(7)])  # per-row negatives, any order
    torch.testing.assert_close(sampled_cross_entropy(hidden, table, targets, shuffled, bias=bias), expected)


def test_sampled_softmax_is_the_ce_against_the_target_and_the_negatives_only():
    torch.manual_seed(1)
    hidden, table = torch.randn(3, 4, dtype=torch.float64), torch.randn(9, 4, dtype=torch.float64)
    targets, negatives = torch.tensor([2, 5, 7]), torch.tensor([5, 1, 1])
    loss = sampled_cross_entropy(hidden, table, targets, negatives)
    by_hand = []
    for h, y in zip(hidden, targets):
        columns = [int(y)] + [int(n) for n in negatives if n != y]  # the target's own column is masked
        by_hand.append(F.cross_entropy((table[columns] @ h)[None], torch.tensor([0])))
    torch.testing.assert_close(loss, torch.stack(by_hand).mean())


def test_nested_sampled_loss_is_the_weighted_sum_of_the_per_size_sampled_losses():
    torch.manual_seed(2)
    sizes, weights = [2, 4, 8], [4.0, 2.0, 1.0]
    hidden, table = torch.randn(6, 8, dtype=torch.float64), torch.randn(13, 8, dtype=torch.float64)
    targets, negatives = torch.randint(1, 13, (6,)), torch.randint(1, 13, (5,))
    nested = sampled_cross_entropy(hidden, table, targets, negatives, sizes, weights)
    per_size = sum(w * sampled_cross_entropy(hidden[:, :m], table[:, :m], targets, negatives) for m, w in zip(sizes, weights))
    torch.testing.assert_close(nested, per_size)
    everything = sampled_cross_entropy(hidden, table, targets, torch.arange(13), sizes, weights)
    torch.testing.assert_close(everything, nested_cross_entropy(hidden, table, targets, sizes, weights))


@pytest.mark.parametrize("name", ["SASRec", "LRURec", "fMRLRec"])
def test_models_train_with_sampled_softmax_against_uniform_negatives(data_path, name):
    overrides = {"train_mode": "sequence", "softmax_negatives": 5, **SASREC}
    config = config_for(name, data_path, **overrides)
    dataset, sequence = train_split(config)
    model = {"SASRec": SASRec, "LRURec": LRURec, "fMRLRec": fMRLRec}[name](config, dataset).eval()
    torch.manual_seed(3)
    loss = model.calculate_loss(sequence.inter_feat)
    torch.manual_seed(3)
    negatives = torch.randint(1, model.n_items, (5,))
    outputs, targets, _ = model.training_pairs(sequence.inter_feat, **({"item_table": model.item_table()} if name == "fMRLRec" else {}))
    if name == "fMRLRec":
        expected = sampled_cross_entropy(outputs, model.item_table(), targets, negatives, model.mrl_hidden_sizes)
    else:
        bias = model.item_bias if name == "LRURec" else None
        expected = sampled_cross_entropy(outputs, model.item_embedding.weight, targets, negatives, bias=bias)
    torch.testing.assert_close(loss, expected)
    model.shared_negatives = False
    assert model.sample_negatives(4, "cpu").shape == (4, 5)
    assert 0 < int(model.sample_negatives(100, "cpu").min()) and int(model.sample_negatives(100, "cpu").max()) < model.n_items


@pytest.mark.parametrize("key, value, message", [
    ("softmax_negatives", -1, "softmax_negatives must be a non-negative integer"),
    ("softmax_negatives", 2.5, "softmax_negatives must be a non-negative integer"),
    ("shared_negatives", "yes", "shared_negatives must be True or False"),
    ("exclude_seen", 1, "exclude_seen must be True or False"),
])
def test_bad_loss_and_protocol_keys_are_one_line_errors(data_path, key, value, message):
    with pytest.raises(ConfigError, match=message):
        build_run("SASRec", "tiny", config_dict={"data_path": data_path, "use_gpu": False, key: value})


def test_exclude_seen_needs_full_ranking(data_path):
    with pytest.raises(ConfigError, match="exclude_seen: True needs full ranking"):
        build_run("SASRec", "tiny", config_dict={"data_path": data_path, "use_gpu": False, "exclude_seen": True,
                                                 "eval_args": {"mode": "uni100"}})


def user_histories(inter_file):
    """{user token: [item tokens in time order]} read from the .inter file itself."""
    with open(inter_file, encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t"))[1:]
    histories = {}
    for user, item, _ in sorted(rows, key=lambda row: (row[0], float(row[2]))):
        histories.setdefault(user, []).append(item)
    return histories


@pytest.mark.parametrize("split", ["valid", "test"])
def test_with_exclude_seen_the_whole_history_is_never_ranked_and_the_target_always_is(tiny_config, split):
    """Histories longer than MAX_ITEM_LIST_LENGTH: the items older than the row's sequence are excluded too."""
    config = Config("SASRec", "tiny", config_dict={**tiny_config, "exclude_seen": True, "MAX_ITEM_LIST_LENGTH": 3})
    dataset = create_dataset(config)
    _, valid_data, test_data = data_preparation(config, dataset)
    loader = {"valid": valid_data, "test": test_data}[split]
    assert isinstance(loader, SeenExcludingEvalDataLoader)
    histories = user_histories(f"{tiny_config['data_path']}/tiny/tiny.inter")
    torch.manual_seed(0)
    trainer = Trainer(config, SASRec(config, dataset).eval())
    trainer.tot_item_num = dataset.item_num  # what Trainer.evaluate sets before scoring
    tokens_of_user, tokens_of_item = dataset.field2id_token["user_id"], dataset.field2id_token["item_id"]
    checked = 0
    for batch in loader:
        interaction, scores, _, positive_i = trainer._full_sort_batch_eval(batch)
        for row, (user, target) in enumerate(zip(interaction["user_id"].tolist(), positive_i.tolist())):
            items = histories[tokens_of_user[user]]
            position = len(items) - (2 if split == "valid" else 1)
            assert tokens_of_item[target] == items[position]
            seen = [dataset.token2id("item_id", item) for item in items[:position]]
            assert len(seen) > 3  # longer than the sequence the model reads
            assert torch.isinf(scores[row, seen]).all() and torch.isfinite(scores[row, target])
            assert torch.isfinite(scores[row]).sum() == dataset.item_num - 1 - len(seen)  # padding and seen only
            checked += 1
    assert checked == len(histories)


def test_without_exclude_seen_the_evaluation_is_recboles(tiny_config):
    config = Config("SASRec", "tiny", config_dict=tiny_config)
    dataset = create_dataset(config)
    ours = data_preparation(config, dataset)
    recboles = recbole_data_preparation(config, create_dataset(config))
    torch.manual_seed(0)
    trainer = Trainer(config, SASRec(config, dataset).eval())
    for mine, theirs in zip(ours[1:], recboles[1:]):
        assert isinstance(mine, SeenExcludingEvalDataLoader) and not mine.exclude_seen
        assert trainer.evaluate(mine, load_best_model=False) == trainer.evaluate(theirs, load_best_model=False)


def test_a_run_tests_its_best_model_under_both_protocols(tiny_config):
    result = run("SASRec", "tiny", config_dict={**tiny_config, "exclude_seen": True, "train_mode": "sequence",
                                                "softmax_negatives": 4})
    by_protocol = result["test_result_by_protocol"]
    assert result["exclude_seen"] is True and by_protocol["seen_excluded"] == result["test_result"]
    assert set(by_protocol) == {"seen_excluded", "seen_ranked"}
    # excluding seen items can only move the target up: every metric is at least as high
    assert all(by_protocol["seen_excluded"][m] >= by_protocol["seen_ranked"][m] for m in by_protocol["seen_ranked"])
    assert result["stopped_early"] is False and result["epochs_run"] == 2 and result["seconds_per_epoch"] > 0


def test_per_user_ndcg_averages_to_recboles_and_the_paired_test_compares_the_same_users(tiny_config, tmp_path):
    from recbole_fmrl.experiments.paired import PAIRED_COLUMNS, main, model_per_user, paired_test

    settings = {**tiny_config, "train_mode": "sequence", "MAX_ITEM_LIST_LENGTH": 4, "epochs": 1}
    sasrec = run("SASRec", "tiny", config_dict={**settings, "n_layers": 1, "n_heads": 1})
    lrurec = run("LRURec", "tiny", config_dict=settings)
    for exclude_seen, protocol in ((False, "seen_ranked"), (True, "seen_excluded")):
        a = model_per_user(sasrec["checkpoint"], exclude_seen)
        assert len(a["ndcg@10"]) == 40  # every user of the tiny dataset once
        recbole_ndcg = sasrec["test_result_by_protocol"][protocol]["ndcg@10"]
        assert sum(a["ndcg@10"].values()) / 40 == pytest.approx(recbole_ndcg, abs=1e-4)  # RecBole rounds to 4 places
        assert (a["seen_in_top10"] == 0) == exclude_seen  # 6-12 seen items of 30: some reach a top 10
        evaluated = evaluate(sasrec["checkpoint"], exclude_seen=exclude_seen)
        assert evaluated["exclude_seen"] is exclude_seen
        assert evaluated["test_result"] == sasrec["test_result_by_protocol"][protocol]
        b = model_per_user(lrurec["checkpoint"], exclude_seen)
        paired = paired_test(a, b)
        assert paired["users"] == 40 and paired["difference"] == pytest.approx(paired["ndcg@10_a"] - paired["ndcg@10_b"])
        assert paired["ndcg@10_b"] == pytest.approx(lrurec["test_result_by_protocol"][protocol]["ndcg@10"], abs=1e-4)
        assert 0 <= paired["t_test_p"] <= 1 and 0 <= paired["wilcoxon_p"] <= 1
        # --csv appends the same test as a row naming both checkpoints and the protocol
        table = tmp_path / "paired.csv"
        main([sasrec["checkpoint"], lrurec["checkpoint"], f"--exclude_seen={exclude_seen}", f"--csv={table}"])
        row = list(csv.DictReader(table.open()))[-1]
        assert (row["a"], row["b"]) == (Path(sasrec["checkpoint"]).name, Path(lrurec["checkpoint"]).name)
        assert row["exclude_seen"] == str(exclude_seen) and row["dataset"] == "tiny" and row["users"] == "40"
        assert float(row["t_test_p"]) == pytest.approx(paired["t_test_p"])
        assert float(row["difference"]) == pytest.approx(paired["difference"])
        assert "--csv=" in row["command"] and row["command"].startswith("python -m recbole_fmrl.experiments.paired")
    assert table.read_text().splitlines()[0] == ",".join(PAIRED_COLUMNS) and len(table.read_text().splitlines()) == 3
    with pytest.raises(PluginError, match="--csv needs a second checkpoint"):
        main([sasrec["checkpoint"], f"--csv={table}"])


def test_the_protocol_flag_takes_true_or_false_and_names_the_flag_otherwise(capsys):
    from recbole_fmrl.deploy.evaluate import main

    with pytest.raises(SystemExit) as stopped:
        main(["x.pth", "--exclude_seen=maybe"])
    assert stopped.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "--exclude_seen" in error[0] and "expected True or False, got 'maybe'" in error[0]


def test_seen_before_target_is_each_pairs_history_without_its_target():
    from recbole_fmrl.model.next_item_training import next_item_targets, seen_before_target

    item_seq = torch.tensor([[4, 5, 6, 0], [7, 3, 0, 0]])
    real, targets = next_item_targets(item_seq, torch.tensor([3, 2]), torch.tensor([9, 7]))
    seen = seen_before_target(item_seq, real, targets[real])
    assert targets[real].tolist() == [5, 6, 9, 3, 7]
    assert seen.tolist() == [[4, 0, 0, 0, 0], [4, 5, 0, 0, 0], [4, 5, 6, 0, 0], [7, 0, 0, 0, 0],
                             [0, 3, 0, 0, 0]]  # 7 repeats: the target; the padding id in every row


def ce_without(hidden, table, targets, seen, bias=None):
    """CE by hand over every item but the row's seen ones (padding id 0 left out too, never a target)."""
    losses = []
    for h, y, items in zip(hidden, targets, seen):
        keep = [j for j in range(len(table)) if j == int(y) or (j not in set(items.tolist()))]
        scores = table[keep] @ h + (0 if bias is None else bias[keep])
        losses.append(F.cross_entropy(scores[None], torch.tensor([keep.index(int(y))])))
    return torch.stack(losses).mean()


def test_the_seen_items_leave_every_loss_exactly():
    torch.manual_seed(4)
    sizes = [2, 4, 8]
    hidden, table = torch.randn(5, 8, dtype=torch.float64), torch.randn(12, 8, dtype=torch.float64)
    targets = torch.tensor([3, 5, 7, 9, 11])
    seen = torch.tensor([[1, 2, 0], [3, 4, 6], [7, 0, 0], [1, 0, 0], [10, 8, 2]]).masked_fill(
        torch.tensor([[0, 0, 0], [0, 0, 0], [1, 0, 0], [0, 0, 0], [0, 0, 0]], dtype=torch.bool), 0)
    nested = nested_cross_entropy(hidden, table, targets, sizes, seen=seen)
    torch.testing.assert_close(nested, sum(ce_without(hidden[:, :m], table[:, :m], targets, seen) for m in sizes))
    catalogue = torch.arange(12)
    torch.testing.assert_close(sampled_cross_entropy(hidden, table, targets, catalogue, sizes, seen=seen), nested)
    bias = torch.randn(12, dtype=torch.float64)
    torch.testing.assert_close(sampled_cross_entropy(hidden, table, targets, catalogue, bias=bias, seen=seen),
                               ce_without(hidden, table, targets, seen, bias))
    hidden.requires_grad_(True)
    nested_cross_entropy(hidden, table, targets, sizes, seen=seen).backward()  # the fused gradients too
    by_hand = hidden.detach().clone().requires_grad_(True)
    sum(ce_without(by_hand[:, :m], table[:, :m], targets, seen) for m in sizes).backward()
    torch.testing.assert_close(hidden.grad, by_hand.grad)


@pytest.mark.parametrize("name", ["SASRec", "LRURec", "fMRLRec"])
def test_training_without_seen_items_is_the_same_in_sequence_and_prefix_mode(data_path, name):
    """With train_exclude_seen the sequence loss is still the mean of the prefix losses of the same pairs."""
    model_class = {"SASRec": SASRec, "LRURec": LRURec, "fMRLRec": fMRLRec}[name]
    overrides = {"MAX_ITEM_LIST_LENGTH": 20, "train_exclude_seen": True, **SASREC}
    dataset, sequence = train_split(config_for(name, data_path, train_mode="sequence", **overrides))
    torch.manual_seed(0)
    model = model_class(config_for(name, data_path, train_mode="sequence", **overrides), dataset).eval()
    _, prefix = train_split(config_for(name, data_path, train_mode="prefix", **overrides))
    sequence_loss = model.calculate_loss(sequence.inter_feat)
    model.train_mode = "prefix"
    per_pair = torch.stack([model.calculate_loss(prefix.inter_feat[i: i + 1]) for i in range(len(prefix))])
    torch.testing.assert_close(sequence_loss, per_pair.mean(), atol=1e-5, rtol=1e-5)
    model.train_exclude_seen = False
    assert (torch.stack([model.calculate_loss(prefix.inter_feat[i: i + 1]) for i in range(len(prefix))]) > per_pair).all()
