"""The package's layering: import-linter's contract holds, and it would catch an upward import."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import equiv_tools

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "equiv_tools"
LINT_IMPORTS = str(Path(sys.executable).parent / "lint-imports")

# dir(equiv_tools) before the package was split into layers: every name still resolves
NAMES_BEFORE_THE_LAYOUT = [
    "AdditionTask", "InputError", "ModularDigitTask", "ModularTask", "MultiplicationTask", "PRESETS", "RECIPES", "Relation",
    "Run", "TrainConfig", "attention_patterns", "best_relation", "build_model", "category_shares", "checkpoint_models",
    "class_map", "classify", "config", "digit_distribution", "digit_sensitivity", "discover_relations", "errors",
    "evaluate_run", "explain_input", "find_paper_dir", "fourier_summary", "greedy_decode", "grid_answers", "grokked_step",
    "grokking_phases", "import_grokking", "import_mingpt", "input_sensitivity", "load_grokking", "load_paper_model",
    "load_run", "logit_lens", "make_task", "mean_attention", "model_catalog", "model_config", "naive_greedy_decode",
    "paper_checkpoint", "paths", "pca_series", "predict", "progress_series", "read_metrics", "relations", "reproduce",
    "resume", "score_digits", "search_relations", "shipped_data_dir", "spectrum_series", "split_logit_lens", "tasks", "train",
]


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` on the package in ``root`` (found first on the path), with the contract in root/pyproject.toml."""
    return subprocess.run([LINT_IMPORTS, "--no-cache"], cwd=root, env={"PYTHONPATH": str(root), "PATH": ""},
                          capture_output=True, text=True, timeout=120)


def test_the_layer_contract_holds():
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken." in result.stdout


def lint_with(tmp_path, module: str, line: str) -> subprocess.CompletedProcess:
    """``lint_imports`` on a copy of the package whose ``module`` (a path under equiv_tools/) ends with ``line``."""
    shutil.copytree(PACKAGE, tmp_path / "equiv_tools", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    with open(tmp_path / "equiv_tools" / module, "a") as f:
        f.write(line + "\n")
    return lint_imports(tmp_path)


def test_the_contract_fails_on_a_planted_upward_import(tmp_path):
    result = lint_with(tmp_path, "runs/grokking.py", "from equiv_tools.analysis import maps  # planted: runs must not import analysis")
    assert result.returncode == 1
    assert "Contracts: 1 kept, 1 broken." in result.stdout
    assert "equiv_tools.runs.grokking -> equiv_tools.analysis.maps" in result.stdout


def test_the_core_may_not_import_torch(tmp_path):
    result = lint_with(tmp_path, "core/tasks.py", "import torch  # planted: the core is torch-free")
    assert result.returncode == 1 and "equiv_tools.core is not allowed to import torch" in result.stdout


def test_only_the_run_directory_names_its_files():
    """No module but core/rundir.py joins a run directory's file names into paths."""
    names = re.compile(r"""["'](config\.json|metrics\.csv|state\.json|model\.safetensors)["']|/\s*["']checkpoints|["']checkpoints/""")
    offenders = [str(p.relative_to(REPO)) for p in PACKAGE.rglob("*.py") if p.name != "rundir.py" and names.search(p.read_text())]
    assert offenders == []


def test_the_top_level_stays_small():
    entries = sorted(p.name for p in PACKAGE.iterdir() if p.name != "__pycache__")
    assert entries == ["__init__.py", "analysis", "cli.py", "core", "forward", "runs", "views"]
    for sub in ("core", "forward", "runs", "analysis", "views", "views/widgets"):
        assert (PACKAGE / sub / "__init__.py").read_text().startswith('"""')


def test_every_name_from_before_the_layout_resolves():
    for name in NAMES_BEFORE_THE_LAYOUT:
        assert getattr(equiv_tools, name) is not None, name
        assert name in dir(equiv_tools)
