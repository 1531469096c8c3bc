#!/usr/bin/env python3
"""Decode cost of bitshuffle+LZ4 (DECTRIS Eiger), for docs/detectors.md.

usage: bench_bitshuffle.py OUT
Writes OUT/root/{bslz4,raw}.h5 (100 Eiger-500K frames, 514 x 1030 uint32, Poisson counts with
hot pixels; one frame a chunk; bitshuffle+LZ4 and uncompressed) and OUT/{bslz4,raw}.jsonl (a
fly scan naming each file, root /srv/det), then prints how long h5py + hdf5plugin take to
read every frame of each (best of 3). beamdb's side: ingest each with
`/usr/bin/time -f %U beamdb -q ingest --beamtime b --root-map /srv/det=OUT/root OUT/X.jsonl`;
the user-time difference between bslz4 and raw is its decode cost.
"""
import json
import sys
import time
import uuid
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np


def main():
    out = Path(sys.argv[1])
    (out / "root").mkdir(parents=True, exist_ok=True)
    n, shape = 100, (514, 1030)
    rng = np.random.default_rng(1)
    data = rng.poisson(3, (n, *shape)).astype("<u4")
    hot = rng.random(data.shape) < 0.001
    data[hot] = rng.integers(0, 2**32 - 1, int(hot.sum()), dtype=np.uint64).astype("<u4")
    for name, comp in [("bslz4", hdf5plugin.Bitshuffle(cname="lz4")), ("raw", {})]:
        path = out / "root" / f"{name}.h5"
        with h5py.File(path, "w") as f:
            f.create_dataset("/entry/data/data", data=data, chunks=(1, *shape), **comp)
        u = lambda what: str(uuid.uuid5(uuid.NAMESPACE_URL, f"bench/{name}/{what}"))  # noqa: E731
        key = {"source": "x", "dtype": "array", "shape": [1, *shape], "dtype_numpy": "<u4",
               "external": "STREAM:"}
        docs = [
            ["start", {"uid": u("s"), "time": 1, "scan_id": 1, "plan_name": "count"}],
            ["descriptor", {"uid": u("d"), "run_start": u("s"), "time": 1, "name": "primary",
                            "data_keys": {"img": key}}],
            ["stream_resource", {"uid": u("r"), "data_key": "img",
                                 "mimetype": "application/x-hdf5",
                                 "uri": f"file://localhost/srv/det/{name}.h5",
                                 "parameters": {"dataset": "/entry/data/data"},
                                 "run_start": u("s")}],
            ["stream_datum", {"uid": u("r") + "/0", "stream_resource": u("r"),
                              "descriptor": u("d"), "seq_nums": {"start": 1, "stop": n + 1},
                              "indices": {"start": 0, "stop": n}}],
            ["stop", {"uid": u("e"), "run_start": u("s"), "time": 2, "exit_status": "success",
                      "num_events": {"primary": n}}],
        ]
        with open(out / f"{name}.jsonl", "w") as f:
            for doc in docs:
                f.write(json.dumps(doc) + "\n")
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            with h5py.File(path, "r") as f:
                d = f["/entry/data/data"]
                for i in range(n):
                    d[i]
            best = min(best, time.perf_counter() - start)
        print(f"h5py + hdf5plugin, {name}: {best:.3f} s for {data.nbytes / 1e6:.0f} MB")


if __name__ == "__main__":
    main()
