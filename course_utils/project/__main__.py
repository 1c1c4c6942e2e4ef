"""``python -m course_utils.project ...``: the same as the ``course-project`` command."""
import sys

from .cli import main

sys.exit(main())
