"""Exercise checks (is an answer right? a hint when not) and :func:`expect`, a lesson's claim checked in one line."""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["check", "check_claim", "close_enough", "expect"]


def check(answer: Any, expected: Any, *, hint: str, name: str = "exercise",
          rtol: float = 1e-3, atol: float = 1e-6) -> bool | None:
    """Compare ``answer`` with ``expected`` and print a verdict.

    Returns ``True`` (right), ``False`` (wrong, with the hint) or ``None`` when the answer is
    still the placeholder ``None`` / ``...``, so running an unanswered notebook never fails.
    Numbers and arrays are compared with a tolerance; everything else with ``==``.
    """
    if answer is None or answer is Ellipsis:
        print(f"[{name}] not answered yet. Hint: {hint}")
        return None
    try:
        ok = close_enough(answer, expected, rtol=rtol, atol=atol)
    except (TypeError, ValueError) as exc:
        print(f"[{name}] could not compare your answer ({type(answer).__name__}) with the expected "
              f"{type(expected).__name__}: {exc}. Hint: {hint}")
        return False
    if ok:
        print(f"[{name}] correct!")
        return True
    print(f"[{name}] not quite. Hint: {hint}")
    return False


def expect(condition: Any, claim: str) -> None:
    """Check what a lesson claims, in one line: ``cu.expect(loss[-1] < loss[0], "the training loss did not fall")``.
    Raises ``AssertionError(claim)`` when ``condition`` is false (say in ``claim`` what went wrong)."""
    if not condition:
        raise AssertionError(claim)


def check_claim(claim: str, interval: Any, *, above: float = 0.0) -> None:
    """A lesson's claim about a difference, checked by its interval and said in the student's words:
    ``cu.check_claim("alpha 0.75 finds more cancers than alpha 0.25", diff)`` prints ``✓ <claim>: <interval>`` when
    the whole interval lies above ``above`` (0: the difference is clear), else raises ``AssertionError`` naming the
    claim and the interval. ``interval`` is a :class:`course_utils.stats.PairedInterval` (``.low``, printable)."""
    low = float(interval.low)
    if not low > above:
        raise AssertionError(f"✗ {claim}: not shown by this run, {interval} (its lower end is not above {above:g})")
    print(f"✓ {claim}: {interval}")


def close_enough(answer: Any, expected: Any, *, rtol: float, atol: float) -> bool:
    """Whether ``answer`` equals ``expected``: strings without case, sets as sets, numbers within tolerance."""
    if isinstance(expected, str) or isinstance(answer, str):
        return str(answer).strip().lower() == str(expected).strip().lower()
    if isinstance(expected, (set, frozenset)):
        return set(answer) == set(expected)
    if isinstance(expected, bool):
        return bool(answer) == expected
    a = np.asarray(answer)
    e = np.asarray(expected)
    if a.dtype.kind in "biuf" and e.dtype.kind in "biuf":
        if a.shape != e.shape:
            raise ValueError(f"shape {a.shape} differs from the expected {e.shape}")
        return bool(np.allclose(a, e, rtol=rtol, atol=atol, equal_nan=True))
    return bool(np.all(a == e))
