"""`make bench`, part 5: `nomads-cluster churn` over 1,000,000 stored users.

The users of part 4 (bench/similar_users.py), loaded into each database, each in the
segment the committed model gives them; the candidate is a warm-started retrain on a
bootstrap resample of the survey. The whole command is timed (start-up included),
--rounds times alternating the databases.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from run import REPO, fresh_postgres_url
from similar_users import load, make_users

from nomads_cluster import create_app
from nomads_cluster.cli.model import DEFAULT_SURVEY
from nomads_cluster.segmentation.model import DEFAULT_MODEL_DIR, load_model
from nomads_cluster.segmentation.survey import Survey, read_survey
from nomads_cluster.segmentation.training import train

BIN = Path(sys.executable).parent


def candidate_model(directory: Path) -> Path:
    survey = read_survey(DEFAULT_SURVEY)
    rows = np.random.default_rng(1).integers(0, survey.n_rows, survey.n_rows)
    resample = Survey(features=survey.features[rows], sha256="bootstrap", source="bootstrap")
    train(resample, directory, previous=load_model(DEFAULT_MODEL_DIR), anchor=0.02)
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp())
    candidate = candidate_model(work / "candidate")
    masks, cities = make_users(args.users)
    urls = {"SQLite": f"sqlite:///{work / 'churn.sqlite3'}"}
    if (postgres := fresh_postgres_url()) is not None:
        urls["PostgreSQL"] = postgres
    for url in urls.values():
        app = create_app({"MODEL_DIR": str(DEFAULT_MODEL_DIR), "DATABASE_URL": url})
        load(app, masks, cities)
        app.extensions["model_registry"].file(load_model(candidate), "bench")
        app.extensions["model_follower"].stop()
        app.extensions["user_store"].engine.dispose()
    seconds: dict[str, list[float]] = {name: [] for name in urls}
    last = ""
    for _ in range(args.rounds):
        for name, url in urls.items():
            env = {**os.environ, "NOMADS_DATABASE_URL": url, "NOMADS_LOG_LEVEL": "WARNING"}
            started = time.perf_counter()
            command = [str(BIN / "nomads-cluster"), "churn", load_model(candidate).version]
            done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True)
            assert done.returncode == 0, done.stderr
            seconds[name].append(time.perf_counter() - started)
            last = done.stdout.splitlines()[0]
    print(f"{args.users:,} stored users; {last}")
    for name, times in seconds.items():
        print(
            f"  {name:10} median {statistics.median(times):.1f} s "
            f"({min(times):.1f}-{max(times):.1f} s over {len(times)} runs)"
        )


if __name__ == "__main__":
    main()
