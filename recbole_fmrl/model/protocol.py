"""The model protocol: what the runner, trainer, checkpoints, data loading and deploy read from a model.

A model declares what it is by its bases, never by the attributes it happens to have:

- :class:`PluginModel`: every plugin model. The features it reads (``item_feature_modalities``), what
  binds a checkpoint to those features (``identity_features``), what a run records about it
  (``run_record``), per-entry learning rates (``learning_rate_multipliers``), whether it trains on
  every position (``trains_on_sequences``), how many training pairs a batch's loss averages over
  (``training_pair_count``). The defaults are an ID model's.
- :class:`ItemTableModel`: scores against a catalogue table E (``item_table``).
- :class:`NestedModel`: every size m in M = ``mrl_hidden_sizes`` is a sub-model (fMRLRec §3.2):
  ``eval_size``, ``sliced_config(m)`` and ``sliced_state_dict(m)`` export the size-m model.
- :class:`StatefulModel`: encodes with state (``encode(..., return_state=True)``, ``state_after``,
  ``init_state``, ``step``), what serving continues from one event at a time.
- :class:`SequenceEncoder`: the interface both encoders (LRU, Transformer) share.

A concrete class declaring a protocol but lacking (or misspelling) one of its methods fails when the
class is created, with one ``TypeError`` naming what is missing; a class meant to be completed by
subclasses says so with ``partial=True``. RecBole's own models declare nothing: the functions below
answer for any model (e.g. :func:`nested_sizes` is ``()`` for them).
"""

from abc import abstractmethod


class Declared:
    """Checks at class creation that a concrete class defines every abstract method of its protocols."""

    def __init_subclass__(cls, partial=False, **kwargs):
        super().__init_subclass__(**kwargs)
        if partial:
            return
        missing = sorted(name for name in dir(cls) if getattr(getattr(cls, name, None), "__isabstractmethod__", False))
        if missing:
            protocols = [base.__name__ for base in cls.__mro__ if base.__module__ == __name__ and base is not Declared]
            raise TypeError(f"{cls.__name__} declares {', '.join(protocols)} but does not define {', '.join(missing)}")


class PluginModel(Declared):
    """Every plugin model; the defaults are those of an ID model trained on prefixes."""

    trains_on_sequences = False  # trains on whole sequences (``train_mode: sequence``: every position, or masked)

    @classmethod
    def item_feature_modalities(cls, config):
        """The item features a model built with ``config`` reads (feature files, ``.item`` fields)."""
        return ()

    def identity_features(self, dataset):
        """``{modality: sha256}`` of the features this model was trained on (checked on reload)."""
        return {}

    def run_record(self):
        """What a run's results record about this model beyond its name (e.g. its inputs)."""
        return {}

    def learning_rate_multipliers(self):
        """``{parameter: tensor}`` of per-entry learning-rate factors (none: one rate)."""
        return {}

    def training_pair_count(self, interaction):
        """How many training pairs ``calculate_loss`` takes the mean over in this batch: one per row."""
        return len(interaction)


class ItemTableModel(PluginModel, partial=True):
    """A model scoring ``h · Eᵀ`` against its catalogue's table E."""

    @abstractmethod
    def item_table(self):
        """The catalogue's representations E, [n_items, D] (row 0: the padding item)."""


class NestedModel(ItemTableModel, partial=True):
    """A model whose every size m in M (``mrl_hidden_sizes``, ascending, the last the full size D) is a
    standalone sub-model."""

    mrl_hidden_sizes: list

    @property
    @abstractmethod
    def eval_size(self):
        """The size m in M that ``predict`` and ``full_sort_predict`` score at."""

    @abstractmethod
    def sliced_config(self, size):
        """Config overrides of the standalone size-``size`` model."""

    @abstractmethod
    def sliced_state_dict(self, size):
        """State dict of the standalone size-``size`` model (built with ``sliced_config(size)``)."""


class StatefulModel(ItemTableModel, partial=True):
    """A model whose user representation continues from a state one item at a time (serving)."""

    @abstractmethod
    def encode(self, item_seq, item_table=None, return_state=False):
        """Hidden states of every position, [B, L, D]; with ``return_state`` also the encoder's states."""

    @abstractmethod
    def state_after(self, states, lengths):
        """The state ``step`` continues from after each row's first ``lengths`` items."""

    @abstractmethod
    def init_state(self, batch_size):
        """The state of ``batch_size`` users without items."""

    @abstractmethod
    def step(self, item_ids, state):
        """Consume one item per user: (user representation [B, D], new state)."""


class SequenceEncoder(Declared, partial=True):
    """A sequence encoder of fMRLRec (config key ``encoder``): whole sequences and one step at a time."""

    @classmethod
    @abstractmethod
    def from_config(cls, sizes, config):
        """The encoder of nested sizes ``sizes`` from RecBole config keys."""

    @abstractmethod
    def forward(self, x, mask, return_state=False):
        """[B, L, D] -> [B, L, D]; with ``return_state`` also the states after every step."""

    @abstractmethod
    def state_after(self, states, lengths):
        """The state after each row's first ``lengths`` [B] items, from ``forward``'s states."""

    @abstractmethod
    def init_state(self, batch_size):
        """The state of ``batch_size`` empty sequences."""

    @abstractmethod
    def step(self, x, state, mask):
        """``x`` [B, D] -> (output [B, D], new state)."""


# ------------------------------------------------------------- answers for any model (RecBole's too)


def trains_on_sequences(model_class):
    return issubclass(model_class, PluginModel) and model_class.trains_on_sequences


def item_feature_modalities(model_class, config):
    """The item features a model class reads with ``config`` (RecBole's models: none)."""
    return tuple(model_class.item_feature_modalities(config)) if issubclass(model_class, PluginModel) else ()


def identity_features(model, dataset):
    return model.identity_features(dataset) if isinstance(model, PluginModel) else {}


def run_record(model):
    return model.run_record() if isinstance(model, PluginModel) else {}


def learning_rate_multipliers(model):
    return model.learning_rate_multipliers() if isinstance(model, PluginModel) else {}


def training_pair_count(model, interaction):
    """The training pairs a batch's loss is the mean over (RecBole's models: one per row)."""
    return model.training_pair_count(interaction) if isinstance(model, PluginModel) else len(interaction)


def is_nested(model):
    return isinstance(model, NestedModel)


def nested_sizes(model):
    """The model's nested sizes M (``()`` for a model that is not nested)."""
    return list(model.mrl_hidden_sizes) if isinstance(model, NestedModel) else ()


def eval_size(model, default):
    """The size ``predict`` scores at: a nested model's ``eval_size``, else ``default``."""
    return model.eval_size if isinstance(model, NestedModel) else default


def is_stateful(model):
    return isinstance(model, StatefulModel)
