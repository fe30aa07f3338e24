"""The Python peer of `cargo bench --bench pool`: the same small closure through Python's
multiprocessing Pool, with the function sent by value via cloudpickle.

    python bench-pool-peer.py [--calls N] [--repeats R]

Prints one JSON object: the median round-trip time of one call through Pool(1).apply, and
calls per second for 1 and 2 processes through Pool.starmap (Python's own batching, its best
case) and through imap with chunksize 1 (one task per message, as our pool sends calls).

Every task carries the closure by value: a cloudpickle blob of `scale` with its captured
`factor`, which the worker unpickles and calls, the way cloudpickle ships code to workers.
"""

import argparse
import json
import multiprocessing as mp
import statistics
import time

import cloudpickle


def make_scale(factor):
    def scale(x):
        return factor * x

    return scale


def run(blob, x):
    return cloudpickle.loads(blob)(x)


def round_trip(blob, n):
    with mp.Pool(1) as pool:
        for i in range(200):
            pool.apply(run, (blob, float(i)))
        times = []
        for i in range(n):
            t0 = time.perf_counter()
            y = pool.apply(run, (blob, 4.0))
            times.append(time.perf_counter() - t0)
            assert y == 10.0
    return statistics.median(times)


def throughput(blob, processes, calls, repeats, chunked):
    tasks = [(blob, float(i)) for i in range(calls)]
    rates = []
    with mp.Pool(processes) as pool:
        pool.starmap(run, tasks[:1000])
        for _ in range(repeats):
            t0 = time.perf_counter()
            if chunked:
                out = pool.starmap(run, tasks)
            else:
                out = list(pool.imap(_star, tasks, chunksize=1))
            rates.append(calls / (time.perf_counter() - t0))
            assert out[3] == 7.5
    return statistics.median(rates)


def _star(task):
    return run(*task)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--round-trips", type=int, default=3000)
    args = parser.parse_args()
    blob = cloudpickle.dumps(make_scale(2.5))
    result = {
        "blob_bytes": len(blob),
        "round_trip_s": round_trip(blob, args.round_trips),
    }
    for processes in (1, 2):
        result[f"starmap_{processes}_per_s"] = throughput(
            blob, processes, args.calls, args.repeats, chunked=True
        )
        result[f"imap1_{processes}_per_s"] = throughput(
            blob, processes, args.calls // 4, args.repeats, chunked=False
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
