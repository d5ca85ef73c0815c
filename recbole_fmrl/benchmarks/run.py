"""Benchmarks of fMRLRec's efficiency claims (a benchmark, not an accuracy claim: random items).

    python -m recbole_fmrl.benchmarks.run [--quick] [--device=cpu|cuda] [--out=FILE] [--cases=NAME,NAME] [--threads=N]

Cases (each timed after warm-up, median of repeated runs; ``--cases`` picks some, comma-separated):
  nested_train_step   train step (forward + backward + AdamW) of fMRLRec with M = [8..D] vs LRURec at D
                      (goal <= 1.10), and vs fMRLRec with M = [D] (the nesting alone)
  fmrl_layer          one fMRL layer (D x D, fwd + bwd) vs a dense nn.Linear (goal <= 1.05) and vs the
                      authors' per-block loop with concatenation (goal: faster, ratio < 1)
  independent_models  one fMRLRec train step vs the sum of train steps of independent size-m models
  sliced_top10        exported size-m model vs size D: top-10 over the catalogue for a batch of users
                      (goal at m = D/8: <= 1/8)
  lru_serving         top-10 after one new event from a cached LRU state vs re-running the sequence
                      (goal >= 10x)
  train_memory        peak memory of a train step, fMRLRec vs LRURec
  epoch_train_modes   one training epoch on real Beauty (D = 64, L = 50, one thread): train_mode
                      sequence vs prefix for fMRLRec and LRURec (goal <= 1/6 each), fMRLRec vs LRURec
                      in sequence mode (goal <= 1.15)
  transformer_encoder fMRLRec with encoder: transformer: a train step with M = [8..D] vs M = [D] (goal
                      <= 1.15; the LRU's alike for reference), and serving: re-encoding the whole
                      history vs a key/value-cache update, for one user and for a batch (goal >= 5x);
                      with --threads=1 on a CPU judged on CPU seconds (wall ratios beside them)
  sasrec_epoch        SASRec's training epoch on real Beauty (D = 64, one thread): every position
                      (train_mode sequence) vs RecBole's prefixes (goal <= 1/6)
  sampled_softmax     a train step with a sampled softmax (256 negatives) vs the full CE, SASRec and
                      fMRLRec [id] (D = 64), at Beauty's 12,102 items and at 1,000,000
  funnel_retrieval    Matryoshka funnel retrieval vs exact full-size top-10 (needs --checkpoint, a
                      trained fMRLRec; see ``benchmarks/funnel.py``): real test NDCG@10 ratio,
                      1,000,000-item agreement and speed-up

Models are the plugin's real classes from a real Config with the YAML defaults, except that LRURec
gets fMRLRec's dropout rates (a hyper-parameter, not a cost of nesting); items and features are
synthetic (see ``benchmarks/common.py``). ``--quick`` runs D = 256 (nested_train_step: 256 and 1024)
with fewer repeats; ``--tiny`` shrinks everything (for the test suite). epoch_train_modes and
sasrec_epoch read the real embedded Beauty (``--quick``: prefix-mode epochs estimated from 40 random
batches × the epoch's batch count; sequence epochs always whole). Results: JSON with machine
info, and a table of ratios with their goals on stdout.
"""

import gc
import itertools
import math
import os
import random
import tempfile
import time
from dataclasses import asdict, dataclass, field

import torch
import yaml
from torch import nn

from recbole_fmrl.benchmarks.common import (
    BEAUTY_ITEMS,
    TrainStep,
    build_model,
    machine_info,
    measure_many,
    profile_top_ops,
    random_batch,
    synthetic_items,
    synchronize,
)
from recbole_fmrl.benchmarks.funnel import funnel_case
from recbole_fmrl.deploy.budget import storage_bytes, transient_peak_bytes
from recbole_fmrl.deploy.trained import sliced_model
from recbole_fmrl.errors import PluginError, main_guarded
from recbole_fmrl.files import write_json_atomic
from recbole_fmrl.flags import FlagParser
from recbole_fmrl.model.layers import FMRLLinear, doubling_sizes


@dataclass
class Settings:
    hidden_sizes: list = field(default_factory=lambda: [256, 1024])  # D for independent_models, sliced_top10, lru_serving, train_memory, transformer_encoder
    train_sizes: list = field(default_factory=lambda: [256, 1024])  # D for nested_train_step (the two sizes)
    n_items: int = BEAUTY_ITEMS
    batch_size: int = 128  # training batch (nested_train_step, independent_models, train_memory)
    seq_len: int = 50
    layer_dim: int = 1024  # fmrl_layer
    layer_rows: int = 6400  # fmrl_layer: 128 x 50 positions
    serve_users: int = 256  # users per batch (sliced_top10, lru_serving, transformer_encoder)
    warmup: int = 2
    repeats: int = 5
    serve_repeats: int = 20  # (lru_serving, transformer_encoder): fast calls, more repeats
    independent_repeats: int = 3  # (independent_models)
    epoch_dataset: str = "beauty"  # (epoch_train_modes, sasrec_epoch): a real dataset; "" = a small random one (tests)
    epoch_hidden_size: int = 64  # (epoch_train_modes, sasrec_epoch, sampled_softmax)
    epoch_prefix_batches: int = 0  # (epoch_train_modes, sasrec_epoch): prefix-mode batches timed (0 = the whole epoch)
    softmax_items: list = field(default_factory=lambda: [BEAUTY_ITEMS, 1_000_000])  # (sampled_softmax): catalogue sizes
    softmax_batch_size: int = 16  # (sampled_softmax): rows of L positions per train step (full CE at 1M items: [B*L, 1M] scores)
    softmax_negatives: int = 256  # (sampled_softmax): eSASRec's


PRESETS = {
    "full": Settings(),
    "quick": Settings(hidden_sizes=[256], warmup=1, repeats=3, serve_repeats=10, independent_repeats=2,
                      epoch_prefix_batches=40),
    "tiny": Settings(
        hidden_sizes=[64], train_sizes=[64], n_items=500, batch_size=8, seq_len=10, layer_dim=64, layer_rows=64,
        serve_users=4, warmup=1, repeats=2, serve_repeats=3, independent_repeats=1, epoch_dataset="",
        epoch_hidden_size=16, epoch_prefix_batches=3, softmax_items=[500, 2000], softmax_batch_size=4,
        softmax_negatives=16,
    ),
}


def row(case, label, ratio, goal=None, **details):
    """One table line: ``ratio`` judged against ``goal`` = (op, value) when given."""
    status = "INFO"
    if goal is not None:
        op, value = goal
        passed = {"<=": ratio <= value, ">=": ratio >= value, "<": ratio < value}[op]
        status = "PASS" if passed else "MISS"
    return {
        "case": case,
        "label": label,
        "ratio": float(ratio),
        "goal": None if goal is None else f"{goal[0]} {goal[1]:g}",
        "status": status,
        **details,
    }


def ms(seconds):
    return round(seconds * 1000, 3)


class Bench:
    def __init__(self, settings, device, profile_misses=True, log=print):
        self.s = settings
        self.device = device
        self.profile_misses = profile_misses
        self.log = log
        self.items = synthetic_items(settings.n_items)
        self.rows = []
        self.profiles = {}
        self.floors = {}
        self._fmrl_step_s = {}

    def time_many(self, fns, repeats=None, warmup=None):
        return measure_many(fns, self.device, self.s.warmup if warmup is None else warmup,
                            repeats or self.s.repeats)

    def train_step(self, model_name, hidden_size, **overrides):
        model, config = build_model(model_name, self.items, self.device, hidden_size=hidden_size,
                                    **same_dropout(model_name), **overrides)
        batch = random_batch(model, self.s.n_items, self.s.batch_size, self.s.seq_len, self.device)
        return TrainStep(model, config, batch)

    def add(self, r, profile_fn=None):
        self.rows.append(r)
        self.log(format_row(r))
        if r["status"] == "MISS" and profile_fn is not None and self.profile_misses:
            key = f"{r['case']}: {r['label'].strip()}"
            self.profiles[key] = profile_top_ops(profile_fn, self.device)
            r["profile"] = self.profiles[key]

    # ------------------------------------------------------------------------------------ nested_train_step
    def nested_train_step(self):
        shape = f"B={self.s.batch_size} L={self.s.seq_len} items={self.s.n_items}"
        for d in self.s.train_sizes:
            steps = {
                "fMRLRec": self.train_step("fMRLRec", d),
                "LRURec": self.train_step("LRURec", d),
                "fMRLRec_single_size": self.train_step("fMRLRec", d, mrl_hidden_sizes=[d]),
            }
            times = self.time_many(steps)
            t = {k: v["median_s"] for k, v in times.items()}
            self._fmrl_step_s[d] = t["fMRLRec"]
            self.add(
                row("nested_train_step", f"train step fMRLRec M=[8..{d}] / LRURec, D={d}", t["fMRLRec"] / t["LRURec"],
                    ("<=", 1.10), D=d, shape=shape, fmrl_ms=ms(t["fMRLRec"]), lrurec_ms=ms(t["LRURec"]),
                    timings=times),
                profile_fn=steps["fMRLRec"],
            )
            self.add(row("nested_train_step", f"  nesting alone: fMRLRec M=[8..{d}] / fMRLRec M=[{d}] (same items)",
                         t["fMRLRec"] / t["fMRLRec_single_size"], D=d, shape=shape, fmrl_ms=ms(t["fMRLRec"]),
                         single_size_ms=ms(t["fMRLRec_single_size"]), timings=times))
            del steps
            gc.collect()

    # ------------------------------------------------------------------------------------ fmrl_layer
    def fmrl_layer(self):
        d, rows = self.s.layer_dim, self.s.layer_rows
        sizes = doubling_sizes(d)
        torch.manual_seed(0)
        layers = {
            "fMRL": FMRLLinear(sizes, sizes).to(self.device),
            "dense": nn.Linear(d, d).to(self.device),
            "loop": BlockLoopLinear(sizes).to(self.device),
        }
        x = torch.randn(rows, d, device=self.device)

        def fwd_bwd(layer):
            def run():
                inputs = x.detach().requires_grad_(True)
                layer.zero_grad(set_to_none=True)
                layer(inputs).sum().backward()
            return run

        fns = {name: fwd_bwd(layer) for name, layer in layers.items()}
        times = self.time_many(fns)
        t = {k: v["median_s"] for k, v in times.items()}
        common = {"D": d, "rows": rows, "M": sizes, "fmrl_ms": ms(t["fMRL"]), "dense_ms": ms(t["dense"]),
                  "loop_ms": ms(t["loop"]), "timings": times}
        self.add(row("fmrl_layer", f"fMRL layer / dense nn.Linear, D={d}, {rows} rows, fwd+bwd", t["fMRL"] / t["dense"],
                     ("<=", 1.05), **common), profile_fn=fns["fMRL"])
        self.add(row("fmrl_layer", f"fMRL layer / per-block loop + cat (authors'), D={d}", t["fMRL"] / t["loop"],
                     ("<", 1.0), **common), profile_fn=fns["fMRL"])

    # ------------------------------------------------------------------------------------ independent_models
    def independent_models(self):
        for d in self.s.hidden_sizes:
            steps = {f"M=[8..{d}]": self.train_step("fMRLRec", d)}
            for m in doubling_sizes(d):
                steps[m] = self.train_step("fMRLRec", m, mrl_hidden_sizes=[m])
            times = self.time_many(steps, repeats=self.s.independent_repeats)
            fmrl = times.pop(f"M=[8..{d}]")["median_s"]
            independent = {m: ms(v["median_s"]) for m, v in times.items()}
            total_ms = sum(independent.values())
            ratio = ms(fmrl) / total_ms
            self.add(row("independent_models", f"fMRLRec step / sum of {len(independent)} independent size-m steps, D={d}", ratio,
                         D=d, fmrl_ms=ms(fmrl), independent_ms=independent,
                         independent_total_ms=round(total_ms, 3), saving=round(1 - ratio, 4)))
            del steps
            gc.collect()

    # ------------------------------------------------------------------------------------ sliced_top10
    def sliced_top10(self):
        for d in self.s.hidden_sizes:
            full, _ = build_model("fMRLRec", self.items, self.device, hidden_size=d)
            full.eval()
            users = self.s.serve_users
            batch = random_batch(full, self.s.n_items, users, self.s.seq_len, self.device, seed=1)
            sizes = list(full.mrl_hidden_sizes)
            models = {m: export_in_memory(full, m, self.items, self.device) for m in sizes}
            del full
            predict = {m: top10_fn(model, batch) for m, model in models.items()}
            totals = self.time_many(predict)
            parts = {}
            for m, model in models.items():  # what each part costs, to find what does not shrink with m
                parts[m] = self.time_many(predict_parts(model, batch))
            base = totals[d]["median_s"]
            for m in sizes:
                goal = ("<=", 0.125) if m == d // 8 else None
                breakdown = {f"{k}_ms": ms(v["median_s"]) for k, v in parts[m].items()}
                self.add(
                    row("sliced_top10", f"top-10 latency size {m} / size {d} ({users} users, exported size-m model)",
                        totals[m]["median_s"] / base, goal, D=d, m=m, users=users,
                        total_ms=ms(totals[m]["median_s"]), **breakdown),
                    profile_fn=predict[m] if goal else None,
                )
            smallest = sizes[0]
            self.floors[d] = {
                "note": f"parts at the smallest size m={smallest} (what does not shrink with m)",
                "total_ms": ms(totals[smallest]["median_s"]),
                **{f"{k}_ms": ms(v["median_s"]) for k, v in parts[smallest].items()},
            }
            del models, predict
            gc.collect()

    # ------------------------------------------------------------------------------------ lru_serving
    def lru_serving(self):
        from recbole_fmrl.deploy.serving import Recommender

        for d in self.s.hidden_sizes:
            model, _ = build_model("fMRLRec", self.items, self.device, hidden_size=d)
            rec = Recommender(model, device=self.device)
            for users in sorted({1, self.s.serve_users}):
                generator = torch.Generator().manual_seed(2)
                sequences = torch.randint(1, self.s.n_items, (users, self.s.seq_len), generator=generator).tolist()
                history = [s[:-1] for s in sequences]
                if users == 1:  # the one-user API
                    state, new = rec.start(history[0]), sequences[0][-1]

                    def rerun(full=sequences[0]):
                        return rec.recommend(rec.start(full), 10)
                else:
                    state, new = rec.start_many(history), [s[-1] for s in sequences]

                    def rerun(full=sequences):
                        return rec.recommend(rec.start_many(full), 10)

                def cached(state=state, new=new):
                    return rec.recommend(rec.update(state, new), 10)

                def update_only(state=state, new=new):
                    return rec.update(state, new)

                def start_only(full=sequences):
                    return rec.start(full[0]) if users == 1 else rec.start_many(full)

                def recommend_only(state=state):
                    return rec.recommend(state, 10)

                same_top10 = bool(torch.equal(cached(), rerun()))  # same answer both ways (up to float ties)
                times = self.time_many({"cached": cached, "rerun": rerun, "update": update_only, "start": start_only,
                                        "recommend": recommend_only}, repeats=self.s.serve_repeats)
                t = {k: v["median_s"] for k, v in times.items()}
                self.add(
                    row("lru_serving", f"serving speed-up: cached state vs re-run {self.s.seq_len} steps, D={d}, {users} user(s)",
                        t["rerun"] / t["cached"], (">=", 10.0), D=d, users=users, cached_ms=ms(t["cached"]),
                        rerun_ms=ms(t["rerun"]), update_ms=ms(t["update"]), start_scan_ms=ms(t["start"]),
                        score_topk_ms=ms(t["recommend"]), encode_only_speedup=round(t["start"] / t["update"], 3),
                        speedup_bound_by_scoring=round(t["rerun"] / t["recommend"], 3),
                        same_top10=same_top10, timings=times),
                    profile_fn=cached,
                )
            gc.collect()

    # ------------------------------------------------------------------------------------ train_memory
    def train_memory(self):
        for d in self.s.hidden_sizes:
            peak = {name: peak_memory(name, d, self.s, self.items, self.device) for name in ("fMRLRec", "LRURec")}
            gc.collect()
            ratio = peak["fMRLRec"]["step_peak_mb"] / peak["LRURec"]["step_peak_mb"]
            self.add(row("train_memory", f"train-step peak memory fMRLRec / LRURec, D={d}", ratio, D=d,
                         fmrl_mb=peak["fMRLRec"]["step_peak_mb"], lrurec_mb=peak["LRURec"]["step_peak_mb"],
                         method=peak["fMRLRec"]["method"], details=peak))

    # ------------------------------------------------------------------------------------ epoch_train_modes
    def epoch_train_modes(self):
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            seconds = {(model, mode): s for mode in ("sequence", "prefix") for model, s in self.epoch_seconds(mode).items()}
        finally:
            torch.set_num_threads(threads)
        name, clock = self.s.epoch_dataset or "random", "cpu" if self.device.type == "cpu" else "wall"
        for model in ("fMRLRec", "LRURec"):
            sequence, prefix = seconds[model, "sequence"], seconds[model, "prefix"]
            self.add(row("epoch_train_modes", f"epoch {model} train_mode sequence / prefix, {name} D={self.s.epoch_hidden_size}",
                         sequence[clock] / prefix[clock], ("<=", round(1 / 6, 4)), clock=clock,
                         sequence_s=round(sequence[clock], 1), prefix_s=round(prefix[clock], 1),
                         sequence_wall_s=round(sequence["wall"], 1), prefix_wall_s=round(prefix["wall"], 1)))
        fmrl, lrurec = seconds["fMRLRec", "sequence"], seconds["LRURec", "sequence"]
        self.add(row("epoch_train_modes", f"epoch fMRLRec / LRURec, train_mode sequence, {name} D={self.s.epoch_hidden_size}",
                     fmrl[clock] / lrurec[clock], ("<=", 1.15), clock=clock, fmrl_s=round(fmrl[clock], 1),
                     lrurec_s=round(lrurec[clock], 1), wall_ratio=round(fmrl["wall"] / lrurec["wall"], 3)))

    # ------------------------------------------------------------------------------------ sasrec_epoch
    def sasrec_epoch(self):
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            seconds = {mode: self.epoch_seconds(mode, models=("SASRec",))["SASRec"] for mode in ("sequence", "prefix")}
        finally:
            torch.set_num_threads(threads)
        name, clock = self.s.epoch_dataset or "random", "cpu" if self.device.type == "cpu" else "wall"
        sequence, prefix = seconds["sequence"], seconds["prefix"]
        self.add(row("sasrec_epoch", f"epoch SASRec train_mode sequence / prefix, {name} D={self.s.epoch_hidden_size}",
                     sequence[clock] / prefix[clock], ("<=", round(1 / 6, 4)), clock=clock,
                     sequence_s=round(sequence[clock], 1), prefix_s=round(prefix[clock], 1)))

    # ------------------------------------------------------------------------------------ sampled_softmax
    def sampled_softmax(self):
        negatives = self.s.softmax_negatives
        for n_items in self.s.softmax_items:
            items = synthetic_items(n_items, feature_dims={})
            for model_name, overrides in (("SASRec", {"n_layers": 1, "n_heads": 1}), ("fMRLRec", {"modalities": ["id"]})):
                steps = {}
                for loss, softmax_negatives in (("full", 0), ("sampled", negatives)):
                    model, config = build_model(model_name, items, self.device, hidden_size=self.s.epoch_hidden_size,
                                                train_mode="sequence", softmax_negatives=softmax_negatives, **overrides)
                    batch = random_batch(model, n_items, self.s.softmax_batch_size, self.s.seq_len, self.device)
                    steps[loss] = TrainStep(model, config, batch)
                timed = self.time_many(steps)
                full, sampled = timed["full"]["median_s"], timed["sampled"]["median_s"]
                del steps
                gc.collect()
                self.add(row("sampled_softmax", f"train step {model_name} sampled softmax {negatives} / full CE, {n_items:,} items",
                             sampled / full, full_ms=ms(full), sampled_ms=ms(sampled), n_items=n_items,
                             positions=self.s.softmax_batch_size * self.s.seq_len))

    def epoch_seconds(self, train_mode, models=("fMRLRec", "LRURec")):
        """``{"wall": s, "cpu": s}`` of one training epoch (RecBole's ``_train_epoch``: batches, loss,
        backward, clip, AdamW) per model, every model on the same training loader. With one thread the
        process's CPU seconds are its compute, whatever else runs on the machine; epoch_train_modes and
        sasrec_epoch use them on a CPU (wall seconds on a GPU)."""
        from recbole_fmrl.config import Config
        from recbole_fmrl.config import get_model
        from recbole_fmrl.data import data_preparation
        from recbole_fmrl.data.loading import create_dataset
        from recbole_fmrl.trainer import get_trainer

        dataset_name, data_path = self.s.epoch_dataset, "dataset/"
        if not dataset_name:
            dataset_name, data_path = "random", write_random_dataset()
        common = {"hidden_size": self.s.epoch_hidden_size, "MAX_ITEM_LIST_LENGTH": self.s.seq_len,
                  "train_mode": train_mode, "data_path": data_path, "use_gpu": self.device.type == "cuda",
                  "checkpoint_dir": tempfile.mkdtemp(prefix="fmrl-bench-"), "show_progress": False}
        if not self.s.epoch_dataset:
            common.update(modalities=["id"], load_col={"inter": ["user_id", "item_id", "timestamp"]})
        configs = {name: Config(name, dataset_name, config_dict=common) for name in models}
        train_data = data_preparation(configs[models[0]], create_dataset(configs[models[0]]))[0]
        batches = len(train_data)
        timed = batches if train_mode == "sequence" or not self.s.epoch_prefix_batches else self.s.epoch_prefix_batches
        seconds = {}
        for name in models:
            torch.manual_seed(0)
            model = get_model(name)(configs[name], train_data.dataset).to(self.device)
            trainer = get_trainer(configs[name]["MODEL_TYPE"], name)(configs[name], model)
            started, cpu_started = time.perf_counter(), time.process_time()
            trainer._train_epoch(itertools.islice(train_data, timed), 0)
            synchronize(self.device)
            seconds[name] = {"wall": (time.perf_counter() - started) * batches / timed,
                             "cpu": (time.process_time() - cpu_started) * batches / timed}
            self.log(f"   {name} {train_mode}: {batches} batches/epoch, {timed} timed, epoch "
                     f"{seconds[name]['wall']:.1f} s ({seconds[name]['cpu']:.1f} s of CPU)")
        return seconds

    # ------------------------------------------------------------------------------------ transformer_encoder
    def clock(self):
        """The median a ratio is judged on: ``cpu_median_s`` (the process's CPU seconds, as
        epoch_train_modes) on a CPU with one thread, where it is the compute whatever else runs; else
        ``median_s`` (wall)."""
        return "cpu_median_s" if self.device.type == "cpu" and torch.get_num_threads() == 1 else "median_s"

    def transformer_encoder(self):
        shape = f"B={self.s.batch_size} L={self.s.seq_len} items={self.s.n_items}"
        clock = self.clock()
        for d in self.s.hidden_sizes:
            steps = {f"{encoder}{suffix}": self.train_step("fMRLRec", d, encoder=encoder, **sizes)
                     for encoder in ("transformer", "lru")
                     for suffix, sizes in (("", {}), ("_single_size", {"mrl_hidden_sizes": [d]}))}
            times = self.time_many(steps)
            t, wall = ({k: v[key] for k, v in times.items()} for key in (clock, "median_s"))
            self.add(row("transformer_encoder", f"train step fMRLRec-Transformer M=[8..{d}] / M=[{d}], D={d}",
                         t["transformer"] / t["transformer_single_size"], ("<=", 1.15), D=d, shape=shape, clock=clock,
                         nested_ms=ms(t["transformer"]), single_size_ms=ms(t["transformer_single_size"]),
                         wall_ratio=round(wall["transformer"] / wall["transformer_single_size"], 4),
                         timings=times), profile_fn=steps["transformer"])
            self.add(row("transformer_encoder", f"  the LRU encoder alike (eq. 14's sizes in both): M=[8..{d}] / M=[{d}]",
                         t["lru"] / t["lru_single_size"], D=d, shape=shape, clock=clock, nested_ms=ms(t["lru"]),
                         single_size_ms=ms(t["lru_single_size"]), wall_ratio=round(wall["lru"] / wall["lru_single_size"], 4)))
            del steps
            gc.collect()
            self.transformer_serving(d)

    def transformer_serving(self, d):
        """transformer_encoder's serving rows: a key/value-cache ``update`` vs ``start`` over the whole history."""
        from recbole_fmrl.deploy.serving import Recommender

        model, _ = build_model("fMRLRec", self.items, self.device, hidden_size=d, encoder="transformer",
                               MAX_ITEM_LIST_LENGTH=self.s.seq_len)
        rec = Recommender(model, device=self.device)
        for users in sorted({1, self.s.serve_users}):
            generator = torch.Generator().manual_seed(2)
            sequences = torch.randint(1, self.s.n_items, (users, self.s.seq_len), generator=generator).tolist()
            if users == 1:  # the one-user API
                state, new, full = rec.start(sequences[0][:-1]), sequences[0][-1], sequences[0]
                start = rec.start
            else:
                state, new, full = rec.start_many([s[:-1] for s in sequences]), [s[-1] for s in sequences], sequences
                start = rec.start_many

            def update(state=state, new=new):
                return rec.update(state, new)

            def reencode(start=start, full=full):
                return start(full)

            same = torch.allclose(update().hidden, reencode().hidden, atol=1e-4, rtol=1e-4)
            times = self.time_many({"update": update, "reencode": reencode}, repeats=self.s.serve_repeats)
            clock = self.clock()
            t, wall = ({k: v[key] for k, v in times.items()} for key in (clock, "median_s"))
            self.add(row("transformer_encoder", f"serving Transformer: re-encode {self.s.seq_len} items / cache update, D={d}, "
                              f"{users} user(s)", t["reencode"] / t["update"], (">=", 5.0), D=d, users=users, clock=clock,
                         update_ms=ms(t["update"]), reencode_ms=ms(t["reencode"]), same_representation=same,
                         wall_ratio=round(wall["reencode"] / wall["update"], 4), timings=times), profile_fn=update)
        del model, rec
        gc.collect()


class BlockLoopLinear(nn.Module):
    """The authors' MRL linear layer: one nn.Linear per output block j reading ``x[..., :M[j]]``,
    outputs concatenated (a K-step loop of small products)."""

    def __init__(self, sizes):
        super().__init__()
        self.sizes = list(sizes)
        outs = [b - a for a, b in zip([0] + self.sizes[:-1], self.sizes)]
        self.blocks = nn.ModuleList(nn.Linear(m, out) for m, out in zip(self.sizes, outs))

    def forward(self, x):
        return torch.cat([block(x[..., :m]) for m, block in zip(self.sizes, self.blocks)], dim=-1)


def write_random_dataset(users=300, items=200, seed=0):
    """A small RecBole atomic dataset ``random`` (5-60 events per user) in a temporary folder."""
    rng = random.Random(seed)
    root = tempfile.mkdtemp(prefix="fmrl-bench-data-")
    os.makedirs(os.path.join(root, "random"))
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for user in range(users):
        lines += [f"u{user}\ti{rng.randrange(1, items)}\t{t}" for t in range(rng.randint(5, 60))]
    with open(os.path.join(root, "random", "random.inter"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return root


def same_dropout(model_name):
    """LRURec's dropout rates set to fMRLRec's (YAML: 0.2 vs the paper's 0.5): sampling a dropout
    mask costs more at p = 0.5 than at 0.2 (``bernoulli_`` on CPU), a hyper-parameter that
    would otherwise show up as a price of nesting."""
    if model_name != "LRURec":
        return {}
    from recbole_fmrl.config import PROPERTIES_DIR

    with open(PROPERTIES_DIR / "model" / "fMRLRec.yaml", encoding="utf-8") as f:
        defaults = yaml.safe_load(f)
    return {key: defaults[key] for key in ("hidden_dropout_prob", "attn_dropout_prob")}


def export_in_memory(full, size, items, device):
    """The standalone size-m model an export of ``full`` holds (its ``sliced_config`` and
    ``sliced_state_dict``), built on the synthetic ``items``."""
    return sliced_model(full, size, lambda overrides: build_model("fMRLRec", items, device, **overrides)[0])[0]


def top10_fn(model, batch):
    """Full-catalogue top-10 as RecBole's evaluation does it: full_sort_predict, padding masked, topk."""

    @torch.inference_mode()
    def run():
        scores = model.full_sort_predict(batch)
        scores[:, 0] = float("-inf")
        return torch.topk(scores, 10, dim=1).indices

    return run


def predict_parts(model, batch):
    """The parts of ``top10_fn`` (encode, score, top-k), timed separately: what does not shrink with m.

    ``item_table`` (projecting the catalogue, eq. 7) is computed once and cached by the model, so it
    is not part of the per-batch latency; it is timed for reference.
    """
    with torch.inference_mode():
        hidden = model.forward(batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN])
        table = model.item_table()
        scores = hidden @ table.T

    def encode():
        with torch.inference_mode():
            model.forward(batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN])

    def item_table():
        with torch.inference_mode():
            model.item_encoder()

    def score():
        with torch.inference_mode():
            hidden @ table.T

    def topk():
        with torch.inference_mode():
            torch.topk(scores, 10, dim=1)

    return {"encode": encode, "item_table": item_table, "score": score, "topk": topk}


def peak_memory(model_name, hidden_size, settings, items, device):
    """Peak memory of one train step (after a warm-up step, so AdamW's state exists), in MiB.

    CUDA: ``torch.cuda.max_memory_allocated`` during the step. CPU (tracemalloc does not see torch's
    allocator): the bytes held before the step (parameters, buffers, optimizer state, batch) plus the
    peak of the running sum of every allocation and free torch records during the step
    (``torch.profiler`` with ``profile_memory``).
    """
    model, config = build_model(model_name, items, device, hidden_size=hidden_size, **same_dropout(model_name))
    batch = random_batch(model, settings.n_items, settings.batch_size, settings.seq_len, device)
    step = TrainStep(model, config, batch)
    step()
    gc.collect()
    if device.type == "cuda":
        synchronize(device)
        held = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        method = "torch.cuda.max_memory_allocated during one train step"
    else:
        held = held_bytes(model, step, batch)
        peak = held + transient_peak_bytes(step)
        method = "held tensors + torch.profiler(profile_memory) peak of allocations during one train step"
    return {"step_peak_mb": round(peak / 2**20, 2), "held_before_step_mb": round(held / 2**20, 2),
            "transient_peak_mb": round((peak - held) / 2**20, 2), "method": method}


def held_bytes(model, step, batch):
    """Bytes of every distinct tensor storage alive between steps: model, optimizer state, batch."""
    tensors = list(model.parameters()) + list(model.buffers()) + list(batch.values())
    for state in step.optimizer.state.values():
        tensors += [v for v in state.values() if isinstance(v, torch.Tensor)]
    tensors += [p.grad for p in model.parameters() if p.grad is not None]
    return storage_bytes(tensors)


# ---------------------------------------------------------------------------------- reporting
def format_row(r):
    return f"{r['case']:<{CASE_WIDTH}} {r['label']:<78} {r['ratio']:>9.4f} {r['goal'] or '':>8} {r['status']:>5}"


def format_table(rows):
    header = f"{'case':<{CASE_WIDTH}} {'what (ratio)':<78} {'ratio':>9} {'goal':>8} {'':>5}"
    return "\n".join([header, "-" * len(header)] + [format_row(r) for r in rows])


def to_jsonable(value):
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


BENCH_CASES = {case.__name__: case for case in (
    Bench.nested_train_step, Bench.fmrl_layer, Bench.independent_models, Bench.sliced_top10, Bench.lru_serving,
    Bench.train_memory, Bench.epoch_train_modes, Bench.transformer_encoder, Bench.sasrec_epoch, Bench.sampled_softmax)}
CASES = (*BENCH_CASES, "funnel_retrieval")
"""Every case, in the order they run (``funnel_retrieval``: :func:`recbole_fmrl.benchmarks.funnel.funnel_case`)."""
CASE_WIDTH = max(map(len, CASES))


def parse_cases(text):
    """The cases named by ``--cases`` (comma-separated); one error naming an unknown one."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in CASES]
    if unknown or not names:
        raise PluginError(f"unknown cases {unknown or [text]} in --cases; choose among {', '.join(CASES)}")
    return set(names)


def busy_warning(info, device):
    """A warning when other processes competed for the CPU: with every core busy, each parallel op
    of torch waits for its descheduled threads, so small-op code (sequence encoding, serving) slows
    down many times more than big matrix products and the ratios are not meaningful."""
    if device.type == "cuda":
        return None
    cores = info["cpu_count"] or 1
    others = max(info["load_average_at_start"][0], info["load_average_at_end"][0]) - info["threads"]
    if info["threads"] + others > cores + 0.5:
        return (f"the machine was busy (1-min load average {info['load_average_at_start'][0]} at start, "
                f"{info['load_average_at_end'][0]} at end, {cores} cores, {info['threads']} threads): "
                "timings are inflated unevenly; rerun when idle or with --threads 1")
    return None


def build_parser():
    parser = FlagParser(prog="python -m recbole_fmrl.benchmarks.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="D=256 only (nested_train_step: 256 and 1024), fewer repeats")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (seconds; for tests)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--out", default="results/bench.json", help="the results as JSON")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--sizes", default=None, help="comma-separated D values, e.g. 256,1024 (default: the preset's)")
    parser.add_argument("--cases", default=",".join(CASES), help="the cases to run, comma-separated names")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per measurement (default: the preset's)")
    parser.add_argument("--no_profile", action="store_true", help="do not profile cases that miss")
    parser.add_argument("--checkpoint", default=None, help="funnel_retrieval: a trained fMRLRec checkpoint, D = 256 for its goals (default: funnel_retrieval skipped)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    selected = parse_cases(args.cases)
    preset = "tiny" if args.tiny else "quick" if args.quick else "full"
    settings = Settings(**asdict(PRESETS[preset]))
    if args.sizes:
        settings.hidden_sizes = settings.train_sizes = [int(x) for x in args.sizes.split(",")]
    if args.repeats:
        settings.repeats = args.repeats
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PluginError("--device=cuda but CUDA is not available")
    torch.set_num_threads(args.threads)

    started = time.perf_counter()
    info = machine_info(device, torch.get_num_threads())
    print(f"fMRLRec benchmarks ({preset}) on {info['device_name']} [{device}], torch {info['torch']}, "
          f"{info['threads']} threads, commit {info['git_commit']}")
    bench = Bench(settings, device, profile_misses=not args.no_profile)
    case_seconds = {}
    for case in CASES:
        if case not in selected:
            continue
        if case == "funnel_retrieval" and not args.checkpoint:
            print("funnel_retrieval skipped: needs --checkpoint (a trained fMRLRec)")
            continue
        t0 = time.perf_counter()
        if case == "funnel_retrieval":
            funnel_case(bench, args.checkpoint, preset, row)
        else:
            BENCH_CASES[case](bench)
        case_seconds[case] = round(time.perf_counter() - t0, 1)
    info["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    info["wall_s"] = round(time.perf_counter() - started, 1)
    info["case_wall_s"] = case_seconds

    table = format_table(bench.rows)
    print("\n" + table)
    busy = busy_warning(info, device)
    if busy:
        info["warning"] = busy
        print(f"\nWARNING: {busy}")
    for key, ops in bench.profiles.items():
        print(f"\nprofile of the miss '{key}' (top ops by self time):")
        for op in ops:
            print(f"  {op['share']:>6.1%} {op['self_ms_per_call']:>10.2f} ms x{op['calls']:<4} {op['op']}")
    floors = bench.floors
    for d, floor in floors.items():
        parts = ", ".join(f"{k[:-3]} {v:.2f} ms" for k, v in floor.items() if k.endswith("_ms"))
        print(f"\n(sliced_top10) floor at D={d}, {floor['note']}: {parts}")
    print(f"\ntotal wall time {info['wall_s']} s")

    result = {
        "preset": preset,
        "settings": asdict(settings),
        "machine": info,
        "cases": {case: [r for r in bench.rows if r["case"] == case] for case in CASES if case in case_seconds},
        "sliced_top10_floors": floors,
        "profiles": bench.profiles,
        "table": table,
    }
    write_json_atomic(args.out, to_jsonable(result), indent=1, sort_keys=False)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main_guarded(main)
