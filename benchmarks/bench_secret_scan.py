"""What looking for secrets costs a cell, beside what hashing the same value for its blob costs.

    python benchmarks/bench_secret_scan.py [--runs N]

For each value a cell might read (a megabyte of prose, a million short words, ten thousand
records of an NLP pipeline, a dict of ten thousand settings, a million floats, a 10^7 array),
prints the best time of ``looks_secret`` (flow/secrets.py, the bounded scan of containers,
attributes and secret shapes) beside ``wire.digest`` of the same value, which every pushed value
costs anyway. Goal: the scan well under the digest, and under 0.1 s for any value (it is bounded).

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse

import numpy as np
from serialization import best_time as best_of  # benchmarks/serialization.py's timer

from rx_magic.flow.secrets import looks_secret
from rx_magic.runtime import wire


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    runs = parser.parse_args().runs
    values = {
        "1 MiB of prose": "the quick brown fox jumps over the lazy dog. " * 23_000,
        "10^6 short words": [f"word{index % 1000}" for index in range(10**6)],
        "10^4 NLP records": [{"token": "the", "pos": "DET", "lemma": "the"} for _ in range(10_000)],
        "10^4 settings": {f"setting_{index}": f"value {index}" for index in range(10_000)},
        "10^6 floats": [float(index) for index in range(10**6)],
        "10^7 float64 array": np.zeros(10**7),
    }
    print(f"{'value':22s} {'looks_secret':>14s} {'wire.digest':>14s}   found")
    for name, value in values.items():
        scan = best_of(lambda value=value: looks_secret("value", value), runs)
        digest = best_of(lambda value=value: wire.digest(value), runs)
        print(f"{name:22s} {scan * 1000:11.1f} ms {digest * 1000:11.1f} ms   {looks_secret('value', value)}")


if __name__ == "__main__":
    main()
