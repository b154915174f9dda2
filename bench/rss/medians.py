"""medians.py OUT NOUN: per binary, the median wall time and CPU of the runs
in OUT (lines "BIN WALL_US CPU_MS", as repair-ab.sh and cold-ab.sh write
them), and every wall time sorted; NOUN names the runs ("repairs")."""
import collections, statistics, sys

runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    b, wall, cpu = line.split()
    runs[b].append((int(wall) / 1000, float(cpu)))
for b, v in runs.items():
    walls = sorted(w for w, _ in v)
    print("%s: %d %s, wall median %.1f ms, CPU median %.0f ms; walls %s" % (
        b, len(v), sys.argv[2], statistics.median(walls), statistics.median(c for _, c in v),
        " ".join("%.0f" % w for w in walls)))
