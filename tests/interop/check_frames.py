#!/usr/bin/env python3
"""Reads every frame beamdb stored, through zarr-python 3, and compares it with its source.

The source is found independently of beamdb: the documents are re-read here, external frames
loaded with numpy from the NPY_SEQ files (through the same root map), inline arrays taken from
the events. Each image_refs row must point at an array element equal to its source, bit for
bit, with the dtype and shape the row records.

usage: check_frames.py BEAMTIME_DB FRAMES_ZARR [OLD=NEW]... JSONL_OR_FOLDER...
Prints "checked N frames" and exits 0, or prints each mismatch and exits 1.
"""
import json
import sqlite3
import sys
from pathlib import Path

import numpy as np
import zarr


def expected_frames(paths, mappings):
    """(event uid, field) -> numpy array, from the documents."""
    out = {}
    resources, datums, descriptors = {}, {}, {}

    def event(doc):
        keys = descriptors[doc["descriptor"]]
        for field, value in doc["data"].items():
            key = keys.get(field, {})
            if key.get("external"):
                res, kwargs = datums[value]
                root = res["root"]
                for old, new in mappings:
                    if root == old or root.startswith(old.rstrip("/") + "/"):
                        root = new + root[len(old):]
                        break
                path = Path(root) / f"{res['resource_path']}_{kwargs['index']}.npy"
                out[(doc["uid"], field)] = np.load(path)
            elif len(key.get("shape", [])) >= 2:
                out[(doc["uid"], field)] = np.asarray(value, dtype=key.get("dtype_numpy") or "<f8")

    for path in paths:
        for line in open(path):
            if not line.strip():
                continue
            name, doc = json.loads(line)
            if name == "descriptor":
                descriptors[doc["uid"]] = doc["data_keys"]
            elif name == "resource":
                resources[doc["uid"]] = doc
            elif name == "datum":
                datums[doc["datum_id"]] = (resources[doc["resource"]], doc["datum_kwargs"])
            elif name == "datum_page":
                for i, did in enumerate(doc["datum_id"]):
                    kw = {k: v[i] for k, v in doc["datum_kwargs"].items()}
                    datums[did] = (resources[doc["resource"]], kw)
            elif name == "event":
                event(doc)
            elif name == "event_page":
                for i, uid in enumerate(doc["uid"]):
                    event({"uid": uid, "descriptor": doc["descriptor"],
                           "data": {k: v[i] for k, v in doc["data"].items()}})
    return out


def main():
    db, store, *rest = sys.argv[1:]
    mappings = [tuple(a.split("=", 1)) for a in rest if "=" in a]
    files = []
    for p in (Path(a) for a in rest if "=" not in a):
        files.extend(sorted(p.glob("*.jsonl")) if p.is_dir() else [p])
    expected = expected_frames(files, mappings)
    root = zarr.open_group(store, mode="r")
    rows = sqlite3.connect(db).execute(
        "SELECT event_uid, field_name, zarr_group, index_in_stack, dtype, frame_shape FROM image_refs"
    ).fetchall()
    bad = 0
    for event_uid, field, group, index, dtype, shape in rows:
        arr = root[group]
        frame = arr[index]
        want = expected.pop((event_uid, field), None)
        problems = []
        if want is None:
            problems.append("no source frame in the documents")
        else:
            if frame.shape != want.shape or list(frame.shape) != json.loads(shape):
                problems.append(f"shape {frame.shape} vs source {want.shape} vs row {shape}")
            elif frame.dtype != want.dtype or np.dtype(dtype) != want.dtype:
                problems.append(f"dtype {frame.dtype} vs source {want.dtype} vs row {dtype}")
            elif frame.tobytes() != want.tobytes():
                problems.append("pixels differ")
        if problems:
            bad += 1
            print(f"{group}[{index}] ({event_uid} {field}): {'; '.join(problems)}")
    for key in expected:
        bad += 1
        print(f"source frame {key} has no image_refs row")
    if bad:
        print(f"{bad} problems in {len(rows)} frames")
        return 1
    print(f"checked {len(rows)} frames")
    return 0


if __name__ == "__main__":
    sys.exit(main())
