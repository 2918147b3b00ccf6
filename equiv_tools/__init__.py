"""equiv-tools: find the equivalence rule a small transformer applies to inputs it never saw.

The package is layered; each layer imports only the ones below it (``lint-imports`` checks this):

* ``core``: tasks, relations, configs, errors, paths, the run directory's layout (torch-free)
* ``forward``: the one fast forward, decoding, activations at hook names, devices
* ``runs``: building, loading, training and importing models
* ``analysis``: relations found, class maps, patching, reading, Fourier, evaluation, scorecards and remedies
* ``views``: plots, figures and the ipywidgets explorers
* ``cli``: the ``equiv-tools`` command

The public API lives here, as ``et.<name>``. The torch-free names import eagerly;
the rest loads on first use, so ``import equiv_tools`` stays fast.
"""
from importlib import import_module

from equiv_tools.core import config, errors, paths, relations, tasks  # noqa: F401  (et.tasks etc., as before the layout)
from equiv_tools.core.config import PRESETS, RECIPES, TrainConfig, model_config
from equiv_tools.core.errors import InputError
from equiv_tools.core.paths import shipped_data_dir
from equiv_tools.core.relations import Relation
from equiv_tools.core.rundir import RunDir
from equiv_tools.core.tasks import AdditionTask, ModularDigitTask, ModularTask, MultiplicationTask, make_task

_LAZY = {  # public name -> the module that defines it
    "LeanModel": "forward.lean", "fast_path_blocker": "forward.lean", "lean_forward": "forward.lean",
    "greedy_decode": "forward.decoding", "naive_greedy_decode": "forward.decoding", "predict": "forward.decoding",
    "score_digits": "forward.decoding", "answer_probabilities": "forward.decoding",
    "build_model": "runs.models", "load_run": "runs.models", "Run": "runs.models",
    "import_mingpt": "runs.imports", "import_grokking": "runs.imports", "load_grokking": "runs.imports",
    "train": "runs.training", "resume": "runs.training", "read_metrics": "runs.training",
    "grokked_step": "runs.grokking", "grokking_phases": "runs.grokking",
    "evaluate_run": "analysis.evaluation",
    "discover_relations": "analysis.discovery", "class_map": "analysis.class_maps", "explain_input": "analysis.discovery",
    "best_relation": "analysis.discovery",
    "grid_answers": "analysis.maps", "classify": "analysis.maps", "category_shares": "analysis.maps",
    "digit_distribution": "analysis.maps",
    "find_paper_dir": "analysis.reproduce", "reproduce": "analysis.reproduce", "paper_checkpoint": "analysis.reproduce",
    "load_paper_model": "analysis.reproduce", "model_catalog": "analysis.reproduce",
    "search_relations": "analysis.relation_search",
    "input_sensitivity": "analysis.sensitivity", "digit_sensitivity": "analysis.sensitivity",
    "attention_patterns": "analysis.reading", "mean_attention": "analysis.reading", "logit_lens": "analysis.reading",
    "split_logit_lens": "analysis.reading", "correct_digit_lens": "analysis.reading", "correct_digit_summary": "analysis.reading",
    "pca_series": "analysis.projection", "checkpoint_models": "analysis.projection",
    "fourier_summary": "analysis.fourier", "progress_series": "analysis.progress", "spectrum_series": "analysis.progress",
    "activation_patch": "analysis.patching", "patch_resid_pre_by_pos": "analysis.patching",
    "patch_resid_mid_by_pos": "analysis.patching", "patch_resid_post_by_pos": "analysis.patching",
    "patch_attn_out_by_pos": "analysis.patching", "patch_mlp_out_by_pos": "analysis.patching",
    "patch_head_out_by_pos": "analysis.patching", "patch_head_out_all_pos": "analysis.patching",
    "patch_pair": "analysis.patching", "one_digit_apart": "analysis.patching", "activation_difference": "analysis.patching",
    "sweep": "analysis.sweep", "read_results": "analysis.sweep", "head_ablation": "analysis.ablation",
    "scorecard": "analysis.scorecard", "scorecard_table": "analysis.scorecard",
    "prime": "analysis.remedies", "finetune": "analysis.remedies", "wrap": "analysis.remedies", "retrain": "analysis.remedies",
    "remedy_table": "analysis.remedies",
    "check_resid_pre_patch": "analysis.checks", "check_logit_difference": "analysis.checks",
    "check_head_ablation": "analysis.checks", "check_embedding_fourier": "analysis.checks",
    "EquivalenceExplorer": "views.widgets", "MapViewer": "views.widgets", "RepresentationExplorer": "views.widgets",
    "TrainingDynamicsExplorer": "views.widgets", "PatchingExplorer": "views.widgets",
}

__all__ = [
    "AdditionTask", "MultiplicationTask", "ModularDigitTask", "ModularTask", "make_task", "Relation", "InputError",
    "TrainConfig", "PRESETS", "RECIPES", "model_config", "shipped_data_dir", "RunDir", *_LAZY,
]


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module("equiv_tools." + _LAZY[name]), name)
    raise AttributeError(f"module 'equiv_tools' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *__all__})
