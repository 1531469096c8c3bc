#!/usr/bin/env python3
"""Runs real bluesky RunEngines with ophyd's simulated devices, publishing through a 0MQ proxy.

What a beamline does: each RunEngine has a bluesky.callbacks.zmq.Publisher with the JSON
serializer (the line docs/listen.md gives), connected to bluesky-0MQ-proxy's input. Every
document published is also written to RECORD (suitcase-jsonl, one file for all runs), so the
test can compare what beamdb stored with what went out.

usage: publish_runs.py PROXY_IN_PORT FRAMES_DIR RECORD SCENARIO
SCENARIO:
  beamline  RunEngine A: count of det + img (NPY_SEQ frames) with a baseline stream, a scan,
            a plan that fails mid-run; RunEngine B, at the same time, in another thread:
            counts of det + img and a scan. Prints "published N runs".
  pickled   one run with the Publisher's default (pickle) serializer.
  open      one run whose stop never comes (the plan waits until killed).
  slow      one count of 30 events, one every 0.2 s (the test restarts the listener meanwhile).
"""
import json
import sys
import threading
import time

import event_model
from bluesky import RunEngine
from bluesky import plan_stubs as bps
from bluesky import plans as bp
from bluesky import preprocessors as bpp
from bluesky.callbacks.zmq import Publisher
from ophyd.sim import SynAxis, SynGauss, SynSignalWithRegistry
import numpy as np


def json_serializer(doc):
    # The one line a beamline profile needs (docs/listen.md).
    return json.dumps(doc, cls=event_model.NumpyEncoder).encode()


class Record:
    """Every published document, as suitcase-jsonl, from any thread."""

    def __init__(self, path):
        self.file = open(path, "w")
        self.lock = threading.Lock()
        self.runs = 0

    def __call__(self, name, doc):
        with self.lock:
            self.file.write(json.dumps([name, doc], cls=event_model.NumpyEncoder) + "\n")
            self.file.flush()
            if name == "start":
                self.runs += 1


def devices(frames_dir, tag):
    motor = SynAxis(name=f"motor_{tag}")
    det = SynGauss(f"det_{tag}", motor, f"motor_{tag}", center=0, Imax=1, sigma=1)
    rng = np.random.default_rng(abs(hash(tag)) % 2**32)
    img = SynSignalWithRegistry(
        func=lambda: rng.integers(0, 60000, size=(12, 10)).astype(np.uint16),
        name=f"img_{tag}",
        save_path=frames_dir,
    )
    return motor, det, img


def engine(port, record, serializer):
    # No signal handlers: one of them runs outside the main thread.
    RE = RunEngine({}, context_managers=[])
    RE.subscribe(Publisher(f"127.0.0.1:{port}", serializer=serializer))
    RE.subscribe(record)
    return RE


def failing_plan(det):
    @bpp.run_decorator(md={"plan_name": "failing"})
    def inner():
        yield from bps.trigger_and_read([det])
        raise RuntimeError("the sample fell off (on purpose)")

    yield from inner()


def main():
    port, frames_dir, record_path, scenario = sys.argv[1:5]
    record = Record(record_path)
    if scenario == "pickled":
        import pickle

        RE = engine(port, record, pickle.dumps)
        motor, det, img = devices(frames_dir, "p")
        time.sleep(1.0)  # 0MQ's slow joiner: the proxy must have subscribed first
        RE(bp.count([det], num=2))
        time.sleep(0.5)
        print(f"published {record.runs} runs", flush=True)
        return
    if scenario == "open":
        RE = engine(port, record, json_serializer)
        motor, det, img = devices(frames_dir, "o")
        time.sleep(1.0)

        @bpp.run_decorator(md={"plan_name": "never_ends"})
        def never_ends():
            yield from bps.trigger_and_read([det])
            print("published 1 runs", flush=True)
            yield from bps.sleep(3600)

        RE(never_ends())
        return

    if scenario == "slow":
        RE = engine(port, record, json_serializer)
        motor, det, img = devices(frames_dir, "s")
        time.sleep(1.0)
        print("started", flush=True)
        RE(bp.count([det], num=30, delay=0.2))
        time.sleep(0.5)
        print(f"published {record.runs} runs", flush=True)
        return

    RE_a = engine(port, record, json_serializer)
    RE_b = engine(port, record, json_serializer)
    motor_a, det_a, img_a = devices(frames_dir, "a")
    motor_b, det_b, img_b = devices(frames_dir, "b")
    time.sleep(1.0)

    def run_b():
        RE_b(bp.count([det_b, img_b], num=4, delay=0.05, md={"sample_name": "B1"}))
        RE_b(bp.scan([det_b, img_b], motor_b, -1, 1, 5))

    thread = threading.Thread(target=run_b)
    thread.start()
    from bluesky.preprocessors import SupplementalData

    baseline = SupplementalData(baseline=[motor_a])
    RE_a.preprocessors.append(baseline)
    RE_a(bp.count([det_a, img_a], num=3, delay=0.05, md={"sample_name": "A1"}))
    RE_a.preprocessors.remove(baseline)
    RE_a(bp.scan([det_a], motor_a, -2, 2, 6))
    try:
        RE_a(failing_plan(det_a))
    except RuntimeError:
        pass
    thread.join()
    time.sleep(0.5)  # let the last messages leave the sockets
    print(f"published {record.runs} runs", flush=True)


if __name__ == "__main__":
    main()
