#!/usr/bin/env python3
"""Generates the small NumPy fixtures of tests/test_npy.cpp (run with /usr/bin/python3).

Everything is written by NumPy's own writers (numpy.savez, numpy.lib.format.write_array), so the
C++ reader is checked against the real format, including the zip64 local headers numpy emits.
Values are simple closed forms so the test can recompute them without this script.
"""
import io
import os

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures")


def main():
    os.makedirs(OUT, exist_ok=True)
    # value(i) = i * 0.5 - 3 for floats, i - 3 for signed ints, i for unsigned, i % 3 == 0 for bool
    f4 = (np.arange(24, dtype=np.float32) * 0.5 - 3).reshape(2, 3, 4)
    f8 = (np.arange(5, dtype=np.float64) * 0.5 - 3)
    i1 = (np.arange(6, dtype=np.int8) - 3).reshape(3, 2)
    i2 = np.arange(4, dtype=np.int16) - 3
    i4 = np.arange(4, dtype=np.int32) - 3
    i8 = np.arange(4, dtype=np.int64) - 3
    u1 = np.arange(4, dtype=np.uint8)
    u2 = np.arange(4, dtype=np.uint16)
    b1 = np.arange(6) % 3 == 0
    scalar = np.float32(2.5)
    empty = np.zeros((0, 3), dtype=np.float32)
    np.savez(os.path.join(OUT, "npy_dtypes.npz"), f4=f4, f8=f8, i1=i1, i2=i2, i4=i4, i8=i8, u1=u1,
             u2=u2, b1=b1, scalar=scalar, empty=empty)

    # A version 2.0 .npy and two files the reader must reject with a clear message.
    with open(os.path.join(OUT, "npy_v2.npy"), "wb") as f:
        np.lib.format.write_array(f, f4, version=(2, 0))
    with open(os.path.join(OUT, "npy_fortran.npy"), "wb") as f:
        np.lib.format.write_array(f, np.asfortranarray(f4))
    with open(os.path.join(OUT, "npy_bigendian.npy"), "wb") as f:
        np.lib.format.write_array(f, f4.astype(">f4"))
    # A compressed archive (deflate), which the reader rejects.
    np.savez_compressed(os.path.join(OUT, "npy_compressed.npz"), f4=f4)


if __name__ == "__main__":
    main()
