"""Discrete item codes for VQRec: optimized product quantization (Ge, He, Ke, Sun, "Optimized Product
Quantization", TPAMI 2014) of a dataset's item feature vectors with faiss, computed once and cached
beside the feature file.

For ``feature_files: {text: beauty.text.npy}`` the codes of the dataset's items (RecBole's internal
ids 1 … n, in that order) are ``beauty.text.opq<B>x<K>.seed<s>.codes.npy``, int16 ``[n, B]``, with the
manifest ``<codes>.npy.json``: the feature file and its sha256, a sha256 of the dataset's item order,
``n_codebooks`` B, ``code_cap`` K, ``seed``, the faiss version and the seconds it took. A manifest
that no longer matches (the feature file was rebuilt, RecBole kept other items) makes the codes be
computed again.
"""

import hashlib
import os
import time
from logging import getLogger

import numpy as np
import torch

from recbole_fmrl import files
from recbole_fmrl.data import atomic_files
from recbole_fmrl.errors import ConfigError
from recbole_fmrl.extras import require

KIND = "faiss OPQ rotation + product quantizer codes"


def opq_codes(vectors, n_codebooks, code_cap, seed):
    """Codes ``[n, n_codebooks]`` (int64 in ``[0, code_cap)``) of float32 ``vectors [n, dim]``.

    An OPQ rotation (``faiss.OPQMatrix``, which alternates PQ training and a Procrustes update of the
    rotation) is learned on ``vectors``; a product quantizer with ``n_codebooks`` sub-spaces of
    ``code_cap`` centroids is then trained on the rotated vectors and assigns each its nearest
    centroid per sub-space (faiss's ``OPQ<B>,PQ<B>`` index). k-means is seeded with ``seed`` and
    runs on one thread, so the codes depend on the vectors and the seed only.
    """
    faiss = require("faiss")

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    dim, nbits = vectors.shape[1], code_cap.bit_length() - 1
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        rotation = faiss.OPQMatrix(dim, n_codebooks)
        rotation_pq = _product_quantizer(faiss, dim, n_codebooks, nbits, seed)
        rotation.pq = rotation_pq  # faiss does not own it: keep the Python reference alive
        rotation.train(vectors)
        rotated = rotation.apply(vectors)
        quantizer = _product_quantizer(faiss, dim, n_codebooks, nbits, seed)
        quantizer.train(rotated)
        packed = quantizer.compute_codes(rotated)
    finally:
        faiss.omp_set_num_threads(threads)
    return faiss.unpack_bitstrings(packed, n_codebooks, nbits).astype(np.int64)


def _product_quantizer(faiss, dim, n_codebooks, nbits, seed):
    quantizer = faiss.ProductQuantizer(dim, n_codebooks, nbits)
    quantizer.cp.seed = seed
    return quantizer


def check_code_settings(n_items, dim, n_codebooks, code_cap):
    """One-line ConfigError unless ``n_items`` vectors of width ``dim`` can be product-quantized."""
    if not isinstance(n_codebooks, int) or n_codebooks < 1 or dim % n_codebooks:
        raise ConfigError(f"code_dim (number of codebooks) must divide the feature width {dim}, got {n_codebooks!r}")
    if not isinstance(code_cap, int) or code_cap < 2 or code_cap > 2**15 or code_cap & (code_cap - 1):
        raise ConfigError(f"code_cap (codes per codebook) must be a power of two in [2, 32768], got {code_cap!r}")
    if n_items < code_cap:
        raise ConfigError(f"code_cap {code_cap} needs at least as many items to train the quantizer, the dataset has {n_items}")


def item_codes(dataset, modality, n_codebooks, code_cap, seed):
    """LongTensor ``[item_num - 1, n_codebooks]``: the codes of ``dataset.item_features(modality)``
    for RecBole's internal item ids 1 … n, read from the cache or computed (and cached)."""
    vectors = dataset.item_features(modality)[1:].numpy()
    check_code_settings(len(vectors), vectors.shape[1], n_codebooks, code_cap)
    source = dataset.feature_file(modality)
    stem = source[: -len(".npy")] if source.endswith(".npy") else source
    path = f"{stem}.opq{n_codebooks}x{code_cap}.seed{seed}.codes.npy"
    tokens = dataset.field2id_token[dataset.iid_field][1:]
    key = {
        "kind": KIND,
        "source": os.path.basename(source),
        "source_sha256": files.sha256_file(source),
        "items_sha256": hashlib.sha256("\n".join(map(str, tokens)).encode("utf-8")).hexdigest(),
        "n_items": len(tokens),
        "n_codebooks": n_codebooks,
        "code_cap": code_cap,
        "seed": seed,
    }
    logger = getLogger()
    cached = _read_cached(path, key)
    if cached is not None:
        logger.info(f"{modality} codes: {path} reused ({len(tokens)} items x {n_codebooks} codebooks)")
        return torch.from_numpy(cached.astype(np.int64))
    started = time.perf_counter()
    codes = opq_codes(vectors, n_codebooks, code_cap, seed)
    seconds = round(time.perf_counter() - started, 2)
    files.save_npy_atomic(path, codes.astype(np.int16))
    faiss = require("faiss")

    files.write_json_atomic(atomic_files.manifest_path(path), {**key, "faiss": faiss.__version__, "seconds": seconds})
    logger.info(f"{modality} codes: computed in {seconds} s, cached in {path}")
    return torch.from_numpy(codes)


def _read_cached(path, key):
    """The cached codes at ``path`` if its manifest matches ``key``, else None."""
    try:
        manifest = atomic_files.read_manifest(path)
        if manifest is None or any(manifest.get(k) != v for k, v in key.items()):
            return None
        codes = np.load(path)
    except (OSError, ValueError):
        return None
    if codes.shape != (key["n_items"], key["n_codebooks"]):
        return None
    return codes
