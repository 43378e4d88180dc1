"""streamlev.streams.iter_blocks over every source kind: content, block sizes, errors, memory."""

import io
import sys
import tracemalloc
import zipfile

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import streamlev
from streamlev.exact import DEFAULT_BLOCK
from streamlev.streams import block_source, iter_blocks, load_keys, rereadable, source_shape

from . import naive


def keys(n=1000, d=5, dtype=np.float32, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(dtype)


def collect(src, *args, **kw):
    blocks = list(iter_blocks(src, *args, **kw))
    for B in blocks:
        assert B.ndim == 2 and B.shape[0] >= 1
    return blocks


def cat(blocks):
    return np.concatenate(blocks)


# --- every source kind yields the same rows, in order -----------------------------------------------


@pytest.fixture
def files(tmp_path):
    K = keys()
    paths = {}
    paths["npy"] = tmp_path / "k.npy"
    np.save(paths["npy"], K)
    paths["npz"] = tmp_path / "k.npz"
    np.savez(paths["npz"], K=K, other=K[:3])
    paths["npzc"] = tmp_path / "kc.npz"
    np.savez_compressed(paths["npzc"], keys=K)
    paths["csv"] = tmp_path / "k.csv"
    np.savetxt(paths["csv"], K, delimiter=",", fmt="%.17g")
    paths["txt"] = tmp_path / "k.txt"
    np.savetxt(paths["txt"], K, fmt="%.17g")
    return K, paths


@pytest.mark.parametrize(
    "kind,kw,dtype",
    [
        ("npy", {}, np.float32),
        ("npz", {"key": "K"}, np.float32),
        ("npzc", {}, np.float32),
        ("csv", {}, np.float64),
        ("txt", {}, np.float64),
    ],
)
def test_file_sources(files, kind, kw, dtype):
    K, paths = files
    for src in (paths[kind], str(paths[kind])):
        blocks = collect(src, 300, **kw)
        assert [B.shape[0] for B in blocks] == [300, 300, 300, 100]
        assert all(B.dtype == dtype for B in blocks)
        np.testing.assert_array_equal(cat(blocks), K)
    assert source_shape(paths[kind], **kw)[1] == 5
    assert rereadable(paths[kind])


def test_default_block_size(files):
    _, paths = files
    big = keys(DEFAULT_BLOCK + 5, 3)
    p = paths["npy"].with_name("big.npy")
    np.save(p, big)
    assert [B.shape[0] for B in collect(p)] == [DEFAULT_BLOCK, 5]
    assert [B.shape[0] for B in collect(big)] == [DEFAULT_BLOCK, 5]


def test_array_blocks_are_views_without_copies():
    K = keys(1000, 4, np.float64)
    blocks = collect(K, 256)
    assert all(np.shares_memory(B, K) for B in blocks)
    np.testing.assert_array_equal(cat(blocks), K)


def test_npy_blocks_are_views_of_a_read_only_map(files):
    K, paths = files
    blocks = collect(paths["npy"], 128)
    assert all(not B.flags.owndata and not B.flags.writeable for B in blocks)
    np.testing.assert_array_equal(cat(blocks), K)


def test_fortran_ordered_npy(tmp_path):
    K = np.asfortranarray(keys(500, 6, np.float64))
    p = tmp_path / "f.npy"
    np.save(p, K)
    np.testing.assert_array_equal(cat(collect(p, 64)), K)


def test_integer_keys_become_float64_block_by_block():
    K = np.arange(40).reshape(10, 4)
    blocks = collect(K, 3)
    assert all(B.dtype == np.float64 for B in blocks)
    np.testing.assert_array_equal(cat(blocks), K)


def test_dtype_conversion_for_files(files):
    K, paths = files
    blocks = collect(paths["csv"], 400, dtype="float32")
    assert all(B.dtype == np.float32 for B in blocks)
    np.testing.assert_allclose(cat(blocks), K, rtol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_binary_stream(dtype):
    K = keys(1000, 7, dtype)
    blocks = collect(io.BytesIO(K.astype("<" + K.dtype.str[1:]).tobytes()), 300, dim=7, dtype=dtype)
    assert [B.shape[0] for B in blocks] == [300, 300, 300, 100]
    assert blocks[0].dtype == np.dtype(dtype)
    np.testing.assert_array_equal(cat(blocks), K)


class _TrickleReader:
    """A pipe that returns at most 13 bytes per read (as pipes may)."""

    def __init__(self, data):
        self.f = io.BytesIO(data)

    def read(self, n=-1):
        return self.f.read(min(n, 13) if n >= 0 else 13)


def test_binary_stream_short_reads():
    K = keys(50, 3, np.float64)
    np.testing.assert_array_equal(cat(collect(_TrickleReader(K.tobytes()), 16, dim=3, dtype="float64")), K)


def test_stdin(monkeypatch):
    K = keys(100, 4, np.float32)

    class FakeStdin:
        buffer = io.BytesIO(K.tobytes())

    monkeypatch.setattr(sys, "stdin", FakeStdin)
    np.testing.assert_array_equal(cat(collect("-", 30, dim=4, dtype="float32")), K)
    assert not rereadable("-")
    assert source_shape("-", dim=4) == (None, 4)


def test_generator_pass_through_and_rechunking():
    K = keys(100, 3)
    sizes = [7, 1, 30, 0, 62]
    bounds = np.cumsum([0] + sizes)

    def gen():
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            yield K[a:b]

    blocks = collect(gen())
    assert [B.shape[0] for B in blocks] == [s for s in sizes if s]
    blocks = collect(gen(), 25)
    assert [B.shape[0] for B in blocks] == [25, 25, 25, 25]
    np.testing.assert_array_equal(cat(blocks), K)


def test_iterable_of_rows_and_lists():
    K = keys(10, 3, np.float64)
    np.testing.assert_array_equal(cat(collect(iter(list(K)), 4)), K)
    np.testing.assert_array_equal(cat(collect(K.tolist(), 4)), K)
    assert rereadable(K.tolist())


def test_callable_gives_a_fresh_stream_each_time():
    K = keys(90, 3)
    calls = []

    def make():
        calls.append(1)
        return (K[i : i + 20] for i in range(0, 90, 20))

    first = cat(collect(make))
    second = cat(collect(make))
    np.testing.assert_array_equal(first, K)
    np.testing.assert_array_equal(second, K)
    assert len(calls) == 2
    assert rereadable(make)
    assert not rereadable(make())


@given(st.lists(st.integers(0, 9), min_size=1, max_size=12), st.one_of(st.none(), st.integers(1, 11)))
def test_any_partition_any_block_size_gives_the_same_rows(sizes, block_size):
    K = np.arange(sum(sizes) * 2, dtype=np.float64).reshape(-1, 2)
    bounds = np.cumsum([0] + sizes)
    parts = [K[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    blocks = list(iter_blocks(iter(parts), block_size, dim=2))
    got = cat(blocks) if blocks else np.zeros((0, 2))
    np.testing.assert_array_equal(got, K)
    if block_size is not None:
        assert all(B.shape[0] == block_size for B in blocks[:-1])
        assert all(1 <= B.shape[0] <= block_size for B in blocks)


# --- NaN rows are reported as global row indices ---------------------------------------------------


def test_nan_row_is_global_for_arrays():
    K = keys(1000, 4)
    K[777, 2] = np.nan
    it = iter_blocks(K, 100)
    for _ in range(7):
        next(it)  # blocks before the bad one are fine
    with pytest.raises(ValueError, match=r"row 777\b"):
        next(it)


def test_nan_row_is_global_for_generators():
    K = keys(100, 3, np.float64)
    K[45] = np.inf
    with pytest.raises(ValueError, match=r"row 45\b"):
        collect(K[i : i + 7] for i in range(0, 100, 7))
    with pytest.raises(ValueError, match=r"row 45\b"):
        collect((K[i : i + 7] for i in range(0, 100, 7)), 10)


def test_nan_row_is_global_for_files(tmp_path):
    K = keys(500, 3, np.float64)
    K[321, 0] = np.nan
    p = tmp_path / "n.npy"
    np.save(p, K)
    with pytest.raises(ValueError, match=r"row 321\b"):
        collect(p, 50)
    q = tmp_path / "n.npz"
    np.savez(q, K=K)
    with pytest.raises(ValueError, match=r"row 321\b"):
        collect(q, 50)
    c = tmp_path / "n.csv"
    with open(c, "w") as f:
        f.write("# a comment line\n\n")
        np.savetxt(f, K, delimiter=",")
    # two extra lines before the data: row 321 is on line 324
    with pytest.raises(ValueError, match=r"row 321 \(line 324\)"):
        collect(c, 50)
    with pytest.raises(ValueError, match=r"row 321\b"):
        collect(io.BytesIO(K.tobytes()), 50, dim=3, dtype="float64")


# --- text parsing -------------------------------------------------------------------------------------


def test_text_comments_blank_lines_and_single_column(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("# header comment\n1.5\n\n  2  # inline\n-3e2\n")
    np.testing.assert_array_equal(cat(collect(p, 2)), [[1.5], [2.0], [-300.0]])
    q = tmp_path / "b.csv"
    q.write_text("1, 2 ,3\n4,5,6\n")
    np.testing.assert_array_equal(cat(collect(q)), [[1, 2, 3], [4, 5, 6]])


def test_ragged_rows_name_the_line(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text("# c\n1,2,3\n\n4,5,6\n7,8\n")
    with pytest.raises(ValueError, match=r"line 5: 2 values, but line 2 has 3"):
        collect(p)
    # the ragged line falls in a later chunk than the first one
    q = tmp_path / "r2.txt"
    q.write_text("1 2\n" * 10 + "1 2 3\n")
    with pytest.raises(ValueError, match=r"line 11: 3 values, but line 1 has 2"):
        collect(q, 4)


@pytest.mark.parametrize(
    "text,line,token",
    [
        ("a,b,c\n1,2,3\n", 1, "'a'"),
        ("1,2\n3,x\n", 2, "'x'"),
        ("1,2\n3,\n", 2, "''"),
        ("Hello, this is prose.\n", 1, "'Hello'"),
    ],
)
def test_non_numeric_text_names_the_line(tmp_path, text, line, token):
    p = tmp_path / "t.csv"
    p.write_text(text)
    with pytest.raises(ValueError, match=rf"line {line}: {token} is not a number.*header"):
        collect(p)


def test_non_utf8_text_file(tmp_path):
    p = tmp_path / "bin.txt"
    p.write_bytes(bytes(range(128, 256)) * 4)
    with pytest.raises(ValueError, match="not a text file"):
        collect(p)


def test_empty_text_file_is_an_empty_stream(tmp_path):
    p = tmp_path / "e.csv"
    p.write_text("# nothing\n\n")
    assert collect(p) == []


# --- bad input ------------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        iter_blocks(tmp_path / "nope.npy")


def test_directory(tmp_path):
    with pytest.raises(OSError, match="directory"):
        iter_blocks(tmp_path)


def test_not_an_npy(tmp_path):
    p = tmp_path / "fake.npy"
    p.write_text("hello, world")
    with pytest.raises(ValueError, match=r"not a \.npy file.*np\.save"):
        iter_blocks(p)


@pytest.mark.parametrize(
    "head", [b"\x93NUMPY garbage", b"\x93NUMPY\x03\x00" + b"\x10\x00\x00\x00{}", b"\x93NUMPY\x07\x01"]
)
def test_npy_with_an_unknown_format_version_is_refused_in_one_line(tmp_path, head):
    """Only the format versions numpy's public readers know (1.0, 2.0) are read; others get advice."""
    p = tmp_path / "odd.npy"
    p.write_bytes(head + b" " * 64)
    with pytest.raises(ValueError, match=r"format version .*np\.save") as info:
        iter_blocks(p)
    assert "\n" not in str(info.value)


def test_truncated_npy(tmp_path):
    p = tmp_path / "t.npy"
    np.save(p, keys(100, 4))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) - 40])
    with pytest.raises(ValueError, match="truncated"):
        iter_blocks(p)
    p.write_bytes(data[:20])  # cut inside the header
    with pytest.raises(ValueError, match=r"corrupt \.npy header|not a \.npy"):
        iter_blocks(p)


@pytest.mark.parametrize("shape", [(10,), (2, 3, 4)])
def test_wrong_ndim_npy(tmp_path, shape):
    p = tmp_path / "w.npy"
    np.save(p, np.zeros(shape))
    with pytest.raises(ValueError, match=r"expected 2-D keys"):
        iter_blocks(p)
    with pytest.raises(ValueError, match=r"2-D"):
        iter_blocks(np.zeros(shape))


def test_object_npy_is_refused(tmp_path):
    p = tmp_path / "o.npy"
    np.save(p, np.array([[1, "a"]], dtype=object), allow_pickle=True)
    with pytest.raises(TypeError, match="objects"):
        iter_blocks(p)


def test_unknown_extension(tmp_path):
    p = tmp_path / "k.bin"
    p.write_bytes(b"\x00" * 16)
    with pytest.raises(ValueError, match="cannot tell the format"):
        iter_blocks(p)
    q = tmp_path / "k.data"
    np.save(q.with_suffix(".npy"), keys(5, 2))
    q.write_bytes(q.with_suffix(".npy").read_bytes())  # sniffed by magic
    assert cat(collect(q)).shape == (5, 2)


def test_npz_errors(tmp_path, files):
    _, paths = files
    with pytest.raises(ValueError, match=r"several arrays \(K, other\).*key"):
        iter_blocks(paths["npz"])
    with pytest.raises(ValueError, match=r"no array named 'Q'.*K, other"):
        iter_blocks(paths["npz"], key="Q")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip at all")
    with pytest.raises(ValueError, match=r"not a \.npz"):
        iter_blocks(bad)
    trunc = tmp_path / "trunc.npz"
    trunc.write_bytes(paths["npz"].read_bytes()[:3000])
    with pytest.raises(ValueError, match=r"not a valid \.npz"):
        iter_blocks(trunc, key="K")
    f = tmp_path / "f.npz"
    np.savez(f, K=np.asfortranarray(keys(10, 3)))
    with pytest.raises(ValueError, match="Fortran"):
        iter_blocks(f)


def test_npz_member_truncated_inside_the_zip(tmp_path):
    # A member whose header promises more rows than it holds (a valid zip around a short .npy).
    K = keys(50, 4)
    buf = io.BytesIO()
    np.save(buf, K)
    data = buf.getvalue()[:-30]
    p = tmp_path / "short.npz"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("K.npy", data)
    with pytest.raises(ValueError, match="truncated"):
        collect(p, 16)


def test_binary_stream_errors():
    with pytest.raises(ValueError, match=r"dim=D and dtype"):
        iter_blocks(io.BytesIO(b""), dim=3)
    with pytest.raises(ValueError, match=r"float32 or float64"):
        iter_blocks(io.BytesIO(b""), dim=3, dtype="int8")
    with pytest.raises(ValueError, match=r"ended inside a row.*--dim and --dtype"):
        collect(io.BytesIO(b"\x00" * 13), 4, dim=3, dtype="float32")
    with pytest.raises(TypeError, match="binary"):
        collect(io.StringIO("1 2 3"), dim=3, dtype="float32")


def test_dim_mismatch_in_a_stream():
    with pytest.raises(ValueError, match=r"expected 3, got 4"):
        collect(iter([np.zeros((2, 3)), np.zeros((2, 4))]))
    with pytest.raises(ValueError, match=r"expected 5, got 3"):
        collect(np.zeros((4, 3)), dim=5)


def test_bad_block_size_and_source_types():
    with pytest.raises(ValueError, match="block_size"):
        iter_blocks(np.zeros((3, 2)), 0)
    with pytest.raises(TypeError, match="cannot read keys"):
        iter_blocks(3.5)
    with pytest.raises(TypeError, match="object"):
        collect([np.array([[1, "a"]], dtype=object)])


# --- helpers ----------------------------------------------------------------------------------------------


def test_source_shape_and_rereadable(files):
    K, paths = files
    assert source_shape(paths["npy"]) == (1000, 5)
    assert source_shape(paths["npz"], key="other") == (3, 5)
    assert source_shape(paths["csv"]) == (None, 5)
    assert source_shape(K) == (1000, 5)
    assert source_shape(iter([K])) == (None, None)
    assert rereadable(K) and rereadable(paths["csv"]) and rereadable(str(paths["npy"]))
    assert not rereadable(iter([K])) and not rereadable(x for x in [K]) and not rereadable(io.BytesIO())


def test_block_source_refuses_one_shot_sources(files):
    _, paths = files
    with pytest.raises(ValueError, match="read only once"):
        block_source(x for x in [])
    with pytest.raises(FileNotFoundError):
        block_source(paths["npy"].with_name("missing.npy"))


def test_load_keys(files):
    K, paths = files
    M = load_keys(paths["npy"])
    assert not M.flags.owndata  # a memory map, nothing copied
    np.testing.assert_array_equal(M, K)
    np.testing.assert_array_equal(load_keys(paths["npz"], key="K"), K)
    np.testing.assert_array_equal(load_keys(paths["csv"]), K)


def test_two_pass_on_csv_and_npz_matches_oracle(tmp_path):
    rng = np.random.default_rng(3)
    K = rng.standard_normal((600, 5))
    K[:, 4] *= 1e-3
    K[[17, 400], 4] = 5.0  # two rows carry a rare direction: heavy keys
    p = tmp_path / "k.csv"
    np.savetxt(p, K, delimiter=",", fmt="%.17g")
    q = tmp_path / "k.npz"
    np.savez_compressed(q, K=K)
    tau = naive.leverage(K)
    for src in (block_source(p, 128), block_source(q, 100, key="K")):
        U = streamlev.two_pass_universal_set(src, 0.05)
        naive.assert_set_matches(U, tau, 0.05)
        assert {17, 400} <= set(U.tolist())


# --- bounded memory ---------------------------------------------------------------------------------------


def _peak_while_streaming(src, **kw):
    tracemalloc.start()
    try:
        rows = 0
        for B in iter_blocks(src, **kw):
            rows += B.shape[0]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return rows, peak


def test_npy_memory_is_a_few_blocks(tmp_path):
    n, d = 2_000_000, 8
    p = tmp_path / "big.npy"
    M = np.lib.format.open_memmap(p, mode="w+", dtype=np.float32, shape=(n, d))
    chunk = np.random.default_rng(0).standard_normal((250_000, d)).astype(np.float32)
    for a in range(0, n, chunk.shape[0]):
        M[a : a + chunk.shape[0]] = chunk
    M.flush()
    del M
    rows, peak = _peak_while_streaming(p)
    block_bytes = DEFAULT_BLOCK * d * 4
    assert rows == n
    assert peak < 4 * block_bytes, (peak, block_bytes)  # file is 64 MB = 490 blocks


def test_npz_and_csv_memory_is_a_few_blocks(tmp_path):
    n, d = 200_000, 8
    K = np.random.default_rng(1).standard_normal((n, d)).astype(np.float32)
    p = tmp_path / "big.npz"
    np.savez_compressed(p, K=K)
    rows, peak = _peak_while_streaming(p)
    assert rows == n
    assert peak < 6 * DEFAULT_BLOCK * d * 4, peak  # data are 6.4 MB = 49 blocks
    c = tmp_path / "big.csv"
    np.savetxt(c, K[:40_000], delimiter=",", fmt="%.6g")
    rows, peak = _peak_while_streaming(c, block_size=1024)
    assert rows == 40_000
    assert peak < c.stat().st_size / 5, (peak, c.stat().st_size)
