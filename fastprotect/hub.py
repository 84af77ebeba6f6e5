"""Resolving weight files from a local path or the Hugging Face Hub, failing fast offline.

Every loader in the library goes through :func:`resolve_file` so that "no network and no
local copy" always ends in the same one-paragraph :class:`WeightsUnavailableError` that names
the environment variable or command-line flag that fixes it.
"""

from __future__ import annotations

from pathlib import Path


class WeightsUnavailableError(RuntimeError):
    """Weights could not be found locally nor fetched from the Hub (offline, wrong id, ...)."""


def is_local(source: str | Path) -> bool:
    """True when ``source`` names an existing file or folder on this machine."""
    return Path(source).expanduser().exists()


def resolve_file(source: str | Path, filename: str, *, subfolder: str | None = None, hint: str = "") -> Path:
    """Return a local path to ``filename`` inside ``source`` (a folder or a Hub repo id).

    ``source`` may also be the file itself. ``hint`` is appended to the error message and
    should say how to point the program at a local copy (a flag or environment variable).
    """
    local = Path(source).expanduser()
    if local.is_file():
        return local
    if local.is_dir():
        candidate = local / subfolder / filename if subfolder else local / filename
        if candidate.is_file():
            return candidate
        raise WeightsUnavailableError(f"{filename!r} not found in local folder {str(local)!r}. {hint}".strip())
    from huggingface_hub import hf_hub_download  # imported lazily: keeps `import fastprotect` cheap

    try:
        return Path(hf_hub_download(repo_id=str(source), filename=filename, subfolder=subfolder))
    except Exception as error:  # offline, unknown repo, missing file, bad id: all the same to a user
        raise WeightsUnavailableError(
            f"Could not get {filename!r} from Hugging Face Hub repo {str(source)!r} "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'no detail'}). "
            f"The Hub may be unreachable (HF_HUB_OFFLINE set or no network). {hint}".strip()
        ) from error
