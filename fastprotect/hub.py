"""Resolving weight files from a local path or the Hugging Face Hub, failing fast offline.

Every loader in the library goes through :func:`resolve_file` so that "no network and no
local copy" always ends in the same one-paragraph :class:`WeightsUnavailableError` that names
the environment variable or command-line flag that fixes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


class WeightsUnavailableError(RuntimeError):
    """Weights could not be found locally nor fetched from the Hub (offline, wrong id, ...)."""


def is_local(source: str | Path) -> bool:
    """True when ``source`` names an existing file or folder on this machine."""
    return Path(source).expanduser().exists()


def resolve_file(
    source: str | Path,
    filename: str,
    *,
    subfolder: str | None = None,
    hint: str = "",
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
    force_download: bool = False,
) -> Path:
    """Return a local path to ``filename`` inside ``source`` (a folder or a Hub repo id).

    ``source`` may also be the file itself. ``hint`` is appended to the error message and
    should say how to point the program at a local copy (a flag or environment variable).
    ``revision``, ``cache_dir``, ``token``, ``local_files_only`` and ``force_download`` go to
    ``huggingface_hub.hf_hub_download`` for a Hub repo id (same meaning and defaults) and are
    ignored for a local file or folder.
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
        return Path(hf_hub_download(
            repo_id=str(source), filename=filename, subfolder=subfolder, revision=revision, cache_dir=cache_dir,
            token=token, local_files_only=local_files_only, force_download=force_download,
        ))
    except Exception as error:  # offline, unknown repo, missing file, bad id: all the same to a user
        raise WeightsUnavailableError(
            f"Could not get {filename!r} from Hugging Face Hub repo {str(source)!r} "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'no detail'}). "
            f"The Hub may be unreachable (HF_HUB_OFFLINE set or no network). {hint}".strip()
        ) from error


def load_state_strictly(model: "torch.nn.Module", weights_path: Path, error: type[Exception], *, what: str) -> None:
    """Load ``weights_path`` (safetensors) into ``model`` strictly, each tensor cast to the model's dtype.

    An unreadable file, missing or unexpected tensors and wrong shapes raise ``error`` with one line
    naming the file (``what``: what the weights should have matched, for the message).
    """
    from safetensors.torch import load_file

    try:
        state = load_file(str(weights_path))
    except Exception as failure:  # truncated or not a safetensors file
        raise error(f"{weights_path}: unreadable weights ({type(failure).__name__}: {failure})") from failure
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise error(f"{weights_path}: checkpoint does not match {what}: missing tensors {missing}, unexpected tensors {unexpected}")
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            raise error(f"{weights_path}: tensor {name!r} has shape {tuple(tensor.shape)}, expected {tuple(expected[name].shape)}")
    model.load_state_dict({name: tensor.to(expected[name].dtype) for name, tensor in state.items()}, strict=True)
