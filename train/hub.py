"""Checking before training that ``--push-to-hub`` can work (the push itself: the Hub mixin's
``MixtureOfPerturbations.push_to_hub``)."""

from __future__ import annotations


class HubUnavailableError(RuntimeError):
    """Offline, not logged in, or the Hub does not answer: pushing cannot work."""


def check_push_access(repo_id: str) -> str:
    """Fail fast (before training) unless we are online and logged in; returns the user name."""
    from huggingface_hub import constants, whoami

    if constants.HF_HUB_OFFLINE:
        raise HubUnavailableError(
            f"--push-to-hub {repo_id}: HF_HUB_OFFLINE is set, so nothing can be pushed. "
            "Unset it on a machine with network access, or drop --push-to-hub and upload final/ later "
            "with `huggingface-cli upload REPO RUN/final`."
        )
    try:
        user = whoami()
    except Exception as error:  # no token, no network, DNS failure: all mean "cannot push"
        raise HubUnavailableError(
            f"--push-to-hub {repo_id}: cannot reach the Hub as a logged-in user "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'no detail'}). "
            "Run `huggingface-cli login` (or set HF_TOKEN) on a machine with network access."
        ) from error
    return str(user.get("name", "?"))
