"""The notice for a model too large for a CPU: a model of ``hidden_size`` >= :data:`LARGE_FOR_CPU`
trained on a CPU gets one warning when training starts, with one epoch's time estimated from its
first training steps, the epochs the config allows, and the CPU-sized config (``properties/demo.yaml``)."""

import os
import time

from recbole_fmrl.config import PROPERTIES_DIR

LARGE_FOR_CPU = 512  # hidden sizes from which a model is large for a CPU (the paper's D = 1024: hours per epoch)
TIMED_STEPS = 5  # training steps timed, after the first, for the epoch estimate


def duration(seconds):
    """``"2 h 05 min"``, ``"14 min"``, ``"40 s"``."""
    if seconds >= 3600:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
    return f"{round(seconds / 60)} min" if seconds >= 90 else f"{max(1, round(seconds))} s"


def is_large_for(device, hidden_size):
    return device.type == "cpu" and isinstance(hidden_size, int) and hidden_size >= LARGE_FOR_CPU


def time_first_steps(optimizer, batches, warn):
    """A hook on ``optimizer`` that calls ``warn(seconds per step, steps timed)`` once, after the first
    steps of an epoch of ``batches`` steps (the first is warm-up when others follow). Returns the hook."""
    times = [time.perf_counter()]

    def after_step(*_):
        times.append(time.perf_counter())
        if len(times) == min(TIMED_STEPS + 2, batches + 1):
            timed = len(times) - 2
            step = (times[-1] - times[1]) / timed if timed else times[1] - times[0]
            warn(step, max(timed, 1))

    return optimizer.register_step_post_hook(after_step)


def large_model_notice(config, epochs, hidden_size, batches, step_seconds, steps):
    demo = os.path.relpath(PROPERTIES_DIR / "demo.yaml")
    demo = demo if not demo.startswith("..") else str(PROPERTIES_DIR / "demo.yaml")
    return (
        f"{config['model']} with hidden_size={hidden_size} is large for a CPU: one epoch ({batches:,} batches) "
        f"takes about {duration(step_seconds * batches)} here ({step_seconds:.2f} s per batch over the first "
        f"{steps} step{'s' * (steps > 1)}), for up to {epochs} epoch{'s' * (epochs > 1)} (early stopping "
        f"after {config['stopping_step']} without improvement). On a CPU use --config_files={demo} (D = 64) "
        "or --hidden_size=64; "
        "on a GPU, --gpu_id=0 (README: GPU)."
    )
