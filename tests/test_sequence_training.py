"""Sequence-level training (train_mode: sequence), eq. 13 by hand, and the trainer's recipe keys."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recbole_fmrl.config import Config
from recbole_fmrl.data import LengthGroupedTrainDataLoader, sequence_window_rows
from recbole_fmrl.data.loading import create_dataset
from recbole_fmrl.errors import ConfigError
from recbole_fmrl.model import BERT4Rec, LRURec, fMRLRec
from recbole_fmrl.model.next_item_training import next_item_targets
from recbole_fmrl.runner import build as build_run
from recbole_fmrl.trainer import PluginTrainer
from recbole_fmrl.trainer.recipe import parameter_groups, warmup_then

from conftest import write_multimodal_tiny

MAX_LEN = 6  # shorter than most tiny histories (5-12 events), so several users need two windows
TINY = {
    "hidden_size": 16,
    "mrl_hidden_sizes": [4, 8, 16],
    "n_layers": 2,
    "MAX_ITEM_LIST_LENGTH": MAX_LEN,
    "use_gpu": False,
    "feature_files": {"text": "tiny.text.npy", "image": "tiny.image.npy"},
}


@pytest.fixture
def data_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return write_multimodal_tiny(tmp_path, 20)


def config_for(model, data_path, **overrides):
    return Config(model, "tiny", config_dict={"data_path": data_path, **TINY, **overrides})


def train_split(config):
    torch.manual_seed(0)
    dataset = create_dataset(config)
    return dataset, dataset.build()[0]


def pairs_of_sequence_rows(train):
    """(history, target) pairs a causal model trains on, read position by position."""
    pairs = []
    for seq, length, target in zip(train.inter_feat["item_id_list"], train.inter_feat["item_length"], train.inter_feat["item_id"]):
        items = seq[:length].tolist() + [int(target)]
        pairs += [(tuple(items[: t + 1]), items[t + 1]) for t in range(int(length))]
    return pairs


def pairs_of_prefix_rows(train):
    return [
        (tuple(seq[:length].tolist()), int(target))
        for seq, length, target in zip(train.inter_feat["item_id_list"], train.inter_feat["item_length"], train.inter_feat["item_id"])
    ]


def test_window_rows_cover_every_target_once():
    users = np.array([7] * 1 + [3] * 6 + [9] * 13)
    # user 7: its only row; user 3: rows 0..5 with window 6 -> its last row; user 9: rows 12, 6, 0
    assert sequence_window_rows(users, 6).tolist() == [0, 6, 7, 13, 19]
    with pytest.raises(ValueError, match="contiguous"):
        sequence_window_rows(np.array([1, 1, 2, 1]), 6)


def test_sequence_rows_train_exactly_recboles_augmented_pairs_when_histories_fit(data_path):
    """With windows longer than every history, each user's one row holds all its prefix pairs."""
    _, prefix = train_split(config_for("fMRLRec", data_path, train_mode="prefix", MAX_ITEM_LIST_LENGTH=20))
    _, sequence = train_split(config_for("fMRLRec", data_path, train_mode="sequence", MAX_ITEM_LIST_LENGTH=20))
    assert len(sequence) == len(set(prefix.inter_feat["user_id"].tolist())) < len(prefix)
    assert sorted(pairs_of_sequence_rows(sequence)) == sorted(pairs_of_prefix_rows(prefix))


def test_long_histories_become_consecutive_windows_with_every_target_once(data_path):
    _, prefix = train_split(config_for("fMRLRec", data_path, train_mode="prefix"))
    _, sequence = train_split(config_for("fMRLRec", data_path, train_mode="sequence"))
    targets = lambda pairs: sorted((user_target) for _, user_target in pairs)  # noqa: E731
    seq_pairs = pairs_of_sequence_rows(sequence)
    assert len(seq_pairs) == len(prefix) and targets(seq_pairs) == targets(pairs_of_prefix_rows(prefix))
    assert any(n == MAX_LEN for n in sequence.inter_feat["item_length"].tolist())
    assert len(sequence) > len(set(sequence.inter_feat["user_id"].tolist()))  # some users have 2 windows


def test_next_item_targets_shift_the_sequence_and_end_with_the_row_target():
    item_seq = torch.tensor([[4, 5, 6, 0], [7, 0, 0, 0]])
    real, targets = next_item_targets(item_seq, torch.tensor([3, 1]), torch.tensor([9, 8]))
    assert real.tolist() == [[True, True, True, False], [True, False, False, False]]
    assert targets[real].tolist() == [5, 6, 9, 8]


@pytest.mark.parametrize("model_class", [fMRLRec, LRURec])
def test_sequence_loss_is_the_mean_of_the_prefix_losses_of_the_same_pairs(data_path, model_class):
    name = model_class.__name__
    dataset, sequence = train_split(config_for(name, data_path, train_mode="sequence", MAX_ITEM_LIST_LENGTH=20))
    torch.manual_seed(0)
    model = model_class(config_for(name, data_path, train_mode="sequence", MAX_ITEM_LIST_LENGTH=20), dataset)
    model.eval()
    _, prefix = train_split(config_for(name, data_path, train_mode="prefix", MAX_ITEM_LIST_LENGTH=20))
    sequence_loss = model.calculate_loss(sequence.inter_feat)
    model.train_mode = "prefix"
    per_pair = [model.calculate_loss(prefix.inter_feat[i : i + 1]) for i in range(len(prefix))]
    torch.testing.assert_close(sequence_loss, torch.stack(per_pair).mean(), atol=1e-5, rtol=1e-5)


def test_length_grouped_batches_are_trimmed_and_score_like_padded_rows(data_path):
    config = config_for("fMRLRec", data_path, train_batch_size=8, MAX_ITEM_LIST_LENGTH=20)
    dataset, sequence = train_split(config)
    loader = LengthGroupedTrainDataLoader(config, sequence)
    torch.manual_seed(0)
    model = fMRLRec(config, dataset).eval()
    batches = list(loader)
    lengths = sequence.inter_feat["item_length"]
    budget = 8 * lengths.float().mean().item()  # train_batch_size x mean positions per row
    assert len(batches) == len(loader) == int(np.ceil(lengths.sum().item() / budget))
    assert sorted(torch.cat([b["user_id"] for b in batches]).tolist()) == sorted(sequence.inter_feat["user_id"].tolist())
    for batch in batches:
        batch_lengths = batch["item_length"]
        assert batch["item_id_list"].size(1) == int(batch_lengths.max()) < 20
        assert int(batch_lengths.sum()) - int(batch_lengths.max()) < budget  # about `budget` positions
        padded = sequence.inter_feat[torch.isin(sequence.inter_feat["user_id"], batch["user_id"])]
        order = [padded["user_id"].tolist().index(u) for u in batch["user_id"].tolist()]
        torch.testing.assert_close(model.calculate_loss(batch), model.calculate_loss(padded[order]), atol=1e-5, rtol=1e-5)
    ranges = sorted((int(b["item_length"].min()), int(b["item_length"].max())) for b in batches)
    assert all(high <= next_low for (_, high), (next_low, _) in zip(ranges, ranges[1:]))  # grouped by length
    again = [b["user_id"].tolist() for b in loader]
    assert again != [b["user_id"].tolist() for b in batches]  # reshuffled every epoch


def test_fmrlrec_scores_are_eq_13_by_hand(data_path):
    """Eq. 13: the size-m score is (last block output)[:m] · E[:, :m]ᵀ, no norm in between."""
    config = config_for("fMRLRec", data_path, hidden_dropout_prob=0.0, attn_dropout_prob=0.0)
    dataset, sequence = train_split(config)
    model = fMRLRec(config, dataset).eval()
    batch = sequence.inter_feat
    item_seq, lengths = batch["item_id_list"], batch["item_length"]
    features = torch.cat([dataset.item_features("text"), dataset.item_features("image")], dim=1)
    table = features @ model.item_encoder.projection.weight.T + model.item_encoder.projection.bias  # eq. 7
    x = table[item_seq]
    for block in model.encoder.blocks:
        x = block(x, item_seq != 0)
    last = x[torch.arange(len(batch)), lengths - 1]
    for m in [4, 8, 16]:
        model.eval_size = m
        torch.testing.assert_close(model.full_sort_predict(batch), last[:, :m] @ table[:, :m].T, atol=1e-5, rtol=1e-5)


def test_sequence_mode_is_refused_for_models_that_train_on_prefixes(data_path):
    with pytest.raises(ConfigError, match="GRU4Rec trains on prefixes: set train_mode: prefix"):
        build_run("GRU4Rec", "tiny", config_dict={"data_path": data_path, "use_gpu": False, "train_mode": "sequence"})
    with pytest.raises(ConfigError, match="train_mode must be one of"):
        build_run("LRURec", "tiny", config_dict={"data_path": data_path, "use_gpu": False, "train_mode": "rows"})


def bert4rec(data_path, **overrides):
    config = config_for("BERT4Rec", data_path, train_mode="sequence", **overrides)
    dataset, sequence = train_split(config)
    torch.manual_seed(0)
    return BERT4Rec(config, dataset), sequence


@pytest.mark.parametrize("max_length", [MAX_LEN, 20])
def test_bert4rec_sequence_rows_are_each_window_with_its_target_appended(data_path, max_length):
    """Rows as the training loader gives them (cut to the batch's longest history) and padded ones."""
    model, sequence = bert4rec(data_path, MAX_ITEM_LIST_LENGTH=max_length, train_batch_size=4)
    config = config_for("BERT4Rec", data_path, train_mode="sequence", MAX_ITEM_LIST_LENGTH=max_length, train_batch_size=4)
    batches = list(LengthGroupedTrainDataLoader(config, sequence)) + [sequence.inter_feat]
    widths = [b["item_id_list"].size(1) for b in batches[:-1]]
    assert min(widths) < max_length and (max(widths) == max_length) == (max_length == MAX_LEN)  # cut batches, full ones
    for batch in batches:
        items, lengths = model.cloze_rows(batch)
        assert items.size(1) <= max_length
        for row, (seq, length, target) in enumerate(zip(batch["item_id_list"], batch["item_length"], batch["item_id"])):
            whole = (seq[:length].tolist() + [int(target)])[-max_length:]
            assert items[row, : lengths[row]].tolist() == whole and not items[row, lengths[row]:].any()
    users = sequence.inter_feat["user_id"]
    assert (len(torch.unique(users)) < len(users)) == (max_length == MAX_LEN)  # long users: one row per window


def test_bert4rec_masks_stay_on_real_items_and_every_row_masks_one_or_only_its_last(data_path):
    model, _ = bert4rec(data_path)
    lengths = torch.randint(1, 51, (4000,), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    masked = model.cloze_masks(lengths, 50)
    real = torch.arange(50) < lengths[:, None]
    last = torch.arange(50) == (lengths - 1)[:, None]
    assert not (masked & ~real).any() and masked.any(dim=1).all()
    only_last = (masked == last).all(dim=1)
    # ft_ratio 0.5 of the rows mask only their last item, and so do the others whose mask_ratio 0.2 draw is
    # empty or only the last item: probability 0.8^(length-1)
    expected = 0.5 + 0.5 * (0.8 ** (lengths - 1.0)).mean()
    assert abs(only_last.float().mean() - expected) < 0.03
    drawn = ~only_last & (lengths > 20)  # rows of the mask_ratio draw (long enough to make the condition negligible)
    assert abs(masked[drawn].sum() / real[drawn].sum() - 0.2) < 0.01
    model.ft_ratio, model.mask_ratio = 0.0, 0.0
    assert torch.equal(model.cloze_masks(lengths, 50), last)


@pytest.mark.parametrize("max_length", [MAX_LEN, 20])
def test_bert4rec_sequence_loss_is_the_cloze_ce_of_each_masked_item_by_hand(data_path, max_length):
    model, sequence = bert4rec(data_path, hidden_dropout_prob=0.0, attn_dropout_prob=0.0, MAX_ITEM_LIST_LENGTH=max_length)
    model.eval()
    batch = sequence.inter_feat
    batch = batch[batch["item_length"] < batch["item_length"].max()]  # as the loader cuts rows: width < MAX when 20
    batch = batch.__class__({k: v[:, : int(batch["item_length"].max())] if k == "item_id_list" else v
                             for k, v in batch.interaction.items()})
    torch.manual_seed(3)
    loss = model.calculate_loss(batch)
    torch.manual_seed(3)
    items, lengths = model.cloze_rows(batch)
    masked = model.cloze_masks(lengths, items.size(1))
    losses = []
    for row in range(len(items)):  # one row at a time, cut to its length: padding changes nothing
        inputs = items[row, : lengths[row]].clone()
        inputs[masked[row, : lengths[row]]] = model.n_items  # the mask token
        hidden = model.forward(inputs[None])[0]
        for t in torch.nonzero(masked[row, : lengths[row]]).flatten():
            logits = hidden[t] @ model.item_embedding.weight[: model.n_items].T + model.output_bias
            losses.append(-torch.log_softmax(logits, 0)[items[row, t]])
    assert len(losses) == int(masked.sum()) > len(items)
    torch.testing.assert_close(loss, torch.stack(losses).mean(), atol=1e-5, rtol=1e-5)
    assert model.training_pair_count(batch) == int(lengths.sum())


def test_bert4rec_scores_are_recboles_and_masks_are_drawn_only_for_prefix_training(data_path):
    from recbole.data.transform import Equal, MaskItemSequence
    from recbole.model.sequential_recommender.bert4rec import BERT4Rec as RecBoleBERT4Rec

    from recbole_fmrl.data.dataloader import data_preparation

    model, _ = bert4rec(data_path, MAX_ITEM_LIST_LENGTH=20)
    model.eval()
    for train_mode in ("sequence", "prefix"):
        config = config_for("BERT4Rec", data_path, train_mode=train_mode, MAX_ITEM_LIST_LENGTH=20)
        train, valid, test = data_preparation(config, create_dataset(config))
        assert isinstance(train.transform, Equal if train_mode == "sequence" else MaskItemSequence)
        assert isinstance(valid.transform, Equal) and isinstance(test.transform, Equal)
    batches = [batch for batch, *_ in test]
    assert any(int(b["item_length"].max()) < 20 for b in batches)  # rows cut to their longest history
    for batch in batches:  # RecBole's scores: its reconstruct_test_data on the rows padded to MAX_ITEM_LIST_LENGTH
        assert batch["item_id_list"].size(1) == 20
        lengths = batch["item_length"]
        hidden = model.forward(RecBoleBERT4Rec.reconstruct_test_data(model, batch["item_id_list"], lengths))
        last = hidden[torch.arange(len(lengths)), lengths - 1]
        expected = last @ model.item_embedding.weight[: model.n_items].T + model.output_bias
        torch.testing.assert_close(model.full_sort_predict(batch), expected, atol=1e-5, rtol=1e-5)
        items = batch["item_id"]
        torch.testing.assert_close(model.predict(batch), expected[torch.arange(len(items)), items], atol=1e-5, rtol=1e-5)


def test_warmup_then_cosine_or_constant_multipliers():
    cosine = warmup_then("cosine", warmup_steps=10, total_steps=110)
    assert [cosine(s) for s in (0, 5, 10, 60, 110, 200)] == pytest.approx([0.0, 0.5, 1.0, 0.5, 0.0, 0.0])
    constant = warmup_then("constant", warmup_steps=4, total_steps=100)
    assert [constant(s) for s in (0, 2, 4, 99)] == pytest.approx([0.0, 0.5, 1.0, 1.0])


def test_no_weight_decay_on_biases_and_norms(data_path):
    config = config_for("LRURec", data_path)
    dataset, _ = train_split(config)
    model = LRURec(config, dataset)
    decay, no_decay = parameter_groups(model, 0.01, decay_bias_and_norm=False)
    names = {id(p): n for n, p in model.named_parameters()}
    exempt = sorted(names[id(p)] for p in no_decay["params"])
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 0.01
    assert "item_bias" in exempt and "embedding_norm.weight" in exempt and "encoder.blocks.0.ffn.0.bias" in exempt
    assert all(n.endswith("bias") or "norm" in n for n in exempt)
    assert "item_embedding.weight" in {names[id(p)] for p in decay["params"]}


def test_trainer_applies_epsilon_warmup_and_saves_the_schedule(data_path, tmp_path):
    overrides = {"epochs": 2, "train_batch_size": 8, "warmup_steps": 3, "lr_schedule": "cosine",
                 "checkpoint_dir": str(tmp_path / "saved"), "show_progress": False, "learning_rate": 0.01}
    config, model, _, (train_data, valid_data, _) = build_run("LRURec", "tiny", config_dict={"data_path": data_path, **TINY, **overrides})
    trainer = PluginTrainer(config, model)
    assert trainer.optimizer.defaults["eps"] == 1e-9  # LRURec.yaml: the authors' adam_epsilon
    seen = []
    trainer.optimizer.register_step_post_hook(lambda opt, *_: seen.append(opt.param_groups[0]["lr"]))
    trainer.fit(train_data, valid_data, saved=True)
    steps = 2 * len(train_data)
    assert len(seen) == steps and trainer.lr_scheduler.last_epoch == steps
    assert seen[:4] == pytest.approx([0.0, 0.01 / 3, 0.02 / 3, 0.01])  # linear warm-up over 3 steps
    assert seen[-1] == pytest.approx(0.01 * 0.5 * (1 + np.cos(np.pi * (steps - 4) / (steps - 3))))  # cosine
    checkpoint = torch.load(trainer.last_model_file, weights_only=True)
    assert checkpoint["lr_scheduler"]["last_epoch"] == steps
    # restoring it on --resume is covered by test_checkpoints' interrupted == uninterrupted run
