"""Scoring understanding answers: exact match after normalisation, overall and per
question type, each type with its chance level and majority baseline.

Chance level of a type: 1 / (number of distinct answers of that type in the evaluated
set); majority baseline: always answering its most frequent answer. So a number is
never read without what guessing would score.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tokred_core import TokredError

__all__ = [
    "QUESTION_TYPES",
    "TypeScore",
    "UnderstandingResult",
    "exact_match",
    "normalize_answer",
    "question_type",
    "score_answers",
]

QUESTION_TYPES: tuple[str, ...] = ("kind", "colour", "position", "count")
_TYPE_PATTERNS = (
    ("kind", re.compile(r"^\s*what shape\b")),
    ("colour", re.compile(r"^\s*what colou?r\b")),
    ("position", re.compile(r"^\s*where\b")),
    ("count", re.compile(r"^\s*how many\b")),
)


def normalize_answer(text: str) -> str:
    """Lower case, no surrounding whitespace or final punctuation, single spaces."""
    return " ".join(text.strip().lower().rstrip(".!?").split())


def exact_match(prediction: str, answer: str) -> bool:
    """Exact match after `normalize_answer` on both sides."""
    return normalize_answer(prediction) == normalize_answer(answer)


def question_type(question: str) -> str:
    """kind / colour / position / count for the shapes questions, else 'other'."""
    q = question.lower()
    for name, pattern in _TYPE_PATTERNS:
        if pattern.search(q):
            return name
    return "other"


@dataclass
class TypeScore:
    """Accuracy on one question type, with what guessing would score."""

    accuracy: float
    correct: int
    total: int
    num_answers: int
    """Distinct reference answers of this type in the evaluated set."""
    chance: float
    """1 / num_answers: a uniform guess among the possible answers."""
    majority: float
    """Accuracy of always giving this type's most frequent answer."""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class UnderstandingResult:
    accuracy: float
    """Exact-match accuracy over every question."""
    total: int
    chance: float
    """Mean over questions of their type's chance level."""
    majority: float
    """Accuracy of the per-type majority answer, over every question."""
    per_type: dict[str, TypeScore]
    predictions: list[dict[str, Any]] = field(default_factory=list)
    """question, answer, prediction, type, correct; one per record."""
    mode: str = ""

    def to_dict(self, with_predictions: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "accuracy": self.accuracy,
            "total": self.total,
            "chance": self.chance,
            "majority": self.majority,
            "mode": self.mode,
            "per_type": {k: v.to_dict() for k, v in self.per_type.items()},
        }
        if with_predictions:
            out["predictions"] = self.predictions
        return out


def score_answers(
    questions: Sequence[str],
    answers: Sequence[str],
    predictions: Sequence[str],
    types: Sequence[str] | None = None,
) -> UnderstandingResult:
    """Exact-match accuracy overall and per question type, with chance and majority levels."""
    if not (len(questions) == len(answers) == len(predictions)):
        raise TokredError(
            f"{len(questions)} questions, {len(answers)} answers and {len(predictions)} "
            "predictions: give one of each per record"
        )
    if not questions:
        raise TokredError("no understanding records to score")
    types = list(types) if types is not None else [question_type(q) for q in questions]
    rows = []
    for q, a, p, t in zip(questions, answers, predictions, types, strict=True):
        rows.append(
            {"question": q, "answer": a, "prediction": p, "type": t, "correct": exact_match(p, a)}
        )
    per_type: dict[str, TypeScore] = {}
    for t in dict.fromkeys(types):
        mine = [r for r in rows if r["type"] == t]
        counts = Counter(normalize_answer(r["answer"]) for r in mine)
        correct = sum(r["correct"] for r in mine)
        per_type[t] = TypeScore(
            accuracy=correct / len(mine),
            correct=correct,
            total=len(mine),
            num_answers=len(counts),
            chance=1.0 / len(counts),
            majority=counts.most_common(1)[0][1] / len(mine),
        )
    total = len(rows)
    return UnderstandingResult(
        accuracy=sum(r["correct"] for r in rows) / total,
        total=total,
        chance=sum(per_type[r["type"]].chance for r in rows) / total,
        majority=sum(s.majority * s.total for s in per_type.values()) / total,
        per_type=per_type,
        predictions=rows,
    )
