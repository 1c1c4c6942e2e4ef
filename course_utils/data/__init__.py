"""Data: where the course's images come from and how they reach a model.

Start with :mod:`.loaders` (``load_malaria``, ``load_medmnist``, ``load_malaria_folder``, the stratified splits;
its names are also this package's: ``cu.data.load_malaria``). Then:

- :mod:`.splits`: ``Split`` and the stratified subsets and splits (numpy only);
- :mod:`.pipelines`: numpy images to ``tf.data`` datasets, torch loaders and TFRecords;
- :mod:`.augment`: torchvision transforms for training and evaluation;
- :mod:`.tfds_malaria`: the real NIH malaria download through tensorflow-datasets;
- :mod:`.standins` (the renderers) and :mod:`.standin_cache` (generated once, cached, checked): the stand-ins
  used when the real data cannot be downloaded.
"""
from .._lazy import face

__getattr__, __dir__ = face(__name__, ["loaders", "splits", "pipelines", "augment", "tfds_malaria", "standins",
                                       "standin_cache"], fronts=["loaders"])
