#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets: fuzz/corpus/<target>/.

Small valid files of each format and variant the readers accept, a few invalid ones that stop at
different checks, and short cuts of the real data in ../shared/data. Deterministic (gzip with
mtime 0), so rerunning it leaves git clean. Needs numpy: run it with the set-up's venv,

    ~/.cache/scae/torch-2.11.0/venv/bin/python fuzz/make_corpus.py
"""

import gzip
import io
from pathlib import Path

import numpy as np

FUZZ = Path(__file__).resolve().parent
DATA = FUZZ.parent.parent / "shared" / "data"
BANNER = "%%MatrixMarket matrix coordinate integer general\n"


def write(target: str, name: str, data: bytes) -> None:
    path = FUZZ / "corpus" / target / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def npy_bytes(a: np.ndarray, version=None) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, a, version=version, allow_pickle=False)
    return buf.getvalue()


def mtx_entries(path: Path):
    """(rows, cols, [(row, col, value)]) of a MatrixMarket file, plain or gzipped."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        lines = [l for l in f if not l.startswith("%")]
    rows, cols, _ = map(int, lines[0].split())
    return rows, cols, [tuple(map(int, l.split())) for l in lines[1:]]


def npy() -> None:
    small = np.array([[0, 1, 2, 3], [4, 50, 600, 65535], [7, 0, 0, 1]])
    write("npy", "f32_c.npy", npy_bytes(small.astype("<f4")))
    write("npy", "f64_fortran.npy", npy_bytes(np.asfortranarray(small.astype("<f8"))))
    write("npy", "i32_big_endian.npy", npy_bytes(small.astype(">i4")))
    write("npy", "i64.npy", npy_bytes(small.astype("<i8")))
    write("npy", "u16.npy", npy_bytes(small.astype("<u2")))
    write("npy", "u32_header_v2.npy", npy_bytes(small.astype("<u4"), version=(2, 0)))
    write("npy", "f32_nan_fraction.npy", npy_bytes(np.array([[0.5, np.nan], [1.0, 2.0]], "<f4")))
    write("npy", "f32_vector.npy", npy_bytes(np.arange(5, dtype="<f4")))
    # Real counts: the first 30 cells x 40 genes of worm_neuron, dense uint16.
    _, _, entries = mtx_entries(DATA / "worm_neuron" / "matrix.mtx.gz")
    dense = np.zeros((30, 40), "<u2")
    for gene, cell, value in entries:
        if gene <= 40 and cell <= 30:
            dense[cell - 1, gene - 1] = value
    write("npy", "real_worm_neuron_30x40_u16.npy", npy_bytes(dense))
    # Regressions (see fuzz/README.md): a header length beyond the file, deeply nested brackets.
    v2 = npy_bytes(small.astype("<u4"), version=(2, 0))
    write("npy", "regression_header_length.npy", v2[:8] + (0xC3000074).to_bytes(4, "little") + v2[12:])
    header = "{'descr': " + "[" * 20 + "]" * 20 + ", 'fortran_order': False, 'shape': (1, 1), }\n"
    write("npy", "regression_nested_header.npy",
          b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + bytes(4))


def labels() -> None:
    write("labels", "integers.txt", b"1\n2\n10\n2\n1\n")
    write("labels", "strings_bom_crlf.txt", "\ufeffT cell\r\n B cell \r\nT cell\r\n\r\n\n".encode())
    write("labels", "blank_in_middle.txt", b"a\n\nb\n")
    for name in ["worm_neuron", "cbmc"]:
        lines = (DATA / name / "labels.txt").read_bytes().splitlines(keepends=True)
        write("labels", f"real_{name}_head.txt", b"".join(lines[:200]))


def mtx() -> None:
    write("mtx", "unordered_duplicates_crlf.mtx",
          (BANNER + "%comment\n\n3 2 5\n3 1 4\n1 1 2\r\n\n2 2 7\n3 1 1\n1 2 0\n").encode())
    write("mtx", "zero_entries.mtx", (BANNER + "2 3 0\n").encode())
    write("mtx", "regression_huge_shape.mtx", (BANNER + "1 4294967295 0\n").encode())
    write("mtx", "array_real.mtx", b"%%MatrixMarket matrix array real general\n2 2\n1.5\n0\n0\n2\n")
    v2 = DATA / "10x" / "v2_hg19_chr21" / "filtered_gene_bc_matrices" / "hg19_chr21" / "matrix.mtx"
    write("mtx", "real_v2_hg19_chr21.mtx", v2.read_bytes())
    # Real v3: its comment line, its shape and its first 150 entries (the count line adjusted).
    v3 = DATA / "10x" / "v3_grch38_chr21" / "filtered_feature_bc_matrix" / "matrix.mtx.gz"
    with gzip.open(v3, "rt") as f:
        banner, comment = f.readline(), f.readline()
    rows, cols, entries = mtx_entries(v3)
    head = entries[:150]
    text = banner + comment + f"{rows} {cols} {len(head)}\n"
    text += "".join(f"{r} {c} {v}\n" for r, c, v in head)
    write("mtx", "real_v3_grch38_chr21_head.mtx", text.encode())
    write("mtx", "real_v3_grch38_chr21_head.mtx.gz", gzip.compress(text.encode(), mtime=0))


if __name__ == "__main__":
    npy()
    labels()
    mtx()
