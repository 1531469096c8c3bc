#!/usr/bin/env python3
"""Writes tests/data/reconfigured/: one real RunEngine run whose `primary` stream has two
descriptors (the detector is reconfigured mid-run, so bluesky emits a new descriptor for the
same stream name), a `baseline` stream, and NPY_SEQ frames from an area detector.

usage: gen_reconfigured.py OUTDIR   (needs bluesky ophyd suitcase-jsonl numpy from PyPI)
"""
import sys
from pathlib import Path

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
import numpy as np
import suitcase.jsonl
from bluesky import RunEngine
from bluesky.preprocessors import SupplementalData
from ophyd.sim import SynSignalWithRegistry, det, motor1

out = Path(sys.argv[1])
frames = out / "frames"
frames.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(11)
ccd = SynSignalWithRegistry(
    func=lambda: rng.integers(0, 4096, size=(24, 32), dtype=np.uint16),
    name="waxs", save_path=str(frames), labels={"detectors"})


@bpp.stage_decorator([det, ccd])
@bpp.run_decorator(md={"plan_name": "reconfigured_count",
                       "sample": {"name": "P3HT", "formula": "C10H14S", "serial": "S-17",
                                  "tags": ["polymer"], "thickness_nm": 80},
                       "operator": "sim", "proposal": "P-2026-001"})
def plan():
    for i in range(3):
        yield from bps.trigger_and_read([det, ccd])
    yield from bps.configure(det, {"sigma": 2})
    for i in range(2):
        yield from bps.trigger_and_read([det, ccd])


RE = RunEngine({})
RE.preprocessors.append(SupplementalData(baseline=[motor1]))
s = suitcase.jsonl.Serializer(str(out))
RE.subscribe(s)
RE(plan())
s.close()
print(s.artifacts["all"][0])
