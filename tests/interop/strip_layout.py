"""Turns a beamtime's frame store back into what beamdb wrote before the xarray layout
(docs/reading.md): only frame stacks, no `time`, no columns, no dimension_names, no
consolidated metadata, no layout marker, no group for a run without frames.

usage: strip_layout.py BEAMTIME_DB FRAMES_ZARR
"""

import json
import os
import shutil
import sqlite3
import sys


def write(path, value):
    with open(path, "w") as f:
        json.dump(value, f, indent=2)


def main():
    db, store = sys.argv[1], sys.argv[2]
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    stacks = {g for (g,) in con.execute("SELECT DISTINCT zarr_group FROM image_refs")}
    runs = os.path.join(store, "runs")
    for uid in os.listdir(runs):
        run = os.path.join(runs, uid)
        if not os.path.isdir(run):
            continue
        mine = {g for g in stacks if g.startswith(f"runs/{uid}/")}
        if not mine:
            shutil.rmtree(run)
            continue
        meta = json.load(open(os.path.join(run, "zarr.json")))
        meta.pop("consolidated_metadata", None)
        meta["attributes"]["beamdb"].pop("layout", None)
        write(os.path.join(run, "zarr.json"), meta)
        for stream in os.listdir(run):
            sdir = os.path.join(run, stream)
            if not os.path.isdir(sdir):
                continue
            leaves = {g.split("/")[3] for g in mine if g.split("/")[2] == stream}
            if not leaves:
                shutil.rmtree(sdir)
                continue
            for child in os.listdir(sdir):
                cdir = os.path.join(sdir, child)
                if os.path.isdir(cdir) and child not in leaves:
                    shutil.rmtree(cdir)
            for leaf in leaves:
                path = os.path.join(sdir, leaf, "zarr.json")
                array = json.load(open(path))
                array.pop("dimension_names", None)
                for key in ("data_key", "beamdb_frame_index"):
                    array["attributes"].pop(key, None)
                write(path, array)
            write(
                os.path.join(sdir, "zarr.json"),
                {"zarr_format": 3, "node_type": "group", "attributes": {}},
            )
    print("stripped")


if __name__ == "__main__":
    main()
