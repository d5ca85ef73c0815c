"""RecBole's sequential dataset plus per-item multimodal feature matrices.

A feature file is a float32 ``.npy`` matrix ``[n_items, dim]`` with a JSON manifest beside it
(``<file>.npy.json``: ``encoder``, ``dim``, ``n_items``, ``items_file``, ``source_sha256``,
``n_zero_rows``). Row ``r`` belongs to the item on line ``r + 1`` of ``items_file`` (a
tab-separated table with an ``item_id`` column, next to the matrix). Files are named in the config
by modality, relative to the dataset folder: ``feature_files: {text: beauty.text.npy}``.
"""

import json
import os
import time

import numpy as np
import pandas as pd
import torch
from recbole.data.dataset import SequentialDataset
from recbole.utils import FeatureSource, FeatureType

from recbole_fmrl.data import atomic_files
from recbole_fmrl.errors import ConfigError, FeatureFileError

HISTORY_END = "history_end"
"""Field of every row: where the row's history ends in :attr:`MultimodalSequentialDataset.sequence_items`."""


def read_feature_file(path, modality=None):
    """Open a feature matrix (memory-mapped) and the item ids of its rows, checking the manifest
    (and, when it has ``source_sha256``, that the items table is still the one the rows were
    computed from: :func:`check_feature_source`).

    Returns ``(matrix, item_ids, manifest)``; raises :class:`FeatureFileError` naming the file.
    """
    manifest_file = path + ".json"
    if not os.path.isfile(path):
        raise FeatureFileError(f"feature file not found: {path}")
    if not os.path.isfile(manifest_file):
        raise FeatureFileError(f"feature manifest not found: {manifest_file} (needed for {path})")
    try:
        with open(manifest_file, encoding="utf-8") as f:
            manifest = json.load(f)
        dim, items_name = int(manifest["dim"]), manifest["items_file"]
    except (ValueError, KeyError, TypeError) as exc:
        raise FeatureFileError(f"bad feature manifest {manifest_file}: {exc!r}") from exc
    try:
        matrix = np.load(path, mmap_mode="r")
    except (ValueError, OSError) as exc:
        raise FeatureFileError(f"unreadable feature file {path}: {exc}") from exc
    if matrix.ndim != 2 or matrix.shape[1] != dim:
        raise FeatureFileError(
            f"feature file {path} has shape {tuple(matrix.shape)} but its manifest says dim {dim}")
    item_ids = _read_item_ids(os.path.join(os.path.dirname(path), items_name), path)
    check_feature_source(path, manifest, modality)
    if len(item_ids) != matrix.shape[0]:
        raise FeatureFileError(
            f"feature file {path} has {matrix.shape[0]} rows but its items file lists {len(item_ids)} items")
    return matrix, item_ids, manifest


def check_feature_source(path, manifest, modality):
    """One :class:`FeatureFileError` if the items table beside ``path`` no longer hashes to the
    manifest's ``source_sha256`` (its rows reordered or edited since the matrix was computed: the
    matrix's rows would attach to the wrong items). Manifests without ``source_sha256`` are not checked."""
    expected = manifest.get("source_sha256")
    if expected is None:
        return
    items_file = os.path.join(os.path.dirname(path), manifest["items_file"])
    column = manifest.get("source_column") or atomic_files.SOURCE_COLUMNS.get(modality)
    items = atomic_files.read_items(items_file)
    if column not in items:
        raise FeatureFileError(
            f"cannot check feature file {path} against {items_file}: no source column {column!r} for its source_sha256")
    if atomic_files.source_sha256(items, column) != expected:
        raise FeatureFileError(
            f"feature file {path} was computed from another version of {items_file} (reordered or edited: "
            f"source_sha256 differs), so its rows would belong to other items; prepare the dataset again")


def _read_item_ids(items_file, path):
    """The ``item_id`` column of an items table, in row order (unique)."""
    if not os.path.isfile(items_file):
        raise FeatureFileError(f"items file not found: {items_file} (row order of {path})")
    with open(items_file, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        if "item_id" not in header:
            raise FeatureFileError(f"items file {items_file} has no item_id column")
        column = header.index("item_id")
        item_ids = [line.rstrip("\n").split("\t")[column] for line in f]
    if len(set(item_ids)) != len(item_ids):
        raise FeatureFileError(f"items file {items_file} lists an item more than once")
    return item_ids


def sequence_window_rows(user_of_row, window):
    """Rows of RecBole's augmented training set that together hold every target exactly once.

    RecBole's row j of a user (0-based, in time order) predicts the user's item j + 1 from the last
    ``min(j + 1, window)`` items before it. Its sequence, read position by position, holds the
    pairs of rows ``j - window + 1 .. j`` (a causal model's position t sees items <= t), so the
    user's last row and every ``window``-th row before it cover all rows with no overlap.
    ``user_of_row`` must list each user's rows contiguously, in time order.
    """
    last_of_run = np.flatnonzero(np.r_[user_of_row[1:] != user_of_row[:-1], True])
    if len(np.unique(user_of_row[last_of_run])) != len(last_of_run):
        raise ValueError("the training rows of a user are not contiguous")
    run_lengths = np.diff(np.r_[-1, last_of_run])
    rows_after = np.repeat(last_of_run, run_lengths) - np.arange(len(user_of_row))
    return np.flatnonzero(rows_after % window == 0)


class MultimodalSequentialDataset(SequentialDataset):
    """``SequentialDataset`` whose items also have feature matrices per modality (text, image).

    Used for every sequential model of the plugin, so all of them get identical splits.
    """

    def __init__(self, config):
        self._item_feature_cache = {}  # shared by the train/valid/test copies
        super().__init__(config)

    def build(self):
        """RecBole's train/valid/test split; with ``train_mode: sequence`` the training part keeps
        one row per window of ``MAX_ITEM_LIST_LENGTH`` targets (:func:`sequence_window_rows`).

        Every row first records where its whole history ends (:meth:`seen_items`: the items before
        its target, also those older than ``MAX_ITEM_LIST_LENGTH``). Validation and test rows are
        ordered by history length (metrics are per-user means, so the order changes no result):
        evaluation batches then hold histories of similar length, which the causal models cut to
        their longest row instead of encoding the padding."""
        train, valid, test = super().build()
        if self.config["train_mode"] == "sequence":
            keep = sequence_window_rows(train.inter_feat[self.uid_field].numpy(), self.max_item_list_len)
            train = train.copy(train.inter_feat[torch.from_numpy(keep)])
        return [train] + [self._by_history_length(split) for split in (valid, test)]

    def _change_feat_format(self):
        """RecBole's (tables as Interactions, then its augmentation into rows), then the whole
        histories of the augmented rows (:meth:`_record_histories`)."""
        super()._change_feat_format()
        if self.benchmark_filename_list is None:
            self._record_histories()

    def _record_histories(self):
        """Every user's items in time order, one flat tensor ``sequence_items`` (user u's run starts at
        ``sequence_begin[u]``), and per row the end of its history in it (field ``history_end``).

        RecBole's augmented rows of a user are contiguous and in time order: the first row's history
        is the user's first item, and row k's target is the user's item k + 1.
        """
        uid, n_rows = self.inter_feat[self.uid_field], len(self.inter_feat)
        first_row = torch.ones(n_rows, dtype=torch.bool)
        first_row[1:] = uid[1:] != uid[:-1]
        users_before = torch.cumsum(first_row, 0) - 1  # one extra item (the first) per earlier user
        target_position = torch.arange(n_rows) + users_before + 1
        first_rows = torch.nonzero(first_row).squeeze(1)
        first_position = target_position[first_rows] - 1
        if len(torch.unique(uid[first_rows])) != len(first_rows):
            raise ValueError("the rows of a user are not contiguous")
        items = torch.zeros(n_rows + len(first_rows), dtype=torch.long)
        items[target_position] = self.inter_feat[self.iid_field]
        items[first_position] = self.inter_feat[self.item_id_list_field][first_rows, 0]
        self.sequence_items = items
        self.sequence_begin = torch.zeros(self.user_num, dtype=torch.long)
        self.sequence_begin[uid[first_rows]] = first_position
        self.set_field_property(HISTORY_END, FeatureType.TOKEN, FeatureSource.INTERACTION, 1)
        self.inter_feat[HISTORY_END] = target_position

    def seen_items(self, interaction):
        """``(rows, items)``, two LongTensors: every item each row's
        user had interacted with before the row's target, its whole history (not only the last
        ``MAX_ITEM_LIST_LENGTH`` items its sequence holds)."""
        if HISTORY_END not in interaction:
            raise ConfigError("exclude_seen needs the users' whole histories, which a dataset split into "
                              "benchmark files (benchmark_filename) does not record")
        begin = self.sequence_begin[interaction[self.uid_field]]
        lengths = interaction[HISTORY_END] - begin
        rows = torch.repeat_interleave(torch.arange(len(lengths)), lengths)
        offsets = torch.arange(len(rows)) - torch.repeat_interleave(torch.cumsum(lengths, 0) - lengths, lengths)
        return rows, self.sequence_items[begin[rows] + offsets]

    def _by_history_length(self, split):
        order = torch.sort(split.inter_feat[self.item_list_length_field], stable=True).indices
        return split.copy(split.inter_feat[order])

    def _fill_nan(self):
        """RecBole's imputation, assigning results instead of chained in-place ``fillna``
        (which pandas 3's copy-on-write turns into a silent no-op)."""
        for feat_name in self.feat_name_list:
            feat = getattr(self, feat_name)
            for field in feat:
                ftype = self.field2type[field]
                if ftype == FeatureType.TOKEN:
                    feat[field] = feat[field].fillna(value=0)
                elif ftype == FeatureType.FLOAT:
                    feat[field] = feat[field].fillna(value=feat[field].mean())
                else:
                    dtype = np.int64 if ftype == FeatureType.TOKEN_SEQ else np.float64
                    feat[field] = feat[field].apply(
                        lambda x: np.array([], dtype=dtype) if isinstance(x, float) else x)

    def feature_file(self, modality):
        """Path of the feature file configured for ``modality`` (``feature_files`` in the config)."""
        files = self.config["feature_files"] or {}
        if modality not in files:
            raise FeatureFileError(
                f"no feature file for modality '{modality}' of dataset '{self.dataset_name}': set "
                f"feature_files: {{{modality}: <file.npy>}} (relative to {self.dataset_path}; "
                f"python -m recbole_fmrl.dataset_prep features --dataset={self.dataset_name} writes them), "
                "or train on item IDs only: --modalities=\"[id]\"")
        return os.path.join(self.dataset_path, files[modality])

    def item_features(self, modality):
        """Float32 tensor ``[item_num, dim]`` of ``modality``, row = RecBole's internal item id.

        Row 0 (padding) is zeros. Loaded on first call and cached.
        """
        if modality not in self._item_feature_cache:
            self._item_feature_cache[modality] = self._load_item_features(modality)
        return self._item_feature_cache[modality]

    def item_attributes(self, field):
        """Token ids of the categorical item field ``field`` (fMRLRec's ``attributes``), LongTensor
        ``[item_num, L]`` indexed by internal item id: L = 1 for a ``token`` field, the longest list
        for a ``token_seq`` field (padded with 0); row 0 and items without a value are all 0.
        ``self.num(field)`` is the number of token ids."""
        if self.field2source.get(field) != FeatureSource.ITEM:
            raise ConfigError(
                f"attributes field '{field}' is not an item field of dataset '{self.dataset_name}': it must be a "
                f"column of {self.dataset_name}.item loaded by load_col: {{item: [{self.iid_field}, {field}, ...]}}")
        kind = self.field2type[field]
        if kind not in (FeatureType.TOKEN, FeatureType.TOKEN_SEQ):
            raise ConfigError(f"attributes field '{field}' is a {kind.value} field; attributes are token or token_seq fields")
        feat = self.item_feat  # a DataFrame until build() makes it an Interaction
        ids = self._dataframe_to_interaction(feat[[field]]) if isinstance(feat, pd.DataFrame) else feat
        ids = ids[field].long()
        return ids.unsqueeze(1) if kind == FeatureType.TOKEN else ids

    def _load_item_features(self, modality):
        started = time.perf_counter()
        path = self.feature_file(modality)
        matrix, item_ids, manifest = read_feature_file(path, modality)
        row_of = {item_id: row for row, item_id in enumerate(item_ids)}
        tokens = self.field2id_token[self.iid_field][1:]  # id 0 is [PAD]
        missing = [token for token in tokens if token not in row_of]
        extra = set(item_ids) - self._inter_file_items(set(tokens))
        if missing or extra:
            example = (missing or sorted(extra))[0]
            raise FeatureFileError(
                f"feature file {path} does not match the items of dataset '{self.dataset_name}': "
                f"{len(missing)} dataset items have no row, {len(extra)} rows are for unknown items "
                f"(e.g. {example})")
        rows = np.fromiter((row_of[token] for token in tokens), dtype=np.int64, count=len(tokens))
        features = np.zeros((self.item_num, matrix.shape[1]), dtype=np.float32)
        features[1:] = matrix[rows]
        bad = ~np.isfinite(features).all(axis=1)
        if bad.any():
            raise FeatureFileError(
                f"feature file {path} has {int(bad.sum())} rows with NaN/inf values "
                f"(e.g. item {self.field2id_token[self.iid_field][int(np.argmax(bad))]})")
        self.logger.info(
            f"{modality} features: {path} [{self.item_num - 1} items x {features.shape[1]}] "
            f"({manifest.get('encoder')}, {manifest.get('n_zero_rows', 0)} zero rows) "
            f"loaded in {time.perf_counter() - started:.2f} s")
        return torch.from_numpy(features)

    def _inter_file_items(self, loaded_items):
        """Items of ``<dataset>.inter`` (RecBole may have filtered some out of ``loaded_items``)."""
        inter_file = os.path.join(self.dataset_path, f"{self.dataset_name}.inter")
        column = f"{self.iid_field}:token"
        if not os.path.isfile(inter_file):
            return loaded_items
        sep = self.config["field_separator"]
        with open(inter_file, encoding=self.config["encoding"]) as f:
            if column not in f.readline().rstrip("\n").split(sep):
                return loaded_items
        frame = pd.read_csv(inter_file, sep=sep, usecols=[column], dtype=str,
                            encoding=self.config["encoding"])
        return set(frame[column]) | loaded_items
