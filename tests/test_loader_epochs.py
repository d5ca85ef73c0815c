"""The training loaders' epoch, in one process and split across the processes of a data-parallel run
(each process's part simulated by its rank): every training row exactly once, batches of similar
length, a new batch order every epoch that the seed reproduces, and every batch one process would
train on shared out among the processes, each taking one step per batch."""

import pytest
from recbole.data.dataloader import TrainDataLoader

from recbole_fmrl.config import Config
from recbole_fmrl.data import LengthGroupedTrainDataLoader
from recbole_fmrl.data.dataloader import SplitTrainDataLoader
from recbole_fmrl.data.loading import create_dataset


def train_split(tiny_config, **overrides):
    """(config, training rows) of LRURec on ``tiny``: windows of 6 items, so many users have two rows."""
    config = Config("LRURec", "tiny", config_dict={**tiny_config, "MAX_ITEM_LIST_LENGTH": 6, **overrides})
    return config, create_dataset(config).build()[0]


def loader_of(loader_class, config, train, rank=0, world_size=1):
    loader = loader_class(config, train, None, shuffle=True)
    loader.rank, loader.world_size = rank, world_size  # the part of process `rank` of `world_size`
    return loader


def epoch(loader):
    """The epoch's batches, each as its rows (user, target item), in order."""
    return [list(zip(batch["user_id"].tolist(), batch["item_id"].tolist())) for batch in loader]


def test_an_epoch_holds_every_row_once_in_batches_of_similar_length(tiny_config):
    config, train = train_split(tiny_config, train_batch_size=4)
    loader = LengthGroupedTrainDataLoader(config, train)
    rows = sorted(zip(train.inter_feat["user_id"].tolist(), train.inter_feat["item_id"].tolist()))
    for _ in range(2):
        batches = list(loader)
        assert sorted(row for batch in epoch(batches) for row in batch) == rows
        spans = sorted((int(b["item_length"].min()), int(b["item_length"].max())) for b in batches)
        assert len(spans) > 5 and all(high <= next_low for (_, high), (next_low, _) in zip(spans, spans[1:]))


def test_every_epoch_has_a_new_batch_order_that_the_seed_reproduces(tiny_config):
    config, train = train_split(tiny_config, train_batch_size=4)
    first = LengthGroupedTrainDataLoader(config, train)
    epochs = [epoch(first), epoch(first)]
    assert epochs[0] != epochs[1]
    again = LengthGroupedTrainDataLoader(config, train)
    assert [epoch(again), epoch(again)] == epochs
    other_config, _ = train_split(tiny_config, train_batch_size=4, seed=7)
    assert epoch(LengthGroupedTrainDataLoader(other_config, train)) != epochs[0]


# batch sizes that leave a batch of one row (tiny's 243 prefix rows: 22 batches of 11 and one of 1)
@pytest.mark.parametrize("loader_class, train_mode, batch_size", [(LengthGroupedTrainDataLoader, "sequence", 2),
                                                                  (SplitTrainDataLoader, "prefix", 11)])
@pytest.mark.parametrize("world_size", [2, 3])
def test_each_batch_is_shared_out_among_the_processes_one_step_each(tiny_config, loader_class, train_mode, batch_size,
                                                                    world_size):
    config, train = train_split(tiny_config, train_batch_size=batch_size, train_mode=train_mode)
    whole_class = TrainDataLoader if loader_class is SplitTrainDataLoader else loader_class  # one process: RecBole's
    whole_loader = loader_of(whole_class, config, train)
    parts_loaders = [loader_of(loader_class, config, train, rank, world_size) for rank in range(world_size)]
    for _ in range(2):
        whole = epoch(whole_loader)
        parts = [epoch(loader) for loader in parts_loaders]
        assert all(len(loader) == len(whole_loader) == len(part) == len(whole) for loader, part in zip(parts_loaders, parts))
        for step, batch in enumerate(whole):
            shared = [row for part in parts for row in part[step]]
            assert sorted(shared) == sorted(batch) and len(set(shared)) == len(shared)
            assert max(len(part[step]) for part in parts) - min(len(part[step]) for part in parts) <= 1
    sizes = [len(part[step]) for part in parts for step in range(len(whole))]
    assert 0 in sizes  # a batch of fewer rows than processes: a process without rows still takes the step
