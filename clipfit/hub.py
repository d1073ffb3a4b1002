"""The Hugging Face Hub: push an export folder, fetch one back (``hf-hub:USER/REPO``).

Pushing is huggingface_hub's ``create_repo`` + ``upload_folder`` (the token comes from
``huggingface-cli login``, ``HF_TOKEN`` or the ``token`` argument); fetching is ``snapshot_download``
into the Hugging Face cache, which works offline (``HF_HUB_OFFLINE=1``) once the repository is
cached. Nothing here reads the files: :mod:`clipfit.export` does, as data.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from clipfit.errors import ClipfitError

logger = logging.getLogger(__name__)

PREFIX = "hf-hub:"


class HubError(ClipfitError, RuntimeError):
    """A repository could not be fetched from or pushed to the Hugging Face Hub."""


def repo_id(ref: str) -> str:
    """``hf-hub:USER/REPO`` (or ``USER/REPO``) -> ``USER/REPO``; anything else is refused."""
    repo = ref[len(PREFIX) :] if ref.startswith(PREFIX) else ref
    repo = repo.strip().strip("/")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise HubError(f"'{ref}' is not a Hugging Face repository; expected hf-hub:USER/REPO")
    return repo


def download(ref: str, revision: str | None = None) -> Path:
    """The local folder of the repository's snapshot (fetched into the Hugging Face cache, or found there)."""
    from huggingface_hub import constants, snapshot_download

    repo = repo_id(ref)
    try:
        return Path(snapshot_download(repo_id=repo, revision=revision))
    except Exception as exc:  # huggingface_hub raises HTTP, offline and not-found errors of many classes
        offline = " (HF_HUB_OFFLINE is set and the repository is not in the cache)" if constants.HF_HUB_OFFLINE else ""
        raise HubError(
            f"could not fetch '{PREFIX}{repo}' from the Hugging Face Hub{offline}: {type(exc).__name__}: {exc}\n"
            f"Without network access, run `huggingface-cli download {repo} --local-dir DIR` on a machine that has it, "
            "copy DIR here and load the folder instead."
        ) from exc


def push_folder(
    folder: str | Path,
    repo: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str | None = None,
    api: Any = None,
) -> str:
    """Create ``repo`` if needed and upload every file of ``folder`` to it; returns the repository's URL.

    Args:
        folder: an export folder (:func:`clipfit.export.write_export`).
        repo: ``USER/REPO`` or ``hf-hub:USER/REPO``.
        private: create the repository as private (an existing repository keeps its visibility).
        token: a Hugging Face token; None uses the stored login or ``HF_TOKEN``.
        commit_message: the commit's message (default: "Upload clipfit export").
        api: a ``huggingface_hub.HfApi`` (tests pass a recording stand-in).

    Raises:
        HubError: the repository could not be created or written (no token, no rights, no network).
    """
    from huggingface_hub import HfApi

    repo = repo_id(repo)
    api = api if api is not None else HfApi(token=token)
    try:
        url = api.create_repo(repo, private=private, exist_ok=True, repo_type="model", token=token)
        api.upload_folder(
            repo_id=repo,
            folder_path=str(folder),
            repo_type="model",
            commit_message=commit_message or "Upload clipfit export",
            token=token,
        )
    except Exception as exc:
        raise HubError(
            f"could not push {folder} to the Hugging Face Hub repository {repo}: {type(exc).__name__}: {exc}\n"
            "Log in first (`huggingface-cli login`, or set HF_TOKEN to a token with write access)."
        ) from exc
    url = str(url) if url else f"https://huggingface.co/{repo}"
    logger.info("pushed %s to %s", folder, url)
    return url
