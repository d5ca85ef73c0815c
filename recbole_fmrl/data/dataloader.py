"""Training batches without padding work for ``train_mode: sequence``, and full-ranking
evaluation that excludes each user's seen items (``exclude_seen``); in a data-parallel run
(:mod:`recbole_fmrl.distributed`) each process trains on its part of every batch and evaluates its
share of the users."""

import numpy as np
import torch
from recbole.data.dataloader import FullSortEvalDataLoader, TrainDataLoader
from recbole.data.interaction import Interaction
from recbole.data.transform import Equal

from recbole_fmrl import distributed
from recbole_fmrl.errors import ConfigError
from recbole_fmrl.inputs import boolean


class SplitTrainDataLoader(TrainDataLoader):
    """RecBole's ``TrainDataLoader`` whose every batch is split across the processes of a
    data-parallel run: all processes draw the same batches (the loader's ``generator`` is seeded
    alike), and each collates its part, rows ``rank, rank + W, ...`` of the batch (none when the
    batch has fewer than ``rank + 1`` rows). Every process takes one step per batch, and the parts
    of a batch are together the batch one process would train on. In one process: RecBole's loader."""

    def __init__(self, config, dataset, sampler=None, shuffle=True):
        super().__init__(config, dataset, sampler, shuffle=shuffle)
        self.rank, self.world_size = distributed.rank(), distributed.world_size()

    def collate_fn(self, index):
        return super().collate_fn(np.asarray(index, dtype=np.int64)[self.rank::self.world_size])


class LengthGroupedTrainDataLoader(SplitTrainDataLoader):
    """RecBole's ``TrainDataLoader`` whose batches hold rows of similar length and about the same
    number of real positions, each batch cut to its longest row, and split across the processes of
    a data-parallel run (:class:`SplitTrainDataLoader`).

    Every epoch the rows are shuffled (the loader's seeded ``generator``), stably sorted by length
    and cut into batches of about ``train_batch_size`` × (mean row length) positions, and the
    batches are shuffled. Equal positions per batch keep every training target's weight equal under
    the per-batch mean loss, as in prefix training (equal rows per batch would weight a position of
    a batch of short rows many times more than one of a batch of long rows).
    """

    def __init__(self, config, dataset, sampler=None, shuffle=True):
        super().__init__(config, dataset, sampler, shuffle=shuffle)
        self.lengths = dataset.inter_feat[dataset.item_list_length_field]
        self.max_length = dataset.max_item_list_len
        self.positions_per_batch = self.step * float(self.lengths.float().mean())
        self.batch_of_sorted_row = self._cut(torch.sort(self.lengths).values)

    def _cut(self, sorted_lengths):
        """Batch number of each row in length order: the row's first position // positions per batch."""
        starts = torch.cumsum(sorted_lengths, 0) - sorted_lengths
        return torch.unique_consecutive(torch.div(starts, self.positions_per_batch, rounding_mode="floor"),
                                        return_inverse=True)[1]

    def __len__(self):
        return int(self.batch_of_sorted_row[-1]) + 1

    def batches(self):
        """One epoch's batches as index tensors (advances ``generator``)."""
        order = torch.randperm(self.sample_size, generator=self.generator)
        order = order[torch.sort(self.lengths[order], stable=True).indices]
        counts = torch.bincount(self.batch_of_sorted_row).tolist()
        batches = list(torch.split(order, counts))
        return [batches[i] for i in torch.randperm(len(batches), generator=self.generator)]

    def __iter__(self):
        for index in self.batches():
            yield self.collate_fn(index.numpy())

    def collate_fn(self, index):
        batch = super().collate_fn(index)
        if not len(batch):  # this process's part of a batch of fewer rows than processes
            return batch
        longest = int(batch[self._dataset.item_list_length_field].max())
        return Interaction({
            field: values[:, :longest] if values.dim() > 1 and values.size(1) == self.max_length else values
            for field, values in batch.interaction.items()
        })


class SeenExcludingEvalDataLoader(FullSortEvalDataLoader):
    """RecBole's full-ranking loader of a sequential dataset; while ``exclude_seen`` is True every
    item the row's user interacted with before its target (its whole history,
    :meth:`~recbole_fmrl.data.dataset.MultimodalSequentialDataset.seen_items`) is passed as the
    batch's ``history_index``, which RecBole's trainer scores -inf: the seen items are never ranked,
    as a deployment filters them (and as RecTools' ``filter_viewed`` does, a repeated target included).
    False (the default) is RecBole's and the paper's protocol: every item is ranked.

    Rows are read in order, ``eval_batch_size`` at a time; in a data-parallel run each process reads
    its contiguous share of the rows (:func:`~recbole_fmrl.distributed.shard`: every row exactly
    once, none repeated to even the shares), whose results the trainer gathers in rank order."""

    def __init__(self, config, dataset, sampler, shuffle=False):
        super().__init__(config, dataset, sampler, shuffle=shuffle)
        self.exclude_seen = config["exclude_seen"]
        self.rows = torch.arange(*distributed.shard(self.sample_size))

    def __iter__(self):
        for start in range(0, len(self.rows), self.step):
            yield self.collate_fn(self.rows[start : start + self.step].numpy())

    def __len__(self):
        return -(-len(self.rows) // self.step)

    def collate_fn(self, index):
        interaction, history_index, positive_u, positive_i = super().collate_fn(index)
        if self.exclude_seen:
            history_index = self._dataset.seen_items(interaction)
        return interaction, history_index, positive_u, positive_i


TRAINING_ONLY_TRANSFORMS = ("mask_itemseq",)
"""RecBole transforms whose output only prefix training reads: BERT4Rec's masks (a Python loop over
every row of a batch) are not drawn for evaluation, whose ``predict`` reads the unmasked history,
nor for ``train_mode: sequence``, which masks in the model."""


def check_exclude_seen(config):
    """``exclude_seen`` if valid: a bool, and True only with full ranking of a sequential model."""
    exclude_seen = boolean("exclude_seen", config["exclude_seen"])
    mode = config["eval_args"]["mode"]
    if exclude_seen and set(mode.values() if isinstance(mode, dict) else [mode]) != {"full"}:
        raise ConfigError(f"exclude_seen: True needs full ranking (eval_args mode: full), got mode {mode!r}")
    return exclude_seen


def data_preparation(config, dataset):
    """RecBole's ``data_preparation``; with ``train_mode: sequence`` the training loader groups
    rows by length; full-ranking validation and test loaders are :class:`SeenExcludingEvalDataLoader`
    (RecBole's, which also exclude seen items when ``exclude_seen`` is True); a transform of
    :data:`TRAINING_ONLY_TRANSFORMS` runs only on prefix training batches. In a data-parallel run
    RecBole's training loader is a :class:`SplitTrainDataLoader`, and a model these loaders do not
    serve (not sequential, or not evaluated by full ranking) is refused with one line."""
    from recbole.data import data_preparation as recbole_data_preparation

    check_exclude_seen(config)
    train_data, valid_data, test_data = recbole_data_preparation(config, dataset)
    if config["train_mode"] == "sequence":
        train_data = LengthGroupedTrainDataLoader(config, train_data.dataset)
    elif distributed.is_distributed() and type(train_data) is TrainDataLoader:
        train_data = SplitTrainDataLoader(config, train_data.dataset, train_data._sampler, shuffle=train_data.shuffle)
    if isinstance(valid_data, FullSortEvalDataLoader) and valid_data.is_sequential:
        valid_data, test_data = (SeenExcludingEvalDataLoader(config, loader._dataset, loader._sampler)
                                 for loader in (valid_data, test_data))
    if config["transform"] in TRAINING_ONLY_TRANSFORMS:
        for loader in (valid_data, test_data) + ((train_data,) if config["train_mode"] == "sequence" else ()):
            loader.transform = Equal(config)
    if distributed.is_distributed() and not (isinstance(train_data, SplitTrainDataLoader)
                                             and isinstance(valid_data, SeenExcludingEvalDataLoader)):
        raise ConfigError(
            f"{config['model']}: a data-parallel run ({distributed.world_size()} processes) trains a sequential model "
            f"evaluated by full ranking (eval_args mode: full); run this one in one process")
    return train_data, valid_data, test_data
