"""Checks a beamtime's frame store the way a scientist reads it, with xarray and no beamdb.

usage: check_xarray.py BEAMTIME_DB FRAMES_ZARR

For every committed run: the whole run opens with xr.open_datatree, every stream with
xr.open_zarr; every array has dimension_names; each stream's `time` has one entry per event
(fly-scan points included) in (time, seq_num) order; every scalar / 1-D data key equals the
events' values (events.data); every frame of every event equals the variable's value at the
event's position (through `{leaf}.index`, and directly along `time` when the stack is aligned).
Prints "checked R runs, S streams, V values, F frames" and exits 1 on the first difference.
"""

import json
import math
import sqlite3
import sys
import warnings

import numpy as np
import xarray as xr
import zarr

warnings.simplefilter("error", RuntimeWarning)
warnings.filterwarnings("ignore", message="Consolidated metadata")


def fail(msg):
    print(f"FAIL: {msg}")
    sys.exit(1)


def same(a, b):
    if isinstance(b, bool) or isinstance(a, (bool, np.bool_)):
        return bool(a) == bool(b)
    if isinstance(b, (int, float)):
        a = float(a)
        return (math.isnan(a) and math.isnan(float(b))) or a == float(b)
    if isinstance(b, str):
        return str(a) == b
    return False


def main():
    db, store = sys.argv[1], sys.argv[2]
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    runs = [r[0] for r in con.execute("SELECT uid FROM runs ORDER BY uid")]
    n_streams = n_values = n_frames = 0
    for uid in runs:
        run_path = f"{store}/runs/{uid}"
        tree = xr.open_datatree(run_path, engine="zarr")
        meta = json.load(open(f"{run_path}/zarr.json"))
        if meta["attributes"]["beamdb"].get("layout") != 1:
            fail(f"{uid}: no layout marker")
        if "consolidated_metadata" not in meta:
            fail(f"{uid}: no consolidated metadata on the run group")
        group = zarr.open_group(run_path, mode="r")
        for name, arr in group.arrays():
            fail(f"{uid}: array {name} directly in the run group")
        for path, arr in group.members(max_depth=None):
            if isinstance(arr, zarr.Array) and not arr.metadata.dimension_names:
                fail(f"{uid}/{path}: no dimension_names")
        streams = [
            r[0]
            for r in con.execute(
                "SELECT DISTINCT name FROM streams WHERE run_uid = ?", (uid,)
            )
        ]
        for stream in streams:
            n_streams += 1
            ds = xr.open_zarr(store, group=f"runs/{uid}/{stream}", consolidated=False)
            ds2 = xr.open_zarr(run_path, group=stream)
            if set(ds.variables) != set(ds2.variables):
                fail(f"{uid}/{stream}: consolidated and plain metadata disagree")
            if stream not in tree.children:
                fail(f"{uid}: stream {stream} missing from the DataTree")
            rows = list(
                con.execute(
                    """SELECT t, seq, data, uid, su FROM (
                         SELECT e.time AS t, e.seq_num AS seq, e.data AS data, e.uid AS uid,
                                e.stream_uid AS su
                         FROM events e JOIN streams s ON s.uid = e.stream_uid
                         WHERE s.run_uid = ?1 AND s.name = ?2
                         UNION ALL
                         SELECT DISTINCT NULL, i.seq_num, NULL, NULL, i.stream_uid
                         FROM image_refs i JOIN streams s ON s.uid = i.stream_uid
                         WHERE s.run_uid = ?1 AND s.name = ?2 AND i.event_uid IS NULL)
                       ORDER BY t IS NULL, t, seq, su""",
                    (uid, stream),
                )
            )
            times = ds["time"].values
            if len(times) != len(rows):
                fail(f"{uid}/{stream}: {len(times)} times, {len(rows)} events")
            for i, row in enumerate(rows):
                t = row[0]
                if not same(times[i], float("nan") if t is None else t):
                    fail(f"{uid}/{stream}: time[{i}] {times[i]} != {t}")
                if int(ds["seq_num"].values[i]) != row[1]:
                    fail(f"{uid}/{stream}: seq_num[{i}]")
            keys = {}
            for (dk,) in con.execute(
                "SELECT data_keys FROM streams WHERE run_uid = ? AND name = ?",
                (uid, stream),
            ):
                for k, spec in json.loads(dk).items():
                    keys.setdefault(k, spec)
            stacks = {
                r[0]: r[1]
                for r in con.execute(
                    """SELECT DISTINCT i.zarr_group, i.field_name FROM image_refs i
                       JOIN streams s ON s.uid = i.stream_uid
                       WHERE s.run_uid = ? AND s.name = ?""",
                    (uid, stream),
                )
            }
            framed = set(stacks.values())
            for key, spec in keys.items():
                if key in framed:
                    continue
                name = f"{key}.field" if key in ("time", "seq_num") else key
                if name not in ds:
                    skipped = ds.attrs.get("beamdb_skipped", {})
                    if key not in skipped:
                        fail(f"{uid}/{stream}: data key {key} is neither a variable nor noted")
                    continue
                var = ds[name]
                if var.dims[0] != "time":
                    fail(f"{uid}/{stream}/{name}: first dimension {var.dims}")
                values = var.values
                for i, row in enumerate(rows):
                    data = json.loads(row[2]) if row[2] else {}
                    if key not in data:
                        ok = values.dtype.kind != "f" or np.all(np.isnan(values[i]))
                        if not ok:
                            fail(f"{uid}/{stream}/{name}[{i}]: missing value is not NaN")
                        continue
                    want = data[key]
                    got = values[i]
                    if isinstance(want, list):
                        if len(want) != len(got) or not all(
                            same(g, w) for g, w in zip(got, want)
                        ):
                            fail(f"{uid}/{stream}/{name}[{i}]: {got} != {want}")
                    elif not same(got, want):
                        fail(f"{uid}/{stream}/{name}[{i}]: {got!r} != {want!r}")
                    n_values += 1
            # Frames: each image_ref's frame is the variable's at the event's position.
            position = {}
            for i, row in enumerate(rows):
                position[(row[4], row[1])] = i
            for zarr_group, field in stacks.items():
                leaf = zarr_group.split("/")[-1]
                var = ds[leaf]
                index = ds[f"{leaf}.index"].values
                stack = zarr.open_array(f"{store}/{zarr_group}", mode="r")
                for su, seq, idx in con.execute(
                    "SELECT stream_uid, seq_num, index_in_stack FROM image_refs WHERE zarr_group = ?",
                    (zarr_group,),
                ):
                    pos = position[(su, seq)]
                    if index[pos] != idx:
                        fail(f"{uid}/{stream}/{leaf}.index[{pos}] = {index[pos]}, image_ref says {idx}")
                    frame = var.isel({var.dims[0]: idx}).values
                    if not np.array_equal(frame, stack[idx], equal_nan=frame.dtype.kind == "f"):
                        fail(f"{uid}/{stream}/{leaf}: frame {idx} differs")
                    if var.dims[0] == "time":
                        if not np.array_equal(var.isel(time=pos).values, stack[idx], equal_nan=frame.dtype.kind == "f"):
                            fail(f"{uid}/{stream}/{leaf}: along time, entry {pos} is not frame {idx}")
                    n_frames += 1
    print(f"checked {len(runs)} runs, {n_streams} streams, {n_values} values, {n_frames} frames")


if __name__ == "__main__":
    main()
