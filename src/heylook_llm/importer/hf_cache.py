"""The Hugging Face cache, read with huggingface_hub's `scan_cache_dir`.

huggingface_hub owns the cache layout (models--org--name, refs, snapshots, blobs, shared blob stores) and
changes it now and then; its scanner follows those changes, a hand-written walk would not. Each model
repository gives one group of files: the revision `refs/main` points to, or the newest one.
"""

from __future__ import annotations

import logging
from pathlib import Path

from heylook_llm.importer.detect import Skipped
from heylook_llm.importer.scan import FileGroup

log = logging.getLogger(__name__)


class HfCacheError(Exception):
    """The cache folder does not exist or cannot be scanned."""


def default_hf_cache() -> Path:
    """Where huggingface_hub keeps its cache here (HF_HUB_CACHE, HF_HOME, or ~/.cache/huggingface/hub)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def hf_cache_groups(cache_dir: Path | None = None) -> tuple[list[FileGroup], list[Skipped]]:
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    folder = cache_dir if cache_dir is not None else default_hf_cache()
    try:
        info = scan_cache_dir(folder)
    except CacheNotFound as exc:
        raise HfCacheError(f"no Hugging Face cache at {folder} (set HF_HUB_CACHE or pass --hf-cache DIR)") from exc
    except (ValueError, OSError) as exc:
        raise HfCacheError(f"cannot scan the Hugging Face cache at {folder}: {exc}") from exc
    skipped = [Skipped(folder, f"a damaged cache entry: {warning}") for warning in info.warnings]
    groups: list[FileGroup] = []
    for repo in sorted(info.repos, key=lambda r: (r.repo_type, r.repo_id)):
        if repo.repo_type != "model":
            log.debug("not a model repository: %s/%s", repo.repo_type, repo.repo_id)
            continue
        if not repo.revisions:
            continue
        revision = repo.refs.get("main") or max(repo.revisions, key=lambda r: r.last_modified)
        files = tuple(sorted(f.file_path for f in revision.files))
        groups.append(FileGroup(root=revision.snapshot_path, files=files, repo_id=repo.repo_id))
    return groups, skipped
