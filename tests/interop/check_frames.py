#!/usr/bin/env python3
"""Reads every frame beamdb stored, through zarr-python 3, and compares it with its source.

The source is found independently of beamdb: the documents are re-read here, external frames
loaded with numpy from the NPY_SEQ files or with h5py from the HDF5 files (AD_HDF5 resources
and application/x-hdf5 stream_resources), all through the same root map; inline arrays are
taken from the events. Each image_refs row must point at an array element equal to its
source, bit for bit, with the dtype and shape the row records. Scalar values a stream_resource
delivers must equal the file's, in the event's JSON (or, for a seq_num without an event, in
Zarr like a frame).

usage: check_frames.py BEAMTIME_DB FRAMES_ZARR [OLD=NEW]... JSONL_OR_FOLDER...
Prints "checked N frames" and exits 0, or prints each mismatch and exits 1.
"""
import json
import sqlite3
import sys
from pathlib import Path

import numpy as np
import os
import zarr


def remap(path, mappings):
    for old, new in mappings:
        if path == old or path.startswith(old.rstrip("/") + "/"):
            return new + path[len(old):]
    return path


class H5Files:
    """Opens each HDF5 file once, read-only."""

    def __init__(self):
        self.files = {}

    def file(self, path):
        self.dataset_file(path)
        return self.files[path]

    def dataset_file(self, path):
        import h5py

        try:
            import hdf5plugin  # noqa: F401  (the filters detectors write)
        except ImportError:
            pass
        if path not in self.files:
            try:
                self.files[path] = h5py.File(path, "r")
            except OSError:
                # A file its SWMR writer has not closed opens for SWMR reading only.
                self.files[path] = h5py.File(path, "r", swmr=True)

    def dataset(self, path, dataset):
        import h5py

        self.dataset_file(path)
        # External raw data resolves beside the file, as beamdb reads it.
        dapl = h5py.h5p.create(h5py.h5p.DATASET_ACCESS)
        dapl.set_efile_prefix(b"${ORIGIN}")
        return h5py.Dataset(h5py.h5d.open(self.files[path].id, dataset.encode(), dapl))

    def rows(self, path, dataset, start, stop):
        return self.dataset(path, dataset)[start:stop]


def expected_values(paths, mappings):
    """(descriptor uid, seq_num, field) -> (numpy array, is a frame), from the documents."""
    out = {}
    resources, datums, descriptors, stream_resources = {}, {}, {}, {}
    h5 = H5Files()

    def external(res, kwargs):
        root = remap(res["root"], mappings)
        if res["spec"] == "NPY_SEQ":
            return np.load(Path(root) / f"{res['resource_path']}_{kwargs['index']}.npy")
        if res["spec"] == "AD_HDF5":
            fpp = res["resource_kwargs"]["frame_per_point"]
            i = kwargs["point_number"]
            return h5.rows(str(Path(root) / res["resource_path"]), "/entry/data/data",
                           i * fpp, (i + 1) * fpp)
        if res["spec"] in ("AD_EIGER", "AD_EIGER2"):
            # area-detector-handlers' EigerHandler: the master file's data_NNNNNN in order.
            master = str(Path(root) / f"{res['resource_path']}_{kwargs['seq_id']}_master.h5")
            f = h5.file(master)
            entry = f["entry"]["data"] if "data" in f["entry"] else f["entry"]
            names = sorted(k for k in entry if k.startswith("data_"))
            stack = np.concatenate([h5.dataset(master, f"{entry.name}/{n}")[()] for n in names])
            frame = kwargs.get("frame_num")
            return stack if frame is None else stack[frame]
        if res["spec"] == "AD_TIFF":
            # area-detector-handlers' AreaDetectorTiffHandler: one file per frame.
            import tifffile

            kw = res["resource_kwargs"]
            fpp = kw.get("frame_per_point", 1)
            i = kwargs["point_number"]
            path = str(Path(root) / res["resource_path"]) + "/"
            return np.array([tifffile.imread(kw["template"] % (path, kw["filename"], j))
                             for j in range(i * fpp, (i + 1) * fpp)])
        raise ValueError(f"unknown spec {res['spec']}")

    def event(doc):
        keys = descriptors[doc["descriptor"]]
        for field, value in doc["data"].items():
            key = keys.get(field, {})
            at = (doc["descriptor"], doc["seq_num"], field)
            if key.get("external") and not key["external"].startswith("STREAM"):
                out[at] = (external(*datums[value]), True)
            elif len(key.get("shape", [])) >= 2:
                out[at] = (np.asarray(value, dtype=key.get("dtype_numpy") or "<f8"), True)

    def stream_datum(doc):
        sr = stream_resources[doc["stream_resource"]]
        key = descriptors[doc["descriptor"]][sr["data_key"]]
        shape = key["shape"]
        s0 = shape[0] if shape else 1
        path = remap(sr["uri"].removeprefix("file://localhost"), mappings)
        for i, index in enumerate(range(doc["indices"]["start"], doc["indices"]["stop"])):
            rows = h5.rows(path, sr["parameters"]["dataset"], index * s0, (index + 1) * s0)
            if not shape:
                rows = rows[0]
            seq_num = doc["seq_nums"]["start"] + i
            out[(doc["descriptor"], seq_num, sr["data_key"])] = (rows, len(shape) >= 2)

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
            elif name == "stream_resource":
                stream_resources[doc["uid"]] = doc
            elif name == "stream_datum":
                stream_datum(doc)
            elif name == "event":
                event(doc)
            elif name == "event_page":
                for i, uid in enumerate(doc["uid"]):
                    event({"uid": uid, "descriptor": doc["descriptor"],
                           "seq_num": doc["seq_num"][i],
                           "data": {k: v[i] for k, v in doc["data"].items()}})
    return out


def compare(got, want, dtype=None, shape=None):
    """What differs between a stored array and its source, or None. beamdb stores every
    frame little-endian, whatever the byte order of its source."""
    want = np.asarray(want)
    if want.dtype.byteorder == ">":
        want = want.astype(want.dtype.newbyteorder("<"))
    squeezed = [d for d in got.shape if d != 1] == [d for d in want.shape if d != 1]
    if squeezed:
        # A length-1 axis the descriptor leaves out (or adds): beamdb stores its shape.
        want = want.reshape(got.shape)
    if got.shape != want.shape or (shape is not None and list(got.shape) != json.loads(shape)):
        return f"shape {got.shape} vs source {want.shape} vs row {shape}"
    if got.dtype != want.dtype or (dtype is not None and np.dtype(dtype) != want.dtype):
        return f"dtype {got.dtype} vs source {want.dtype} vs row {dtype}"
    if got.tobytes() != want.tobytes():
        return "values differ"
    return None


def main():
    db, store, *rest = sys.argv[1:]
    mappings = [tuple(a.split("=", 1)) for a in rest if "=" in a]
    files = []
    for p in (Path(a) for a in rest if "=" not in a):
        files.extend(sorted(p.glob("*.jsonl")) if p.is_dir() else [p])
    expected = expected_values(files, mappings)
    # A store on S3 (s3://...) is read through s3fs; the test server's endpoint comes from
    # the environment, the credentials from the standard AWS variables.
    options = None
    if store.startswith("s3://"):
        options = {"endpoint_url": os.environ["BEAMDB_TEST_S3_ENDPOINT"]}
    root = zarr.open_group(store, mode="r", storage_options=options)
    conn = sqlite3.connect(db)
    rows = conn.execute(
        "SELECT stream_uid, seq_num, field_name, zarr_group, index_in_stack, dtype, frame_shape,"
        " event_uid FROM image_refs"
    ).fetchall()
    bad = 0
    for stream_uid, seq_num, field, group, index, dtype, shape, event_uid in rows:
        frame = root[group][index]
        want, _ = expected.pop((stream_uid, seq_num, field), (None, None))
        problem = "no source in the documents" if want is None else compare(frame, want, dtype, shape)
        if problem:
            bad += 1
            print(f"{group}[{index}] ({stream_uid} #{seq_num} {field} event {event_uid}): {problem}")
    values = 0
    events = {
        (s, n): json.loads(d)
        for s, n, d in conn.execute("SELECT stream_uid, seq_num, data FROM events")
    }
    for (stream_uid, seq_num, field), (want, is_frame) in expected.items():
        data = events.get((stream_uid, seq_num), {})
        if is_frame or field not in data:
            bad += 1
            print(f"source {(stream_uid, seq_num, field)} is neither in image_refs nor in its event")
            continue
        problem = compare(np.asarray(data[field], dtype=want.dtype), want)
        values += 1
        if problem:
            bad += 1
            print(f"event {stream_uid} #{seq_num} {field}: {problem}")
    if bad:
        print(f"{bad} problems in {len(rows)} frames and {values} values")
        return 1
    print(f"checked {len(rows)} frames and {values} values")
    return 0


if __name__ == "__main__":
    sys.exit(main())
