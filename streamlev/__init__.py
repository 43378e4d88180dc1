"""streamlev: heavy keys of attention in a stream, with bounded memory and proven guarantees.

The public API is listed in ``__all__``; everything else is private.
"""

from .exact import leverage_scores, universal_set
from .online import MultiHeadLeverage, OnlineLeverage
from .twopass import two_pass_universal_set

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "MultiHeadLeverage",
    "OnlineLeverage",
    "leverage_scores",
    "two_pass_universal_set",
    "universal_set",
]
