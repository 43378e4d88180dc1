"""streamlev: heavy keys of attention in a stream, with bounded memory and proven guarantees.

The public API is listed in ``__all__``; everything else is private.
"""

import importlib

#: Where each public name lives.  The modules load at the first access of one of their names (PEP 562), so
#: ``import streamlev`` costs a few milliseconds and a short command (``streamlev select`` on a small file)
#: loads only what it uses.
_WHERE = {
    "LeverageKVCache": "._attention",
    "attention": "._attention",
    "attention_mass_kept": "._attention",
    "attention_weights": "._attention",
    "heavy_entry_recall": "._attention",
    "relative_output_error": "._attention",
    "select_keys": "._attention",
    "get_num_threads": "._threads",
    "set_num_threads": "._threads",
    "ApproxGuaranteeWarning": ".approx",
    "ApproxLeverage": ".approx",
    "Comparison": ".comparison",
    "compare": ".comparison",
    "leverage_scores": ".exact",
    "universal_set": ".sets",
    "ConvergenceError": ".lewis",
    "OnlinePowerSet": ".powerset",
    "lewis_weights": ".lewis",
    "universal_set_p": ".lewis",
    "MultiHeadLeverage": ".online",
    "OnlineLeverage": ".online",
    "two_pass_universal_set": ".twopass",
}


def __getattr__(name: str):
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'streamlev' has no attribute {name!r}")
    value = getattr(importlib.import_module(where, __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_WHERE))


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
