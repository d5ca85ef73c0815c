"""The models' details that their outputs alone do not pin: initial scales and shapes, the padding
row's gradient, gate noise by hand, and every configuration refusal with its whole message."""

import pytest
import torch
import torch.nn.functional as F

from recbole.trainer import TraditionalTrainer, Trainer

from recbole_fmrl.config import Config
from recbole_fmrl.data.dataset import MultimodalSequentialDataset
from recbole_fmrl.errors import ConfigError
from recbole_fmrl.model import FMLPRec, LRURec, UniSRec, VQRec, fMRLRec
from recbole_fmrl.model.fmlprec import FilterLayer
from recbole_fmrl.model.fmrlrec import MultimodalItemEncoder
from recbole_fmrl.model.layers import (
    FMRLLinear,
    ItemAttributeEmbedding,
    LRUBlock,
    LRUEncoder,
    NestedLayerNorm,
    PostNormLRUBlock,
    init_sasrec_weights,
    sliced_state_dict,
)
from recbole_fmrl.model.unisrec import MoEAdaptor
from recbole_fmrl.runner import build as build_run
from recbole_fmrl.trainer import PluginTrainer, plugin_trainer
from recbole_fmrl.trainer.checkpoints import Checkpoints

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
    (UniSRec, {"train_stage": "pretrain"}, "train_stage must be one of ['inductive_ft', 'transductive_ft'] (pre-training "
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


def test_fmrlrec_id_embedding_starts_as_the_authors_truncated_normal():
    """N(0, 0.02²) truncated to ±0.04 (±2σ: std 0.0176): the item table of an ID-only encoder at init."""
    torch.manual_seed(0)
    table = MultimodalItemEncoder(None, n_items=2001, use_id=True, sizes=[8, 16])().detach()
    assert table.shape == (2001, 16) and table.min() >= -0.04 and table.max() <= 0.04
    assert 0.0168 < table.std().item() < 0.0184 and table.min() < -0.039 and table.max() > 0.039


def test_the_plugin_trainer_of_any_recbole_trainer_keeps_its_name_and_adds_the_plugins_roles():
    assert plugin_trainer(Trainer) is PluginTrainer and PluginTrainer.__mro__[1:3] == (Checkpoints, Trainer)
    trainer = plugin_trainer(TraditionalTrainer)
    assert trainer.__name__ == "TraditionalTrainer" and trainer.__mro__[1:4] == (PluginTrainer, Checkpoints, TraditionalTrainer)
    assert [cls for cls in trainer.__mro__ if "fit" in vars(cls) and cls.__module__.startswith("recbole_fmrl")] == [
        PluginTrainer]  # the plugin's one fit


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


def test_the_text_models_transformer_is_built_from_its_settings(data_path):
    model, _ = build_text_model(VQRec, data_path, n_layers=1, n_heads=1, inner_size=24, hidden_dropout_prob=0.1,
                                attn_dropout_prob=0.3, hidden_act="relu", layer_norm_eps=1e-7)
    layers = model.trm_encoder.layer
    attention, feed_forward = layers[0].multi_head_attention, layers[0].feed_forward
    assert len(layers) == 1 and attention.num_attention_heads == 1 and feed_forward.dense_1.out_features == 24
    assert (attention.attn_dropout.p, feed_forward.dropout.p, feed_forward.LayerNorm.eps) == (0.3, 0.1, 1e-7)
    assert feed_forward.intermediate_act_fn is torch.nn.functional.relu or feed_forward.intermediate_act_fn.__name__ == "relu"
    assert model.LayerNorm.eps == 1e-7


def test_sasrec_initialisation_of_linear_embedding_and_layer_norm():
    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Linear(64, 300), torch.nn.Embedding(400, 50), torch.nn.LayerNorm(8))
    with torch.no_grad():
        network[2].weight.normal_()
        network[2].bias.normal_()
    network.apply(lambda module: init_sasrec_weights(module, std=0.05))
    for weight in (network[0].weight, network[1].weight):
        assert abs(weight.mean().item()) < 0.002 and 0.048 < weight.std().item() < 0.052
    assert not network[0].bias.any() and not network[2].bias.any() and network[2].weight.eq(1).all()


def test_lrurec_initialisation_is_the_authors_truncated_normal(data_path):
    """N(0, 0.02²) truncated to ±0.04 for every weight but the LayerNorms and the LRU's ring parameters."""
    model, _ = build_text_model(LRURec, data_path, hidden_size=64, r_min=0.8, r_max=0.99)
    weights = torch.cat([p.detach().flatten() for name, p in model.named_parameters()
                         if "norm" not in name and not name.endswith("params_log")])
    assert weights.min() >= -0.04 and weights.max() <= 0.04 and weights.min() < -0.039 and weights.max() > 0.039
    assert 0.0170 < weights.std().item() < 0.0182 and abs(weights.mean().item()) < 0.001
    assert model.embedding_norm.weight.eq(1).all() and model.encoder.blocks[0].ffn_norm.bias.eq(0).all()
    radius = torch.exp(-model.encoder.blocks[0].lru.params_log[0].exp())
    assert 0.8 <= radius.min() and radius.max() <= 0.99  # the ring, untouched


def test_lrurec_block_feed_forward_is_4d_gelu_with_dropout_after_each_layer():
    block = PostNormLRUBlock(8, hidden_dropout=0.1, lru_dropout=0.2, r_min=0.5, r_max=0.9)
    assert [type(m).__name__ for m in block.ffn] == ["Linear", "GELU", "Dropout", "Linear", "Dropout"]
    assert block.ffn[0].out_features == 32 and block.ffn[2].p == block.ffn[4].p == 0.1 and block.lru_dropout.p == 0.2


@pytest.mark.parametrize("settings, message", [
    ({"hidden_size": 0}, "hidden_size must be a positive integer, got 0"),
    ({"n_layers": 0}, "n_layers must be a positive integer, got 0"),
    ({"loss_type": "BPR", "train_neg_sample_args": {"distribution": "uniform", "sample_num": 1}},
     "LRURec is trained with the CE loss, got loss_type='BPR'"),
])
def test_lrurec_settings_are_refused_with_their_whole_message(data_path, settings, message):
    with pytest.raises(ConfigError) as error:
        build_text_model(LRURec, data_path, **settings)
    assert str(error.value) == message


def test_lrurec_keeps_the_train_mode_it_is_given(data_path):
    assert build_text_model(LRURec, data_path, train_mode="prefix")[0].train_mode == "prefix"
    assert build_text_model(LRURec, data_path, train_mode="sequence")[0].train_mode == "sequence"


def test_a_parameter_without_a_slicing_rule_is_named():
    module = torch.nn.Module()
    module.nested = FMRLLinear([2, 4], [2, 4])
    module.plain = torch.nn.Linear(4, 4)
    with pytest.raises(TypeError) as error:
        sliced_state_dict(module, 0)
    assert str(error.value) == "no slicing rule for ['plain.bias', 'plain.weight']"
