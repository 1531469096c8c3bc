#!/usr/bin/env python3
"""beamdb's benchmarks: every scenario runs beamdb and the Python peer
(../shared/tools/baseline_writer.py) alternately on the same input, several rounds, and
reports medians, min-max and ratios, peak RSS and bytes on disk, next to this machine's
ceiling measured in the same run. Whole-process wall times: start-up counts, as it does
for a scientist at the shell. Use `bash bench/run`, which sets up the venv first.
"""
import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TOOLS = (REPO / ".." / "shared" / "tools").resolve()
WORK = HERE / "work"
PY = sys.executable


def run_timed(cmd, env=None):
    """Runs cmd; returns (seconds, stdout)."""
    dt, _, out = run_rss(cmd, env=env)
    return dt, out


def run_rss(cmd, env=None):
    """Runs cmd under os.wait4 for its own rusage: (seconds, peak RSS MiB, stdout)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = proc.stdout.read()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    dt = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited {code}:\n{err.decode()[-2000:]}")
    return dt, usage.ru_maxrss / 1024.0, out.decode()


def du(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    return total


def stats(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def fresh(path):
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


# ---------------------------------------------------------------- data
def generate(args):
    data = WORK / "data"
    frames_dir = data / "frames-run"
    marker = frames_dir / f"done-{args.frames}x{args.size}"
    if not marker.exists():
        fresh(frames_dir)
        out = subprocess.run([PY, TOOLS / "gen_bluesky.py", frames_dir, "bench", "--frames", str(args.frames),
                              "--size", str(args.size)], check=True, capture_output=True, text=True).stdout
        marker.write_text(out)
    events_dir = data / "events-run"
    marker_e = events_dir / f"done-{args.events}"
    if not marker_e.exists():
        fresh(events_dir)
        seed = fresh(data / "events-seed")
        subprocess.run([PY, TOOLS / "gen_events.py", seed, "1000"], check=True,
                       capture_output=True, text=True)
        scale_events(next(seed.glob("*.jsonl")), args.events, events_dir / "scaled.jsonl")
        marker_e.write_text("ok")
    frames_jsonl = sorted(p for p in frames_dir.glob("*.jsonl"))
    events_jsonl = sorted(p for p in events_dir.glob("*.jsonl"))
    # The generator's resources say where it wrote the frames; map that root to itself.
    root = None
    with open(frames_jsonl[0]) as fh:
        for line in fh:
            name, doc = json.loads(line)
            if name == "resource":
                root = doc["root"]
                break
    raw = sum(p.stat().st_size - 128 for p in (frames_dir / "frames").glob("*.npy"))
    return frames_jsonl, events_jsonl, root, frames_dir / "frames", raw


def scale_events(seed, n, out):
    """A run of `n` events shaped exactly like `seed`'s (a real RunEngine scan): its start,
    descriptor and stop, and its events repeated with new uids, seq_nums and times. The
    RunEngine itself takes minutes per 100,000 points on a loaded 2-core machine."""
    import uuid
    docs = [json.loads(line) for line in open(seed)]
    events = [d for name, d in docs if name == "event"]
    with open(out, "w") as fh:
        for name, doc in docs:
            if name == "event":
                continue
            if name == "stop":
                for i in range(n):
                    e = dict(events[i % len(events)])
                    e["uid"] = str(uuid.uuid4())
                    e["seq_num"] = i + 1
                    e["time"] = events[0]["time"] + i * 0.001
                    fh.write(json.dumps(["event", e]) + "\n")
                doc = dict(doc)
                doc["num_events"] = {"primary": n}
            fh.write(json.dumps([name, doc]) + "\n")


# ---------------------------------------------------------------- ceiling
def ceiling_disk(mib=1024):
    path = WORK / "ceiling.bin"
    block = os.urandom(8 << 20)
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for _ in range(mib // 8):
            os.write(fd, block)
        os.fdatasync(fd)
    finally:
        os.close(fd)
    dt = time.perf_counter() - t0
    path.unlink()
    return mib * (1 << 20) / dt / 1e6


def ceiling_codecs(frames_dir):
    """Single-core compression throughput and ratio of the codecs beamdb offers, on the
    benchmark's own frames."""
    import numpy as np
    from numcodecs import Blosc, Zstd
    files = sorted(frames_dir.glob("*.npy"))[:20]
    frames = [np.load(f) for f in files]
    raw = sum(f.nbytes for f in frames)
    out = {}
    for name, codec in {"zstd-3": Zstd(level=3),
                        "bitshuffle-zstd-3": Blosc(cname="zstd", clevel=3, shuffle=Blosc.BITSHUFFLE,
                                                   blocksize=0)}.items():
        Blosc.set_nthreads(1) if hasattr(Blosc, "set_nthreads") else None
        t0 = time.perf_counter()
        packed = sum(len(codec.encode(f)) for f in frames)
        dt = time.perf_counter() - t0
        out[name] = {"MB/s/core": raw / dt / 1e6, "ratio": raw / packed}
    return out


# ---------------------------------------------------------------- scenarios
def beamdb_env(data_root):
    env = dict(os.environ)
    env["BEAMDB_DATA_ROOT"] = str(data_root)
    env.pop("BEAMDB_SETTINGS", None)
    return env


def ingest_pair(args, jsonl, root, real_frames, label):
    """Alternating rounds of beamdb ingest and the peer on the same run."""
    b_t, b_rss, p_t, p_rss, b_bytes, p_bytes = [], [], [], [], [], []
    root_map = f"{root}={real_frames}"
    for r in range(args.rounds):
        for who in ("beamdb", "peer") if r % 2 == 0 else ("peer", "beamdb"):
            out = fresh(WORK / f"{label}-{who}")
            if who == "beamdb":
                cmd = [args.beamdb, "-q", "ingest", "--beamtime", "bench", "--root-map", root_map, *jsonl]
                dt, rss, _ = run_rss(cmd, env=beamdb_env(out))
                b_t.append(dt); b_rss.append(rss)
                b_bytes.append(du(out / "beamtimes" / "bench" / "frames.zarr"))
            else:
                cmd = [PY, TOOLS / "baseline_writer.py", "--root-map", root_map, out / "peer.db", *jsonl]
                dt, rss, _ = run_rss(cmd)
                p_t.append(dt); p_rss.append(rss)
                p_bytes.append(du(out / "peer.zarr"))
    return {"beamdb": stats(b_t), "peer": stats(p_t), "beamdb_rss": max(b_rss), "peer_rss": max(p_rss),
            "beamdb_bytes": statistics.median(b_bytes), "peer_bytes": statistics.median(p_bytes)}


def populate_beamtimes(beamdb, data_root, n):
    ids = [f"bt-{i:04d}" for i in range(n)]
    args = [beamdb, "-q", "initdb"]
    for i in ids:
        args += ["--beamtime", i]
    subprocess.run(args, env=beamdb_env(data_root), check=True)
    for i in ids:
        conn = sqlite3.connect(data_root / "beamtimes" / i / "beamtime.db")
        with conn:
            conn.execute("INSERT INTO samples (name) VALUES ('P3HT')")
            for k in range(5):
                uid = f"{i}-run-{k}"
                conn.execute("INSERT INTO runs (uid, sample_id, plan_name, time_start, metadata, researcher)"
                             " VALUES (?, 1, 'scan', ?, '{}', 'A. Example')", (uid, 1.79e9 + k))
                conn.execute("INSERT INTO streams (uid, run_uid, name, data_keys, time_created)"
                             " VALUES (?, ?, 'primary', '{}', 0)", (uid + "-s", uid))
                conn.executemany("INSERT INTO events (uid, stream_uid, seq_num, time, data)"
                                 " VALUES (?, ?, ?, 0, '{}')", [(f"{uid}-e{j}", uid + "-s", j) for j in range(20)])
            conn.execute("INSERT INTO beamtime_meta (key, value) VALUES ('generation', '1')"
                         " ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1")
        conn.close()
    return ids


def age(data_root):
    old = time.time() - 3600
    for p in (data_root / "beamtimes").glob("*/beamtime.db*"):
        os.utime(p, (old, old))


def reindex_scenario(args):
    data_root = fresh(WORK / "reindex")
    populate_beamtimes(args.beamdb, data_root, args.beamtimes)
    full, noop_gen, noop_stat = [], [], []
    env = beamdb_env(data_root)
    for _ in range(args.rounds):
        full.append(run_timed([args.beamdb, "-q", "reindex", "--full"], env=env)[0])
        noop_gen.append(run_timed([args.beamdb, "-q", "reindex"], env=env)[0])
    age(data_root)
    run_timed([args.beamdb, "-q", "reindex", "--full"], env=env)
    for _ in range(args.rounds):
        noop_stat.append(run_timed([args.beamdb, "-q", "reindex"], env=env)[0])
    return {"full": stats(full), "noop_generation": stats(noop_gen), "noop_stat": stats(noop_stat)}


def check_scenario(args):
    times = [run_timed([args.beamdb, "-q", "make-migrations", "--check"], env=beamdb_env(WORK / "check"))[0]
             for _ in range(max(args.rounds, 10))]
    return stats(times)


def migrate_scenario(args):
    """200 populated beamtimes migrated through a rebuild of `runs` (plan_name made nullable)."""
    base = fresh(WORK / "migrate-base")
    populate_beamtimes(args.beamdb, base, args.migrate_beamtimes)
    models = fresh(WORK / "migrate-models")
    for kind in ("beamtime", "index"):
        text = (REPO / "config" / "models" / f"{kind}.toml").read_text()
        if kind == "beamtime":
            text = text.replace('{ name = "plan_name", type = "TEXT" }',
                                '{ name = "plan_name", type = "TEXT", nullable = true }')
        (models / f"{kind}.toml").write_text(text)
    migrations = WORK / "migrate-migrations"
    shutil.rmtree(migrations, ignore_errors=True)
    shutil.copytree(REPO / "migrations", migrations)
    settings = WORK / "migrate-settings.toml"
    settings.write_text(f'[schema]\nmodels_dir = "{models}"\nmigrations_dir = "{migrations}"\n')
    try:
        subprocess.run([args.beamdb, "-q", "--settings", settings, "make-migrations", "--target", "beamtime",
                        "--name", "plan_name_nullable"], check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as e:
        return {"error": (e.stderr or "").strip().splitlines()[-1:] or ["make-migrations failed"]}
    times = []
    for _ in range(args.rounds):
        root = WORK / "migrate-run"
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(base, root)
        env = beamdb_env(root)
        env["BEAMDB_SETTINGS"] = str(settings)
        times.append(run_timed([args.beamdb, "-q", "migrate", "--no-backup"], env=env)[0])
    return stats(times)


def populate_search(data_root, beamtimes, per_beamtime):
    """beamtimes x per_beamtime runs whose RunStart looks like a beamline's: a sample dict,
    a temperature, a proposal, a purpose in words, plan arguments."""
    words = ["anneal", "quench", "align", "calibrate", "dark", "flat", "scan", "mapping", "in-situ", "heating"]
    for b in range(beamtimes):
        bt = f"bt-{b:04d}"
        db = data_root / "beamtimes" / bt / "beamtime.db"
        conn = sqlite3.connect(db)
        with conn:
            rows = []
            for k in range(per_beamtime):
                n = b * per_beamtime + k
                uid = f"{bt}-run-{k:05d}"
                sample = f"P3HT-{n % 1000:03d}" if n % 2 == 0 else f"PS-{n % 1000:03d}"
                md = {
                    "uid": uid, "time": 1.79e9 + n, "plan_name": "scan", "scan_id": k,
                    "sample": {"name": sample, "composition": "C10H14S" if n % 2 == 0 else "C8H8"},
                    "temperature": 250 + (n % 1500) / 10.0,
                    "proposal": f"p-{n % 5000:04d}",
                    "purpose": f"{words[n % 10]} {words[(n // 10) % 10]} film {sample}",
                    "detectors": ["det", "ccd"], "motors": ["motor"], "num_points": 41,
                    "plan_args": {"num": 41, "args": ["motor", -1, 1], "per_step": "None"},
                    "operator": "sim", "researcher": f"Researcher {b % 20}",
                }
                rows.append((uid, 1.79e9 + n, json.dumps(md)))
            conn.executemany("INSERT INTO runs (uid, plan_name, time_start, metadata)"
                             " VALUES (?, 'scan', ?, ?)", rows)
            conn.execute("INSERT INTO beamtime_meta (key, value) VALUES ('generation', '1')"
                         " ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1")
        conn.close()


def search_scenario(args):
    """`runs --where` (unpromoted keys: read from the RunStart the index keeps) and `runs
    --text` on an index of beamtimes x runs; whole-process times, output to a pipe."""
    data_root = fresh(WORK / "search")
    ids = [f"bt-{i:04d}" for i in range(args.search_beamtimes)]
    cmd = [args.beamdb, "-q", "initdb"]
    for i in ids:
        cmd += ["--beamtime", i]
    subprocess.run(cmd, env=beamdb_env(data_root), check=True)
    populate_search(data_root, args.search_beamtimes, args.search_runs)
    env = beamdb_env(data_root)
    full = run_timed([args.beamdb, "-q", "reindex", "--full"], env=env)[0]
    queries = {
        "where_text_glob": ["--where", "sample.name=P3HT-04*"],
        "where_number": ["--where", "temperature >= 399.9"],
        "where_and": ["--where", "proposal=p-0042", "--where", "temperature < 300"],
        "text": ["--text", "anneal quench P3HT-110"],
    }
    out = {"runs": args.search_beamtimes * args.search_runs, "reindex_full": full}
    for name, q in queries.items():
        times, found = [], 0
        for _ in range(max(args.rounds, 5)):
            dt, text = run_timed([args.beamdb, "runs", "--json", *q], env=env)
            times.append(dt)
            found = len(json.loads(text))
        out[name] = stats(times)
        out[name]["found"] = found
        out[name]["args"] = " ".join(q)
    return out


def search_report(r):
    lines = [f"Search on an index of {r['runs']:,} runs (reindex --full of it: {r['reindex_full']:.1f} s); "
             "whole-process `beamdb runs --json ...` wall time, goal < 50 ms:", "",
             "| query | runs found | median (min–max) |", "|---|---|---|"]
    for name in ("where_text_glob", "where_number", "where_and", "text"):
        q = r[name]
        lines.append(f"| `{q['args']}` | {q['found']} | {fmt_range(q, 1000, 'ms', 1)} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- report
def fmt_range(s, scale=1.0, unit="s", digits=2):
    return f"{s['median'] * scale:.{digits}f} {unit} ({s['min'] * scale:.{digits}f}–{s['max'] * scale:.{digits}f})"


def report(args, r):
    raw = r["raw_bytes"]
    fr, ev = r["frames"], r["events"]
    f_b = raw / fr["beamdb"]["median"] / 1e6
    f_p = raw / fr["peer"]["median"] / 1e6
    e_b = args.events / ev["beamdb"]["median"]
    e_p = args.events / ev["peer"]["median"]
    disk = r["ceiling_disk_MBps"]
    rows = [
        ("frame ingest", f"{f_b:.0f} MB/s", f"{f_p:.0f} MB/s", f"{f_b / f_p:.2f}×",
         f"{f_b / disk * 100:.0f}% of disk ({disk:.0f} MB/s)", "≥ 4× peer, ≥ 50% of ceiling"),
        ("event ingest", f"{e_b:,.0f} ev/s", f"{e_p:,.0f} ev/s", f"{e_b / e_p:.2f}×", "", "≥ 5× peer"),
        ("frame storage (raw / stored)", f"{raw / fr['beamdb_bytes']:.2f}×", f"{raw / fr['peer_bytes']:.2f}×",
         "", "", "≥ 1.3×"),
        (f"peak RSS, {raw / 1e6:.0f} MB run", f"{fr['beamdb_rss']:.0f} MiB", f"{fr['peer_rss']:.0f} MiB",
         f"{fr['beamdb_rss'] / fr['peer_rss']:.2f}×", "", "≤ peer"),
        (f"reindex, {args.beamtimes} beamtimes, full", fmt_range(r["reindex"]["full"]), "", "", "", ""),
        (f"reindex, {args.beamtimes} unchanged (generation check)", fmt_range(r["reindex"]["noop_generation"]),
         "", "", "", "< 0.5 s"),
        (f"reindex, {args.beamtimes} unchanged (files untouched)", fmt_range(r["reindex"]["noop_stat"]),
         "", "", "", "< 0.5 s"),
        ("make-migrations --check", fmt_range(r["check"], 1000, "ms", 0), "", "", "", "< 100 ms"),
    ]
    mig = r["migrate"]
    rows.append((f"migrate, {args.migrate_beamtimes} beamtimes, rebuild of runs",
                 fmt_range(mig) if "median" in mig else f"n/a: {mig.get('error')}", "", "", "", ""))
    codecs = r["ceiling_codecs"]
    lines = [
        "| scenario | beamdb (median, min–max) | peer | ratio | vs ceiling | goal |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append(f"Frame ingest: {fmt_range(fr['beamdb'])} for beamdb, {fmt_range(fr['peer'])} for the peer, "
                 f"{args.rounds} alternating rounds, {raw / 1e6:.0f} MB of {args.size}×{args.size} uint16 frames "
                 f"(12-bit values). Event ingest: {args.events:,} events, {fmt_range(ev['beamdb'])} vs "
                 f"{fmt_range(ev['peer'])}.")
    lines.append("")
    lines.append(f"Machine ceiling, same run: sequential write with fdatasync {disk:.0f} MB/s; " + "; ".join(
        f"{k} {v['MB/s/core']:.0f} MB/s per core, ratio {v['ratio']:.2f}×" for k, v in codecs.items()) + ".")
    return "\n".join(lines)


def plot(args, r, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    raw = r["raw_bytes"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.6))
    vals = [raw / r["frames"]["beamdb"]["median"] / 1e6, raw / r["frames"]["peer"]["median"] / 1e6,
            r["ceiling_disk_MBps"]]
    a.bar(["beamdb", "peer", "disk ceiling"], vals, color=["#1f77b4", "#ff7f0e", "#7f7f7f"])
    a.set_title("frame ingest (MB/s)")
    ev = [args.events / r["events"]["beamdb"]["median"], args.events / r["events"]["peer"]["median"]]
    b.bar(["beamdb", "peer"], ev, color=["#1f77b4", "#ff7f0e"])
    b.set_title("event ingest (events/s, whole process)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_doc(text, path, block="results"):
    doc = path.read_text() if path.exists() else ""
    start, end = f"<!-- {block}:start -->", f"<!-- {block}:end -->"
    block = f"{start}\n{text}\n{end}"
    if start in doc and end in doc:
        doc = doc[:doc.index(start)] + block + doc[doc.index(end) + len(end):]
    else:
        doc += "\n" + block + "\n"
    path.write_text(doc)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--beamdb", required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--frames", type=int, default=200, help="frames in the frame run (1024² uint16: 2 MiB each)")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--beamtimes", type=int, default=1000)
    ap.add_argument("--migrate-beamtimes", type=int, default=200)
    ap.add_argument("--quick", action="store_true", help="small sizes, 3 rounds: a smoke test of the harness")
    ap.add_argument("--search-beamtimes", type=int, default=100)
    ap.add_argument("--search-runs", type=int, default=1000, help="runs per beamtime in the search scenario")
    ap.add_argument("--only", choices=["search"], help="run one scenario (and update its block of docs/benchmarks.md)")
    ap.add_argument("--no-doc", action="store_true", help="print only; leave docs/ alone")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.frames, args.size, args.events = 3, 20, 256, 5000
        args.beamtimes, args.migrate_beamtimes = 100, 20
    args.beamdb = str(Path(args.beamdb).resolve())
    WORK.mkdir(exist_ok=True)
    if args.quick:
        args.search_beamtimes, args.search_runs = 10, 100
    if args.only == "search":
        r = search_scenario(args)
        text = search_report(r)
        print(text)
        (WORK / "search.json").write_text(json.dumps(r, indent=1))
        if not args.no_doc:
            write_doc(text, REPO / "docs" / "benchmarks.md", "search")
        return
    frames_jsonl, events_jsonl, root, real_frames, raw = generate(args)
    r = {"raw_bytes": raw}
    print("ceiling ...", flush=True)
    r["ceiling_disk_MBps"] = ceiling_disk(256 if args.quick else 1024)
    r["ceiling_codecs"] = ceiling_codecs(real_frames)
    print("frame ingest ...", flush=True)
    r["frames"] = ingest_pair(args, frames_jsonl, root, real_frames, "frames")
    print("event ingest ...", flush=True)
    r["events"] = ingest_pair(args, events_jsonl, root, real_frames, "events")
    print("reindex ...", flush=True)
    r["reindex"] = reindex_scenario(args)
    print("make-migrations --check ...", flush=True)
    r["check"] = check_scenario(args)
    print("migrate ...", flush=True)
    r["migrate"] = migrate_scenario(args)
    print("search ...", flush=True)
    r["search"] = search_scenario(args)
    text = report(args, r)
    print(text)
    print(search_report(r["search"]))
    (WORK / "results.json").write_text(json.dumps(r, indent=1))
    if not args.no_doc:
        write_doc(text, REPO / "docs" / "benchmarks.md")
        write_doc(search_report(r["search"]), REPO / "docs" / "benchmarks.md", "search")
        plot(args, r, REPO / "docs" / "benchmarks.png")


if __name__ == "__main__":
    main()
