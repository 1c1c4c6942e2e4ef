"""Active learning: which images to label next, the loop that tests it, and the human labelling work.

Start with :mod:`.strategies` (one ``query`` interface, one-line scores, ``get_strategy``; the batch strategies'
distances in :mod:`.diversity`), then :mod:`.loop`
(the learner and the simulated loop, ``simulate``; its names are also this package's: ``cu.active.simulate``).
The model outputs a strategy needs come from :mod:`.torch_outputs` or :mod:`.keras_outputs`. The labels people
give live in :mod:`.labels` (``LabelStore``, SQLite, one write path) and are given in :mod:`.labeller` (the
keyboard widget, with ``labeller.js``). :mod:`.experiment` runs 05's simulation from the command line
(``python -m course_utils.active simulate`` or ``course-al simulate``).
"""
from .._lazy import face

__getattr__, __dir__ = face(__name__, ["loop", "strategies", "diversity", "torch_outputs", "keras_outputs", "labels",
                                       "labeller", "experiment"], fronts=["loop"])
