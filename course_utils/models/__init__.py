"""Models: the networks the notebooks train, for both frameworks, and the record of what was built.

- :mod:`.keras_models` (02, 03, 06): a small CNN and EfficientNet bases for Keras; BatchNorm repair;
- :mod:`.lite0_keras`: EfficientNet-Lite0's offline ImageNet weights, converted from PyTorch for Keras;
- :mod:`.torch_models` (04-06): the same architectures for PyTorch, with freezing and the Grad-CAM layer;
- :mod:`.info`: ``ModelInfo``, what a builder built (framework-neutral);
- :mod:`.final`: a notebook's final model, saved under a fixed name for a later notebook (``save``, ``load``).
"""
from .._lazy import face

__getattr__, __dir__ = face(__name__, ["keras_models", "lite0_keras", "torch_models", "info", "final"],
                            fronts=["info"])
