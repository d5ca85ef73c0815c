"""A stored run becomes a model again: the one place a checkpoint or export is rebuilt from its
settings (read as data) and given its weights, and a trained fMRLRec is sliced to a size-m model."""

from recbole_fmrl.checkpoint import restore_weights
from recbole_fmrl.config import Config, get_model
from recbole_fmrl.model.layers import check_size
from recbole_fmrl.model.protocol import nested_sizes


def load_trained(checkpoint, path, dataset=None):
    """``(config, model, dataset)``: the model stored in ``checkpoint`` (read from ``path``), built from
    its settings on ``dataset`` (default: the dataset it names, loaded as for training) with its
    weights; one error line if it does not fit that dataset (items, order, features, shapes)."""
    from recbole_fmrl.data.loading import create_dataset

    config = Config(checkpoint["model"], checkpoint["dataset"], config_dict=dict(checkpoint["overrides"]))
    if dataset is None:
        dataset = create_dataset(config)
    model = get_model(checkpoint["model"])(config, dataset)
    return config, restore_weights(model, dataset, checkpoint, path), dataset


def load_trained_run(checkpoint, path):
    """``(config, model, dataset, (train, valid, test loaders))`` of the stored run, set up as a
    training run is (seed, threads, RecBole's logger: :func:`~recbole_fmrl.runner.build`), with its weights."""
    from recbole_fmrl.runner import build

    config, model, dataset, loaders = build(checkpoint["model"], checkpoint["dataset"], config_dict=checkpoint["overrides"])
    restore_weights(model, loaders[0]._dataset, checkpoint, path)  # the split training saw
    return config, model, dataset, loaders


def load_data_and_model(model_file):
    """RecBole's ``load_data_and_model`` for the plugin's files (a training checkpoint or a size-m
    export): ``(config, model, dataset, train_data, valid_data, test_data)``, the model with its
    weights in eval mode. The file is read as data (RecBole's pickles its Config) and refused with one
    line if it does not fit the dataset as it is now."""
    from recbole_fmrl.checkpoint import read_checkpoint

    config, model, dataset, (train_data, valid_data, test_data) = load_trained_run(read_checkpoint(model_file), model_file)
    return config, model.eval(), dataset, train_data, valid_data, test_data


def sliced_model(model, size, build):
    """The standalone size-``size`` model of a trained fMRLRec (paper §3.2: the size-m slice of every
    weight) and its config overrides: ``build(overrides)`` builds the untrained model with the
    overrides ``model.sliced_config(size)``, which then gets ``model.sliced_state_dict(size)``."""
    check_size(size, nested_sizes(model), "--size")
    overrides = model.sliced_config(size)
    small_model = build(overrides)
    small_model.load_state_dict(model.sliced_state_dict(size))
    return small_model.to(next(model.parameters()).device).eval(), overrides


def item_tokens(dataset):
    """The internal-id -> token list of a RecBole dataset (None without one)."""
    if dataset is None or not hasattr(dataset, "field2id_token"):
        return None
    field = getattr(dataset, "iid_field", None)
    tokens = dataset.field2id_token.get(field) if field else None
    return None if tokens is None else [str(t) for t in tokens]
