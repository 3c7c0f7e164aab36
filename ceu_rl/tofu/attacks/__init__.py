"""Attacks on unlearned models (issue 24; docs/attacks.md): sampling (leak@k), relearning and quantization.

    python -m ceu_rl.tofu.attacks {leak,relearn,quantize} --model PATH ...
"""

from .leak import (DEFAULT_THRESHOLDS, default_ks, expected_max_at_k, leak_at_k, leak_report, rouge_l_recalls,
                   sample_answers, score_samples)
from .quantize import (NF4_CODE, bitsandbytes_available, copy_model, fake_quantize_linear_weights, fake_quantize_tensor,
                       quantization_robustness, quantize_model)
from .relearn import (KNOWLEDGE_DIRECTIONS, forget_metrics, heldout_split, relearn, relearn_robustness,
                      relearn_robustness_table)

__all__ = [
    "DEFAULT_THRESHOLDS", "KNOWLEDGE_DIRECTIONS", "NF4_CODE", "bitsandbytes_available", "copy_model", "default_ks",
    "expected_max_at_k", "fake_quantize_linear_weights", "fake_quantize_tensor", "forget_metrics", "heldout_split",
    "leak_at_k", "leak_report", "quantization_robustness", "quantize_model", "relearn", "relearn_robustness",
    "relearn_robustness_table", "rouge_l_recalls", "sample_answers", "score_samples",
]
