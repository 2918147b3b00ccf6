"""equiv-tools: find the equivalence rule a small transformer applies to inputs it never saw.

The torch-free parts (tasks, relations, configs, errors) import eagerly; the
rest loads on first use, so ``import equiv_tools`` stays fast.
"""
from importlib import import_module

from .config import PRESETS, RECIPES, TrainConfig, model_config
from .errors import InputError
from .paths import shipped_data_dir
from .relations import Relation
from .tasks import AdditionTask, ModularDigitTask, ModularTask, MultiplicationTask, make_task

_LAZY = {
    "build_model": "models", "load_run": "models", "import_mingpt": "imports", "Run": "models",
    "import_grokking": "imports", "load_grokking": "imports",
    "fourier_summary": "fourier", "progress_series": "fourier", "spectrum_series": "fourier",
    "grokked_step": "grokking", "grokking_phases": "grokking",
    "train": "training", "resume": "training", "read_metrics": "training",
    "greedy_decode": "decoding", "naive_greedy_decode": "decoding", "predict": "decoding",
    "score_digits": "decoding",
    "evaluate_run": "evaluation",
    "discover_relations": "discovery", "class_map": "discovery", "explain_input": "discovery", "best_relation": "discovery",
    "grid_answers": "maps", "classify": "maps", "category_shares": "maps", "digit_distribution": "maps",
    "find_paper_dir": "reproduce", "reproduce": "reproduce", "paper_checkpoint": "reproduce",
    "load_paper_model": "reproduce", "model_catalog": "reproduce",
    "search_relations": "relation_search", "input_sensitivity": "sensitivity", "digit_sensitivity": "sensitivity",
    "attention_patterns": "reading", "mean_attention": "reading", "logit_lens": "reading", "split_logit_lens": "reading",
    "pca_series": "projection", "checkpoint_models": "projection",
}

__all__ = [
    "AdditionTask", "MultiplicationTask", "ModularDigitTask", "ModularTask", "make_task",
    "Relation", "InputError", "TrainConfig", "PRESETS", "RECIPES", "model_config", "shipped_data_dir", *_LAZY,
]


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module("." + _LAZY[name], __name__), name)
    raise AttributeError(f"module 'equiv_tools' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *__all__})
