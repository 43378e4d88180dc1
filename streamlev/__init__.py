"""streamlev: heavy keys of attention in a stream, with bounded memory and proven guarantees.

The public API is listed in ``__all__``; everything else is private.
"""

from .exact import leverage_scores, universal_set

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "leverage_scores",
    "universal_set",
]
