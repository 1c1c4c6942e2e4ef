"""Your own images: a labelling project on a folder of image files (the capstone, notebook 07).

Start with :mod:`.folder`: ``scan`` finds the images under a folder (recursively, any case of .jpg/.jpeg/.png/
.tif/.tiff/.bmp), hashes each file's content and reports what it skipped and why; ``open_project`` makes (or
updates) the project's label store, with each image's split fixed by its content hash. Then :mod:`.cycle`:
``train_round`` (the recipe of notebook 04, on the labels so far) and ``predict_pool`` (confidences and
embeddings for the next labelling session). :mod:`.wholeimage` slides a patch classifier over a larger image
(``sliding_heatmap``, ``overlay``); :mod:`.report` writes the figures and a page; :mod:`.cli` is the command line,
``course-project``.
"""
from .._lazy import face

__getattr__, __dir__ = face(__name__, ["folder", "cycle", "wholeimage", "report", "cli", "demo"],
                             fronts=["folder", "cycle", "wholeimage", "report"])
