"""The torch-free core: what a task is (layouts, truth, splits), candidate relations, configs and presets,
the kit's one exception, where shipped runs live, and the layout of a run directory (``RunDir``).

Nothing here imports torch or any other layer, so the CLI validates its arguments with these alone.
"""
