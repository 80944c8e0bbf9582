"""``fastdl bench``: fastdl, PyTorch and ONNX Runtime side by side, each in its own process.

For every case the libraries are timed in alternating rounds (A B A B …), each
round a fresh process with the same thread count; the table shows the medians,
the ratios fastdl ÷ torch and fastdl ÷ ONNX Runtime (inference cases; lower is
better), and the achieved rate as a share of the machine's limits (NumPy sgemm
2048³ and 3-stream bandwidth). A peer that is not installed shows as ``-``.
"""
import argparse
import json
import statistics
import subprocess
import sys

from fastdl.bench.suites import SUITES


def _job(suite, index, library, threads, repeats):
    command = [sys.executable, "-m", "fastdl.bench.worker", suite, str(index), library,
               str(threads), str(repeats)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError("benchmark worker failed: %s\n%s" % (" ".join(command),
                                                                 result.stderr[-2000:]))
    return json.loads(result.stdout.strip().splitlines()[-1])


def run(suites, rounds=3, threads=None, repeats=10, out=sys.stdout):
    """Time every case of ``suites``; print the table and return its rows."""
    import fastdl
    threads = threads or fastdl.get_num_threads()
    sgemm, bandwidth = _job("limits", 0, "numpy", threads, 1)
    print("machine: sgemm %.0f GFLOP/s, bandwidth %.1f GB/s, %d threads each side, "
          "medians of %d alternating rounds" % (sgemm, bandwidth, threads, rounds), file=out)
    header = "%-46s %10s %10s %6s %10s %6s %10s %6s" % (
        "case", "fastdl ms", "torch ms", "ratio", "ort ms", "ratio", "rate", "limit%")
    print(header, file=out)
    print("-" * len(header), file=out)
    rows = []
    for suite in suites:
        for index, case in enumerate(SUITES[suite]()):
            name, work, unit = case[:3]
            libraries = ("fastdl", "torch", "onnxruntime")[:3 if len(case) > 5 else 2]
            samples = {library: [] for library in libraries}
            for _ in range(rounds):
                for library in libraries:
                    times = _job(suite, index, library, threads, repeats)
                    if times is not None:
                        samples[library].extend(times)
            ours = statistics.median(samples["fastdl"])
            rate = work / ours / 1e9 if work else None
            limit = sgemm if unit == "GFLOP/s" else bandwidth
            row = {"case": name, "fastdl_ms": ours * 1e3, "rate": rate, "unit": unit,
                   "limit_percent": None if rate is None else 100 * rate / limit}
            cells = []
            for peer, key in (("torch", "torch"), ("onnxruntime", "ort")):
                theirs = statistics.median(samples[peer]) if samples.get(peer) else None
                row[key + "_ms"] = None if theirs is None else theirs * 1e3
                row["ratio" if key == "torch" else "ort_ratio"] = (
                    None if theirs is None else ours / theirs)
                cells += ["-", "-"] if theirs is None else ["%.3f" % (theirs * 1e3),
                                                            "%.2f" % (ours / theirs)]
            rows.append(row)
            print("%-46s %10.3f %10s %6s %10s %6s %10s %6s" % (
                name[:46], row["fastdl_ms"], *cells,
                "-" if rate is None else "%.1f %s" % (rate, unit.split("/")[0]),
                "-" if rate is None else "%.0f" % row["limit_percent"]), file=out)
            out.flush()
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fastdl bench", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--suite", default="all",
                        help="all, or comma-separated: %s" % ",".join(SUITES))
    parser.add_argument("--rounds", type=int, default=3, help="rounds of timed calls")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per round")
    parser.add_argument("--threads", type=int, default=0,
                        help="threads for every library; 0: fastdl's thread count")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    suites = list(SUITES) if args.suite == "all" else args.suite.split(",")
    unknown = [s for s in suites if s not in SUITES]
    if unknown:
        print("fastdl bench: error: unknown suite %s (choose from %s)"
              % (", ".join(unknown), ", ".join(SUITES)), file=sys.stderr)
        return 2
    rows = run(suites, args.rounds, args.threads or None, args.repeats)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


__all__ = ["main", "run", "SUITES"]
