"""What a model learned: relation ranking and class maps (``discovery``), relations found from a grammar
(``relation_search``), answer maps (``maps``), activation patching (``patching``), attention and the logit
lens (``reading``), input-digit sensitivity (``sensitivity``), PCA through training (``projection``),
Fourier structure and progress measures (``fourier``), accuracy (``evaluation``) and the paper's headline
numbers (``reproduce``). Each returns tidy DataFrames.
"""
