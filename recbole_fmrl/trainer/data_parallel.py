"""The data-parallel role of the plugin's trainer (a run on several processes,
:mod:`recbole_fmrl.distributed`): every process takes the optimiser step one process would take on
the global batch, and evaluation gathers the metrics' inputs of every process's users.

RecBole's own data parallelism (``single_spec: False``) stays off: it hard-codes nccl and GPU device
ids and repeats users to even the processes' shares. The plugin's loaders split every batch
(:class:`~recbole_fmrl.data.dataloader.SplitTrainDataLoader`) and share out the evaluated users
(:class:`~recbole_fmrl.data.dataloader.SeenExcludingEvalDataLoader`); this role does the rest.
"""

import torch
from recbole.evaluator import Collector
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from recbole_fmrl import distributed
from recbole_fmrl.model.protocol import training_pair_count

# What RecBole's Collector gathers one row per evaluated user of (and clears after every evaluation).
PER_USER_KEYS = ("rec.items", "rec.topk", "rec.meanrank", "rec.score", "data.label")


class WeightedLoss(nn.Module):
    """The module DistributedDataParallel wraps: a batch's loss, scaled by this process's share of the
    global batch, plus zero times one entry of every parameter, so that every parameter has a
    gradient for DDP to reduce (RecBole's ``sync_grad_loss``), the parameters a loss leaves out too."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, loss_func, interaction, share):
        touched = sum(p.flatten()[0] for p in self.model.parameters() if p.requires_grad) * 0.0
        if share == 0.0:  # no row of this batch is this process's
            return touched
        losses = loss_func(interaction)
        if isinstance(losses, tuple):
            return (losses[0] * share + touched,) + tuple(loss * share for loss in losses[1:])
        return losses * share + touched


class DataParallel:
    """DistributedDataParallel over the trainer's model: :meth:`loss_function` gives RecBole's training
    loop a loss whose gradients, averaged over the processes, are those of one process's loss on
    the global batch: each process's mean loss over its ``n_r`` training pairs (the model's
    ``training_pair_count``) is weighted by W·n_r / N, N the pairs of the whole batch
    (:func:`~recbole_fmrl.distributed.share_of_batch`). Built after the model is on its device (DDP
    gives every process rank 0's parameters)."""

    def __init__(self, model, device):
        self.model, self.device = model, device
        self.wrapped = DistributedDataParallel(WeightedLoss(model), device_ids=[device] if device.type == "cuda" else None)

    def loss_function(self, loss_func):
        """``loss_func`` (``interaction -> loss``) weighted by this process's share, through DDP."""

        def weighted(interaction):
            share = distributed.share_of_batch(training_pair_count(self.model, interaction), self.device)
            return self.wrapped(loss_func, interaction, share)

        return weighted


class GatheringCollector(Collector):
    """RecBole's Collector whose data, once an evaluation is over, holds every process's users in
    rank order: with the contiguous shares of the evaluation loader, the rows one process would
    have collected, in its order, so the metrics are one process's."""

    def get_data_struct(self):
        struct = super().get_data_struct()
        for key in PER_USER_KEYS:
            if self.register.need(key):
                shares = [share for share in distributed.gather(struct[key] if key in struct else None)
                          if share is not None]  # None: a process without users
                if shares:
                    struct.set(key, torch.cat(shares))
        return struct


class DiscardedWriter:
    """Stands in for RecBole's TensorBoard writer on the processes other than rank 0: takes every
    call and writes nothing."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None
