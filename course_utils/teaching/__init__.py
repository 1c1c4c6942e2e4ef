"""Teaching: what a notebook shows and checks, around the lesson itself.

- :mod:`.checks`: ``check`` (an exercise's answer, with a hint) and ``expect`` (a lesson's claim in one line);
- :mod:`.exercises`: the exercises and their reference answers;
- :mod:`.plots`: every figure, titled and labelled;
- :mod:`.widgets`: the slider panel and the results board for live demos.
"""
from .._lazy import face

__getattr__, __dir__ = face(__name__, ["checks", "exercises", "plots", "widgets"], fronts=["checks"])
