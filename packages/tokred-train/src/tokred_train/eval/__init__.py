"""Evaluation of a unified model on both tasks, and the paper's allocation diagnostic.

answers        understanding scoring: exact match, per question type, chance levels
records        the held-out shapes records with their image codes
decode         batched decoding, cached or under the run's reduction
understanding  greedy answers, scored
generation     constrained image sampling, checked by the shapes detector
fid            Fréchet Inception Distance from a local TorchScript feature extractor
janus          Janus as a one-task causal LM, so decoding runs it unchanged
grid           a PNG grid of generated images (PIL only)
allocation     layerwise attention allocation over validation data (PAPER.md sec. 1)
run            a whole run's evaluation: load it back, score both tasks, write results
"""

from .answers import (
    QUESTION_TYPES,
    TypeScore,
    UnderstandingResult,
    exact_match,
    normalize_answer,
    question_type,
    score_answers,
)
from .decode import DECODE_MODES, decode_batch, reduction_context

# Not `fid` itself: that name would hide the module tokred_train.eval.fid.
from .fid import FeatureExtractor, FidReference, frechet_distance, load_feature_extractor
from .generation import (
    GENERATION_ATTRIBUTES,
    GenerationResult,
    ImageBlock,
    evaluate_generation,
    generate_image_codes,
    generation_chance,
    image_block,
    image_writing,
    score_generated_codes,
)
from .grid import save_sample_grid
from .records import shapes_eval_records
from .understanding import evaluate_understanding

__all__ = [
    "DECODE_MODES",
    "GENERATION_ATTRIBUTES",
    "QUESTION_TYPES",
    "FeatureExtractor",
    "FidReference",
    "GenerationResult",
    "TypeScore",
    "UnderstandingResult",
    "decode_batch",
    "evaluate_generation",
    "evaluate_understanding",
    "exact_match",
    "frechet_distance",
    "generate_image_codes",
    "generation_chance",
    "ImageBlock",
    "image_block",
    "image_writing",
    "load_feature_extractor",
    "normalize_answer",
    "question_type",
    "reduction_context",
    "save_sample_grid",
    "score_answers",
    "score_generated_codes",
    "shapes_eval_records",
]
