"""The ``streamlev`` command line.

``streamlev demo``
    The main job on the bundled default input.
``streamlev select PATH --eps EPS``
    The ε-universal set of the keys in PATH: a ``.npy`` file (memory-mapped), an
    ``.npz`` archive (``--key NAME``), a ``.csv``/``.tsv``/``.txt`` file (streamed
    line by line) or ``-`` for raw little-endian rows on standard input
    (``--dim D --dtype float32|float64``).  ``--method`` is ``two-pass`` for files
    and ``online`` for standard input unless given; all three methods return the
    same exact set.
``streamlev compare PATH --eps EPS [--methods M ...] [--seeds N] [--json] [--plot FILE]``
    Every leverage sketch of :mod:`streamlev.baselines` on the keys in PATH, scored against
    the exact set (:func:`streamlev.compare`): same inputs as ``select`` except stdin.
``streamlev bench [--quick]``
    The benchmark shipped with the package (:mod:`streamlev.bench`): exact sets against
    numpy, 12 heads, memory along a stream, and the performance targets.

Bad input (missing file, not an array, NaN, wrong shape, bad flag) prints one
line ``streamlev: error: ...`` on stderr and exits with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

__all__ = ["main", "build_parser"]

#: Inputs with at least this many rows (or of unknown length) get a progress bar
#: when stderr is a terminal; the bar also waits ``_BAR_DELAY`` seconds before it appears.
_LONG_ROWS = 200_000
_BAR_DELAY = 0.5


#: Method names of ``streamlev compare`` (those of :data:`streamlev.baselines.METHODS`, listed here so that
#: building the parser imports no numerical module; tests/test_cli_compare.py checks they agree).
COMPARE_METHODS = (
    "exact",
    "online",
    "two-pass",
    "approx",
    "power",
    "sampling",
    "countsketch",
    "srht",
    "kvpress",
    "uniform",
)


class UsageError(Exception):
    """Bad command-line input: reported in one line with exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit status 2, no usage block)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


# ------------------------------------------------------------------------------------------------
# demo
# ------------------------------------------------------------------------------------------------


def _cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(args.eps, block=args.block)
    return 0


# ------------------------------------------------------------------------------------------------
# select
# ------------------------------------------------------------------------------------------------


class _Progress:
    """Counts rows; shows a tqdm bar on stderr when asked to and tqdm is installed."""

    def __init__(self, total, desc: str, enabled: bool):
        self.rows = 0
        self.bar = None
        if not enabled:
            return
        try:
            from tqdm import tqdm
        except ImportError:  # tqdm is optional: no bar
            return
        self.bar = tqdm(
            total=total,
            desc=desc,
            unit=" rows",
            unit_scale=True,
            file=sys.stderr,
            delay=_BAR_DELAY,
            leave=False,
            dynamic_ncols=True,
        )

    def wrap(self, blocks):
        for B in blocks:
            self.rows += B.shape[0]
            if self.bar is not None:
                self.bar.update(B.shape[0])
            yield B

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _size_bound(n, d, eps, p, rank=None):
    """(value, kind) of the bound on the size of the universal set."""
    if d is None:
        return None, None
    if p > 2:
        # ℓ_p Lewis weights sum to rank <= d and A_ij <= d^(p/2-1)·w_j (docs/design.md, "Power attention").
        return _count(d ** (p / 2) / eps), "d^(p/2)/eps"
    if rank is not None:
        return _count(rank / eps + 1e-9), "rank/eps"
    if n is not None and n < d:
        return _count(n / eps), "n/eps (rank <= n)"
    return _count(d / eps + 1e-9), "d/eps (rank <= d)"


def _count(bound: float) -> int | float:
    """floor(bound) as an int while it has at most 15 digits, else a float (printed as 1.23e+300, not 300 digits)."""
    return int(np.floor(bound)) if bound < 1e15 else float(bound)


def _show(bound: int | float) -> str:
    return f"{bound:,}" if isinstance(bound, int) else f"{bound:.3g}"


def _check_output(path: str) -> None:
    """Refuse an --output that cannot be written, before any work is done."""
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise UsageError(f"--output {path!r} is a directory; give a file name such as {os.path.join(path, 'u.npy')!r}")
    if not os.path.isdir(parent):
        raise UsageError(f"--output {path!r}: the directory {parent!r} does not exist; create it first")
    if not os.access(parent, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise UsageError(f"--output {path!r} is not writable; choose another path")


def _write_indices(path: str, U: np.ndarray) -> None:
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npy":
        np.save(path, U.astype(np.int64))
    elif ext == ".json":
        with open(path, "w", encoding="utf-8") as f:
            json.dump([int(i) for i in U], f)
            f.write("\n")
    else:
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(f"{int(i)}\n" for i in U)


def _check_select_args(args):
    stdin = _check_input_args(args)
    if args.method is None:
        args.method = "online" if stdin else "two-pass"
    if args.p != 2.0 and args.method != "exact":
        raise UsageError(
            f"--p {args.p:g} is supported by --method exact only (the streaming methods "
            f"compute p = 2 leverage scores); add --method exact"
        )
    if args.output is not None:
        _check_output(args.output)
    if stdin and args.method == "two-pass":
        raise UsageError(
            "--method two-pass reads its input twice, but stdin can be read once; "
            "use --method online (the default for stdin) or save the keys to a .npy file"
        )


def _check_input_args(args) -> bool:
    """Check the flags every command reading keys shares (--eps, --ridge, --p, input); True for stdin."""
    from ._validate import check_eps, check_p, check_positive_int, check_ridge

    args.eps = check_eps(args.eps)
    args.ridge = check_ridge(args.ridge)
    args.p = check_p(args.p)
    if args.block_size is not None:
        args.block_size = check_positive_int(args.block_size, "--block-size")
    if args.dim is not None:
        args.dim = check_positive_int(args.dim, "--dim")
    stdin = args.path == "-"
    if stdin:
        if args.dim is None or args.dtype is None:
            raise UsageError("reading raw rows from stdin ('-') needs --dim D and --dtype float32|float64")
        if args.key is not None:
            raise UsageError("--key NAME applies to .npz files only, not to stdin")
        if sys.stdin is None or (sys.stdin.isatty() if hasattr(sys.stdin, "isatty") else False):
            raise UsageError(
                "'-' reads raw key rows from stdin, but nothing is piped in; e.g. "
                "python make_keys.py | streamlev select - --dim 64 --dtype float32 --eps 0.01"
            )
    elif args.key is not None and not args.path.lower().endswith(".npz"):
        raise UsageError(f"--key NAME applies to .npz files only, not to {args.path!r}")
    return stdin


#: ``--max-seconds`` default: exact p != 2 sets estimated to take longer are refused (``--max-seconds inf`` runs them).
_DEFAULT_MAX_SECONDS = 60.0


def _max_seconds(args) -> float | None:
    limit = _DEFAULT_MAX_SECONDS if args.max_seconds is None else args.max_seconds
    if not limit > 0:
        raise UsageError(f"--max-seconds must be a positive number of seconds or 'inf', got {limit!r}")
    return None if limit == float("inf") else limit


class _CertificateProgress:
    """The exact p != 2 set's progress: its time estimate on stderr once, then a tqdm bar (lazily imported)."""

    def __init__(self, args, bar: bool):
        self.args, self.want_bar, self.bar, self.told = args, bar, None, False

    def __call__(self, done: int, total: int, estimate: float) -> None:
        if not self.told and not self.args.quiet and done < total:
            self.told = True
            print(
                f"streamlev: certifying {total:,} candidate keys for p={self.args.p:g}, estimated {estimate:,.1f} s",
                file=sys.stderr,
            )
            if self.want_bar:
                try:
                    from tqdm import tqdm
                except ImportError:  # tqdm is optional: no bar
                    self.want_bar = False
                else:
                    self.bar = tqdm(total=total, desc="certificates", unit=" keys", file=sys.stderr, leave=False)
        if self.bar is not None:
            self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _small_in_memory(args, n, d) -> bool:
    """A small .npy/.npz file for a streaming method: read whole and selected in memory (the same exact set).

    :func:`streamlev.universal_set` scores such keys with one SVD and loads no
    compiled kernel, so a short job does not pay for loading them.
    """
    from .exact import SMALL_ENTRIES

    return (
        args.method == "two-pass" and n is not None and d is not None and n * d <= SMALL_ENTRIES and args.ridge == 0.0
    )


def _startup(args, n, d) -> None:
    """Import what the selection will use (streamlev's modules; numba's compiled kernels unless the job is small)."""
    import streamlev.exact
    import streamlev.streams  # noqa: F401
    from streamlev._threads import blas_threads

    with blas_threads(1):  # finds the BLAS libraries once (threadpoolctl)
        pass
    if args.method == "exact" and args.p != 2.0:
        import streamlev.lewis  # noqa: F401
    elif not (_small_in_memory(args, n, d) or (args.method == "exact" and n is not None and d is not None)):
        import streamlev._kernels
        import streamlev.online
        import streamlev.twopass  # noqa: F401


def _select(args, prog: _Progress):
    """Run the chosen method; returns (indices, n, d, rank or None, sketch bytes or None)."""
    import streamlev

    from .streams import iter_blocks, load_keys, source_shape
    from .twopass import two_pass

    src = args.path
    kw = {"key": args.key, "dim": args.dim, "dtype": args.dtype}
    n, d = source_shape(src, key=args.key, dim=args.dim)
    if args.dim is not None and d is not None and d != args.dim:
        raise ValueError(f"{src!r} has d = {d} columns but --dim {args.dim} was given; drop --dim or fix it")

    if args.method == "exact" or _small_in_memory(args, n, d):
        if n is not None and not src.lower().endswith(".npz"):
            K = load_keys(src, **kw)  # .npy: a read-only memory map, nothing copied
        else:
            blocks = list(prog.wrap(iter_blocks(src, args.block_size, **kw)))
            if not blocks and d is None:
                raise ValueError(f"{src!r} holds no keys; nothing to select from")
            K = np.concatenate(blocks) if blocks else np.empty((0, d))
        n, d = K.shape
        if args.p != 2.0:
            try:
                from . import lewis
            except ImportError as exc:
                raise UsageError(f"--p {args.p:g} needs streamlev.lewis, which is not available ({exc})") from None
            tty = sys.stderr is not None and sys.stderr.isatty()
            cert = _CertificateProgress(args, tty and not args.quiet)
            try:
                U = lewis.universal_set_p(
                    K, args.eps, p=args.p, ridge=args.ridge, max_seconds=_max_seconds(args), progress=cert
                )
            finally:
                cert.close()
        else:
            from .exact import universal_set as leverage_set  # p = 2 (no lewis, hence no scipy, for small keys)

            U = leverage_set(K, args.eps, ridge=args.ridge)
        return U, n, d, None, None

    if args.method == "two-pass":

        def fresh():
            return prog.wrap(iter_blocks(src, args.block_size, **kw))

        res = two_pass(fresh, args.eps, ridge=args.ridge)
        return res.indices, res.n, d, res.rank, None

    # online
    blocks = prog.wrap(iter_blocks(src, args.block_size, **kw))
    if d is None:  # text file of unknown width: learn it from the first block
        first = next(blocks, None)
        if first is None:
            return np.zeros(0, dtype=np.int64), 0, None, None, None
        d = first.shape[1]
        sk = streamlev.OnlineLeverage(d, args.eps, ridge=args.ridge).update(first)
    else:
        sk = streamlev.OnlineLeverage(d, args.eps, ridge=args.ridge)
    for B in blocks:
        sk.update(B)
    U = sk.universal_set()
    return U, sk.n_seen, d, sk.rank, sk.nbytes


def _cmd_select(args) -> int:
    import resource
    import tracemalloc

    _check_select_args(args)
    from .streams import source_shape

    try:
        n0, d0 = source_shape(args.path, key=args.key, dim=args.dim)  # errors (missing file...) before any work
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{exc} (or '-' to read raw rows from standard input)") from None
    total = None if n0 is None else (2 * n0 if args.method == "two-pass" else n0)
    show_bar = not args.quiet and sys.stderr is not None and sys.stderr.isatty() and (n0 is None or n0 >= _LONG_ROWS)
    prog = _Progress(total, f"streamlev {args.method}", show_bar)
    t_start = time.perf_counter()
    _startup(args, n0, d0)  # outside the measured selection: reported as startup_seconds
    startup = time.perf_counter() - t_start
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        U, n, d, rank, sketch_bytes = _select(args, prog)
        seconds = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        prog.close()
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    U = np.asarray(U, dtype=np.int64)
    if d is None:
        raise ValueError(f"{args.path!r} holds no keys; nothing to select from")
    bound, bound_kind = _size_bound(n, d, args.eps, args.p, rank)
    if args.output:
        _write_indices(args.output, U)
    if args.json:
        out = {
            "indices": [int(i) for i in U],
            "size": int(U.size),
            "n": int(n),
            "d": int(d),
            "eps": args.eps,
            "method": args.method,
            "p": args.p,
            "ridge": args.ridge,
            "bound": bound,
            "bound_kind": bound_kind,
            "rank": rank,
            "memory_bytes": int(peak),
            "memory_measure": "tracemalloc peak: Python and numpy heap allocated during the selection "
            "(excludes memory-mapped file pages and the interpreter)",
            "max_rss_delta_bytes": int(max(rss1 - rss0, 0) * 1024),
            "sketch_bytes": sketch_bytes,
            "seconds": seconds,
            "seconds_measure": "the selection alone; startup_seconds is the loading of streamlev's modules and "
            "compiled kernels before it (the interpreter's own start is in neither)",
            "startup_seconds": startup,
            "source": args.path,
            "output": args.output,
        }
        print(json.dumps(out))
        return 0
    shown = ", ".join(str(int(i)) for i in U[:10]) + (", ..." if U.size > 10 else "")
    print(
        f"streamlev select: {args.path} (n={n:,}, d={d}), method {args.method}, eps={args.eps:g}"
        + (f", p={args.p:g}" if args.p != 2.0 else "")
        + (f", ridge={args.ridge:g}" if args.ridge else "")
    )
    listing = f": {shown}" if U.size else ""
    print(f"universal set: {U.size:,} keys (bound {bound_kind} = {_show(bound)}){listing}")
    extra = f", sketch {sketch_bytes / 2**20:.2f} MiB" if sketch_bytes is not None else ""
    print(
        f"time {seconds:.3f} s (after {startup:.3f} s loading the library), "
        f"peak memory {peak / 2**20:.2f} MiB (tracemalloc){extra}"
    )
    if args.output:
        print(f"wrote {U.size:,} indices to {args.output}")
    return 0


# ------------------------------------------------------------------------------------------------
# compare
# ------------------------------------------------------------------------------------------------


def _cmd_compare(args) -> int:
    if _check_input_args(args):
        raise UsageError(
            "compare reads its input once per method and seed, but stdin can be read once; "
            "save the keys to a .npy file (np.save) and pass its path"
        )
    if args.seeds is not None:
        from ._validate import check_positive_int

        args.seeds = check_positive_int(args.seeds, "--seeds")
    from .streams import source_shape

    n0, d0 = source_shape(args.path, key=args.key, dim=args.dim)  # errors (missing file...) before any work
    if args.dim is not None and d0 is not None and d0 != args.dim:
        raise ValueError(f"{args.path!r} has d = {d0} columns but --dim {args.dim} was given; drop --dim or fix it")
    show_bar = not args.quiet and sys.stderr is not None and sys.stderr.isatty()
    prog = _Progress(None, "streamlev compare", show_bar)

    def progress(rows, total):
        if prog.bar is not None:
            if total is not None and prog.bar.total != total:
                prog.bar.total = total
            prog.bar.update(rows)

    import streamlev

    t0 = time.perf_counter()
    try:
        res = streamlev.compare(
            args.path,
            args.eps,
            args.methods,
            seeds=args.seeds or 3,
            ridge=args.ridge,
            p=args.p,
            block_size=args.block_size,
            progress=progress,
            key=args.key,
            dim=args.dim,
            dtype=args.dtype,
        )
    finally:
        prog.close()
    seconds = time.perf_counter() - t0
    if args.plot:
        try:
            fig = res.plot()
        except ImportError as exc:
            raise UsageError(f"--plot needs matplotlib ({exc}); pip install matplotlib") from None
        fig.savefig(args.plot, dpi=120)
    if args.json:
        print(res.to_json())
        return 0
    print(f"streamlev compare: {args.path}, {seconds:.1f} s")
    print(res.to_markdown(), end="")
    if args.plot:
        print(f"wrote the plot to {args.plot}")
    return 0


# ------------------------------------------------------------------------------------------------
# bench
# ------------------------------------------------------------------------------------------------


def _cmd_bench(args) -> int:
    """Run the benchmark shipped in the installed package (:mod:`streamlev.bench`); nothing from the cwd."""
    try:
        from . import bench
    except ImportError as exc:  # a copy of the package without its benchmark module
        raise UsageError(
            "the benchmark module is not installed with this copy of streamlev; the benchmark scripts are in "
            "the repository's benchmarks/ directory (python benchmarks/run.py)"
        ) from exc
    argv = (["--quick"] if args.quick else []) + list(args.extra)
    return int(bench.main(argv) or 0)


# ------------------------------------------------------------------------------------------------
# parser and entry point
# ------------------------------------------------------------------------------------------------

_SELECT_EPILOG = """\
input formats:
  .npy           memory-mapped, never loaded whole
  .npz           one member, --key NAME (optional when the archive holds one array)
  .csv .tsv .txt one key per line, comma or whitespace separated, '#' comments; streamed
  -              raw little-endian rows on stdin: --dim D --dtype float32|float64

methods (all exact, same set):
  two-pass  default for files: factor pass + scoring pass, memory d x d + one block
  online    default for stdin: one pass, memory d x d + at most ~rank/eps candidates
  exact     in memory (loads the keys; .npy is memory-mapped); the only one with --p != 2

output:
  --json    one JSON object: indices, size, n, d, eps, method, p, ridge, bound, bound_kind,
            rank, memory_bytes (tracemalloc peak), max_rss_delta_bytes, sketch_bytes, seconds
  --output  writes the indices: .npy (int64 array), .json (a list), anything else one per line
"""


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of the ``streamlev`` command."""
    p = _Parser(prog="streamlev", description="Heavy keys of attention in a stream.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    demo = sub.add_parser("demo", help="run the main job on the bundled default input")
    demo.add_argument("--eps", type=float, default=0.1, help="attention threshold in (0, 1] (default 0.1)")
    demo.add_argument("--block", type=int, default=64, help="tokens per streamed block (default 64)")
    demo.set_defaults(func=_cmd_demo)

    sel = sub.add_parser(
        "select",
        help="the eps-universal set of the keys in a file or on stdin",
        description="Print the eps-universal set (keys with leverage >= eps) of the keys in PATH.",
        epilog=_SELECT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sel.add_argument("path", metavar="PATH", help="keys: .npy, .npz, .csv/.tsv/.txt, or '-' for raw rows on stdin")
    sel.add_argument("--eps", type=float, required=True, help="attention threshold in (0, 1]")
    sel.add_argument(
        "--method",
        choices=["exact", "two-pass", "online"],
        default=None,
        help="algorithm (default: two-pass for files, online for stdin)",
    )
    sel.add_argument("--ridge", type=float, default=0.0, help="ridge lambda >= 0 (default 0: plain leverage)")
    sel.add_argument(
        "--p", type=float, default=2.0, help="attention f(x) = |x|^p (default 2; p != 2 needs --method exact)"
    )
    sel.add_argument("--block-size", type=int, default=None, metavar="B", help="rows per block (default 4096)")
    sel.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")
    sel.add_argument(
        "--output", metavar="FILE", default=None, help="write the indices to FILE (.npy, .json, or one per line)"
    )
    sel.add_argument("--key", metavar="NAME", default=None, help="array name inside an .npz archive")
    sel.add_argument("--dim", type=int, default=None, metavar="D", help="key dimension (required for '-')")
    sel.add_argument(
        "--dtype",
        choices=["float32", "float64"],
        default=None,
        help="value type of raw rows on stdin (required for '-'); for files, convert blocks",
    )
    sel.add_argument(
        "--max-seconds",
        type=float,
        default=None,
        metavar="S",
        help="exact p != 2 only: refuse a selection whose certificates are estimated (from the first batch) to "
        f"take longer than S seconds (default {_DEFAULT_MAX_SECONDS:g}; 'inf' runs it whatever the cost)",
    )
    sel.add_argument("--quiet", action="store_true", help="no progress bar")
    sel.set_defaults(func=_cmd_select)

    cmp_ = sub.add_parser(
        "compare",
        help="run leverage sketches side by side on the keys in a file and score them against the exact set",
        description="Run every method (or those of --methods) on the keys in PATH, once per seed, and print "
        "recall, precision, score ratios, memory and speed against the exact eps-universal set.",
        epilog="".join(
            line
            for line in _SELECT_EPILOG.split("methods (all exact", maxsplit=1)[0].splitlines(True)
            if "stdin" not in line
        )
        + "methods (NAME, NAME:SIZE in its natural size, or NAME:64KiB for a memory budget):\n  "
        + " ".join(COMPARE_METHODS)
        + "\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmp_.add_argument("path", metavar="PATH", help="keys: .npy, .npz or .csv/.tsv/.txt (read several times)")
    cmp_.add_argument("--eps", type=float, required=True, help="attention threshold in (0, 1]")
    cmp_.add_argument("--methods", nargs="+", default=None, metavar="M", help="methods to run (default: all)")
    cmp_.add_argument("--seeds", type=int, default=None, metavar="N", help="seeds per randomised method (default 3)")
    cmp_.add_argument("--ridge", type=float, default=0.0, help="ridge lambda >= 0 (default 0)")
    cmp_.add_argument("--p", type=float, default=2.0, help="attention exponent (default 2; p != 2: exact and power)")
    cmp_.add_argument("--block-size", type=int, default=None, metavar="B", help="rows per block (default 16384)")
    cmp_.add_argument("--json", action="store_true", help="print the full result as one JSON object")
    cmp_.add_argument("--plot", metavar="FILE", default=None, help="save recall and precision against memory")
    cmp_.add_argument("--key", metavar="NAME", default=None, help="array name inside an .npz archive")
    cmp_.add_argument("--dim", type=int, default=None, metavar="D", help="key dimension (checked against the file)")
    cmp_.add_argument("--dtype", choices=["float32", "float64"], default=None, help="convert blocks to this type")
    cmp_.add_argument("--quiet", action="store_true", help="no progress bar")
    cmp_.set_defaults(func=_cmd_compare)

    bench = sub.add_parser(
        "bench",
        help="run the benchmark shipped with the package (streamlev.bench)",
        description="Run streamlev.bench; options other than --quick are passed to it (e.g. --rows 100000 --no-svd).",
    )
    bench.add_argument("--quick", action="store_true", help="small sizes, finishes in about a minute")
    bench.set_defaults(func=_cmd_bench)
    return p


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``streamlev`` console script."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if args.command == "bench":
        args.extra = unknown  # passed through to streamlev.bench
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return int(args.func(args) or 0)
    except (UsageError, ValueError, TypeError, OSError) as exc:
        if isinstance(exc, BrokenPipeError):  # e.g. `streamlev select ... | head`: stop quietly
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return 1
        print(f"streamlev: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("streamlev: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
