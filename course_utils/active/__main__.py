"""``python -m course_utils.active simulate ...``: see :mod:`course_utils.active.experiment`."""
import sys

from .experiment import main

sys.exit(main())
