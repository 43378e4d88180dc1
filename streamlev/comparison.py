"""Compare sketch accuracy: every method of :mod:`streamlev.baselines` on the same key stream.

:func:`compare` reads a source (anything :func:`streamlev.streams.iter_blocks` reads: an array,
a ``.npy``/``.npz``/CSV path, a zero-argument callable returning fresh blocks) once for the exact
answer and then once per method, size and seed (twice for two-pass methods), always with the
same blocks.  It returns a :class:`Comparison`: per run the set found, its recall and precision
against the exact set, the quantiles of the score ratio τ̃/τ on the exact set where the method
has scores, the peak state in bytes, the passes and the rows per second; per method and size a
summary over seeds; and ``to_json``, ``from_json``, ``to_markdown`` and ``plot``.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from ._factor import Factor, at_least
from ._validate import check_eps, check_p, check_positive_int, check_ridge

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["Comparison", "compare", "QUANTILES"]

#: Quantiles of the score ratio τ̃/τ reported for each run.
QUANTILES = (0.0, 0.1, 0.5, 0.9, 1.0)
_UNITS = {"b": 1, "kb": 1000, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}
_SIZE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]*)\s*$", re.IGNORECASE)


def _fmt_bytes(b: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if b >= scale:
            return f"{b / scale:.3g} {unit}"
    return f"{b:.0f} B"


def _mean_std(values):
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    a = np.asarray(vals, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


@dataclass(eq=False)
class Comparison:
    """The result of :func:`compare`.

    Attributes
    ----------
    source : str
        What was read (a path, or the type of the object).
    n, d : int
        Rows and dimension of the keys.
    eps, ridge, p : float
        The parameters of the exact set ``{i : τ_i >= eps}`` (ℓ_p sensitivities for p != 2).
    seeds : list of int
        Seeds of the randomised methods.
    exact_set : numpy.ndarray of int64
        The exact set.
    runs : list of dict
        One per method, size and seed: ``method``, ``label``, ``param``, ``size``, ``seed``
        (None for deterministic methods), ``passes``, ``set`` (sorted ids), ``set_size``,
        ``recall``, ``precision`` (None when the method selects nothing), ``ratio_quantiles``
        (τ̃/τ at :data:`QUANTILES` over the exact set's rows the method scored; None without
        scores), ``scored``, ``state_bytes`` (peak
        ``nbytes`` of the sketch, read after every block), ``seconds`` (wall time of all its
        passes, reading included), ``rows_per_s`` (n / seconds) and ``info`` (method details:
        the ridge used, c, the JL dimension, ...).
    """

    source: str
    n: int
    d: int
    eps: float
    ridge: float
    p: float
    seeds: list
    exact_set: np.ndarray
    runs: list = field(default_factory=list)

    # -- summaries ----------------------------------------------------------------------------------
    def labels(self) -> list:
        """Method labels in run order (one per method and size)."""
        seen = []
        for r in self.runs:
            if r["label"] not in seen:
                seen.append(r["label"])
        return seen

    def summary(self) -> list:
        """One dict per method and size: means and standard deviations over seeds."""
        out = []
        for label in self.labels():
            rs = [r for r in self.runs if r["label"] == label]
            row = {
                "label": label,
                "method": rs[0]["method"],
                "param": rs[0]["param"],
                "size": rs[0]["size"],
                "passes": rs[0]["passes"],
                "runs": len(rs),
            }
            for key in ("set_size", "recall", "precision", "state_bytes", "seconds", "rows_per_s"):
                row[key], row[key + "_std"] = _mean_std([r[key] for r in rs])
            errors = [r["info"]["error"] for r in rs if "error" in r["info"]]
            row["errors"], row["error"] = len(errors), (errors[0] if errors else None)
            qs = [r["ratio_quantiles"] for r in rs if r["ratio_quantiles"] is not None]
            row["ratio_quantiles"] = (
                [float(np.median([q[i] for q in qs])) for i in range(len(QUANTILES))] if qs else None
            )
            out.append(row)
        return out

    # -- serialisation --------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain JSON-ready dict (sets as lists of ints)."""
        return {
            "source": self.source,
            "n": int(self.n),
            "d": int(self.d),
            "eps": self.eps,
            "ridge": self.ridge,
            "p": self.p,
            "seeds": [int(s) for s in self.seeds],
            "exact_set": [int(i) for i in self.exact_set],
            "quantiles": list(QUANTILES),
            "runs": self.runs,
            "summary": self.summary(),
        }

    def to_json(self, **kwargs: object) -> str:
        """The result as a JSON string (``kwargs`` go to :func:`json.dumps`)."""
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_json(cls, text: str) -> Comparison:
        """Rebuild a result from :meth:`to_json` output."""
        obj = json.loads(text)
        return cls(
            source=obj["source"],
            n=int(obj["n"]),
            d=int(obj["d"]),
            eps=float(obj["eps"]),
            ridge=float(obj["ridge"]),
            p=float(obj["p"]),
            seeds=[int(s) for s in obj["seeds"]],
            exact_set=np.asarray(obj["exact_set"], dtype=np.int64),
            runs=list(obj["runs"]),
        )

    def __eq__(self, other) -> bool:
        if not isinstance(other, Comparison):
            return NotImplemented
        return self.to_json(sort_keys=True) == other.to_json(sort_keys=True)

    __hash__ = None  # mutable: not hashable

    # -- presentation ---------------------------------------------------------------------------------
    def to_markdown(self) -> str:
        """A Markdown table: one row per method and size (means ± std over seeds)."""

        def pm(mean, std, fmt):
            if mean is None:
                return "–"
            return fmt.format(mean) + (f" ± {fmt.format(std)}" if std else "")

        lines = [
            f"n = {self.n:,}, d = {self.d}, eps = {self.eps:g}"
            + (f", ridge = {self.ridge:g}" if self.ridge else "")
            + (f", p = {self.p:g}" if self.p != 2.0 else "")
            + f", exact set: {self.exact_set.size} keys, seeds: {len(self.seeds)}",
            "",
            "| method | passes | set size | recall | precision | score ratio q10 / q50 / q90 | state | rows/s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for s in self.summary():
            q = s["ratio_quantiles"]
            ratio = "–" if q is None else f"{q[1]:.3f} / {q[2]:.3f} / {q[3]:.3f}"
            if s["errors"]:
                ratio = f"failed in {s['errors']} of {s['runs']} runs: {s['error']}"
            lines.append(
                f"| {s['label']} | {s['passes']} | {pm(s['set_size'], s['set_size_std'], '{:.1f}')} "
                f"| {pm(s['recall'], s['recall_std'], '{:.3f}')} | {pm(s['precision'], s['precision_std'], '{:.3f}')} "
                f"| {ratio} | {_fmt_bytes(s['state_bytes'])} | {s['rows_per_s']:,.0f} |"
            )
        return "\n".join(lines) + "\n"

    def plot(self, axes: Sequence[Axes] | None = None) -> Figure:
        """Recall and precision against peak state bytes, one point per method and size, bars over seeds.

        Parameters
        ----------
        axes : pair of matplotlib Axes, optional
            Where to draw (a new figure with two panels when omitted).

        Returns
        -------
        matplotlib.figure.Figure
        """
        import matplotlib.pyplot as plt  # noqa: PLC0415 - optional dependency

        if axes is None:
            fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharex=True)
        else:
            fig = axes[0].figure
        summary = self.summary()
        methods = []
        for s in summary:
            if s["method"] not in methods:
                methods.append(s["method"])
        markers = "osD^v<>ph*"
        for k, method in enumerate(methods):
            for ax, key in zip(axes, ("recall", "precision")):
                rows = [s for s in summary if s["method"] == method and s[key] is not None]
                if not rows:  # the method failed, or (precision) selected nothing: see to_markdown
                    continue
                ax.errorbar(
                    [s["state_bytes"] for s in rows],
                    [s[key] for s in rows],
                    yerr=[s[key + "_std"] or 0.0 for s in rows],
                    marker=markers[k % len(markers)],
                    color=f"C{k % 10}",
                    ls="-" if len(rows) > 1 else "none",
                    capsize=3,
                    label=method,
                )
        for ax, key in zip(axes, ("recall", "precision")):
            ax.set_xscale("log")
            ax.set_xlabel("peak state (bytes)")
            ax.set_ylabel(key)
            ax.set_ylim(-0.03, 1.03)
            ax.grid(alpha=0.3)
        axes[0].set_title(f"recall of the exact set ({self.exact_set.size} keys, eps = {self.eps:g})")
        axes[1].set_title("precision")
        axes[1].legend(fontsize=8, loc="best")
        fig.tight_layout()
        return fig


# ------------------------------------------------------------------------------------------------
# method specifications
# ------------------------------------------------------------------------------------------------


def _parse_size(text: str):
    """'512' -> (512, None); '64KiB' -> (None, 65536)."""
    m = _SIZE_RE.match(text)
    if not m:
        raise ValueError(f"cannot read the size {text!r}: write a number (the method's size) or bytes such as 64KiB")
    value, unit = float(m.group(1)), m.group(2).lower()
    if not unit:
        return (int(value) if value == int(value) else value), None
    if unit not in _UNITS:
        raise ValueError(f"unknown unit {m.group(2)!r} in {text!r}; use B, KB, MB, KiB, MiB or GiB")
    return None, int(value * _UNITS[unit])


def _resolve(methods, dim: int, p: float):
    """[(Method, size, budget_bytes or None)] from the ``methods`` argument."""
    from .baselines import METHODS  # noqa: PLC0415

    if methods is None:
        names = ["exact", "power"] if p != 2.0 else [n for n, m in METHODS.items() if m.p2 or n == "exact"]
        methods = [n for n in names if n != "power" or p != 2.0]
    if isinstance(methods, str):
        methods = [methods]
    out = []
    for spec in methods:
        budget = None
        if isinstance(spec, tuple):
            name, size = spec
        elif isinstance(spec, str):
            name, _, size_text = spec.partition(":")
            size = None
            if size_text:
                size, budget = _parse_size(size_text)
        else:
            raise TypeError(f"a method is a name such as 'countsketch' or 'countsketch:512', got {spec!r}")
        name = name.strip().lower()
        if name not in METHODS:
            raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
        meth = METHODS[name]
        if name == "power" and p == 2.0:
            raise ValueError("method 'power' is for p != 2 (use 'online' or 'exact' for p = 2)")
        if (size is not None or budget is not None) and meth.param is None:
            raise ValueError(f"method {name!r} has no size parameter; write it without ':SIZE'")
        if budget is not None:
            size = meth.size_for_bytes(dim, budget)
        sizes = [size] if size is not None else meth.default_sizes(dim)
        out.extend((meth, s, budget) for s in sizes)
    return out


def _label(meth, size, budget) -> str:
    if meth.param is None:
        return meth.name
    text = f"{meth.name} {meth.param}={size:g}" if isinstance(size, float) else f"{meth.name} {meth.param}={size}"
    return text + (f" ({_fmt_bytes(budget)} budget)" if budget is not None else "")


def _auto_ridge(sv2: np.ndarray) -> float:
    """λ = 1e-3·‖K‖_F²/d: a thousandth of the mean eigenvalue of KᵀK, so that τ^λ ≈ τ on the directions that matter."""
    lam = 1e-3 * float(np.sum(sv2)) / sv2.size
    return lam if lam > 0.0 else np.finfo(float).tiny


def _make(meth, size, *, dim, eps, ridge, p, seed, sv2):
    kw = {"ridge": ridge, "seed": seed}
    info = {}
    if meth.name == "exact":
        kw["p"] = p
    elif meth.name == "power":
        kw = {"p": p}
    elif meth.name == "approx":
        kw = {"ridge": ridge if ridge > 0 else _auto_ridge(sv2)}
        info["ridge_used"] = kw["ridge"]
    if meth.param is not None:
        kw[meth.param] = size
    return meth.cls(dim, eps, **kw), info


# ------------------------------------------------------------------------------------------------
# the harness
# ------------------------------------------------------------------------------------------------


def _reference(blocks: Callable[[], Iterable], eps, ridge, p, tick):
    """(n, d, exact set, exact scores or None, squared singular values or None)."""
    if p != 2.0:
        from .sets import universal_set  # noqa: PLC0415

        parts = []
        for B in blocks():
            parts.append(np.array(B))
            tick(B.shape[0])
        if not parts:
            raise ValueError("the source holds no keys; nothing to compare")
        K = np.concatenate(parts)
        return K.shape[0], K.shape[1], universal_set(K, eps, p=p, ridge=ridge), None, None
    fac = None
    for B in blocks():
        if fac is None:
            fac = Factor(B.shape[1], ridge)
        fac.update(B)
        tick(B.shape[0])
    if fac is None:
        raise ValueError("the source holds no keys; nothing to compare")
    tau = np.empty(fac.n)
    pos = 0
    for B in blocks():
        tau[pos : pos + B.shape[0]] = np.clip(fac.scores(B), 0.0, 1.0)
        pos += B.shape[0]
        tick(B.shape[0])
    if pos != fac.n:
        raise ValueError(f"the source yielded {fac.n} rows, then {pos}; it must yield the same rows on every read")
    sv2 = np.linalg.svd(fac.R, compute_uv=False) ** 2
    return fac.n, fac.dim, np.flatnonzero(at_least(tau, eps)).astype(np.int64), tau, sv2


def _run(meth, size, budget, seed, *, blocks, n, d, eps, ridge, p, sv2, exact, tau, tick):
    sk, info = _make(meth, size, dim=d, eps=eps, ridge=ridge, p=p, seed=seed, sv2=sv2)
    peak = sk.nbytes
    t0 = time.perf_counter()
    for pass_ in range(meth.passes):
        feed = sk.update if pass_ == 0 else sk.second_pass
        for B in blocks():
            feed(B)
            peak = max(peak, sk.nbytes)
            tick(B.shape[0])
    try:
        U = np.asarray(sk.universal_set(), dtype=np.int64)
    except np.linalg.LinAlgError as exc:  # the method itself fails on these keys (kvpress's Cholesky): report it
        U, info["error"] = None, " ".join(str(exc).split())
    peak = max(peak, sk.nbytes)
    seconds = time.perf_counter() - t0
    if U is None:
        return _record(meth, size, budget, seed, None, exact, None, None, peak, seconds, n, info)
    ratios, scored = None, None
    if tau is not None and hasattr(sk, "scores") and not (meth.name == "exact" and p != 2.0):
        ids, est = sk.scores()
        sel = np.isin(ids, exact)
        scored = int(np.count_nonzero(sel))
        if scored:
            r = np.asarray(est)[sel] / tau[ids[sel]]
            ratios = [float(v) for v in np.quantile(r, QUANTILES)]
    for attr in ("c", "jl_dim_", "jitter_used_", "n_kept"):
        v = getattr(sk, attr, None)
        if v is not None:
            info[attr.rstrip("_")] = float(v) if isinstance(v, float) else v
    return _record(meth, size, budget, seed, U, exact, ratios, scored, peak, seconds, n, info)


def _record(meth, size, budget, seed, U, exact, ratios, scored, peak, seconds, n, info) -> dict:  # noqa: PLR0917
    """One run as a plain dict (U None: the method failed, ``info["error"]`` says why)."""
    hit = None if U is None else np.intersect1d(U, exact).size
    return {
        "method": meth.name,
        "label": _label(meth, size, budget),
        "param": meth.param,
        "size": size,
        "budget_bytes": budget,
        "seed": seed if meth.randomised else None,
        "passes": meth.passes,
        "set": None if U is None else [int(i) for i in U],
        "set_size": None if U is None else int(U.size),
        "recall": None if U is None else (hit / exact.size if exact.size else 1.0),
        "precision": hit / U.size if U is not None and U.size else None,
        "ratio_quantiles": ratios,
        "scored": scored,
        "state_bytes": int(peak),
        "seconds": seconds,
        "rows_per_s": n / seconds if seconds > 0 else math.inf,
        "exact_method": meth.exact,
        "info": info,
    }


def compare(
    source: str | os.PathLike | ArrayLike | Callable[[], Iterable[ArrayLike]],
    eps: float,
    methods: Sequence | None = None,
    *,
    seeds: int | Sequence[int] = 3,
    ridge: float = 0.0,
    p: float = 2.0,
    block_size: int | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    **read_kw: object,
) -> Comparison:
    """Run leverage sketches side by side on one key stream and measure them against the exact set.

    Parameters
    ----------
    source : array_like, str, os.PathLike or callable
        Keys, anything :func:`streamlev.streams.iter_blocks` reads that can be read several
        times: an (n, d) array, a ``.npy``/``.npz``/``.csv`` path, or a zero-argument callable
        returning a fresh iterable of blocks.
    eps : float in (0, 1]
        Threshold of the exact set ``{i : τ_i >= eps}`` and of every method.
    methods : sequence of str, optional
        Names from :data:`streamlev.baselines.METHODS`, each optionally with a size:
        ``"countsketch"`` (its default sizes), ``"countsketch:512"`` (its natural size) or
        ``"countsketch:64KiB"`` (a memory budget in bytes, converted to its natural size).
        Default: every p = 2 method (``exact`` and ``power`` for p != 2).
    seeds : int or sequence of int, default 3
        Seeds of the randomised methods (an int N means 0..N-1); deterministic methods run once.
    ridge : float, default 0.0
        λ >= 0 of the exact set and of every method.  ``approx`` needs λ > 0: with ridge = 0 it
        runs with λ = 1e-3·‖K‖_F²/d (a thousandth of the mean eigenvalue of KᵀK, from the
        reference pass; ``info["ridge_used"]``), so that its target {τ^λ >= eps} is close to the
        plain set, and reports its factor c = 1 + Δ/λ (``info["c"]``): its set lies between
        {τ^λ >= eps} and {τ^λ >= eps/c}.
    p : float, default 2.0
        Attention exponent; p != 2 compares against the exact ℓ_p universal set.
    block_size : int, optional
        Rows per block (default :data:`streamlev.exact.DEFAULT_BLOCK` for arrays and files).
    progress : callable, optional
        Called as ``progress(rows, total_rows)`` after every block of every pass (total_rows
        is None until the first pass has counted the rows).
    **read_kw
        ``key``, ``dim``, ``dtype``: passed to :func:`streamlev.streams.iter_blocks`.

    Returns
    -------
    Comparison

    Notes
    -----
    The exact set comes first: two passes with streamlev's factor (exact scores of every row,
    kept for the score ratios: 8·n bytes), or all keys in memory for p != 2.  Every run then
    reads the source again through the same reader and block size.

    Examples
    --------
    >>> import numpy as np, streamlev
    >>> K = np.random.default_rng(0).standard_normal((3000, 8))
    >>> K[42] *= 30
    >>> res = streamlev.compare(K, 0.2, ["online", "countsketch:512"], seeds=2)
    >>> [(s["label"], s["recall"]) for s in res.summary()]
    [('online', 1.0), ('countsketch sketch_rows=512', 1.0)]
    """
    from .streams import iter_blocks, rereadable  # noqa: PLC0415

    eps = check_eps(eps)
    ridge = check_ridge(ridge)
    p = check_p(p)
    if block_size is not None:
        block_size = check_positive_int(block_size, "block_size")
    if isinstance(seeds, (bool, np.bool_)):
        raise TypeError("seeds must be a number of seeds or a sequence of seeds")
    if isinstance(seeds, (int, np.integer)):
        seeds = list(range(check_positive_int(int(seeds), "seeds")))
    else:
        seeds = [int(s) for s in seeds]
        if not seeds:
            raise ValueError("seeds is empty; give a number of seeds (e.g. 3) or a list of seeds")
    if not rereadable(source):
        raise TypeError(
            "compare reads its source once per method and seed: pass an array, a path or a zero-argument "
            "callable returning a fresh iterable of blocks (a generator or stdin can be read only once)"
        )
    unknown = set(read_kw) - {"key", "dim", "dtype"}
    if unknown:
        raise TypeError(f"unexpected keyword argument(s) {', '.join(sorted(unknown))}; compare reads key, dim, dtype")

    def blocks():
        return iter_blocks(source, block_size, **read_kw)

    done = [0, None]

    def tick(m):
        done[0] += m
        if progress is not None:
            progress(m, done[1])

    n, d, exact, tau, sv2 = _reference(blocks, eps, ridge, p, tick)
    plan = _resolve(methods, d, p)
    per_seed = sum(meth.passes * (len(seeds) if meth.randomised else 1) for meth, _s, _b in plan)
    done[1] = n * ((1 if p != 2.0 else 2) + per_seed)
    result = Comparison(
        source=str(source) if isinstance(source, str) or hasattr(source, "__fspath__") else type(source).__name__,
        n=int(n),
        d=int(d),
        eps=eps,
        ridge=ridge,
        p=p,
        seeds=seeds,
        exact_set=exact,
    )
    for meth, size, budget in plan:
        for seed in seeds if meth.randomised else seeds[:1]:
            result.runs.append(
                _run(
                    meth,
                    size,
                    budget,
                    seed,
                    blocks=blocks,
                    n=n,
                    d=d,
                    eps=eps,
                    ridge=ridge,
                    p=p,
                    sv2=sv2,
                    exact=exact,
                    tau=tau,
                    tick=tick,
                )
            )
    return result
