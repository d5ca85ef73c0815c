"""The authors' optimiser recipe on top of RecBole's trainer (defaults keep RecBole's behaviour):
``adam_epsilon``, ``decay_bias_and_norm`` (no decay on biases and norms), ``warmup_steps`` and
``lr_schedule``, and per-entry learning rates (:func:`scale_updates`)."""

import math

import torch
from torch import nn, optim

from recbole_fmrl.inputs import choice, non_negative_int
from recbole_fmrl.model.layers import NestedLayerNorm

LR_SCHEDULES = ("constant", "cosine")


def check_schedule(config):
    """``(lr_schedule, warmup_steps)`` if valid, else one ConfigError."""
    return (choice("lr_schedule", config["lr_schedule"], LR_SCHEDULES),
            non_negative_int("warmup_steps", config["warmup_steps"]))


def warmup_then(schedule, warmup_steps, total_steps):
    """LR multiplier of step s: ``s / warmup_steps`` during warm-up, then 1 (``constant``) or a
    half cosine from 1 to 0 at ``total_steps`` (``cosine``), as the authors' trainer uses."""

    def multiplier(step):
        if step < warmup_steps:
            return step / warmup_steps
        if schedule == "constant":
            return 1.0
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))))

    return multiplier


def parameter_groups(model, weight_decay, decay_bias_and_norm):
    """Optimiser groups: with ``decay_bias_and_norm`` False, biases and LayerNorm parameters get no
    weight decay (the fMRLRec and LRURec authors' optimiser)."""
    if decay_bias_and_norm:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": weight_decay}]
    norm_params = {
        id(p) for m in model.modules() if isinstance(m, (nn.LayerNorm, NestedLayerNorm)) for p in m.parameters()
    }
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            exempt = id(param) in norm_params or name.split(".")[-1].endswith("bias")
            (no_decay if exempt else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def adam_optimizer(model, config, weight_decay, learning_rate):
    """Adam or AdamW (``learner``) over :func:`parameter_groups` with ``adam_epsilon``; None for
    another learner (RecBole builds it)."""
    learner = config["learner"].lower()
    if learner not in ("adam", "adamw"):
        return None
    groups = parameter_groups(model, weight_decay, config["decay_bias_and_norm"])
    optimizer_class = optim.AdamW if learner == "adamw" else optim.Adam
    return optimizer_class(groups, lr=learning_rate, eps=config["adam_epsilon"])


def scale_updates(optimizer, multipliers):
    """Per-entry learning rates: every step's change of parameter p (Adam's update and the decoupled
    weight decay, both linear in the rate) is multiplied by ``multipliers[p]``. Returns the hooks."""
    before = {p: torch.empty_like(p) for p in multipliers}  # reused every step: no allocation per step

    @torch.no_grad()
    def remember(*_):
        for p, copy in before.items():
            copy.copy_(p)

    @torch.no_grad()
    def scale(*_):
        for p, factor in multipliers.items():
            p.sub_(before[p]).mul_(factor).add_(before[p])

    return [optimizer.register_step_pre_hook(remember), optimizer.register_step_post_hook(scale)]
