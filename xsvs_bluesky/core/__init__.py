"""Pure numerical core of xsvs_bluesky (numpy/scipy/numba only, no I/O)."""
