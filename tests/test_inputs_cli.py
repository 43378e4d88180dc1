"""Hostile input at the command line: bad files and flags exit 2 with one line; valid files give the
oracle's set.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from . import naive
from .hostile_inputs import (
    BAD_NPY,
    _write_npy_cases,
    oracle,
    run_cli,
)

_CLI_FILES = {}


def _cli_file(tmp_path_factory):
    if not _CLI_FILES:
        tmp = tmp_path_factory.mktemp("cli")
        _CLI_FILES.update({k: v[0] for k, v in _write_npy_cases(tmp).items()})
    return _CLI_FILES


def check_cli_error(extra_argv, pattern, path=None):
    path = path if path is not None else _CLI_DEFAULT_PATH[0]
    code, out, err = run_cli(["select", str(path), *extra_argv])
    assert code == 2, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and re.match(r"streamlev( select)?: error: ", lines[0]), err
    assert re.search(pattern, lines[0]), lines[0]
    assert "Traceback" not in err


_CLI_DEFAULT_PATH = [None]


@pytest.fixture(scope="module", autouse=True)
def _cli_default(tmp_path_factory):
    files = _cli_file(tmp_path_factory)
    _CLI_DEFAULT_PATH[0] = files["c-order"]


CLI_NPY_BAD = BAD_NPY


@pytest.mark.parametrize("method", ["two-pass", "online", "exact"])
@pytest.mark.parametrize("case", CLI_NPY_BAD)
def test_cli_bad_files_one_line_exit_2(tmp_path_factory, case, method):
    files = _cli_file(tmp_path_factory)
    patterns = {
        "truncated-data": r"truncated",
        "truncated-header": r"corrupt \.npy header|truncated|not a \.npy",
        "text-named-npy": r"not a \.npy file",
        "zero-byte-file": r"not a \.npy file",
        "directory": r"is a directory",
        "missing": r"no such file",
        "object-pickle": r"Python objects",
        "complex": r"must be real",
        "unicode": r"must hold real numbers",
        "1-D": r"2-D",
        "3-D": r"2-D",
        "nan-row-70": r"NaN or infinity in row 70",
        "corrupt-header": r"corrupt \.npy header",
    }
    check_cli_error(["--eps", "0.1", "--method", method], patterns[case], path=files[case])


@pytest.mark.parametrize(
    "value,pattern",
    [
        ("0", r"eps must lie in \(0, 1\]"),
        ("-0.5", r"eps must lie in"),
        ("1.000000001", r"eps must lie in"),
        ("nan", r"eps must lie in"),
        ("inf", r"eps must lie in"),
        ("-inf", r"eps must lie in"),
        ("abc", r"invalid float value"),
        ("", r"invalid float value"),
    ],
)
def test_cli_bad_eps(value, pattern):
    check_cli_error([f"--eps={value}"], pattern)


@pytest.mark.parametrize(
    "argv,pattern",
    [
        (["--eps", "0.1", "--ridge", "-1"], r"ridge must be a finite number >= 0"),
        (["--eps", "0.1", "--ridge", "inf"], r"ridge must be a finite number >= 0"),
        (["--eps", "0.1", "--p", "0"], r"p must be a finite number > 0"),
        (["--eps", "0.1", "--p", "nan"], r"p must be a finite number > 0"),
        (["--eps", "0.1", "--block-size", "0"], r"block-size must be an integer >= 1"),
        (["--eps", "0.1", "--block-size", "x"], r"invalid int value"),
        (["--eps", "0.1", "--method", "magic"], r"invalid choice"),
        (["--eps", "0.1", "--dim", "5"], r"d = 4 columns but --dim 5"),
        (["--eps", "0.1", "--key", "K"], r"--key NAME applies to \.npz files only"),
        (["--eps", "0.1", "--p", "3"], r"--p 3 is supported by --method exact only"),
        ([], r"required: --eps"),
    ],
    ids=[
        "ridge<0",
        "ridge-inf",
        "p=0",
        "p-nan",
        "block-0",
        "block-str",
        "method",
        "dim-mismatch",
        "key-npy",
        "p-streaming",
        "no-eps",
    ],
)
def test_cli_bad_flags_one_line_exit_2(argv, pattern):
    check_cli_error(argv, pattern)


@pytest.mark.parametrize("method", ["two-pass", "online", "exact"])
@pytest.mark.parametrize("case", ["c-order", "fortran-order", "float32", "int16"])
def test_cli_valid_files_give_the_oracle_set(tmp_path_factory, case, method):
    import json

    files = _cli_file(tmp_path_factory)
    code, out, err = run_cli(
        ["select", str(files[case]), "--eps", "0.1", "--method", method, "--json", "--block-size", "16", "--quiet"]
    )
    assert code == 0, err
    K = np.load(files[case]).astype(np.float64)
    naive.assert_set_matches(json.loads(out)["indices"], oracle(K), 0.1)


def test_cli_empty_file(tmp_path_factory):
    files = _cli_file(tmp_path_factory)
    code, out, err = run_cli(["select", str(files["empty"]), "--eps", "0.1", "--json", "--quiet"])
    assert code == 0, err
