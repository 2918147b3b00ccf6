"""ipywidgets explorers, composed from the Python API.

* ``EquivalenceExplorer``: type or slide a and b, see the model's answer as one
  chip per answer token (most significant first) with the model's probability
  of each, the truth, the best relation's answer, and the ID input the model
  treats the pair as (1349 + 2705 -> 1054, "answers as 349 + 705").
* ``MapViewer``: a heatmap over a grid of (a, b): correct / matches the
  relation / other, with the shares; and the model's answer on one typed pair.
* ``RepresentationExplorer``: PCA of hidden states through a run's checkpoint
  series in one shared projection, with the silhouette of the chosen colouring.
* ``TrainingDynamicsExplorer``: a grokking run's checkpoint series: the embedding's
  Fourier spectrum at each step, and the loss curves and progress measures with the
  step marked and the three phases shaded.
* ``PatchingExplorer``: activation patching of a clean input into a corrupted
  one (349 + 705 into 449 + 705), as a layer x position heatmap per activation kind.

All are testable without a browser: set a control's ``.value`` (observers
run at once) and read ``.result`` / ``.pair`` / ``.frame`` / ``.figure``. Bad
input, an unknown model or any other error shows a message in the widget and
never raises into the notebook.
"""
from equiv_tools.views.widgets.equivalence import EquivalenceExplorer
from equiv_tools.views.widgets.map_viewer import MapViewer
from equiv_tools.views.widgets.patching import PatchingExplorer
from equiv_tools.views.widgets.representation import RepresentationExplorer
from equiv_tools.views.widgets.training_dynamics import TrainingDynamicsExplorer

__all__ = ["EquivalenceExplorer", "MapViewer", "PatchingExplorer", "RepresentationExplorer", "TrainingDynamicsExplorer"]
