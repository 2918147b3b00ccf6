"""What people look at: matplotlib figures from the analyses' DataFrames (``plots``), a run's main figures
(``figures``), and the ipywidgets explorers (``widgets``, one per file). No logic of their own: they
call the layers below.
"""
