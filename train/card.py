"""The evaluation section of a checkpoint's model card (the card itself: fastprotect.modelcard,
written by every ``MixtureOfPerturbations.save_pretrained``)."""

from __future__ import annotations

from pathlib import Path

from fastprotect.modelcard import replace_evaluation as _replace_in_text


def replace_evaluation(card: Path, evaluation: str) -> None:
    """Set the evaluation section of the card file ``card`` to ``evaluation`` (markdown), adding
    the section when the card has none yet."""
    card = Path(card)
    card.write_text(_replace_in_text(card.read_text(), evaluation))
