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


# GNU time, when installed: the peak RSS the kernel reports to a parent (ru_maxrss) includes the
# memory of the process that forked the command, up to its exec (Linux carries the high-water
# mark across execve, for vfork and posix_spawn too), so a command forked by this Python
# process could never show less than this Python process's own RSS (40-80 MiB once numpy is
# in). /usr/bin/time is a ~2 MiB process that forks the command itself.
GNU_TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None


def run_rss(cmd, env=None):
    """Runs cmd: (seconds, peak RSS MiB, stdout). The RSS comes from GNU time when installed;
    else from wait4, an upper bound that includes this harness (see GNU_TIME)."""
    rss_file = WORK / "rss.txt"
    full = [GNU_TIME, "-f", "%M %U %S", "-o", str(rss_file), *map(str, cmd)] if GNU_TIME else list(map(str, cmd))
    with open(WORK / "stderr.txt", "w+b") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(full, env=env, stdout=subprocess.PIPE, stderr=err)
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        dt = time.perf_counter() - t0
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        err.seek(0)
        if code != 0:
            raise RuntimeError(f"{' '.join(map(str, cmd))} exited {code}:\n{err.read().decode()[-2000:]}")
    if GNU_TIME:
        kb, user, system = rss_file.read_text().split()[-3:]
        rss, cpu = int(kb) / 1024.0, float(user) + float(system)
    else:
        rss, cpu = usage.ru_maxrss / 1024.0, usage.ru_utime + usage.ru_stime
    LAST_CPU[0] = cpu
    return dt, rss, out.decode()


LAST_CPU = [0.0]  # CPU seconds (user + system) of the last run_rss command


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
def generate_frames(args):
    data = WORK / "data"
    frames_dir = data / f"frames-{args.frames}x{args.size}"
    marker = frames_dir / f"done-{args.frames}x{args.size}"
    if not marker.exists():
        fresh(frames_dir)
        out = subprocess.run([PY, TOOLS / "gen_bluesky.py", frames_dir, "bench", "--frames", str(args.frames),
                              "--size", str(args.size)], check=True, capture_output=True, text=True).stdout
        marker.write_text(out)
    frames_jsonl = sorted(p for p in frames_dir.glob("*.jsonl"))
    # The generator's resources say where it wrote the frames; map that root to itself.
    root = None
    with open(frames_jsonl[0]) as fh:
        for line in fh:
            name, doc = json.loads(line)
            if name == "resource":
                root = doc["root"]
                break
    raw = sum(p.stat().st_size - 128 for p in (frames_dir / "frames").glob("*.npy"))
    return frames_jsonl, root, frames_dir / "frames", raw


def event_seed():
    """A real 1,000-point RunEngine scan (suitcase-jsonl), made once."""
    seed = WORK / "data" / "events-seed"
    marker = seed / "done"
    if not marker.exists():
        fresh(seed)
        subprocess.run([PY, TOOLS / "gen_events.py", seed, "1000"], check=True, capture_output=True, text=True)
        marker.write_text("ok")
    return next(p for p in seed.glob("*.jsonl"))


def events_file(n):
    """The scan scaled to `n` events, made once and cached in bench/work/data/events-N/."""
    out = WORK / "data" / f"events-{n}" / "scaled.jsonl"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        scale_events(event_seed(), n, out)
        print(f"  generated {n:,} events in {time.perf_counter() - t0:.1f} s: {out}", flush=True)
    return out


def scale_events(seed, n, out):
    """A run of `n` events shaped exactly like `seed`'s (a real RunEngine scan): its start,
    descriptor and stop, and its events repeated with new random uids, seq_nums and times.
    The RunEngine itself takes minutes per 100,000 points on a loaded 2-core machine.

    Streaming and fast (millions of events in seconds): each seed event becomes a text
    template once; random uids come from os.urandom in blocks (random, like uuid4, so the
    primary-key index sees what a real run makes it see); written through a temporary file,
    so an interrupted generation leaves no half file in the cache."""
    docs = [json.loads(line) for line in open(seed)]
    events = [d for name, d in docs if name == "event"]
    t_first = events[0]["time"]
    templates = []
    for e in events:
        e = dict(e, uid="@@UID@@", seq_num="@@SEQ@@", time="@@TIME@@")
        text = json.dumps(["event", e]).replace("{", "{{").replace("}", "}}")
        text = text.replace('"@@UID@@"', '"{uid}"').replace('"@@SEQ@@"', "{seq}").replace('"@@TIME@@"', "{time}")
        templates.append(text + "\n")
    tmp = out.with_suffix(".tmp")
    block = 8192
    with open(tmp, "w") as fh:
        for name, doc in docs:
            if name == "event":
                continue
            if name == "stop":
                for first in range(0, n, block):
                    k = min(block, n - first)
                    hexes = os.urandom(16 * k).hex()
                    lines = []
                    for j in range(k):
                        i = first + j
                        h = hexes[32 * j:32 * j + 32]
                        uid = f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"
                        lines.append(templates[i % len(templates)].format(
                            uid=uid, seq=i + 1, time=repr(t_first + i * 0.001)))
                    fh.writelines(lines)
                doc = dict(doc)
                doc["num_events"] = {"primary": n}
            fh.write(json.dumps([name, doc]) + "\n")
    tmp.rename(out)


# ---------------------------------------------------------------- ceiling
def ceiling_disk(mib=1024):
    """Sequential write of `mib` MiB with one fdatasync at the end, on the filesystem beamdb
    writes to in this benchmark (bench/work/)."""
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


CODECS = {  # beamdb's [ingest] compression names, at the default level 3
    "bitshuffle-zstd": lambda: __import__("numcodecs").Blosc(cname="zstd", clevel=3, shuffle=2, blocksize=0),
    "bitshuffle-lz4": lambda: __import__("numcodecs").Blosc(cname="lz4", clevel=3, shuffle=2, blocksize=0),
    "zstd": lambda: __import__("numcodecs").Zstd(level=3),
}
DEFAULT_CODEC = "bitshuffle-zstd"  # settings.example.toml's default, what the benchmark's beamdb uses


def ceiling_codecs(frames_dir):
    """Single-core compression throughput (raw MB/s) and ratio of the codecs beamdb offers, on
    the benchmark's own frames; blosc held to one thread, best of three passes."""
    import numpy as np
    from numcodecs import blosc
    blosc.use_threads = False
    blosc.set_nthreads(1)
    files = sorted(frames_dir.glob("*.npy"))[:20]
    frames = [np.load(f) for f in files]
    raw = sum(f.nbytes for f in frames)
    out = {}
    for name, make in CODECS.items():
        codec = make()
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            packed = sum(len(codec.encode(f)) for f in frames)
            best = min(best, time.perf_counter() - t0)
        out[name] = {"MB/s/core": raw / best / 1e6, "ratio": raw / packed}
    return out


def usable_cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def ceiling(frames_dir, quick):
    """This machine's frame-ingest ceiling in raw MB/s for beamdb's default codec:
    min(codec single-core throughput x usable cores, disk x codec ratio). beamdb writes
    raw/ratio bytes, so the disk caps raw throughput at disk x ratio."""
    disk = ceiling_disk(256 if quick else 1024)
    codecs = ceiling_codecs(frames_dir)
    cores = usable_cores()
    c = codecs[DEFAULT_CODEC]
    cpu = c["MB/s/core"] * cores
    io = disk * c["ratio"]
    return {"disk_MBps": disk, "codecs": codecs, "cores": cores, "codec": DEFAULT_CODEC,
            "cpu_MBps": cpu, "io_MBps": io, "MBps": min(cpu, io), "bound": "codec x cores" if cpu <= io else "disk"}


# ---------------------------------------------------------------- scenarios
def beamdb_env(data_root):
    env = dict(os.environ)
    env["BEAMDB_DATA_ROOT"] = str(data_root)
    env.pop("BEAMDB_SETTINGS", None)
    return env


def ingest_cmd(args, who, out, jsonl, root_map=None):
    """The command for one contender writing into the fresh folder `out`, and its env."""
    if who == "beamdb":
        extra = ["--root-map", root_map] if root_map else []
        return [args.beamdb, "-q", "ingest", "--beamtime", "bench", *extra, *jsonl], beamdb_env(out)
    if who == "peer":
        extra = ["--root-map", root_map] if root_map else []
        return [PY, TOOLS / "baseline_writer.py", *extra, out / "peer.db", *jsonl], None
    if who == "limit":
        return [args.limit, out / "limit.db", *jsonl], None
    raise ValueError(who)


def ingest_rounds(args, jsonl, label, contenders, root_map=None, rounds=None):
    """Alternating rounds of the contenders on the same input (the order rotates every round,
    so that none always runs on a warm or a cold page cache): seconds, peak RSS, bytes."""
    res = {who: {"t": [], "rss": [], "bytes": [], "cpu": []} for who in contenders}
    for r in range(rounds or args.rounds):
        k = r % len(contenders)
        for who in contenders[k:] + contenders[:k]:
            out = fresh(WORK / f"{label}-{who}")
            cmd, env = ingest_cmd(args, who, out, jsonl, root_map)
            dt, rss, _ = run_rss(cmd, env=env)
            res[who]["t"].append(dt)
            res[who]["rss"].append(rss)
            res[who]["cpu"].append(LAST_CPU[0])
            store = {"beamdb": out / "beamtimes" / "bench" / "frames.zarr", "peer": out / "peer.zarr"}.get(who)
            res[who]["bytes"].append(du(store) if store else 0)
            shutil.rmtree(out, ignore_errors=True)
    return {who: {**stats(v["t"]), "rss": max(v["rss"]), "bytes": statistics.median(v["bytes"]),
                  "cpu": statistics.median(v["cpu"])} for who, v in res.items()}


def frames_scenario(args):
    """Frame ingest, beamdb vs the peer, and this machine's ceiling measured in the same run."""
    frames_jsonl, root, real_frames, raw = generate_frames(args)
    print("  ceiling ...", flush=True)
    ceil = ceiling(real_frames, args.quick)
    print("  beamdb vs peer ...", flush=True)
    r = ingest_rounds(args, frames_jsonl, "frames", ["beamdb", "peer"], root_map=f"{root}={real_frames}")
    return {"raw_bytes": raw, "frames": args.frames, "size": args.size, "rounds": args.rounds,
            "ceiling": ceil, **r}


def events_scenario(args):
    """Event ingest: beamdb vs the peer vs the one-thread limit (examples/ingest_limit.rs)."""
    jsonl = events_file(args.events)
    r = ingest_rounds(args, [jsonl], "events", ["beamdb", "peer", "limit"])
    return {"events": args.events, "rounds": args.rounds, **r}


def rss_scenario(args):
    """Peak RSS (and time) of event ingest at two sizes, beamdb and the limit program."""
    out = {"sizes": args.rss_sizes, "rounds": args.rss_rounds}
    for n in args.rss_sizes:
        jsonl = events_file(n)
        print(f"  {n:,} events ...", flush=True)
        out[str(n)] = ingest_rounds(args, [jsonl], f"rss-{n}", ["beamdb", "limit"], rounds=args.rss_rounds)
    return out


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


def met(ok):
    return "yes" if ok else "**no**"


def report(r):
    """The results table, from whatever scenarios `r` holds (each measured in one run)."""
    rows, notes = [], []
    if "frames" in r:
        fr = r["frames"]
        raw, ceil = fr["raw_bytes"], fr["ceiling"]
        f_b = raw / fr["beamdb"]["median"] / 1e6
        f_p = raw / fr["peer"]["median"] / 1e6
        rows += [
            ("frame ingest vs peer", f"{f_b:.0f} MB/s", f"peer {f_p:.0f} MB/s", f"{f_b / f_p:.2f}×", "≥ 6×",
             met(f_b / f_p >= 6)),
            ("frame ingest vs ceiling", f"{f_b:.0f} MB/s", f"ceiling {ceil['MBps']:.0f} MB/s ({ceil['bound']})",
             f"{f_b / ceil['MBps'] * 100:.0f}%", "≥ 60%", met(f_b / ceil["MBps"] >= 0.6)),
            ("frame storage (raw / stored)", f"{raw / fr['beamdb']['bytes']:.2f}×",
             f"peer {raw / fr['peer']['bytes']:.2f}×", "", "≥ 1.3×", met(raw / fr["beamdb"]["bytes"] >= 1.3)),
            (f"peak RSS, {raw / 1e6:.0f} MB frame run", f"{fr['beamdb']['rss']:.0f} MiB",
             f"peer {fr['peer']['rss']:.0f} MiB", f"{fr['beamdb']['rss'] / fr['peer']['rss']:.2f}×", "≤ peer",
             met(fr["beamdb"]["rss"] <= fr["peer"]["rss"])),
        ]
        codecs = "; ".join(f"{k} {v['MB/s/core']:.0f} MB/s per core, ratio {v['ratio']:.2f}×"
                           for k, v in ceil["codecs"].items())
        notes.append(
            f"Frame ingest: {fmt_range(fr['beamdb'])} for beamdb, {fmt_range(fr['peer'])} for the peer, "
            f"{fr['rounds']} alternating rounds, {raw / 1e6:.0f} MB of {fr['size']}×{fr['size']} uint16 frames "
            f"(12-bit values). Ceiling, same run: min({ceil['codec']} {ceil['codecs'][ceil['codec']]['MB/s/core']:.0f}"
            f" MB/s per core × {ceil['cores']} usable cores = {ceil['cpu_MBps']:.0f} MB/s, sequential write with "
            f"fdatasync {ceil['disk_MBps']:.0f} MB/s × ratio {ceil['codecs'][ceil['codec']]['ratio']:.2f} = "
            f"{ceil['io_MBps']:.0f} MB/s of raw frames) = {ceil['MBps']:.0f} MB/s. Codecs, one core: {codecs}.")
    if "events" in r:
        ev = r["events"]
        n = ev["events"]
        b, p, lim = ev["beamdb"]["median"], ev["peer"]["median"], ev["limit"]["median"]
        rows += [
            ("event ingest vs peer", f"{n / b:,.0f} ev/s", f"peer {n / p:,.0f} ev/s", f"{p / b:.2f}×", "≥ 5×",
             met(p / b >= 5)),
            ("event ingest vs one-thread limit (time)", f"{b:.2f} s", f"limit {lim:.2f} s", f"{b / lim:.2f}×",
             "≤ 1.25×", met(b / lim <= 1.25)),
        ]
        notes.append(f"Event ingest: {n:,} scalar events, {ev['rounds']} alternating rounds: beamdb "
                     f"{fmt_range(ev['beamdb'])}, peer {fmt_range(ev['peer'])}, limit {fmt_range(ev['limit'])}; "
                     f"peak RSS beamdb {ev['beamdb']['rss']:.0f} MiB, limit {ev['limit']['rss']:.0f} MiB; "
                     f"CPU time (user + system, median) beamdb {ev['beamdb']['cpu']:.2f} s, "
                     f"limit {ev['limit']['cpu']:.2f} s.")
    if "rss" in r:
        rs = r["rss"]
        for n in rs["sizes"]:
            x = rs[str(n)]
            rows.append((f"peak RSS, event ingest of {n:,} events", f"{x['beamdb']['rss']:.0f} MiB",
                         f"limit {x['limit']['rss']:.0f} MiB", "", "≤ 64 MiB", met(x["beamdb"]["rss"] <= 64)))
        notes.append("Peak RSS runs (" + ", ".join(
            f"{n:,} events: beamdb {rs[str(n)]['beamdb']['median']:.1f} s = "
            f"{n / rs[str(n)]['beamdb']['median']:,.0f} ev/s, limit {rs[str(n)]['limit']['median']:.1f} s"
            for n in rs["sizes"]) + f"; {rs['rounds']} round(s) each).")
    if "reindex" in r:
        ri = r["reindex"]
        nb = ri.get("beamtimes", "")
        rows += [
            (f"reindex, {nb} beamtimes, full", fmt_range(ri["full"]), "", "", "", ""),
            (f"reindex, {nb} unchanged (generation check)", fmt_range(ri["noop_generation"]), "", "", "< 0.5 s",
             met(ri["noop_generation"]["median"] < 0.5)),
            (f"reindex, {nb} unchanged (files untouched)", fmt_range(ri["noop_stat"]), "", "", "< 0.5 s",
             met(ri["noop_stat"]["median"] < 0.5)),
        ]
    if "check" in r:
        rows.append(("make-migrations --check", fmt_range(r["check"], 1000, "ms", 0), "", "", "< 100 ms",
                     met(r["check"]["median"] < 0.1)))
    if "migrate" in r:
        mig = r["migrate"]
        rows.append((f"migrate, {mig.get('beamtimes', '')} beamtimes, rebuild of runs",
                     fmt_range(mig) if "median" in mig else f"n/a: {mig.get('error')}", "", "", "", ""))
    lines = ["| scenario | beamdb (median) | reference, same run | ratio | goal | met |",
             "|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines.append("")
    lines += [n + "\n" for n in notes]
    lines.append("Measured: " + "; ".join(
        f"{k} {v['_run']['when']} at {v['_run']['commit']} (load {v['_run']['load']})"
        for k, v in r.items() if isinstance(v, dict) and "_run" in v and k != "search") + ".")
    # (each scenario's ratios are measured within one run of that scenario; see docs/benchmarks.md)
    return "\n".join(lines)


def plot(r, path):
    import matplotlib
    import matplotlib.ticker
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = [k for k in ("frames", "events", "rss") if k in r]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.6), squeeze=False)
    for ax, k in zip(axes[0], panels):
        if k == "frames":
            fr = r["frames"]
            raw = fr["raw_bytes"]
            ax.bar(["beamdb", "peer", "ceiling"], [raw / fr["beamdb"]["median"] / 1e6,
                                                  raw / fr["peer"]["median"] / 1e6, fr["ceiling"]["MBps"]],
                   color=["#1f77b4", "#ff7f0e", "#7f7f7f"])
            ax.set_title("frame ingest (raw MB/s)")
        elif k == "events":
            ev = r["events"]
            ax.bar(["beamdb", "peer", "one-thread limit"],
                   [ev["events"] / ev[w]["median"] for w in ("beamdb", "peer", "limit")],
                   color=["#1f77b4", "#ff7f0e", "#7f7f7f"])
            ax.set_title(f"event ingest (events/s, {ev['events']:,} events)")
        else:
            rs = r["rss"]
            for who, color in (("beamdb", "#1f77b4"), ("limit", "#7f7f7f")):
                ax.plot(rs["sizes"], [rs[str(n)][who]["rss"] for n in rs["sizes"]], "o-", color=color, label=who)
            ax.axhline(64, color="#d62728", linestyle="--", label="goal 64 MiB")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xticks(rs["sizes"], [f"{n:,}" for n in rs["sizes"]])
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set_xlabel("events")
            ax.set_title("event ingest, peak RSS (MiB)")
            ax.legend()
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


SCENARIOS = ["frames", "events", "rss", "reindex", "check", "migrate", "search"]


def provenance():
    """When, at which commit (read once, when the harness starts: the binaries were built
    from that tree) and under which load a scenario ran."""
    return {"when": time.strftime("%Y-%m-%d %H:%M"), "commit": COMMIT[0],
            "load": f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "?"}


COMMIT = ["?"]


def read_commit():
    try:
        commit = subprocess.run(["git", "-C", REPO, "describe", "--always", "--dirty"], capture_output=True,
                                text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "?"
    COMMIT[0] = commit


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--beamdb", required=True)
    ap.add_argument("--limit", required=True, help="the one-thread limit program (examples/ingest_limit.rs)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--frames", type=int, default=200, help="frames in the frame run (1024² uint16: 2 MiB each)")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--rss-sizes", default="400000,4000000", help="event counts of the peak-RSS runs")
    ap.add_argument("--rss-rounds", type=int, default=1)
    ap.add_argument("--beamtimes", type=int, default=1000)
    ap.add_argument("--migrate-beamtimes", type=int, default=200)
    ap.add_argument("--quick", action="store_true",
                    help="small sizes, 3 rounds: a smoke test of the harness (leaves docs/ alone)")
    ap.add_argument("--search-beamtimes", type=int, default=100)
    ap.add_argument("--search-runs", type=int, default=1000, help="runs per beamtime in the search scenario")
    ap.add_argument("--only", help="comma-separated scenarios to run, of: " + ", ".join(SCENARIOS)
                    + " (frames includes the ceiling); the others keep their last results in docs/benchmarks.md")
    ap.add_argument("--no-doc", action="store_true", help="print only; leave docs/ alone")
    args = ap.parse_args()
    only = SCENARIOS if not args.only else [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in only if s not in SCENARIOS]
    if unknown:
        ap.error(f"--only: unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    args.rss_sizes = [int(x) for x in args.rss_sizes.split(",")]
    if args.quick:
        args.rounds, args.frames, args.size, args.events = 3, 20, 256, 5000
        args.beamtimes, args.migrate_beamtimes = 100, 20
        args.search_beamtimes, args.search_runs = 10, 100
        args.rss_sizes = [10_000, 100_000]
        args.no_doc = True
    read_commit()
    args.beamdb = str(Path(args.beamdb).resolve())
    args.limit = str(Path(args.limit).resolve())
    WORK.mkdir(exist_ok=True)
    # Results of every scenario, each from its own (latest) run: a partial run (--only)
    # replaces its scenarios and keeps the others. --quick results are kept apart.
    results_path = WORK / ("results-quick.json" if args.quick else "results.json")
    r = json.loads(results_path.read_text()) if results_path.exists() else {}
    if r.get("format") != 2:  # an older harness's results: nothing to keep
        r = {"format": 2}
    runners = {
        "frames": frames_scenario, "events": events_scenario, "rss": rss_scenario,
        "reindex": lambda a: {**reindex_scenario(a), "beamtimes": a.beamtimes},
        "check": check_scenario,
        "migrate": lambda a: {**migrate_scenario(a), "beamtimes": a.migrate_beamtimes},
        "search": search_scenario,
    }
    print(f"{usable_cores()} usable cores, load average {os.getloadavg()[0]:.1f}", flush=True)
    for name in SCENARIOS:
        if name in only:
            print(f"{name} ...", flush=True)
            t0 = time.perf_counter()
            res = runners[name](args)
            res["_run"] = {**provenance(), "seconds": round(time.perf_counter() - t0, 1), "quick": args.quick}
            r[name] = res
            results_path.write_text(json.dumps(r, indent=1))
    text = report(r)
    print(text)
    if "search" in r:
        print(search_report(r["search"]))
    if not args.no_doc:
        doc = REPO / "docs" / "benchmarks.md"
        if set(only) - {"search"}:
            write_doc(text, doc)
            plot(r, REPO / "docs" / "benchmarks.png")
        if "search" in only:
            write_doc(search_report(r["search"]), doc, "search")


if __name__ == "__main__":
    main()
