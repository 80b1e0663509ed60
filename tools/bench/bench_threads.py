"""Thread settings shared by the benchmark scripts: import this before torch.

`--threads N` on the command line (default 2) sizes the OpenMP / MKL / OpenBLAS pools, which must
happen before torch is imported; the hub is kept offline.
"""

import os
import sys


def threads_from_argv() -> str:
    if "--threads" in sys.argv:
        return sys.argv[sys.argv.index("--threads") + 1]
    return "2"


for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = threads_from_argv()
os.environ.setdefault("HF_HUB_OFFLINE", "1")
