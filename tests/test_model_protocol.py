"""The declared model protocol (recbole_fmrl.model.protocol): who declares what, and a class that
declares a protocol without one of its methods fails when it is created, with one error naming it."""

import pytest
from recbole.model.sequential_recommender.gru4rec import GRU4Rec
from torch import nn

from recbole_fmrl.model import FMLPRec, LRURec, SASRec, UniSRec, VQRec, fMRLRec
from recbole_fmrl.model import protocol
from recbole_fmrl.model.layers import AttentionEncoder, LRUEncoder


def test_every_plugin_model_declares_what_it_is():
    assert all(issubclass(m, protocol.PluginModel) for m in (fMRLRec, LRURec, SASRec, FMLPRec, UniSRec, VQRec))
    assert issubclass(fMRLRec, protocol.NestedModel) and issubclass(fMRLRec, protocol.StatefulModel)
    assert not any(issubclass(m, protocol.NestedModel) for m in (LRURec, SASRec, FMLPRec, UniSRec, VQRec))
    assert issubclass(UniSRec, protocol.ItemTableModel) and issubclass(VQRec, protocol.ItemTableModel)
    assert issubclass(LRUEncoder, protocol.SequenceEncoder) and issubclass(AttentionEncoder, protocol.SequenceEncoder)
    assert [protocol.trains_on_sequences(m) for m in (fMRLRec, LRURec, FMLPRec, GRU4Rec)] == [True, True, False, False]
    assert protocol.item_feature_modalities(GRU4Rec, {}) == ()
    assert protocol.item_feature_modalities(fMRLRec, {"modalities": ["text", "id"]}) == ("text",)


def test_a_misspelt_method_fails_at_class_creation_naming_it():
    with pytest.raises(TypeError, match=r"^Broken declares NestedModel, ItemTableModel, PluginModel but does not "
                                        r"define eval_size, sliced_state_dict$"):
        class Broken(protocol.NestedModel, nn.Module):
            mrl_hidden_sizes = [8]

            def item_table(self):
                return None

            def sliced_config(self, size):
                return {}

            def sliced_state_dicts(self, size):  # misspelt
                return {}

    with pytest.raises(TypeError, match="does not define step"):
        class NoStep(protocol.SequenceEncoder, nn.Module):
            @classmethod
            def from_config(cls, sizes, config):
                return cls()

            def forward(self, x, mask, return_state=False):
                return x

            def state_after(self, states, lengths):
                return states

            def init_state(self, batch_size):
                return None

            def stepp(self, x, state, mask):
                return x, state


def test_a_model_that_declares_nothing_is_answered_for():
    model = nn.Linear(2, 2)
    assert protocol.nested_sizes(model) == () and protocol.eval_size(model, 7) == 7
    assert protocol.identity_features(model, None) == {} and protocol.run_record(model) == {}
    assert protocol.learning_rate_multipliers(model) == {} and not protocol.is_stateful(model)
