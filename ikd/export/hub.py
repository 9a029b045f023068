"""`ikd export --push-to-hub REPO`: upload an export folder to the Hugging Face Hub (huggingface_hub; the token
from `hf auth login` or HF_TOKEN)."""

from __future__ import annotations

from pathlib import Path

from ikd.errors import IkdError


def check_repo_id(repo_id: str) -> None:
    """A Hub model id ("name" or "owner/name"), checked before any work."""
    try:
        from huggingface_hub.utils import HFValidationError, validate_repo_id
    except ImportError:
        raise IkdError("--push-to-hub needs the huggingface_hub package: pip install 'ikd[transformers]'") from None
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise IkdError(f"--push-to-hub {repo_id!r}: not a Hub repository id ({str(e).splitlines()[0]})") from None


def push_folder(folder: Path, repo_id: str) -> str:
    """Create the model repository `repo_id` (if new) and upload `folder` as one commit -> the commit's URL."""
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type="model", exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id, folder_path=str(folder), repo_type="model", commit_message="Upload ikd export"
        )
    except Exception as e:  # network, authentication, permissions: one line, the export stays on disk
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise IkdError(f"--push-to-hub {repo_id}: the upload failed ({first}); the export is in {folder}") from None
    return str(getattr(commit, "commit_url", commit))
