"""Explainable AI: heat maps for torch and Keras classifiers, and the tests that say whether to trust them.

Start with :mod:`.methods` (``METHODS``, ``explain``, ``grad_cam``, the randomisation check; its names are also
this package's: ``cu.xai.grad_cam``). Each framework has one small adapter, :mod:`.torch_adapter` and
:mod:`.keras_adapter`: a new method is written once, in :mod:`.methods`. :mod:`.faithfulness` has deletion and
insertion against a random map.
"""
from .._lazy import face

__getattr__, __dir__ = face(__name__, ["methods", "faithfulness", "torch_adapter", "keras_adapter"],
                            fronts=["methods"])
