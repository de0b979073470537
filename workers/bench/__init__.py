"""``spikescan bench``: the benchmarks of issue 6, each a ratio taken side by side in one run.

Every sub-benchmark (``emulator``, ``pipeline``, ``service``, ``spinnaker``) runs in a child process started
by ``workers.bench.main`` with the thread count pinned in the environment (BLAS, OpenMP, numba, TensorFlow),
so the numbers in one table share the same threads; each child prints one JSON object on stdout.
"""
