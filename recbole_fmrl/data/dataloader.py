"""Training batches without padding work for ``train_mode: sequence``."""

import torch
from recbole.data.dataloader import TrainDataLoader
from recbole.data.interaction import Interaction


class LengthGroupedTrainDataLoader(TrainDataLoader):
    """RecBole's ``TrainDataLoader`` whose batches hold rows of similar length and about the same
    number of real positions, each batch cut to its longest row.

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
        longest = int(batch[self._dataset.item_list_length_field].max())
        return Interaction({
            field: values[:, :longest] if values.dim() > 1 and values.size(1) == self.max_length else values
            for field, values in batch.interaction.items()
        })


def data_preparation(config, dataset):
    """RecBole's ``data_preparation``; with ``train_mode: sequence`` the training loader groups
    rows by length (the split, validation and test loaders are RecBole's, unchanged)."""
    from recbole.data import data_preparation as recbole_data_preparation

    train_data, valid_data, test_data = recbole_data_preparation(config, dataset)
    if config["train_mode"] == "sequence":
        train_data = LengthGroupedTrainDataLoader(config, train_data.dataset)
    return train_data, valid_data, test_data
