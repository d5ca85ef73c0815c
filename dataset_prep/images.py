"""Item photos: resumable, bounded-concurrency download into an on-disk cache, or local paths.

Each photo is stored as ``<cache>/<sha1(url)>.img``, written atomically, so an interrupted run
keeps every finished file and a rerun fetches only what is missing. A URL that answered with a
permanent client error (e.g. 404) is remembered with a ``.missing`` marker and not asked again.
"""

import hashlib
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

import requests
from tqdm import tqdm

from recbole_fmrl.files import write_bytes_atomic

logger = logging.getLogger(__name__)

PERMANENT_STATUS = {400, 401, 403, 404, 410, 451}
_session_store = threading.local()


def cache_file(cache_dir, url):
    """Where the photo of ``url`` is (or will be) cached."""
    return os.path.join(cache_dir, hashlib.sha1(url.encode("utf-8")).hexdigest() + ".img")


def _session():
    """One ``requests.Session`` per worker thread (sessions are not thread-safe)."""
    if not hasattr(_session_store, "session"):
        _session_store.session = requests.Session()
    return _session_store.session


def fetch_image(url, path, timeout=(5.0, 30.0), retries=3, backoff=0.5):
    """Download ``url`` into ``path``; return True on success, False when it cannot be had.

    Network errors, 429 and 5xx answers are retried ``retries`` times with exponential backoff;
    a permanent client error is recorded as ``<path>.missing``.
    """
    for attempt in range(retries + 1):
        try:
            response = _session().get(url, timeout=timeout)
            if response.status_code == 200 and response.content:
                write_bytes_atomic(path, response.content)
                return True
            if response.status_code in PERMANENT_STATUS:
                write_bytes_atomic(path + ".missing", str(response.status_code).encode())
                return False
            reason = f"HTTP {response.status_code}"
        except requests.RequestException as exc:
            reason = type(exc).__name__
        if attempt < retries:
            time.sleep(backoff * 2**attempt)
    logger.debug("image %s failed after %d tries: %s", url, retries + 1, reason)
    return False


def download_images(urls, cache_dir, max_workers=8, timeout=(5.0, 30.0), retries=3):
    """Fetch every ``item_id -> url`` photo into ``cache_dir``; return ``item_id -> path or None``.

    Items without a URL, or whose photo cannot be fetched, map to None. Already cached files are
    reused; the rest are fetched by at most ``max_workers`` threads behind a progress bar.
    """
    os.makedirs(cache_dir, exist_ok=True)
    paths, todo = {}, {}
    for item_id, url in urls.items():
        if not url:
            paths[item_id] = None
            continue
        path = cache_file(cache_dir, url)
        if os.path.exists(path):
            paths[item_id] = path
        elif os.path.exists(path + ".missing"):
            paths[item_id] = None
        else:
            todo.setdefault(url, []).append(item_id)
            paths[item_id] = None
    n_cached = sum(p is not None for p in paths.values())
    logger.info("images: %d items, %d with URL already cached, %d URLs to fetch",
                len(urls), n_cached, len(todo))
    if not todo:
        return paths
    pool = ThreadPoolExecutor(max_workers=max_workers)
    try:
        futures = {pool.submit(fetch_image, url, cache_file(cache_dir, url), timeout, retries): url
                   for url in todo}
        for future in tqdm(as_completed(futures), total=len(futures), desc="download images",
                           unit="img"):
            url = futures[future]
            if future.result():
                for item_id in todo[url]:
                    paths[item_id] = cache_file(cache_dir, url)
    finally:
        # On Ctrl-C drop the queued downloads at once; finished files are already in the cache.
        pool.shutdown(wait=True, cancel_futures=True)
    return paths


def is_url(source):
    """Whether an image source is a URL to download (else it is a local path)."""
    return source.startswith(("http://", "https://"))


def resolve_images(sources, cache_dir, base_dir, max_workers=8):
    """``item_id -> local photo path or None`` for ``item_id -> source``: a URL is downloaded into
    ``cache_dir`` (:func:`download_images`), a local path is taken as it is (relative to
    ``base_dir``); an empty source, or a path with no file, maps to None (counted in the log)."""
    urls = {item: source for item, source in sources.items() if source and is_url(source)}
    paths = download_images(urls, cache_dir, max_workers=max_workers) if urls else {}
    n_missing = 0
    for item, source in sources.items():
        if not source or is_url(source):
            paths.setdefault(item, None)
            continue
        path = os.path.join(base_dir, source)
        paths[item] = path if os.path.isfile(path) else None
        n_missing += paths[item] is None
    if n_missing:
        logger.warning("images: %d local image paths have no file (relative to %s)", n_missing, base_dir)
    return paths
