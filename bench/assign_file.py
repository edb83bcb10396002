"""`make bench`, part 2: `nomads-cluster assign` on 1,000,000 rows against pandas.read_csv.

The input is a CSV of an id column and the 26 interest columns (0/1), seeded. Timed, in
turns, each in a fresh process: `pandas.read_csv(file)` alone (the call, after pandas
is imported), and the whole `nomads-cluster assign file -o out.csv` command (start-up,
reading, scoring, writing). Reported: medians, their ratio, and each one's peak memory.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from nomads_cluster.segmentation.interests import INTEREST_KEYS  # noqa: E402

BIN = Path(sys.executable).parent
READ_CSV = """
import resource, sys, time
import pandas
started = time.perf_counter()
pandas.read_csv(sys.argv[1])
seconds = time.perf_counter() - started
print(seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


# With cities: 50 of them, of Zipf-like sizes, as the app's users come.
CITIES = [f"City {i}" for i in range(50)]
CITY_WEIGHTS = 1 / np.arange(1, len(CITIES) + 1)


def write_input(path: Path, rows: int, seed: int = 7, cities: bool = False) -> None:
    rng = np.random.default_rng(seed)
    with path.open("w") as file:
        file.write(",".join(["_id", *INTEREST_KEYS, *(["city"] if cities else [])]) + "\n")
        for start in range(0, rows, 100_000):
            size = min(100_000, rows - start)
            block = (rng.random((size, 26)) < 0.3).astype(np.int8)
            digits = np.where(block == 1, "1", "0")
            ends = ["\n"] * size
            if cities:
                chosen = rng.choice(len(CITIES), size, p=CITY_WEIGHTS / CITY_WEIGHTS.sum())
                ends = [f",{CITIES[c]}\n" for c in chosen]
            file.writelines(
                f"user-{start + i:08d}," + ",".join(row) + end
                for i, (row, end) in enumerate(zip(digits, ends, strict=True))
            )


def time_read_csv(path: Path) -> tuple[float, float]:
    out = subprocess.run(
        [sys.executable, "-c", READ_CSV, str(path)], capture_output=True, text=True, check=True
    )
    seconds, peak_mb = map(float, out.stdout.split())
    return seconds, peak_mb


def time_assign(path: Path, output: Path) -> tuple[float, float]:
    command = [
        "/usr/bin/time",
        "-f",
        "%M",
        str(BIN / "nomads-cluster"),
        "assign",
        str(path),
        "-o",
        str(output),
    ]
    started = time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - started
    return seconds, int(out.stderr.strip().splitlines()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path, output = Path(tmp) / "users.csv", Path(tmp) / "out.csv"
        write_input(path, args.rows)
        size_mb = path.stat().st_size / 1e6
        runs: dict[str, list[tuple[float, float]]] = {"read_csv": [], "assign": []}
        time_read_csv(path)  # warm the page cache for both
        for _ in range(args.rounds):
            runs["read_csv"].append(time_read_csv(path))
            runs["assign"].append(time_assign(path, output))
        assigned = sum(1 for _ in output.open()) - 1
    if assigned != args.rows:
        raise SystemExit(f"assign wrote {assigned} rows, not {args.rows}")
    results = {
        name: {
            "seconds": statistics.median(s for s, _ in values),
            "all_seconds": [round(s, 3) for s, _ in values],
            "peak_rss_mb": max(m for _, m in values),
        }
        for name, values in runs.items()
    }
    print(f"{args.rows:,} rows ({size_mb:.0f} MB), {args.rounds} rounds, medians\n")
    print("| | seconds | all rounds | peak RSS MB |")
    print("|---|---|---|---|")
    for label, name in (
        ("pandas.read_csv (the call)", "read_csv"),
        ("nomads-cluster assign (whole command)", "assign"),
    ):
        r = results[name]
        print(f"| {label} | {r['seconds']:.2f} | {r['all_seconds']} | {r['peak_rss_mb']:.0f} |")
    ratio = results["assign"]["seconds"] / results["read_csv"]["seconds"]
    print(f"\n- assign vs read_csv: {ratio:.2f}x (target <= 4)")
    out_dir = REPO / "bench" / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "assign.json").write_text(json.dumps(results | {"ratio": ratio}, indent=2))


if __name__ == "__main__":
    main()
