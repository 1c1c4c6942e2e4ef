"""The full-mode rehearsal (``make rehearse``): a maintainer's tool, never part of a lesson.

It runs every notebook with full-size data and models on a CPU, with each training and query loop capped, to
measure full mode's memory and count its work for a T4 estimate (``scripts/run_course.py --rehearse``).
``import course_utils`` loads this subpackage only when ``COURSE_REHEARSAL=1`` (:func:`course_utils.runtime.rehearsal`),
and :func:`install` wraps the course's functions from outside; nothing here runs in a normal session.

Start reading at :mod:`.core` (what is capped, and the record of full mode's work), then :mod:`.caps` (``install``
and the wrappers of the engines, the AL outputs, Keras and the data) and :mod:`.xai_caps` (the XAI methods);
:mod:`.repeat` is the one way a loop is shortened (run the first batches, repeat their outputs); :mod:`.flops`
counts a model's FLOPs per image.
"""
from .caps import install, installed, uninstall
from .core import CAPS, Caps, record_work
from .repeat import FirstBatches, FirstOutputs, repeat_rows

__all__ = ["CAPS", "Caps", "install", "uninstall", "installed", "record_work", "FirstBatches", "FirstOutputs",
           "repeat_rows"]
