"""What the data-safety checks cost (issue 20): ingest with the scan-physics checks streamed over the
data, identity by content and the temporary-name rename, against the tomoflow before them (the peer:
the same command from an older commit, run in the same session); and the file policy's cost per file
(plan, stamp, temporary name, rename) against a plain atomic write.

    python benchmarks/bench_safety.py                       # 720 x 256 x 512 uint16 scan (189 MB)
    python benchmarks/bench_safety.py --quick               # 90 x 32 x 64 smoke run
    python benchmarks/bench_safety.py --peer-rev ff8c87d    # the commit to compare with (git worktree)

The peer is imported from a ``git worktree`` of ``--peer-rev`` in a subprocess (the editable install's
import hook removed), so both run on this machine, from the same file, in the same session.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, write_results

REPO = Path(__file__).resolve().parents[1]

_INGEST = """
import sys, time, json
tree, src, out = sys.argv[1], sys.argv[2], sys.argv[3]
if tree:
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f)]
    sys.path.insert(0, tree)
import tomoflow
from tomoflow.io.ingest import ingest
t0 = time.perf_counter()
ingest(src, out)
print(json.dumps({"seconds": time.perf_counter() - t0, "tomoflow": tomoflow.__file__}))
"""


def _ingest_seconds(tree: str, src: Path, out: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    p = subprocess.run(
        [sys.executable, "-c", _INGEST, tree, str(src), str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    if p.returncode:
        raise SystemExit(f"ingest failed ({tree or 'this tree'}):\n{p.stderr[-2000:]}")
    doc = json.loads(p.stdout.strip().splitlines()[-1])
    return float(doc["seconds"])


def _peer_tree(rev: str, where: Path) -> tuple[Path | None, str]:
    """A worktree of ``rev``, or None and why not (no git, a shallow clone without that commit)."""
    p = subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "-f", "--detach", str(where), rev], capture_output=True, text=True
    )
    if p.returncode:
        return None, (p.stderr.strip().splitlines() or ["git worktree failed"])[-1]
    return where, ""


def _file_policy(n: int, d: Path) -> dict[str, float]:
    from tomoflow.io.output import plan_file, write_json

    doc = {"matrix": np.eye(4).tolist(), "ncc": 0.97, "seconds": 4.2}
    t0 = time.perf_counter()
    for i in range(n):
        p = d / f"plain-{i}.json"
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
        os.replace(tmp, p)
    plain = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    for i in range(n):
        write_json(plan_file(d / f"policy-{i}.json", kind="registration", fingerprint="f"), doc)
    policy = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    for i in range(n):  # a rerun: the file is recognised as the same and left untouched
        write_json(plan_file(d / f"policy-{i}.json", kind="registration", fingerprint="f"), doc)
    same = (time.perf_counter() - t0) / n
    return {"plain_ms": 1e3 * plain, "policy_ms": 1e3 * policy, "rerun_same_ms": 1e3 * same}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="90 x 32 x 64 smoke run")
    ap.add_argument("--peer-rev", default="ff8c87d", help="commit before the safety checks (the peer)")
    ap.add_argument("--repeats", type=int, default=3, help="ingest runs per side (the best is reported)")
    ap.add_argument("--output", default=None, help="JSON path (default benchmarks/results/bench_safety[_quick].json)")
    args = ap.parse_args()
    shape = (90, 32, 64) if args.quick else (720, 256, 512)
    repeats = 1 if args.quick else max(1, args.repeats)

    from tomoflow.io.dxchange import write_dxchange

    work = Path(tempfile.mkdtemp(prefix="bench-safety-"))
    try:
        rng = np.random.default_rng(0)
        angles = np.linspace(0, 180, shape[0], endpoint=False)
        counts = rng.integers(2000, 4000, size=shape, dtype=np.uint16)
        src = write_dxchange(
            work / "scan.h5",
            counts,
            angles,
            flats=np.full((4, *shape[1:]), 4000, np.uint16),
            darks=np.full((2, *shape[1:]), 100, np.uint16),
        )
        mb = counts.nbytes / 2**20
        peer, why = _peer_tree(args.peer_rev, work / "peer")
        rows = []
        seconds = {}
        sides = [("tomoflow (this tree)", "")] + ([(f"tomoflow {args.peer_rev} (peer)", str(peer))] if peer else [])
        for label, tree in sides:
            best = min(_ingest_seconds(tree, src, work / "out.zarr") for _ in range(repeats))
            seconds[label] = best
            rows.append([f"ingest {'x'.join(map(str, shape))} uint16", label, f"{best:.2f} s", f"{mb / best:.0f} MB/s"])
        if peer is None:
            print(f"peer {args.peer_rev} not run: {why}")
        ratio = seconds["tomoflow (this tree)"] / seconds[sides[1][0]] if peer else None
        files = _file_policy(50 if args.quick else 500, work)
        rows.append(["one small JSON", "plain atomic write", f"{files['plain_ms']:.2f} ms", "-"])
        rows.append(["one small JSON", "file policy (plan + stamp + write)", f"{files['policy_ms']:.2f} ms", "-"])
        rows.append(["one small JSON", "file policy, rerun (left as it is)", f"{files['rerun_same_ms']:.2f} ms", "-"])
        print_table(rows, ["case", "who", "time", "throughput"], title="what the data-safety checks cost")
        if ratio is not None:
            print(f"ingest with the safety checks / without: {ratio:.2f}x")
        write_results(
            "bench_safety" + ("_quick" if args.quick else ""),
            {
                "shape": list(shape),
                "megabytes": mb,
                "repeats": repeats,
                "peer_rev": args.peer_rev,
                "ingest_seconds": seconds,
                "ingest_ratio": ratio,
                "file_policy": files,
                **({} if peer else {"peer_not_run": why}),
            },
            path=args.output,
        )
    finally:
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "remove", "--force", str(work / "peer")], capture_output=True
        )
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
