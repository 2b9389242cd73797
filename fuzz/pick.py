#!/usr/bin/env python3
"""Chooses the committed corpus of one fuzz target from a larger one.

Usage: fuzz/pick.py TARGET DIR [N] [BUDGET], from the repository root, after
`cargo fuzz build -a`. DIR holds the inputs to choose from (a run's corpus, best
set-cover-merged first). The N inputs (default 50) that add the most libFuzzer
features each, smaller first on a tie, within BUDGET bytes (default 50,000), replace
fuzz/corpus/TARGET/min-*; seeds (seed-*) and crash inputs (crash-*) stay.
The features come from a merge control file, which lists every input's features.
"""
import os
import shutil
import subprocess
import sys
import tempfile

target, src = sys.argv[1], sys.argv[2]
n = int(sys.argv[3]) if len(sys.argv) > 3 else 50
budget = int(sys.argv[4]) if len(sys.argv) > 4 else 50_000
dst = os.path.join("fuzz", "corpus", target)
binary = os.path.join("fuzz", "target", "x86_64-unknown-linux-gnu", "release", target)
with tempfile.TemporaryDirectory() as tmp:
    ctl = os.path.join(tmp, "control")
    out = os.path.join(tmp, "out")
    os.mkdir(out)
    subprocess.run([binary, "-merge=1", f"-merge_control_file={ctl}", "-max_len=17000", out, src],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    lines = open(ctl).read().split("\n")
count = int(lines[0])
files = lines[2:2 + count]
features = {}
for line in lines[2 + count:]:
    parts = line.split()
    if parts and parts[0] == "FT":
        features[files[int(parts[1])]] = set(parts[2:])
have, pick, used = set(), [], 0
while len(pick) < n:
    best = None
    for f, fs in features.items():
        size = os.path.getsize(f)
        if f in pick or used + size > budget:
            continue
        gain = len(fs - have)
        if gain and (best is None or (gain, -size) > best[0]):
            best = ((gain, -size), f)
    if best is None:
        break
    pick.append(best[1])
    have |= features[best[1]]
    used += os.path.getsize(best[1])
for f in os.listdir(dst):
    if f.startswith("min-"):
        os.remove(os.path.join(dst, f))
for f in pick:
    shutil.copy(f, os.path.join(dst, "min-" + os.path.basename(f)[:12]))
everything = set().union(*features.values()) if features else set()
print(f"{target}: {len(pick)} files, {used} bytes, {len(have)} of {len(everything)} features")
