#!/usr/bin/env python3
"""mulproc against its peers, in one run: the targets of the design, as ratios.

For every scenario this runs mulproc's command (A) and the peer's (B) in
turn, A B A B A B (`--rounds`, default 3; the rounds of all scenarios are
interleaved, so a noisy minute on this shared machine hits different rounds
of a scenario differently), takes the ratio A/B of each adjacent pair and
reports the median ratio against the target.

mulproc's side is the measuring programs of benches/tools (crate
`mulproc-bench-tools`: `target/release/pingpong`, `stream`, `idle_recv`);
where a program lacks the mode (`pingpong --pipe`, `stream --producers`),
the criterion bench binary's one-shot mode runs the same code the
criterion suite measures (`MULPROC_BENCH_ONESHOT=1`, see
benches/mulproc.rs), and the table says so. The peers' side is
`target/release/peer` from benches/peers (crate `mulproc-peers`).

Every command prints its figure as the last stdout line, `key=value`
(`one_way_ns`, `msgs_per_sec`, `bytes_per_sec`, `cpu_percent`).

Writes target/compare/table.md (and prints it), target/compare/results.json
(every run), target/compare/chart.svg (median ratio against target per
scenario, log scale), and target/compare/criterion.svg from criterion's
results (target/criterion/**/new/estimates.json) if there are any.

    python3 benches/compare.py                 # build, 3 rounds, ~5-10 min
    python3 benches/compare.py --rounds 5 --only stream
    python3 benches/compare.py --no-build --peer-bin target-peers/release/peer
    python3 benches/compare.py --criterion-only  # just render criterion.svg

Standard library only (no matplotlib needed).
"""

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from html import escape

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULT_LINE = re.compile(r"^\s*([A-Za-z_]+)=([-+0-9.eE]+)\s*$")


# ---------------------------------------------------------------- building ---

def log(msg):
    print(msg, file=sys.stderr, flush=True)


def cargo(args, env=None, capture=False):
    """Runs cargo in the repository root; returns (ok, stdout)."""
    log("+ cargo " + " ".join(args))
    r = subprocess.run(["cargo"] + args, cwd=ROOT, env=env, text=True,
                       stdout=subprocess.PIPE if capture else None)
    return r.returncode == 0, (r.stdout or "")


def target_dir():
    return os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")


def tools_dir():
    """Where `cargo build --release -p mulproc-bench-tools` puts its binaries."""
    return os.path.join(target_dir(), "release")


def build_tools():
    ok, _ = cargo(["build", "--release", "-p", "mulproc-bench-tools"])
    if not ok:
        sys.exit("compare: `cargo build --release -p mulproc-bench-tools` failed")
    return tools_dir()


def build_bench_binary():
    """The criterion bench binary (for its one-shot mode), or None."""
    ok, out = cargo(["bench", "--no-run", "--bench", "mulproc",
                     "--message-format=json-render-diagnostics"], capture=True)
    if not ok:
        log("compare: building the bench binary failed; rows that need it are skipped")
        return None
    exe = None
    for line in out.splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if (msg.get("reason") == "compiler-artifact" and msg.get("executable")
                and "bench" in msg.get("target", {}).get("kind", [])
                and msg["target"].get("name") == "mulproc"):
            exe = msg["executable"]
    return exe


def build_peers(peers_target):
    """`target/release/peer`, or None (with the reason logged) if it does not build."""
    env = dict(os.environ, CARGO_TARGET_DIR=peers_target)
    ok, _ = cargo(["build", "--release", "-p", "mulproc-peers", "--bin", "peer"], env=env)
    if not ok:
        log("compare: the peers crate (benches/peers) failed to build; peer rows are skipped")
        return None
    return os.path.join(peers_target, "release", "peer")


def help_text(exe):
    try:
        r = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=20)
        return r.stdout + r.stderr
    except (OSError, subprocess.TimeoutExpired):
        return ""


# ----------------------------------------------------------------- running ---

def run(cmd, env_extra=None, timeout=240):
    """Runs a command; returns (key, value) from its last stdout line, or an error string."""
    env = dict(os.environ, **(env_extra or {}))
    t0 = time.time()
    try:
        r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout} s"
    except OSError as e:
        return None, str(e)
    dt = time.time() - t0
    lines = [l for l in r.stdout.splitlines() if l.strip()]
    if r.returncode != 0 or not lines:
        tail = (r.stderr.strip().splitlines() or ["(no output)"])[-1]
        return None, f"exit {r.returncode}: {tail}"
    m = RESULT_LINE.match(lines[-1])
    if not m:
        return None, f"unexpected last line {lines[-1]!r}"
    log(f"    {' '.join(os.path.basename(c) if i == 0 else c for i, c in enumerate(cmd))}"
        f"  ->  {m.group(1)}={float(m.group(2)):.4g}  ({dt:.1f} s)")
    return (m.group(1), float(m.group(2))), None


class Side:
    """One side of a comparison: a command, the key it prints, a scale."""

    def __init__(self, label, cmd, key, scale=1.0, env=None, note=""):
        self.label, self.cmd, self.key, self.scale = label, cmd, key, scale
        self.env, self.note = env or {}, note

    def measure(self):
        if self.cmd is None:
            return None, "not available"
        got, err = run(self.cmd, self.env)
        if err:
            return None, err
        key, value = got
        if key != self.key:
            return None, f"printed {key}=, expected {self.key}="
        return value * self.scale, None


class Row:
    """A scenario: mulproc (A) against a peer (B) or an absolute bound."""

    def __init__(self, rid, scenario, a, b, op, target, target_text, unit):
        self.id, self.scenario, self.a, self.b = rid, scenario, a, b
        self.op, self.target, self.target_text, self.unit = op, target, target_text, unit
        self.a_vals, self.b_vals, self.ratios, self.errors = [], [], [], []

    def round(self):
        a, err = self.a.measure()
        if err:
            self.errors.append(f"mulproc: {err}")
            log(f"    ! {self.id} mulproc: {err}")
        else:
            self.a_vals.append(a)
        if self.b is None:  # absolute target
            if a is not None:
                self.ratios.append(a)
            return
        b, err = self.b.measure()
        if err:
            self.errors.append(f"peer: {err}")
            log(f"    ! {self.id} peer: {err}")
        else:
            self.b_vals.append(b)
        if a is not None and b is not None and b > 0:
            self.ratios.append(a / b)

    def median_ratio(self):
        return statistics.median(self.ratios) if self.ratios else None

    def met(self):
        r = self.median_ratio()
        if r is None:
            return None
        return {"<=": r <= self.target, ">=": r >= self.target, "<": r < self.target}[self.op]


def fmt(value, unit):
    if value is None:
        return "–"
    if unit == "ns":
        if value < 10_000:
            return f"{value:.0f} ns"
        return f"{value / 1e3:.1f} µs"
    if unit == "msg/s":
        if value >= 1e6:
            return f"{value / 1e6:.2f} M msg/s"
        return f"{value / 1e3:.0f} k msg/s"
    if unit == "B/s":
        return f"{value / 1e9:.2f} GB/s"
    if unit == "%":
        return f"{value:.3f} %"
    return f"{value:.4g}"


def define_rows(ex, bench, peer, args):
    """The scenarios and their targets (from the design)."""
    P = (lambda *a: [peer] + list(a)) if peer else (lambda *a: None)
    pingpong, stream, idle = (os.path.join(ex, n) for n in ("pingpong", "stream", "idle_recv"))
    oneshot = {"MULPROC_BENCH_ONESHOT": "1"}

    def bench_side(label, *a, key):
        if bench is None:
            return Side(label, None, key)
        return Side(label, [bench] + list(a), key, env=oneshot, note="bench one-shot")

    pp_help, st_help = help_text(pingpong), help_text(stream)
    if "--pipe" in pp_help:
        pipe_busy = Side("pingpong --pipe", [pingpong, "--pipe"], "one_way_ns")
    else:
        pipe_busy = bench_side("bench pingpong --pipe", "pingpong", "--pipe", key="one_way_ns")
        pipe_busy.note = "bench one-shot (pingpong has no --pipe)"
    if "--producers" in st_help:
        mpsc = Side("stream --producers 4 --blocking",
                    [stream, "--producers", "4", "--blocking"], "msgs_per_sec")
    else:
        mpsc = bench_side("bench contended 4->1", "contended", "--producers", "4",
                          "--consumers", "1", key="msgs_per_sec")
        mpsc.note = "bench one-shot (stream has no --producers)"

    # Both the pingpong tool and the bench idle on both sides (pingpong
    # subtracts both pauses), so each one-way figure is one wake-up of a
    # sleeping receiver plus one transfer.
    if args.idle_example or bench is None:
        wake = Side("pingpong --blocking --idle-us 200",
                    [pingpong, "--blocking", "--idle-us", "200", "--iters", "3000",
                     "--warmup", "300"], "one_way_ns", note="pingpong tool, both sides idle")
    else:
        wake = bench_side("bench pingpong --block --idle-us 200", "pingpong", "--block",
                          "--idle-us", "200", key="one_way_ns")
        wake.note = "bench one-shot, both sides idle"
    q_busy = lambda: Side("pingpong", [pingpong], "one_way_ns")
    st64 = lambda: Side("stream", [stream], "msgs_per_sec")
    # The natural forms (issue 12): what a user writes, through the public
    # API, not the tuned criterion loops.
    natural_batch = lambda: Side("stream --batch 64", [stream, "--batch", "64"], "msgs_per_sec")
    pipe_st = lambda: Side("stream --pipe", [stream, "--pipe"], "msgs_per_sec")
    pipe_batch = lambda: Side("stream --pipe --batch 64", [stream, "--pipe", "--batch", "64"],
                              "msgs_per_sec")
    batch = lambda: bench_side("bench stream --batch", "stream", "--size", "64", "--batch",
                               key="msgs_per_sec")
    def stream_row(rid, what, side, system, target):
        """A 64-byte 1 -> 1 stream against `system`'s stream, throughput >= target x."""
        name = {"iceoryx2": "iceoryx2", "ipmpsc": "ipmpsc", "arrayqueue": "ArrayQueue",
                "cloudtoid": "cloudtoid-interprocess"}[system]
        label = f"{what}, 64 B, 1 → 1: vs {name}" + (" (threads)" if system == "arrayqueue" else "")
        peer_side = Side(system, P("--system", system, "--scenario", "stream"), "msgs_per_sec")
        return Row(rid, label, side, peer_side, ">=", target, f"≥ {target:g} × {name}", "msg/s")

    rows = [
        Row("pp-queue-iox2", "queue ping-pong, busy, 64 B, one-way: vs iceoryx2",
            q_busy(), Side("iceoryx2", P("--system", "iceoryx2", "--scenario", "pingpong"),
                           "one_way_ns"), "<=", 0.5, "≤ 0.5 × iceoryx2", "ns"),
        Row("pp-queue-cloudtoid", "queue ping-pong, busy, 64 B, one-way: vs cloudtoid-interprocess",
            q_busy(), Side("cloudtoid", P("--system", "cloudtoid", "--scenario", "pingpong"),
                           "one_way_ns"), "<=", 0.7, "≤ 0.7 × cloudtoid", "ns"),
        Row("pp-queue-aq", "queue ping-pong, busy, 64 B, one-way: vs ArrayQueue (threads)",
            q_busy(), Side("arrayqueue", P("--system", "arrayqueue", "--scenario", "pingpong"),
                           "one_way_ns"), "<=", 1.2, "≤ 1.2 × ArrayQueue", "ns"),
        Row("pp-pipe-raw", "pipe ping-pong, busy, 64 B, one-way: vs cache-line floor",
            pipe_busy, Side("raw", P("--system", "raw", "--scenario", "pingpong"),
                            "one_way_ns"), "<=", 1.5, "≤ 1.5 × raw floor", "ns"),
        Row("pp-block-uds", "ping-pong through blocking recv, one-way: vs Unix socket",
            Side("pingpong --blocking", [pingpong, "--blocking"], "one_way_ns"),
            Side("uds", P("--system", "uds", "--scenario", "pingpong-block"), "one_way_ns"),
            "<=", 0.5, "≤ 0.5 × UDS", "ns"),
        Row("wake-futex", "wake-up of a sleeping receiver (sender idle 200 µs): vs futex floor",
            wake,
            Side("futex", P("--system", "futex", "--scenario", "pingpong-block",
                            "--idle-us", "200"), "one_way_ns"),
            "<=", 1.2, "≤ 1.2 × futex floor", "ns"),
        Row("idle-cpu", f"CPU of a receiver blocked on an idle queue for {args.idle_secs:g} s",
            Side("idle_recv", [idle, "--secs", str(args.idle_secs)], "cpu_percent"),
            None, "<", 1.0, "< 1 % of a core", "%"),
        stream_row("stream64-iox2", "stream", st64(), "iceoryx2", 10.0),
        stream_row("stream64-ipmpsc", "stream", st64(), "ipmpsc", 10.0),
        stream_row("stream64-aq", "stream", st64(), "arrayqueue", 0.8),
        stream_row("stream64-cloudtoid", "stream", st64(), "cloudtoid", 2.5),
        Row("stream64-batch-cloudtoid", "stream with the batch API, 64 B, 1 → 1: vs cloudtoid-interprocess's batch send",
            batch(), Side("cloudtoid", P("--system", "cloudtoid", "--scenario", "stream-batch"),
                          "msgs_per_sec"), ">=", 2.5, "≥ 2.5 × cloudtoid", "msg/s"),
        stream_row("stream64-batch-iox2", "stream with the batch API", batch(), "iceoryx2", 10.0),
        stream_row("stream64-batch-ipmpsc", "stream with the batch API", batch(), "ipmpsc", 10.0),
        stream_row("stream64-batch-aq", "stream with the batch API", batch(), "arrayqueue", 1.0),
        Row("batch-natural-single", "natural batch loop (64), queue: vs the queue's single-message stream",
            natural_batch(), st64(), ">=", 3.0, "≥ 3 × single messages", "msg/s"),
        stream_row("batch-natural-aq", "natural batch loop (64), queue", natural_batch(),
                   "arrayqueue", 1.0),
        stream_row("pipe-stream-cloudtoid", "pipe stream", pipe_st(), "cloudtoid", 5.0),
        stream_row("pipe-stream-aq", "pipe stream", pipe_st(), "arrayqueue", 1.0),
        Row("pipe-batch-natural-single", "natural batch loop (64), pipe: vs the pipe's single-message stream",
            pipe_batch(), pipe_st(), ">=", 3.0, "≥ 3 × single messages", "msg/s"),
        Row("stream64k-memcpy", "stream, 64 KiB, copying: bytes/s vs memcpy bandwidth",
            Side("stream --size 65536", [stream, "--size", "65536"], "msgs_per_sec",
                 scale=65536.0),
            Side("memcpy", P("--system", "memcpy"), "bytes_per_sec"),
            ">=", 0.5, "≥ 0.5 × memcpy", "B/s"),
        Row("mpsc-ipmpsc", "4 producers → 1 consumer, blocking: vs ipmpsc",
            mpsc, Side("ipmpsc", P("--system", "ipmpsc", "--scenario", "mpsc", "--block"),
                       "msgs_per_sec"), ">=", 5.0, "≥ 5 × ipmpsc", "msg/s"),
        Row("mpsc-cloudtoid", "4 producers → 1 consumer, blocking: vs cloudtoid-interprocess",
            mpsc, Side("cloudtoid", P("--system", "cloudtoid", "--scenario", "mpsc", "--block"),
                       "msgs_per_sec"), ">=", 5.0, "≥ 5 × cloudtoid", "msg/s"),
    ]
    if args.only:
        rows = [r for r in rows if any(o in r.id for o in args.only)]
    return rows


# ------------------------------------------------------------------ output ---

def table(rows, peer_note):
    out = ["| scenario | mulproc | peer | ratios (A/B per round) | median ratio | target | met? |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        a = fmt(statistics.median(r.a_vals) if r.a_vals else None, r.unit)
        if r.a.note:
            a += f" ({r.a.note})"
        if r.b is None:
            b, ratios, med = "(absolute)", "–", fmt(r.median_ratio(), r.unit)
        else:
            b = fmt(statistics.median(r.b_vals) if r.b_vals else None, r.unit)
            ratios = " ".join(f"{x:.3g}" for x in r.ratios) or "–"
            med = f"{r.median_ratio():.3g}" if r.ratios else "–"
        met = {True: "met", False: "**missed**", None: "no data"}[r.met()]
        if r.errors and r.met() is None:
            met += f" ({r.errors[-1][:80]})"
        out.append(f"| {r.scenario} | {a} | {b} | {ratios} | {med} | {r.target_text} | {met} |")
    if peer_note:
        out.append("")
        out.append(peer_note)
    return "\n".join(out) + "\n"


def svg_text(x, y, s, size=12, anchor="start", weight="normal", fill="#222"):
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
            f'font-weight="{weight}" fill="{fill}">{escape(s)}</text>')


def chart(rows, path):
    """Median ratio (dot, min-max whisker) against the target (tick), log scale."""
    rows = [r for r in rows if r.ratios]
    lo_exp, hi_exp = -3, 2
    vals = [v for r in rows for v in r.ratios + [r.target]]
    if vals:
        lo_exp = min(lo_exp, math.floor(math.log10(min(vals))))
        hi_exp = max(hi_exp, math.ceil(math.log10(max(vals))))
    label_w, plot_w, row_h, top = 430, 520, 34, 60
    width, height = label_w + plot_w + 40, top + row_h * max(1, len(rows)) + 50
    X = lambda v: label_w + plot_w * (math.log10(v) - lo_exp) / (hi_exp - lo_exp)
    s = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
         f'font-family="sans-serif">', f'<rect width="{width}" height="{height}" fill="white"/>',
         svg_text(10, 24, "mulproc / peer: median ratio per scenario (dot), "
                  "min–max of rounds (line), target (bar)", 15, weight="bold"),
         svg_text(10, 44, "green: target met, red: missed; log scale; "
                  "latency rows want ≤ target, throughput rows ≥", 11, fill="#555")]
    for e in range(lo_exp, hi_exp + 1):
        x = X(10 ** e)
        s.append(f'<line x1="{x:.1f}" y1="{top - 6}" x2="{x:.1f}" y2="{height - 40}" '
                 f'stroke="#ddd"/>')
        s.append(svg_text(x, height - 24, f"{10 ** e:g}", 11, "middle", fill="#555"))
    for i, r in enumerate(rows):
        y = top + i * row_h + row_h / 2
        met = r.met()
        color = "#2a9d3a" if met else "#d62728"
        name = r.scenario if len(r.scenario) <= 64 else r.scenario[:62] + "…"
        s.append(svg_text(10, y + 4, name, 11))
        lo, hi = min(r.ratios), max(r.ratios)
        s.append(f'<line x1="{X(lo):.1f}" y1="{y:.1f}" x2="{X(hi):.1f}" y2="{y:.1f}" '
                 f'stroke="{color}" stroke-width="2"/>')
        tx = X(r.target)
        s.append(f'<line x1="{tx:.1f}" y1="{y - 10:.1f}" x2="{tx:.1f}" y2="{y + 10:.1f}" '
                 f'stroke="#222" stroke-width="3"/>')
        m = r.median_ratio()
        s.append(f'<circle cx="{X(m):.1f}" cy="{y:.1f}" r="6" fill="{color}"/>')
        s.append(svg_text(X(m) + 9, y - 6, f"{m:.3g} ({r.target_text})", 10, fill="#333"))
    s.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(s) + "\n")


def criterion_results(crit_dir):
    """(group, name, ns per iteration, elements per iteration or None) per benchmark."""
    found = []
    for dirpath, _, files in os.walk(crit_dir):
        if os.path.basename(dirpath) != "new" or "estimates.json" not in files:
            continue
        try:
            with open(os.path.join(dirpath, "estimates.json")) as f:
                est = json.load(f)
            with open(os.path.join(dirpath, "benchmark.json")) as f:
                meta = json.load(f)
        except (OSError, ValueError):
            continue
        ns = est.get("mean", {}).get("point_estimate")
        if ns is None:
            continue
        name = meta.get("function_id") or ""
        if meta.get("value_str"):
            name = f"{name}/{meta['value_str']}" if name else meta["value_str"]
        thr = meta.get("throughput") or {}
        found.append((meta.get("group_id", "?"), name, ns, thr.get("Elements")))
    return sorted(found)


def criterion_chart(results, path):
    label_w, plot_w, row_h, top = 300, 560, 24, 60
    width = label_w + plot_w + 180
    height = top + row_h * (len(results) + len({g for g, *_ in results})) + 50
    lo = math.floor(math.log10(min(r[2] for r in results)))
    hi = math.ceil(math.log10(max(r[2] for r in results)))
    hi = max(hi, lo + 1)
    X = lambda v: label_w + plot_w * (math.log10(v) - lo) / (hi - lo)
    s = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
         f'font-family="sans-serif">', f'<rect width="{width}" height="{height}" fill="white"/>',
         svg_text(10, 24, "criterion results (target/criterion): mean time per iteration, log scale", 15,
                  weight="bold"),
         svg_text(10, 44, "pingpong: one-way latency; streams: time per delivered message "
                  "(and messages/s)", 11, fill="#555")]
    for e in range(lo, hi + 1):
        x = X(10 ** e)
        s.append(f'<line x1="{x:.1f}" y1="{top - 6}" x2="{x:.1f}" y2="{height - 40}" '
                 f'stroke="#ddd"/>')
        s.append(svg_text(x, height - 24, fmt(10 ** e, "ns"), 11, "middle", fill="#555"))
    y, group = top, None
    for g, name, ns, elems in results:
        if g != group:
            group = g
            s.append(svg_text(10, y + 16, g, 12, weight="bold"))
            y += row_h
        s.append(svg_text(24, y + 16, name, 11))
        x0 = X(10 ** lo)
        s.append(f'<rect x="{x0:.1f}" y="{y + 5}" width="{max(1.0, X(ns) - x0):.1f}" '
                 f'height="{row_h - 10}" fill="#4878cf"/>')
        label = fmt(ns, "ns")
        if elems:
            label += f"  ({fmt(elems * 1e9 / ns, 'msg/s')})"
        s.append(svg_text(X(ns) + 6, y + 16, label, 11))
        y += row_h
    s.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(s) + "\n")


def render_criterion(out_dir):
    crit = os.path.join(target_dir(), "criterion")
    results = criterion_results(crit) if os.path.isdir(crit) else []
    if not results:
        log(f"compare: no criterion results under {crit}")
        return
    path = os.path.join(out_dir, "criterion.svg")
    criterion_chart(results, path)
    log(f"compare: wrote {path} ({len(results)} benchmarks)")


# -------------------------------------------------------------------- main ---

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="A B rounds per scenario (default 3)")
    ap.add_argument("--only", action="append", default=[],
                    help="run only scenarios whose id contains this (repeatable; ids: pp-queue-iox2 pp-queue-cloudtoid pp-queue-aq pp-pipe-raw pp-block-uds wake-futex idle-cpu stream64-iox2 stream64-ipmpsc stream64-aq stream64-cloudtoid stream64-batch-cloudtoid stream64-batch-iox2 stream64-batch-ipmpsc stream64-batch-aq batch-natural-single batch-natural-aq pipe-stream-cloudtoid pipe-stream-aq pipe-batch-natural-single stream64k-memcpy mpsc-ipmpsc mpsc-cloudtoid)")
    ap.add_argument("--idle-secs", type=float, default=10.0,
                    help="how long the idle receiver is watched (default 10)")
    ap.add_argument("--idle-example", "--idle-tool", action="store_true",
                    help="wake-up row: use the pingpong tool (`pingpong --blocking --idle-us "
                         "200`, both sides idle) instead of the bench's one-shot ping-pong")
    ap.add_argument("--no-build", action="store_true",
                    help="use the binaries already built")
    ap.add_argument("--peer-bin", help="peer binary to use (skips building benches/peers)")
    ap.add_argument("--peers-target-dir",
                    help="CARGO_TARGET_DIR for the peers build (default: the main target dir)")
    ap.add_argument("--criterion-only", action="store_true",
                    help="only render target/compare/criterion.svg")
    args = ap.parse_args()

    out_dir = os.path.join(target_dir(), "compare")
    os.makedirs(out_dir, exist_ok=True)
    if args.criterion_only:
        render_criterion(out_dir)
        return

    peer_note = ""
    if args.no_build:
        ex = tools_dir()
        bench = None
        deps = os.path.join(target_dir(), "release", "deps")
        cands = [os.path.join(deps, f) for f in os.listdir(deps)
                 if re.fullmatch(r"mulproc-[0-9a-f]{16}", f)] if os.path.isdir(deps) else []
        cands = [c for c in cands if os.access(c, os.X_OK)]
        if cands:
            bench = max(cands, key=os.path.getmtime)
        peer = args.peer_bin or os.path.join(target_dir(), "release", "peer")
    else:
        ex = build_tools()
        bench = build_bench_binary()
        peer = args.peer_bin or build_peers(args.peers_target_dir or target_dir())
    if peer and not os.access(peer, os.X_OK):
        peer = None
    if peer is None:
        peer_note = ("**The peers crate (benches/peers) did not build or its binary is "
                     "missing: peer columns are empty.**")
    log(f"compare: tools {ex}, bench binary {bench}, peer {peer}")

    rows = define_rows(ex, bench, peer, args)
    t0 = time.time()
    for rnd in range(args.rounds):
        for r in rows:
            log(f"[round {rnd + 1}/{args.rounds}] {r.scenario}")
            r.round()
    log(f"compare: {len(rows)} scenarios × {args.rounds} rounds in {time.time() - t0:.0f} s")

    md = table(rows, peer_note)
    with open(os.path.join(out_dir, "table.md"), "w") as f:
        f.write(md)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump([{"id": r.id, "scenario": r.scenario, "mulproc_cmd": r.a.cmd,
                    "peer_cmd": r.b.cmd if r.b else None, "mulproc": r.a_vals,
                    "peer": r.b_vals, "ratios": r.ratios, "median_ratio": r.median_ratio(),
                    "target": f"{r.op} {r.target}", "met": r.met(), "errors": r.errors}
                   for r in rows], f, indent=1)
    chart(rows, os.path.join(out_dir, "chart.svg"))
    render_criterion(out_dir)
    print(md)
    log(f"compare: wrote {out_dir}/table.md, results.json, chart.svg")


if __name__ == "__main__":
    main()
