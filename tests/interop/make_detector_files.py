#!/usr/bin/env python3
"""Writes small files shaped like the ones real detectors write, and the Bluesky documents that
point at them, for the ingest tests (tests/cli/detectors.rs).

usage: make_detector_files.py OUT CASE...

For each CASE: the frame files under OUT/root (the documents call that root /srv/det; map it
with --root-map /srv/det=OUT/root) and OUT/CASE.jsonl. Files outside OUT/root (OUT/outside*)
are what a hostile file points at. Everything is deterministic (seeded), so a failure replays.

The compression filters come from hdf5plugin (the plugins beamlines install), so every file
here is what h5py + hdf5plugin write; check_frames.py reads them back the same way.
"""
import json
import os
import sys
import uuid
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np

ROOT = "/srv/det"
AD = "/entry/data/data"


def uid(case, what):
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"beamdb-detectors/{case}/{what}"))


def frames(n, shape, dtype, seed=7):
    """Detector-like pixels: mostly low counts, a few hot pixels, the full range of the type."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    size = (n, *shape)
    if dtype.kind == "f":
        return (rng.standard_normal(size) * 100).astype(dtype)
    info = np.iinfo(dtype)
    data = rng.poisson(3, size).astype(np.int64)
    hot = rng.random(size) < 0.01
    data[hot] = rng.integers(info.min, info.max, size=int(hot.sum()), endpoint=True)
    return data.astype(dtype)


def start(case):
    return ["start", {"uid": uid(case, "start"), "time": 1.0, "scan_id": 1,
                      "plan_name": "count", "sample_name": "detector-" + case}]


def descriptor(case, keys):
    return ["descriptor", {"uid": uid(case, "descriptor"), "run_start": uid(case, "start"),
                           "time": 1.1, "name": "primary", "data_keys": keys,
                           "configuration": {}, "object_keys": {"det": list(keys)},
                           "hints": {}}]


def stop(case, n):
    return ["stop", {"uid": uid(case, "stop"), "run_start": uid(case, "start"), "time": 9.0,
                     "exit_status": "success", "reason": "", "num_events": {"primary": n}}]


def key(shape, dtype, external="FILESTORE:"):
    return {"source": "PV:det", "dtype": "array", "shape": list(shape),
            "dtype_numpy": np.dtype(dtype).str, "external": external, "object_name": "det"}


def datum_run(case, spec, resource_path, resource_kwargs, datum_kwargs, shape, dtype):
    """A resource, one datum per event, one event per datum."""
    res = uid(case, "resource")
    docs = [start(case), descriptor(case, {"img": key(shape, dtype)}),
            ["resource", {"uid": res, "spec": spec, "root": ROOT,
                          "resource_path": resource_path, "resource_kwargs": resource_kwargs,
                          "path_semantics": "posix", "run_start": uid(case, "start")}]]
    for i, kwargs in enumerate(datum_kwargs):
        docs.append(["datum", {"resource": res, "datum_id": f"{res}/{i}",
                               "datum_kwargs": kwargs}])
        docs.append(["event", {"uid": uid(case, f"event{i}"), "time": 2.0 + i,
                               "descriptor": uid(case, "descriptor"), "seq_num": i + 1,
                               "data": {"img": f"{res}/{i}"}, "timestamps": {"img": 2.0 + i},
                               "filled": {"img": False}}])
    docs.append(stop(case, len(datum_kwargs)))
    return docs


def ad_hdf5_run(case, file, n, frame_shape, dtype, fpp=1):
    shape = [fpp, *frame_shape]
    return datum_run(case, "AD_HDF5", file, {"frame_per_point": fpp},
                     [{"point_number": i} for i in range(n)], shape, dtype)


def stream_run(case, file, dataset, n, frame_shape, dtype):
    """stream_resource + one stream_datum for all n frames, no events (a fly scan)."""
    sr = uid(case, "stream_resource")
    uri = f"file://localhost{ROOT}/{file}"
    return [start(case),
            descriptor(case, {"img": key([1, *frame_shape], dtype, "STREAM:")}),
            ["stream_resource", {"uid": sr, "data_key": "img", "mimetype": "application/x-hdf5",
                                 "uri": uri, "parameters": {"dataset": dataset},
                                 "run_start": uid(case, "start")}],
            ["stream_datum", {"uid": f"{sr}/0", "stream_resource": sr,
                              "descriptor": uid(case, "descriptor"),
                              "seq_nums": {"start": 1, "stop": n + 1},
                              "indices": {"start": 0, "stop": n}}],
            stop(case, n)]


def h5(out, name, **kw):
    path = out / "root" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return h5py.File(path, "w", **kw)


# Frames of 37 x 53 pixels: not a multiple of 8 elements, so bitshuffle's tail path runs.
FRAME = (37, 53)


def filtered(compression, dtype="<u2", chunks=(1, *FRAME), n=4, frame=FRAME, **extra):
    def make(case, out):
        data = frames(n, frame, dtype)
        with h5(out, f"{case}.h5") as f:
            f.create_dataset(AD, data=data, chunks=chunks, **compression, **extra)
        return ad_hdf5_run(case, f"{case}.h5", n, frame, dtype)
    return make


CASES = {}

# Compression filters beamlines write.
CASES["bslz4"] = filtered(dict(hdf5plugin.Bitshuffle(cname="lz4")))
CASES["bslz4_u4"] = filtered(dict(hdf5plugin.Bitshuffle(cname="lz4")), dtype="<u4")
CASES["bslz4_multi"] = filtered(dict(hdf5plugin.Bitshuffle(cname="lz4")), chunks=(3, *FRAME),
                                n=7)
CASES["bslz4_big"] = filtered(dict(hdf5plugin.Bitshuffle(nelems=256, cname="lz4")),
                              dtype="<u4", frame=(96, 80), chunks=(1, 96, 80))
CASES["bszstd"] = filtered(dict(hdf5plugin.Bitshuffle(cname="zstd")))
CASES["bsnone"] = filtered(dict(hdf5plugin.Bitshuffle(cname="none")), dtype="<i4")
CASES["lz4"] = filtered(dict(hdf5plugin.LZ4()))
CASES["lz4_blocks"] = filtered(dict(hdf5plugin.LZ4(nbytes=512)), chunks=(2, *FRAME))
CASES["zstd"] = filtered(dict(hdf5plugin.Zstd()))
for cname in ["blosclz", "lz4", "lz4hc", "snappy", "zlib", "zstd"]:
    for shuffle, tag in [(hdf5plugin.Blosc.NOSHUFFLE, "noshuffle"),
                         (hdf5plugin.Blosc.SHUFFLE, "shuffle"),
                         (hdf5plugin.Blosc.BITSHUFFLE, "bitshuffle")]:
        CASES[f"blosc_{cname}_{tag}"] = filtered(
            dict(hdf5plugin.Blosc(cname=cname, clevel=5, shuffle=shuffle)))
CASES["deflate_shuffle"] = filtered(dict(compression="gzip", compression_opts=4),
                                    shuffle=True, fletcher32=True)
CASES["scaleoffset"] = filtered({}, scaleoffset=0)
CASES["szip"] = filtered(dict(compression="szip"))


def nbit(case, out):
    """N-bit: 12 significant bits of uint16 (h5py has no keyword for it: the low-level API)."""
    n = 4
    data = frames(n, FRAME, "<u2") % 4096
    with h5(out, f"{case}.h5") as f:
        t = h5py.h5t.STD_U16LE.copy()
        t.set_precision(12)
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_chunk((1, *FRAME))
        dcpl.set_filter(h5py.h5z.FILTER_NBIT)
        f.create_group("entry/data")
        space = h5py.h5s.create_simple(data.shape)
        h5py.Dataset(h5py.h5d.create(f.id, AD.encode(), t, space, dcpl))[...] = data
    return ad_hdf5_run(case, f"{case}.h5", n, FRAME, "<u2")


CASES["nbit"] = nbit
def corrupt(cname):
    """Bitshuffle (or LZ4) chunks with bytes overwritten inside the compressed stream."""
    def make(case, out):
        data = frames(4, FRAME, "<u2")
        comp = {"bslz4": hdf5plugin.Bitshuffle(cname="lz4"), "lz4": hdf5plugin.LZ4(),
                "blosc": hdf5plugin.Blosc(cname="lz4")}[cname]
        with h5(out, f"{case}.h5") as f:
            f.create_dataset(AD, data=data, chunks=(1, *FRAME), **comp)
        with h5py.File(out / "root" / f"{case}.h5", "r") as f:
            info = f[AD].id.get_chunk_info(1)
        with open(out / "root" / f"{case}.h5", "r+b") as raw:
            if cname == "blosc":
                # The header's compressed size (bytes 12..16) now promises far more bytes
                # than the chunk has.
                raw.seek(info.byte_offset + 12)
                raw.write(bytes([0xFF, 0xFF, 0xFF, 0x7F]))
            else:
                # Past the 12-byte header and the first block length: the LZ4 stream itself.
                raw.seek(info.byte_offset + 16)
                raw.write(bytes([0xF0, 0xFF, 0xFF, 0xFF]) * 8)
        return ad_hdf5_run(case, f"{case}.h5", 4, FRAME, "<u2")
    return make


CASES["bslz4_corrupt"] = corrupt("bslz4")
CASES["lz4_corrupt"] = corrupt("lz4")
CASES["blosc_corrupt"] = corrupt("blosc")

# A filter beamdb does not build in: BZip2 (307).
CASES["bzip2"] = filtered(dict(hdf5plugin.BZip2()))

# Layouts and types.
CASES["contiguous"] = filtered({}, chunks=None)
CASES["chunked_multi"] = filtered({}, chunks=(3, *FRAME), n=7)
CASES["tiles"] = filtered(dict(hdf5plugin.Bitshuffle(cname="lz4")), chunks=(1, 16, 16))
CASES["big_endian"] = filtered({}, dtype=">u2")
CASES["big_endian_float"] = filtered(dict(compression="gzip"), dtype=">f4")
CASES["float64"] = filtered(dict(hdf5plugin.LZ4()), dtype="<f8")


def fpp3(case, out):
    n, fpp = 3, 3
    data = frames(n * fpp, FRAME, "<u2")
    with h5(out, f"{case}.h5") as f:
        f.create_dataset(AD, data=data, chunks=(1, *FRAME), **hdf5plugin.Bitshuffle())
        f["/entry/instrument/NDAttributes/NumImages"] = [n * fpp]
    return ad_hdf5_run(case, f"{case}.h5", n, FRAME, "<u2", fpp=fpp)


CASES["ad_fpp3"] = fpp3


def xspress3(case, out):
    """Xspress3: [n, channels, bins] uint32 spectra."""
    n = 5
    data = frames(n, (4, 4096), "<u4")
    with h5(out, f"{case}.h5") as f:
        f.create_dataset(AD, data=data, chunks=(1, 4, 4096), **hdf5plugin.Bitshuffle())
    return ad_hdf5_run(case, f"{case}.h5", n, (4, 4096), "<u4")


CASES["xspress3"] = xspress3


def four_d(case, out):
    """areaDetector's length-1 axis: frames stored as (n, 1, y, x), described as [1, y, x]."""
    n = 4
    data = frames(n, (1, *FRAME), "<u2")
    with h5(out, f"{case}.h5") as f:
        f.create_dataset(AD, data=data, chunks=(1, 1, *FRAME), **hdf5plugin.LZ4())
    return datum_run(case, "AD_HDF5", f"{case}.h5", {"frame_per_point": 1},
                     [{"point_number": i} for i in range(n)], [1, 1, *FRAME], "<u2")


CASES["four_d"] = four_d


def four_d_described_3d(case, out):
    """The same file, but the descriptor leaves areaDetector's length-1 axis out: [1, y, x]."""
    n = 4
    data = frames(n, (1, *FRAME), "<u2")
    with h5(out, f"{case}.h5") as f:
        f.create_dataset(AD, data=data, chunks=(1, 1, *FRAME))
    return ad_hdf5_run(case, f"{case}.h5", n, FRAME, "<u2")


CASES["four_d_described_3d"] = four_d_described_3d


def four_d_fpp2(case, out):
    """(n*2, 1, y, x) with frame_per_point 2, described as [2, y, x]."""
    n, fpp = 3, 2
    data = frames(n * fpp, (1, *FRAME), "<u2")
    with h5(out, f"{case}.h5") as f:
        f.create_dataset(AD, data=data, chunks=(1, 1, *FRAME), **hdf5plugin.Bitshuffle())
    return ad_hdf5_run(case, f"{case}.h5", n, FRAME, "<u2", fpp=fpp)


CASES["four_d_fpp2"] = four_d_fpp2


def stream(case, out):
    n = 6
    data = frames(n, FRAME, "<u4")
    with h5(out, f"{case}.h5") as f:
        f.create_dataset("/entry/data/data", data=data, chunks=(1, *FRAME),
                         **hdf5plugin.Bitshuffle(cname="lz4"))
    return stream_run(case, f"{case}.h5", "/entry/data/data", n, FRAME, "<u4")


CASES["stream_bslz4"] = stream


def eiger_files(out, prefix, n_files, per_file, dtype="<u4", frame=FRAME, seed=11):
    """A DECTRIS master file whose /entry/data/data_00000N are external links to data files
    beside it, each holding `per_file` bitshuffle+LZ4 frames."""
    data = frames(n_files * per_file, frame, dtype, seed)
    master = h5(out, f"{prefix}_master.h5")
    for i in range(n_files):
        name = f"{prefix}_data_{i + 1:06d}.h5"
        with h5(out, name) as f:
            f.create_dataset("/entry/data/data", data=data[i * per_file:(i + 1) * per_file],
                             chunks=(1, *frame), **hdf5plugin.Bitshuffle(cname="lz4"))
        master[f"/entry/data/data_{i + 1:06d}"] = h5py.ExternalLink(
            os.path.basename(name), "/entry/data/data")
    master["/entry/instrument/detector/detectorSpecific/nimages"] = n_files * per_file
    master.close()
    return data


def eiger(case, out):
    """AD_EIGER: {root}/{resource_path}_{seq_id}_master.h5; one datum per frame."""
    per_file, n_files = 3, 2
    eiger_files(out, f"eiger/{case}_4", n_files, per_file)
    n = per_file * n_files
    return datum_run(case, "AD_EIGER", f"eiger/{case}", {"images_per_file": per_file},
                     [{"seq_id": 4, "frame_num": i} for i in range(n)], FRAME, "<u4")


CASES["eiger"] = eiger


def eiger_stack(case, out):
    """AD_EIGER2 without frame_num: the datum is the whole series of one seq_id."""
    per_file, n_files = 2, 2
    eiger_files(out, f"{case}_1", n_files, per_file)
    eiger_files(out, f"{case}_2", n_files, per_file, seed=12)
    n = per_file * n_files
    return datum_run(case, "AD_EIGER2", case, {"frame_per_point": per_file},
                     [{"seq_id": 1}, {"seq_id": 2}], [n, *FRAME], "<u4")


CASES["eiger_stack"] = eiger_stack


def eiger_master_stream(case, out):
    """A stream_resource naming an Eiger master file and one of its linked datasets."""
    eiger_files(out, case, 2, 3)
    n = 3
    return stream_run(case, f"{case}_master.h5", "/entry/data/data_000002", n, FRAME, "<u4")


CASES["eiger_stream"] = eiger_master_stream


def odin_vds(case, out):
    """Odin: two writer processes each write every other frame; a VDS interleaves them."""
    n = 6
    data = frames(n, FRAME, "<u2")
    for w in range(2):
        with h5(out, f"{case}_{w:06d}.h5") as f:
            f.create_dataset("data", data=data[w::2], chunks=(1, *FRAME),
                             **hdf5plugin.Bitshuffle(cname="lz4"))
    layout = h5py.VirtualLayout(shape=(n, *FRAME), dtype="<u2")
    for w in range(2):
        layout[w::2] = h5py.VirtualSource(f"{case}_{w:06d}.h5", "data", shape=(n // 2, *FRAME))
    with h5(out, f"{case}_vds.h5", libver=("v110", "v110")) as f:
        f.create_virtual_dataset("data", layout, fillvalue=0)
    return stream_run(case, f"{case}_vds.h5", "/data", n, FRAME, "<u2")


CASES["odin_vds"] = odin_vds


def vds_same_file(case, out):
    n = 4
    data = frames(n, FRAME, "<u2")
    with h5(out, f"{case}.h5", libver=("v110", "v110")) as f:
        f.create_dataset("raw", data=data)
        layout = h5py.VirtualLayout(shape=(n, *FRAME), dtype="<u2")
        layout[:] = h5py.VirtualSource(".", "raw", shape=(n, *FRAME))
        f.create_virtual_dataset(AD, layout, fillvalue=0)
    return ad_hdf5_run(case, f"{case}.h5", n, FRAME, "<u2")


CASES["vds_same_file"] = vds_same_file


def tiff(case, out, fpp=1):
    """areaDetector's TIFF plugin: one file per frame, named by a C format template."""
    import tifffile

    n = 3
    data = frames(n * fpp, FRAME, "<u2")
    folder = out / "root" / "tiff" / case
    folder.mkdir(parents=True, exist_ok=True)
    for j in range(n * fpp):
        tifffile.imwrite(folder / f"scan7_{j:06d}.tiff", data[j])
    return datum_run(case, "AD_TIFF", f"tiff/{case}",
                     {"template": "%s%s_%6.6d.tiff", "filename": "scan7",
                      "frame_per_point": fpp},
                     [{"point_number": i} for i in range(n)], [fpp, *FRAME], "<u2")


CASES["tiff"] = tiff
CASES["tiff_fpp2"] = lambda case, out: tiff(case, out, fpp=2)


# Files that point outside their root: each must be refused, nothing read from outside.
def outside(out, name="outside.h5", n=4):
    """A real frame file outside the mapped root (what an escape would read)."""
    data = frames(n, FRAME, "<u2", seed=99)
    with h5py.File(out / name, "w") as f:
        f.create_dataset("data", data=data)
        f.create_dataset(AD, data=data)
    return data


def elink_outside(case, out):
    outside(out)
    with h5(out, f"{case}.h5") as f:
        f[AD] = h5py.ExternalLink("../outside.h5", "/data")
    return ad_hdf5_run(case, f"{case}.h5", 4, FRAME, "<u2")


def elink_absolute(case, out):
    outside(out)
    with h5(out, f"{case}.h5") as f:
        f[AD] = h5py.ExternalLink(str((out / "outside.h5").resolve()), "/data")
    return ad_hdf5_run(case, f"{case}.h5", 4, FRAME, "<u2")


def elink_group(case, out):
    """The link is on a group on the way (/entry), not on the dataset."""
    outside(out)
    with h5(out, f"{case}.h5") as f:
        f["/entry"] = h5py.ExternalLink("../outside.h5", "/entry")
    return ad_hdf5_run(case, f"{case}.h5", 4, FRAME, "<u2")


def soft_to_elink(case, out):
    """A soft link to an external link: the traversal, not the name, leaves the root."""
    outside(out)
    with h5(out, f"{case}.h5") as f:
        f["/hidden"] = h5py.ExternalLink("../outside.h5", "/data")
        f[AD] = h5py.SoftLink("/hidden")
    return ad_hdf5_run(case, f"{case}.h5", 4, FRAME, "<u2")


def elink_chain(case, out):
    """Inside -> inside -> outside: the second hop escapes."""
    outside(out)
    with h5(out, f"{case}_hop.h5") as f:
        f["/data"] = h5py.ExternalLink("../outside.h5", "/data")
    with h5(out, f"{case}.h5") as f:
        f[AD] = h5py.ExternalLink(f"{case}_hop.h5", "/data")
    return ad_hdf5_run(case, f"{case}.h5", 4, FRAME, "<u2")


def elink_missing(case, out):
    outside(out)
    with h5(out, f"{case}.h5") as f:
        f[AD] = h5py.ExternalLink("nope.h5", "/data")
    return ad_hdf5_run(case, f"{case}.h5", 4, FRAME, "<u2")


def vds_outside(case, out):
    outside(out)
    layout = h5py.VirtualLayout(shape=(4, *FRAME), dtype="<u2")
    layout[:] = h5py.VirtualSource("../outside.h5", "data", shape=(4, *FRAME))
    with h5(out, f"{case}.h5", libver=("v110", "v110")) as f:
        f.create_virtual_dataset(AD, layout, fillvalue=0)
    return ad_hdf5_run(case, f"{case}.h5", 4, FRAME, "<u2")


def vds_via_link(case, out):
    """The VDS source file is inside the root, but its dataset is a link to the outside."""
    outside(out)
    with h5(out, f"{case}_src.h5") as f:
        f["/data"] = h5py.ExternalLink("../outside.h5", "/data")
    layout = h5py.VirtualLayout(shape=(4, *FRAME), dtype="<u2")
    layout[:] = h5py.VirtualSource(f"{case}_src.h5", "data", shape=(4, *FRAME))
    with h5(out, f"{case}.h5", libver=("v110", "v110")) as f:
        f.create_virtual_dataset(AD, layout, fillvalue=0)
    return ad_hdf5_run(case, f"{case}.h5", 4, FRAME, "<u2")


def vds_missing(case, out):
    layout = h5py.VirtualLayout(shape=(4, *FRAME), dtype="<u2")
    layout[:] = h5py.VirtualSource(f"{case}_gone.h5", "data", shape=(4, *FRAME))
    with h5(out, f"{case}.h5", libver=("v110", "v110")) as f:
        f.create_virtual_dataset(AD, layout, fillvalue=0)
    return ad_hdf5_run(case, f"{case}.h5", 4, FRAME, "<u2")


def external_storage(case, out):
    """Raw data in a flat file outside the root (H5Pset_external)."""
    data = outside(out)
    raw = out / "outside.raw"
    raw.write_bytes(data.tobytes())
    with h5(out, f"{case}.h5") as f:
        f.create_dataset(AD, shape=data.shape, dtype="<u2",
                         external=[(str(raw.resolve()), 0, data.nbytes)])
    return ad_hdf5_run(case, f"{case}.h5", 4, FRAME, "<u2")


def external_storage_inside(case, out):
    data = frames(4, FRAME, "<u2")
    path = out / "root" / f"{case}.raw"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.tobytes())
    with h5(out, f"{case}.h5") as f:
        f.create_dataset(AD, shape=data.shape, dtype="<u2",
                         external=[(f"{case}.raw", 0, data.nbytes)])
    return ad_hdf5_run(case, f"{case}.h5", 4, FRAME, "<u2")


for f in [elink_outside, elink_absolute, elink_group, soft_to_elink, elink_chain,
          elink_missing, vds_outside, vds_via_link, vds_missing, external_storage,
          external_storage_inside]:
    CASES[f.__name__] = f


def swmr(case, out, swmr_mode=True):
    """A file its writer still holds open (the writer died before closing it)."""
    n = 3
    data = frames(n, FRAME, "<u2")
    pid = os.fork()
    if pid == 0:
        f = h5(out, f"{case}.h5", libver=("v110", "v110"))
        d = f.create_dataset(AD, data=data, chunks=(1, *FRAME), maxshape=(None, *FRAME))
        if swmr_mode:
            f.swmr_mode = True
        d.flush()
        f.flush()
        os._exit(0)  # no close: the superblock still says "open for writing"
    os.waitpid(pid, 0)
    return ad_hdf5_run(case, f"{case}.h5", n, FRAME, "<u2")


CASES["swmr"] = swmr
CASES["open_for_writing"] = lambda case, out: swmr(case, out, swmr_mode=False)


def main():
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for case in sys.argv[2:]:
        docs = CASES[case](case, out)
        with open(out / f"{case}.jsonl", "w") as f:
            for doc in docs:
                f.write(json.dumps(doc) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
