"""Pushing the best model to the Hugging Face hub (off unless a space file names `hub.repo_id`).

The token comes from the environment only (HF_TOKEN, or a `huggingface-cli login` on the
machine): it is never written to a space file, summary or checkpoint.
"""

from __future__ import annotations

from pathlib import Path

from seg_tune.errors import SegTuneError


def push_best_model(folder: Path, repo_id: str, *, private: bool = True) -> str:
    """Upload `folder` (a Hugging Face model folder) to `repo_id`; returns the commit URL."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi()  # token: HF_TOKEN or the stored login
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            repo_type="model",
            commit_message="seg_tune: best model of the sweep",
        )
    except (HfHubHTTPError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SegTuneError(
            f"hub.repo_id {repo_id!r}: could not push {folder}: {first}; the model stays in "
            f"{folder} (push it later with `huggingface-cli upload {repo_id} {folder}`)"
        ) from None
    return str(getattr(info, "commit_url", info))
