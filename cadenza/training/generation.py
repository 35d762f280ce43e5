"""Moved to :mod:`cadenza.generation`; these names stay importable from here for old code."""

from cadenza.generation import *  # noqa: F403
from cadenza.generation import __all__  # noqa: F401
