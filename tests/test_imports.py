"""The core never imports optional heavy dependencies."""

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

HEAVY = ("torch", "transformers", "dask", "distributed", "matplotlib", "tqdm", "sklearn", "numba")


def test_core_import_is_light():
    code = (
        "import streamlev, streamlev.exact, streamlev.online, streamlev.twopass, streamlev.serialize, "
        "streamlev.streams, streamlev.cli, sys; "
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"imported at core import time: {out.stdout.strip()}"


def test_public_api():
    import streamlev

    for name in streamlev.__all__:
        assert hasattr(streamlev, name), name
    for name in ("leverage_scores", "universal_set", "OnlineLeverage", "two_pass_universal_set", "MultiHeadLeverage"):
        assert name in streamlev.__all__
    assert streamlev.__version__ == importlib.metadata.version("streamlev")  # one version, from pyproject


def test_public_api_covered_by_tests():
    """Every public name is used by some test module: a name added to __all__ without a test fails here."""
    sources = "\n".join(p.read_text() for p in Path(__file__).resolve().parent.glob("test_*.py"))
    import streamlev

    untested = [name for name in streamlev.__all__ if not re.search(rf"\b{re.escape(name)}\b", sources)]
    assert not untested, f"public names no test uses: {untested}"
