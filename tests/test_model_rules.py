"""The models' details that their outputs alone do not pin: initial scales and shapes, the padding
row's gradient, gate noise by hand, and every configuration refusal with its whole message."""

import pytest
import torch
import torch.nn.functional as F

from recbole.trainer import Trainer

from recbole_fmrl.config import Config
from recbole_fmrl.data.dataset import MultimodalSequentialDataset
from recbole_fmrl.errors import ConfigError
from recbole_fmrl.model import FMLPRec, UniSRec, VQRec, fMRLRec
from recbole_fmrl.model.fmlprec import FilterLayer
from recbole_fmrl.model.layers import FMRLLinear, ItemAttributeEmbedding, LRUBlock, LRUEncoder, NestedLayerNorm
from recbole_fmrl.model.unisrec import MoEAdaptor
from recbole_fmrl.runner import build as build_run
from recbole_fmrl.trainer import (LargeModelNoticeMixin, SafeCheckpointMixin, SafeTrainer, TrainingRecipeMixin,
                                  with_safe_checkpoints)

from test_text_models import build as build_text_model
from test_attributes import attributed  # noqa: F401 (fixture)
from test_text_models import config_for, data_path, training_batch  # noqa: F401 (data_path: fixture)


def test_fmlp_filter_weights_are_one_complex_number_per_frequency_and_channel_drawn_at_scale_002():
    torch.manual_seed(0)
    layer = FilterLayer(50, 64, hidden_dropout_prob=0.0, layer_norm_eps=1e-12)
    assert layer.complex_weight.shape == (26, 64, 2)  # rfft of 50 positions: 26 frequencies
    assert 0.019 < layer.complex_weight.std().item() < 0.021 and abs(layer.complex_weight.mean().item()) < 0.002


def test_fmlprec_padding_positions_send_no_gradient_to_an_item(data_path):
    """The padding row is read at every padded position but learns nothing from them (padding_idx=0)."""
    model, dataset = build_text_model(FMLPRec, data_path, n_layers=1)
    batch = training_batch(dataset)
    assert (batch[model.ITEM_SEQ] == 0).any()  # the histories are padded
    model.forward(batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN]).pow(2).sum().backward()  # the input path only
    grad = model.item_embedding.weight.grad
    assert grad[0].abs().max() == 0 and grad[1:].abs().sum(dim=1).gt(0).sum() > 5


def test_moe_adaptor_in_training_draws_gate_noise_scaled_by_softplus():
    """δ = N(0, 1) · softplus(x W_n): the noise is the adaptor's first random draw, so a generator in
    the same state gives it by hand."""
    torch.manual_seed(0)
    adaptor = MoEAdaptor(12, 6, n_experts=3, dropout=0.0, initializer_range=0.02)
    assert 0.015 < adaptor.weight.std().item() < 0.025  # N(0, initializer_range²)
    with torch.no_grad():
        for parameter in (adaptor.bias, adaptor.gate, adaptor.noise):
            parameter.normal_()
    x = torch.randn(5, 12)
    torch.manual_seed(1)
    out = adaptor.train()(x)
    torch.manual_seed(1)
    logits = x @ adaptor.gate + torch.randn(5, 3) * F.softplus(x @ adaptor.noise)
    gates = torch.softmax(logits, dim=-1)
    expected = sum(gates[:, k, None] * ((x - adaptor.bias[k]) @ adaptor.weight[k]) for k in range(3))
    torch.testing.assert_close(out, expected)


def test_unisrec_transductive_item_is_its_adapted_text_plus_its_id_embedding(data_path):
    model, dataset = build_text_model(UniSRec, data_path, train_stage="transductive_ft")
    model.eval()
    with torch.no_grad():
        model.item_embedding.weight.normal_()
        expected = model.moe_adaptor(dataset.item_features("text")) + model.item_embedding.weight
        torch.testing.assert_close(model.item_table(), expected)


@pytest.mark.parametrize("model_class, overrides, message", [
    (FMLPRec, {"loss_type": "BPR"}, "FMLPRec is trained with the CE loss, got loss_type='BPR'"),
    (UniSRec, {"loss_type": "BPR"}, "UniSRec is trained with the CE loss, got loss_type='BPR'"),
    (VQRec, {"hidden_size": 15}, "hidden_size must be a positive multiple of n_heads, got 15 and 2"),
    (VQRec, {"n_heads": 0}, "hidden_size must be a positive multiple of n_heads, got 16 and 0"),
    (VQRec, {"temperature": 0}, "temperature must be a positive number, got 0"),
    (VQRec, {"seed": 7.5}, "seed must be an integer (it seeds the quantizer), got 7.5"),
    (UniSRec, {"train_stage": "pretrain"}, "UniSRec train_stage must be one of inductive_ft, transductive_ft (pre-training "
     "needs a multi-domain corpus that is not available offline), got 'pretrain'"),
])
def test_model_settings_are_refused_with_their_whole_message(data_path, model_class, overrides, message):
    settings = dict(overrides)
    if settings.get("loss_type") == "BPR":
        settings["train_neg_sample_args"] = {"distribution": "uniform", "sample_num": 1}
    with pytest.raises(ConfigError) as error:
        build_text_model(model_class, data_path, **settings)
    assert str(error.value) == message


def test_a_one_block_encoder_starts_from_a_zero_state_of_its_own_width():
    encoder = LRUEncoder([LRUBlock([4, 8], 1, 0.0, 0.0, 0.5, 0.9)])
    state = encoder.init_state(3)
    assert state.shape == (1, 3, 16) and not state.any() and state.dtype == torch.float32


def test_layers_describe_themselves():
    assert repr(FMRLLinear([2, 4], [4, 8])) == "FMRLLinear(in_sizes=[2, 4], out_sizes=[4, 8], bias=True)"
    assert repr(FMRLLinear([4], [4], bias=False)) == "FMRLLinear(in_sizes=[4], out_sizes=[4], bias=False)"
    assert repr(NestedLayerNorm([2, 6])) == "NestedLayerNorm(sizes=[2, 6], eps=1e-05)"


def test_models_name_the_item_features_they_read(data_path):
    def config(model_class, modalities):
        return config_for(model_class, data_path, modalities=modalities)

    assert fMRLRec.item_feature_modalities(config(fMRLRec, ["id", "text", "attributes"])) == ["text", "attributes"]
    assert fMRLRec.item_feature_modalities(config(fMRLRec, "image")) == ["image"]
    assert fMRLRec.item_feature_modalities(config(fMRLRec, ["id"])) == []
    assert UniSRec.item_feature_modalities(config(UniSRec, ["id"])) == ["text"] == VQRec.item_feature_modalities(None)


def test_attribute_tables_start_as_fmrlrecs_id_embedding():
    """N(0, 0.02²) truncated to ±0.04 (±2σ: std 0.0176), the padding row zero."""
    torch.manual_seed(0)
    embedding = ItemAttributeEmbedding([torch.zeros(3, 1, dtype=torch.long)], [2001], dim=16)
    weight = embedding.tables[0].weight
    assert weight[0].eq(0).all() and weight.min() >= -0.04 and weight.max() <= 0.04
    assert 0.0168 < weight[1:].std().item() < 0.0184 and weight[1:].min() < -0.039 and weight[1:].max() > 0.039


def test_the_plugin_trainer_of_any_recbole_trainer_keeps_its_name_and_adds_the_mixins():
    trainer = with_safe_checkpoints(Trainer)
    assert trainer.__name__ == "Trainer" and trainer.__mro__[1:5] == (SafeCheckpointMixin, LargeModelNoticeMixin, TrainingRecipeMixin, Trainer)
    assert SafeTrainer.__name__ == "Trainer" and issubclass(SafeTrainer, SafeCheckpointMixin)


def test_vqrec_code_table_has_a_row_per_code_and_one_for_padding(data_path):
    model, _ = build_text_model(VQRec, data_path)  # 4 codebooks of 4 codes
    assert model.code_embedding.weight.shape == (1 + 4 * 4, 16)


@pytest.mark.parametrize("settings, message", [
    ({"attributes": ["brand", 3]}, "modality 'attributes' needs attributes: a list of item fields (e.g. [brand, "
                                   "categories]), got ['brand', 3]"),
    ({"attributes": 5}, "modality 'attributes' needs attributes: a list of item fields (e.g. [brand, categories]), got 5"),
    ({"attributes": []}, "modality 'attributes' needs attributes: a list of item fields (e.g. [brand, categories]), got []"),
    ({"attribute_embedding_size": "wide"}, "attribute_embedding_size must be a positive integer, got 'wide'"),
    ({"attribute_embedding_size": True}, "attribute_embedding_size must be a positive integer, got True"),
])
def test_attribute_settings_are_refused_with_their_whole_message(attributed, settings, message):
    with pytest.raises(ConfigError) as error:
        build_run("fMRLRec", "tiny", config_dict={**attributed, "modalities": ["attributes"], **settings})
    assert str(error.value) == message


def test_one_attribute_field_may_be_named_alone_and_embedded_in_one_dimension(attributed):
    _, model, _, (train_data, _, _) = build_run("fMRLRec", "tiny", config_dict={
        **attributed, "modalities": ["attributes"], "attributes": "brand", "attribute_embedding_size": 1})
    assert model.attribute_fields == ["brand"] and model.item_encoder.attributes.out_dim == 1
    dataset = MultimodalSequentialDataset(Config("fMRLRec", "tiny", config_dict=attributed))  # not built: a DataFrame
    assert torch.equal(dataset.item_attributes("cats"), train_data._dataset.item_attributes("cats"))
    assert torch.equal(dataset.item_attributes("brand"), train_data._dataset.item_attributes("brand"))
