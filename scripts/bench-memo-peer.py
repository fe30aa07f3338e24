"""The Python peer of `cargo bench --bench memo`: a cache hit of joblib.Memory for the same
small function, `scale(factor, x) = factor * x`, called as scale(2.5, 4.0).

    python bench-memo-peer.py [--batch N] [--repeats R]

Prints one JSON object: the median time of one joblib.Memory hit (the disk cache joblib
users reach for: its key is the function's name and code plus a hash of the arguments, and
the value is read back from a file), and, for scale, the median hit of functools.lru_cache
(in-process memory, no persistence, no code in the key).
"""

import argparse
import functools
import json
import statistics
import tempfile
import time

import joblib


def per_call(fn, batch, repeats):
    """Median over `repeats` batches of the mean time of one call in a batch of `batch`."""
    for _ in range(batch):
        fn()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(batch):
            fn()
        samples.append((time.perf_counter() - t0) / batch)
    return statistics.median(samples)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as location:
        memory = joblib.Memory(location=location, verbose=0)

        @memory.cache
        def scale(factor, x):
            return factor * x

        assert scale(2.5, 4.0) == 10.0  # the miss, which fills the cache
        joblib_hit = per_call(lambda: scale(2.5, 4.0), args.batch, args.repeats)

    @functools.lru_cache(maxsize=None)
    def scale_lru(factor, x):
        return factor * x

    scale_lru(2.5, 4.0)
    lru_hit = per_call(lambda: scale_lru(2.5, 4.0), args.batch * 50, args.repeats)

    print(
        json.dumps(
            {
                "joblib_version": joblib.__version__,
                "joblib_hit_s": joblib_hit,
                "lru_cache_hit_s": lru_hit,
            }
        )
    )


if __name__ == "__main__":
    main()
