"""Real attention data bundled with streamlev (numpy only: no torch needed to read it).

:func:`load_minilm_keys` returns the queries and keys that
sentence-transformers/all-MiniLM-L6-v2 computes in every layer and head for
one 512-token passage of real English text (the start of the GPL-3 text in
/usr/share/common-licenses).  The sample was captured by
``python -m streamlev.eval.minilm --export-sample`` and its provenance
(model, package versions, source file and its sha256, command, date) is
stored beside it and returned with it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources

import numpy as np

__all__ = ["AttentionSample", "load_minilm_keys"]

_NPZ = "minilm_keys.npz"
_PROVENANCE = "minilm_keys_provenance.json"


@dataclass(frozen=True)
class AttentionSample:
    """Queries and keys of a transformer, per layer and head, for one passage.

    Attributes
    ----------
    K, Q : numpy.ndarray, shape (layers, heads, tokens, head_dim)
        Keys and queries as the model computes them (outputs of the key/query
        projections, bias included, before the 1/sqrt(head_dim) scaling).
    tokens : tuple of str
        The word-pieces, ``[CLS]`` first and ``[SEP]`` last.
    token_ids : numpy.ndarray of int32, shape (tokens,)
    provenance : dict
        Model, package versions, text source, sha256 of the stored arrays,
        date and the command that produced the sample.
    """

    K: np.ndarray = field(repr=False)
    Q: np.ndarray = field(repr=False)
    tokens: tuple = field(repr=False)
    token_ids: np.ndarray = field(repr=False)
    provenance: dict = field(repr=False)

    @property
    def n_layers(self) -> int:
        """Number of layers (6 for MiniLM-L6)."""
        return int(self.K.shape[0])

    @property
    def n_heads(self) -> int:
        """Attention heads per layer (12)."""
        return int(self.K.shape[1])

    @property
    def n_tokens(self) -> int:
        """Tokens in the passage."""
        return int(self.K.shape[2])

    @property
    def head_dim(self) -> int:
        """Dimension d of each head's keys (32)."""
        return int(self.K.shape[3])

    @property
    def scale(self) -> float:
        """The model's softmax scale 1/sqrt(head_dim)."""
        return 1.0 / float(np.sqrt(self.head_dim))

    def _check(self, layer: int, head: int) -> None:
        if not (0 <= layer < self.n_layers and 0 <= head < self.n_heads):
            raise ValueError(
                f"layer={layer}, head={head} is out of range; the sample has layers 0..{self.n_layers - 1} "
                f"and heads 0..{self.n_heads - 1}"
            )

    def keys(self, layer: int, head: int) -> np.ndarray:
        """Return the keys of one layer and head, shape (tokens, head_dim), in token order."""
        self._check(layer, head)
        return self.K[layer, head]

    def queries(self, layer: int, head: int) -> np.ndarray:
        """Return the queries of one layer and head, shape (tokens, head_dim)."""
        self._check(layer, head)
        return self.Q[layer, head]

    def attention(self, layer: int, head: int) -> np.ndarray:
        """Return the model's softmax attention of one head, softmax(Q Kᵀ/sqrt(d)), float64 (tokens, tokens).

        The passage has no padding, so no mask applies.  Computed from the
        stored float16 values (float16 rounding changes the logits by about
        1e-3 relative).
        """
        Q = self.queries(layer, head).astype(np.float64)
        K = self.keys(layer, head).astype(np.float64)
        L = (Q @ K.T) * self.scale
        L -= L.max(axis=1, keepdims=True)
        np.exp(L, out=L)
        L /= L.sum(axis=1, keepdims=True)
        return L

    def heads(self):
        """Iterate over (layer, head) pairs."""
        for layer in range(self.n_layers):
            for head in range(self.n_heads):
                yield layer, head


def load_minilm_keys(*, dtype=np.float32, verify: bool = False) -> AttentionSample:
    """Load the bundled MiniLM key sample (6 layers x 12 heads x 512 tokens x 32).

    Parameters
    ----------
    dtype : {numpy.float32, numpy.float64, numpy.float16}, default float32
        dtype of the returned ``K`` and ``Q`` (stored as float16; widening is exact).
    verify : bool, default False
        Recompute the sha256 of the stored arrays and compare with the provenance.

    Returns
    -------
    AttentionSample

    Raises
    ------
    FileNotFoundError
        If the package was installed without its data files.
    ValueError
        If the stored arrays disagree with the provenance (shape, or sha256 when ``verify``).
    """
    dt = np.dtype(dtype)
    if dt not in (np.float16, np.float32, np.float64):
        raise TypeError(f"dtype must be float16, float32 or float64, got {dt}; pass dtype=numpy.float32")
    data = resources.files("streamlev") / "data"
    try:
        with (data / _NPZ).open("rb") as fh, np.load(fh, allow_pickle=False) as z:
            K16, Q16 = z["K"], z["Q"]
            tokens = tuple(str(t) for t in z["tokens"])
            token_ids = z["token_ids"]
        provenance = json.loads((data / _PROVENANCE).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            f"the bundled sample {_NPZ} is missing from {data}; reinstall streamlev with its data files, or "
            "recreate it: python -m streamlev.eval.minilm --export-sample streamlev/data/minilm_keys.npz"
        ) from exc
    shape = provenance["shape"]
    expect = (shape["layers"], shape["heads"], shape["tokens"], shape["head_dim"])
    if K16.shape != expect or Q16.shape != expect or len(tokens) != expect[2]:
        raise ValueError(
            f"bundled sample has K {K16.shape}, Q {Q16.shape}, {len(tokens)} tokens; "
            f"its provenance records {expect}: regenerate it with --export-sample"
        )
    if verify:
        for name, arr in (("K", K16), ("Q", Q16)):
            got = hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()
            if got != provenance["sha256"][name]:
                raise ValueError(
                    f"sha256 of the bundled {name} is {got}, provenance says "
                    f"{provenance['sha256'][name]}: the file is corrupted; reinstall streamlev"
                )
    return AttentionSample(
        K=K16.astype(dt), Q=Q16.astype(dt), tokens=tokens, token_ids=token_ids, provenance=provenance
    )
