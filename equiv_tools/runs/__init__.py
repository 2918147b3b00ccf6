"""Making and keeping models: building them from presets and loading run directories (``models``), the
training loop (``training``), foreign checkpoints (``imports``), tensor files (``storage``), and when a
run groks (``grokking``).
"""
