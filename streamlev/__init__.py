"""streamlev: heavy keys of attention in a stream, with bounded memory and proven guarantees.

The public API is listed in ``__all__``; everything else is private.
"""

from ._attention import (
    LeverageKVCache,
    attention,
    attention_mass_kept,
    attention_weights,
    heavy_entry_recall,
    relative_output_error,
    select_keys,
)
from ._threads import get_num_threads, set_num_threads
from .approx import ApproxGuaranteeWarning, ApproxLeverage
from .comparison import Comparison, compare
from .exact import leverage_scores, universal_set
from .lewis import ConvergenceError, OnlinePowerSet, lewis_weights, universal_set_p
from .online import MultiHeadLeverage, OnlineLeverage
from .twopass import two_pass_universal_set

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "ApproxGuaranteeWarning",
    "ApproxLeverage",
    "Comparison",
    "ConvergenceError",
    "LeverageKVCache",
    "OnlinePowerSet",
    "attention",
    "attention_mass_kept",
    "compare",
    "attention_weights",
    "heavy_entry_recall",
    "get_num_threads",
    "lewis_weights",
    "relative_output_error",
    "select_keys",
    "set_num_threads",
    "universal_set_p",
    "MultiHeadLeverage",
    "OnlineLeverage",
    "leverage_scores",
    "two_pass_universal_set",
    "universal_set",
]
