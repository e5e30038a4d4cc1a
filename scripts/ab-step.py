#!/usr/bin/env python3
"""Times one `lemming step` of two lemming binaries on fresh copies of one org,
alternating A and B run by run (A B, B A, ...), so that both see the same
machine and neither always runs first.

    scripts/ab-step.py NEW_BIN OLD_BIN ORG_DIR [RUNS]

ORG_DIR is copied before every run (the copy is not timed) and `sync` is run
before the step; the step is the whole process. Prints each binary's median,
min and max wall time and its median user and system CPU time in
milliseconds, and the ratios of the medians. A step is mostly the kernel's
file work, whose cost moves with the disk's state: lemming's own work is the
user time.
"""
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    bins = {"new": sys.argv[1], "old": sys.argv[2]}
    src, runs = sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 9
    times = {k: [] for k in bins}
    user = {k: [] for k in bins}
    system = {k: [] for k in bins}
    with tempfile.TemporaryDirectory() as scratch:
        for run in range(runs):
            # A B, then B A: the slot a binary runs in must not favour it.
            order = list(bins.items()) if run % 2 == 0 else list(reversed(bins.items()))
            for name, binary in order:
                org = f"{scratch}/{name}"
                shutil.rmtree(org, ignore_errors=True)
                subprocess.run(["cp", "-a", src, org], check=True)
                subprocess.run(["sync"], check=True)
                start = time.perf_counter()
                child = subprocess.Popen(
                    [binary, "--org", org, "step"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
                _, status, usage = os.wait4(child.pid, 0)
                times[name].append((time.perf_counter() - start) * 1000)
                user[name].append(usage.ru_utime * 1000)
                system[name].append(usage.ru_stime * 1000)
                child.returncode = os.waitstatus_to_exitcode(status)
                if child.returncode != 0:
                    sys.exit(f"{binary} step failed ({child.returncode})")
    med = statistics.median
    for name, t in times.items():
        print(
            f"{name}: wall median {med(t):.1f} ms (min {min(t):.1f}, max {max(t):.1f}), "
            f"user {med(user[name]):.1f} ms, system {med(system[name]):.1f} ms ({runs} runs)"
        )
    ratio = {k: med(v["new"]) / med(v["old"]) for k, v in (("wall", times), ("user", user), ("system", system))}
    print("new / old: " + ", ".join(f"{k} {r:.3f}" for k, r in ratio.items()))


if __name__ == "__main__":
    main()
