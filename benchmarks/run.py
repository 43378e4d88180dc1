"""The main benchmark: exact universal sets against numpy, 12 heads, memory along a stream.

Usage::

    python benchmarks/run.py            # n = 10^6, d = 64 (several minutes)
    python benchmarks/run.py --quick    # n = 2·10^5 (information only)
    streamlev bench --quick             # the same tables through the CLI, no JSON written

The measurements live in :mod:`streamlev.bench` (so the installed package can run them);
this script adds the shared flags and writes the JSON record into ``benchmarks/results/``
(``run.json``, or ``run_quick.json`` with ``--quick``), targets included.
"""

from __future__ import annotations

import sys

import _common

from streamlev import bench


def main(argv=None):
    ap = _common.parser(__doc__.split("\n")[0], dim=64, rows=None, repeats=None)
    bench.add_arguments(ap)
    ap.add_argument("--note", default="", help="a remark stored in the record's parameters (e.g. machine load)")
    args = ap.parse_args(argv)
    results, targets = bench.run_from_args(args)
    _common.write_record("run", args, results, targets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
