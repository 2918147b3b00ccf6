"""Running a model: the one fast forward over a TransformerBridge's weights (``lean``), greedy decoding and
teacher-forced scoring (``decoding``), activations at hook names (``representations``), and devices.

Imports ``core`` only: nothing here knows about run directories or training.
"""
