"""``fastdl bench``: fastdl, PyTorch and ONNX Runtime side by side, each in its own process.

For every case the libraries are timed in alternating rounds (A B A B …), each
round a fresh process with the same thread count; the table shows the medians,
the ratios fastdl ÷ torch and fastdl ÷ ONNX Runtime (inference cases; lower is
better), and the achieved rate as a share of the machine's limits (NumPy sgemm
2048³ and 3-stream bandwidth). A peer that is not installed shows as ``-``.
Every table starts with the host: CPU model, AVX2 / AVX-512 flags, the OpenBLAS
kernel and thread count each library's process runs with (threadpoolctl), and the
OpenBLAS variables that pin it.

Like for like (``suites.py``): both sides make the same public calls, with the
same data and upstream gradient, gradients reset before every call, warm-up
untimed. ``--smoke`` runs every row once at tiny shapes: a check, not a figure.
"""
import argparse
import json
import statistics
import subprocess
import sys

from fastdl.bench.suites import SUITES


def _job(suite, index, library, threads, repeats, smoke=False):
    command = [sys.executable, "-m", "fastdl.bench.worker", suite, str(index), library,
               str(threads), str(repeats)] + (["smoke"] if smoke else [])
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError("benchmark worker failed: %s\n%s" % (" ".join(command),
                                                                 result.stderr[-2000:]))
    return json.loads(result.stdout.strip().splitlines()[-1])


def _pools(info):
    """``OpenBLAS 0.3.30 kernel SkylakeX 1 thread, ...`` for one process's pools."""
    described = []
    for pool in info.get("pools", []):
        if pool["api"] == "openblas":
            described.append("OpenBLAS %s kernel %s %s thread(s)" % (
                pool["version"], pool["kernel"], pool["threads"]))
        else:
            described.append("%s %s thread(s)" % (pool["prefix"], pool["threads"]))
    return ", ".join(dict.fromkeys(described)) or "no BLAS/OpenMP pool seen"


def describe_host(threads, out=sys.stdout):
    """Print the host lines of a table (CPU, flags, BLAS kernels and threads) and return
    ``{"fastdl": info, "torch": info or None}``."""
    ours = _job("host", 0, "fastdl", threads, 1)
    theirs = _job("host", 0, "torch", threads, 1)
    pinned = " ".join("%s=%s" % (name, value if value is not None else "unset")
                      for name, value in ours["env"].items())
    print("host: %s, %d CPUs, %s (flags: %s); %s" % (
        ours["cpu"], ours["cpus"], ours["kind"], " ".join(ours["flags"]) or "none", pinned),
        file=out)
    print("fastdl %s process: %d threads; %s" % (ours["version"], ours["threads"],
                                                 _pools(ours)), file=out)
    if theirs is not None:
        print("torch %s process: %d threads, CPU capability %s; %s" % (
            theirs["version"], theirs["threads"], theirs["capability"], _pools(theirs)),
            file=out)
    return {"fastdl": ours, "torch": theirs}


def run(suites, rounds=3, threads=None, repeats=10, out=sys.stdout, smoke=False, host=None):
    """Time every case of ``suites``; print the table and return its rows.

    ``smoke``: tiny shapes, one timed call per library and round (checks that every
    row runs; its times mean nothing). ``host``: a dict that receives the host's
    description (``describe_host``).
    """
    import fastdl
    threads = threads or fastdl.get_num_threads()
    described = describe_host(threads, out)
    if host is not None:
        host.update(described)
    if smoke:   # no rates: the machine's limits are not measured
        sgemm = bandwidth = None
        print("machine: %d threads each side; SMOKE: tiny shapes, one call a round, not "
              "figures" % threads, file=out)
    else:
        sgemm, bandwidth = _job("limits", 0, "numpy", threads, 1)
        print("machine: sgemm %.0f GFLOP/s, bandwidth %.1f GB/s, %d threads each side, "
              "medians of %d alternating rounds" % (sgemm, bandwidth, threads, rounds),
              file=out)
    header = "%-54s %10s %10s %6s %10s %6s %10s %6s" % (
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
                    times = _job(suite, index, library, threads, repeats, smoke)
                    if times is not None:
                        samples[library].extend(times)
            ours = statistics.median(samples["fastdl"])
            rate = work / ours / 1e9 if work and not smoke else None
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
            print("%-54s %10.3f %10s %6s %10s %6s %10s %6s" % (
                name[:54], row["fastdl_ms"], *cells,
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
    parser.add_argument("--json", help="also write the host and the rows to this file")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny shapes, one call per round: checks every row runs")
    args = parser.parse_args(argv)
    suites = list(SUITES) if args.suite == "all" else args.suite.split(",")
    unknown = [s for s in suites if s not in SUITES]
    if unknown:
        print("fastdl bench: error: unknown suite %s (choose from %s)"
              % (", ".join(unknown), ", ".join(SUITES)), file=sys.stderr)
        return 2
    host = {}
    rows = run(suites, args.rounds, args.threads or None, args.repeats, smoke=args.smoke,
               host=host)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"host": host, "rows": rows}, f, indent=1)
    return 0


__all__ = ["main", "run", "describe_host", "SUITES"]
