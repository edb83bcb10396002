"""`make bench`: the service against the original and a bare Flask endpoint, in one run.

Each server is a real gunicorn with 2 workers on loopback; wrk sends random /cluster
bodies. Reported per server: time from launch to the first answer, throughput and
latency under load, and the memory of the whole server (master + workers).
nomads-cluster runs twice: on SQLite (a fresh file) and, when the local server answers,
on PostgreSQL (a fresh database each: nomads_bench, nomads_bench_cities); each of its
answers is committed first.
"""

import argparse
import json
import os
import random
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from nomads_cluster.segmentation.interests import INTEREST_KEYS  # noqa: E402
from nomads_cluster.testing import free_port  # noqa: E402

PROCFILE = (REPO / "Procfile").read_text()
OURS = re.search(r"^web:\s*(.+)$", PROCFILE, re.M).group(1)  # 2 workers: gunicorn.conf.py's
OURS_RELEASE = re.search(r"^release:\s*(.+)$", PROCFILE, re.M).group(1)  # migrates
POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
POSTGRES_BENCH_DB = "nomads_bench"
BARE = "bare Flask endpoint"


def fresh_postgres_url(name: str = POSTGRES_BENCH_DB) -> str | None:
    """A new, empty database ``name`` on the local PostgreSQL server, or None without one."""
    import psycopg

    try:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=2) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name}")
            conn.execute(f"CREATE DATABASE {name}")
    except psycopg.OperationalError:
        return None
    return POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


class Server(NamedTuple):
    command: str
    cwd: Path
    env: dict[str, str]
    path: str = "/cluster"  # what wrk posts to
    cities: bool = False  # bodies with a city: a room to place each user in
    release: str | None = None  # run before the server, as Heroku's release phase
    shadow: bool = False  # a candidate shadowed beside the served model


def ours(cwd: Path, env: dict[str, str], **options) -> Server:
    """nomads-cluster as Heroku runs it: its release command, then its web command."""
    return Server(OURS, cwd, env, release=OURS_RELEASE, **options)


def bench_servers(work_dir: Path, against: str | None = None) -> dict[str, Server]:
    """The servers to compare, by name."""
    sqlite = {"NOMADS_DATABASE_URL": f"sqlite:///{work_dir / 'bench.sqlite3'}"}
    servers = {
        BARE: Server("gunicorn bare_app:app --workers 2", REPO / "bench", {}),
        "original service": Server("gunicorn original_app:app --workers 2", REPO / "bench", {}),
        "nomads-cluster /cluster/preview": ours(
            REPO,
            {"NOMADS_DATABASE_URL": f"sqlite:///{work_dir / 'preview.sqlite3'}"},
            path="/cluster/preview",
        ),
        "nomads-cluster, SQLite": ours(REPO, sqlite),
        "nomads-cluster, SQLite, shadowing a candidate": ours(
            REPO,
            {"NOMADS_DATABASE_URL": f"sqlite:///{work_dir / 'shadow.sqlite3'}"},
            shadow=True,
        ),
        "nomads-cluster, SQLite, with a city": ours(
            REPO,
            {"NOMADS_DATABASE_URL": f"sqlite:///{work_dir / 'cities.sqlite3'}"},
            cities=True,
        ),
    }
    if against:
        # The same service at another commit, from a worktree: a change's cost, one run.
        checkout = work_dir / "against"
        subprocess.run(
            ["git", "worktree", "add", "--detach", "--quiet", str(checkout), against],
            cwd=REPO,
            check=True,
        )
        compared = (
            ("/cluster/preview", "/cluster/preview", False),
            ("SQLite", "/cluster", False),
            ("SQLite, with a city", "/cluster", True),
        )
        for name, path, cities in compared:
            database = work_dir / f"against-{name.replace(', ', '-').replace('/', '')}.sqlite3"
            servers[f"nomads-cluster at {against}, {name}"] = ours(
                checkout,
                {"NOMADS_DATABASE_URL": f"sqlite:///{database}", "PYTHONPATH": str(checkout)},
                path=path,
                cities=cities,
            )
        for name, suffix, cities in (
            ("PostgreSQL", "", False),
            ("PostgreSQL, with a city", "_cities", True),
        ):
            if against_postgres := fresh_postgres_url(f"{POSTGRES_BENCH_DB}_against{suffix}"):
                servers[f"nomads-cluster at {against}, {name}"] = ours(
                    checkout,
                    {"DATABASE_URL": against_postgres, "PYTHONPATH": str(checkout)},
                    cities=cities,
                )
    # Each server its own database, as each SQLite one has its own file: on a database
    # that holds rooms, every PostgreSQL write also runs its lock-ordering step (present,
    # store/writes.py), and the other server's dead rows are vacuumed meanwhile.
    postgres_url = fresh_postgres_url()
    if postgres_url:
        servers["nomads-cluster, PostgreSQL"] = ours(REPO, {"DATABASE_URL": postgres_url})
        servers["nomads-cluster, PostgreSQL, with a city"] = ours(
            REPO, {"DATABASE_URL": fresh_postgres_url(f"{POSTGRES_BENCH_DB}_cities")}, cities=True
        )
    return servers


WRK_SCRIPT = """
bodies = {%s}
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("POST", "%s", {["Content-Type"] = "application/json"},
                    bodies[(counter %% #bodies) + 1])
end
done = function(summary, latency, requests)
  io.write(string.format("JSON {\\"requests\\": %%d, \\"seconds\\": %%f, \\"errors\\": %%d, " ..
    "\\"status_errors\\": %%d, \\"p50_ms\\": %%f, \\"p99_ms\\": %%f}\\n",
    summary.requests, summary.duration / 1e6,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, latency:percentile(50) / 1e3, latency:percentile(99) / 1e3))
end
"""


CITIES = ["Madrid", "Barcelona", "Lisboa", "Paris", "Berlin", "Roma", "Porto", "Sevilla"]


def random_bodies(n: int, seed: int = 1, cities: bool = False) -> list[str]:
    """/cluster bodies of random users; ``cities``: each with one of CITIES."""
    rng = random.Random(seed)
    bodies = []
    for i in range(n):
        p = rng.random()
        body = {
            "_id": f"{i:024x}",
            "interests": {k: True for k in INTEREST_KEYS if rng.random() < p},
        }
        if cities:
            body["city"] = rng.choice(CITIES)
        bodies.append(json.dumps(body))
    return bodies


def post_cluster(port: int, body: str) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/cluster", body.encode(), method="POST")
    try:
        with urllib.request.urlopen(req, timeout=1) as response:
            return response.status
    except OSError:
        return 0


def server_env(extra_env: dict[str, str], port: int = 0) -> dict[str, str]:
    return {
        **os.environ,
        "PORT": str(port),  # the release command ignores it
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PYTHONPATH": str(REPO),
        **extra_env,
    }


def release(server: Server) -> None:
    if server.release:
        subprocess.run(
            shlex.split(server.release),
            cwd=server.cwd,
            env=server_env(server.env),
            check=True,
            capture_output=True,
        )
    if server.shadow:
        env = server_env(server.env)
        _, candidate = file_candidate(env.get("NOMADS_DATABASE_URL") or env["DATABASE_URL"])
        subprocess.run(
            [sys.executable, "-m", "nomads_cluster", "shadow", candidate],
            cwd=server.cwd,
            env=server_env(server.env),
            check=True,
            capture_output=True,
        )


def file_candidate(database_url: str) -> tuple[str, str]:
    """(the served version, a candidate filed beside it): the served model's profiles
    numbered round by one, which scores as fast and answers otherwise."""
    import numpy as np

    from nomads_cluster.segmentation.model import model_from_profiles
    from nomads_cluster.store.engine import create_store_engine
    from nomads_cluster.store.registry import ModelRegistry
    from nomads_cluster.store.users import UserStore

    store = UserStore(create_store_engine(database_url, timeout=5))
    try:
        registry = ModelRegistry(store)
        served = registry.load(registry.served())
        card = served.card.model_copy(update={"version": "be7c4be7c4be"})
        profiles = np.roll(served.profiles, 1, axis=0)
        registry.file(model_from_profiles(card, profiles, None, "bench"), "bench")
    finally:
        store.engine.dispose()
    return served.version, "be7c4be7c4be"


def launch(command: str, cwd: Path, port: int, extra_env: dict[str, str]) -> subprocess.Popen:
    env = server_env(extra_env, port)
    return subprocess.Popen(
        shlex.split(command),
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def wait_for_first_answer(server: subprocess.Popen, port: int, body: str) -> None:
    """Until /cluster answers 200; a server that exits meanwhile stops the run."""
    while post_cluster(port, body) != 200:
        if server.poll() is not None:
            raise RuntimeError(f"{shlex.join(server.args)} exited with {server.returncode}")
        time.sleep(0.005)


def time_to_first_answer(command: str, cwd: Path, env: dict[str, str], body: str) -> float:
    port = free_port()
    started = time.perf_counter()
    server = launch(command, cwd, port, env)
    try:
        wait_for_first_answer(server, port, body)
        return time.perf_counter() - started
    finally:
        stop(server)


def stop(server: subprocess.Popen) -> None:
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=30)


def server_memory_mb(pid: int) -> dict[str, float]:
    """RSS (shared pages counted in every process) and PSS (shared pages split) in MB."""
    children = subprocess.run(
        ["pgrep", "-P", str(pid)], capture_output=True, text=True
    ).stdout.split()
    totals = {"rss_mb": 0.0, "pss_mb": 0.0}
    for p in [str(pid), *children]:
        for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
            field, *value = line.split()
            if field in ("Rss:", "Pss:"):
                totals[f"{field[:-1].lower()}_mb"] += int(value[0]) / 1024
    return {k: round(v, 1) for k, v in totals.items()}


def wrk(port: int, script: Path, seconds: int, connections: int) -> dict:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script)]
    out = subprocess.run([*command, f"http://127.0.0.1:{port}"], capture_output=True, text=True)
    out.check_returncode()
    result = json.loads(out.stdout.split("JSON ", 1)[1])
    result["requests_per_s"] = result["requests"] / result["seconds"]
    return result


def load_test(
    servers_to_run: dict[str, Server], scripts: dict[str, Path], args: argparse.Namespace
) -> dict[int, dict[str, dict]]:
    """All servers up at once, loaded in turn, round after round, at each number of
    connections: noise from the machine falls on all of them alike. Each figure is the
    median over the rounds; throughput's lowest and highest round are kept too."""
    ports = {name: free_port() for name in servers_to_run}
    for server in servers_to_run.values():
        release(server)
    servers = {
        name: launch(s.command, s.cwd, ports[name], s.env) for name, s in servers_to_run.items()
    }
    try:
        for name, port in ports.items():
            wait_for_first_answer(servers[name], port, '{"_id": "warm", "interests": {}}')
            wrk(port, scripts[name], 2, max(args.connections))  # warm-up
        rounds = {c: {name: [] for name in servers_to_run} for c in args.connections}
        for _ in range(args.rounds):
            for connections in args.connections:
                for name, port in ports.items():
                    run = wrk(port, scripts[name], args.seconds, connections)
                    rounds[connections][name].append(run)
        results: dict[int, dict[str, dict]] = {}
        for connections, by_server in rounds.items():
            results[connections] = {}
            for name, runs in by_server.items():
                result = {
                    key: statistics.median(run[key] for run in runs)
                    for key in ("requests_per_s", "p50_ms", "p99_ms")
                }
                result["requests_per_s_range"] = [
                    min(r["requests_per_s"] for r in runs),
                    max(r["requests_per_s"] for r in runs),
                ]
                result["errors"] = sum(r["errors"] + r["status_errors"] for r in runs)
                results[connections][name] = result
        for name in servers_to_run:  # memory after all the load
            memory = server_memory_mb(servers[name].pid)
            for connections in args.connections:
                results[connections][name].update(memory)
        return results
    finally:
        for server in servers.values():
            stop(server)


def write_script(path: str, bodies: list[str]) -> Path:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(WRK_SCRIPT % (",\n".join(json.dumps(b) for b in bodies), path))
    return Path(f.name)


def print_report(results: dict[int, dict[str, dict]], first_answer: dict[str, float]) -> None:
    for connections, by_server in results.items():
        bare = by_server[BARE]
        print(f"\n{connections} connections:\n")
        print(
            "| server | req/s (rounds' range) | x bare | p50 ms | p99 ms | p99 x bare "
            "| first answer s | RSS MB | PSS MB | errors |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        for name, r in by_server.items():
            low, high = r["requests_per_s_range"]
            print(
                f"| {name} | {r['requests_per_s']:.0f} ({low:.0f}-{high:.0f}) | "
                f"{r['requests_per_s'] / bare['requests_per_s']:.2f} | {r['p50_ms']:.2f} | "
                f"{r['p99_ms']:.2f} | {r['p99_ms'] / bare['p99_ms']:.1f} | "
                f"{first_answer[name]:.2f} | {r['rss_mb']:.0f} | {r['pss_mb']:.0f} | "
                f"{r['errors']} |"
            )
    for connections, by_server in results.items():
        shadow = by_server.get("nomads-cluster, SQLite, shadowing a candidate")
        if shadow and "nomads-cluster, SQLite" in by_server:
            plain = by_server["nomads-cluster, SQLite"]["requests_per_s"]
            print(
                f"\nthe shadow's cost at {connections} connections: "
                f"{1 - shadow['requests_per_s'] / plain:.1%} of /cluster's throughput on SQLite"
            )
        for name, result in by_server.items():
            if " at " in name:  # the same path at another commit: this commit's cost
                base = "nomads-cluster, " + name.split(", ", 1)[1]
                if base not in by_server and name.endswith("/cluster/preview"):
                    base = "nomads-cluster /cluster/preview"
                if base in by_server:
                    change = by_server[base]["requests_per_s"] / result["requests_per_s"] - 1
                    print(f"{base} at {connections} connections: {change:+.1%} against {name}")
    for name, (start, pss, rss) in against_original(results, first_answer).items():
        print(
            f"\n{name}: first answer {start:.2f} of the original's, memory (PSS) {pss:.2f}, "
            f"(RSS) {rss:.2f}"
        )


def against_original(
    results: dict[int, dict[str, dict]], first_answer: dict[str, float]
) -> dict[str, tuple[float, float, float]]:
    """Each of the service's servers as a share of the original service's first answer,
    PSS and RSS (none when the original was not served)."""
    if "original service" not in first_answer:
        return {}
    first_run = next(iter(results.values()))
    original = first_run["original service"]
    return {
        name: (
            first_answer[name] / first_answer["original service"],
            r["pss_mb"] / original["pss_mb"],
            r["rss_mb"] / original["rss_mb"],
        )
        for name, r in first_run.items()
        if name.startswith("nomads-cluster")
    }


# Where a full run writes its summary: the README and the performance page.
PUBLISHED = [REPO / "README.md", REPO / "docs" / "performance.md"]
TABLE_START = "<!-- bench table: written by bench/run.py -->\n"
TABLE_END = "<!-- end of the bench table -->\n"
SUMMARY_ROWS = {
    "original service": "original service",
    "nomads-cluster /cluster/preview": "`/cluster/preview` (nothing stored)",
    "nomads-cluster, SQLite": "`/cluster`, SQLite",
    "nomads-cluster, PostgreSQL": "`/cluster`, PostgreSQL",
    "nomads-cluster, SQLite, with a city": "`/cluster` with a city, SQLite",
    "nomads-cluster, PostgreSQL, with a city": "`/cluster` with a city, PostgreSQL",
    "nomads-cluster, SQLite, shadowing a candidate": "`/cluster`, SQLite, shadowing a candidate",
}


def summary_table(
    results: dict[int, dict[str, dict]], first_answer: dict[str, float], args: argparse.Namespace
) -> str:
    """Each server's share of the bare endpoint's throughput (its p99 as a multiple of
    the bare endpoint's), at each number of connections, with the run's own spread."""
    counts = list(results)
    rows = [
        "| | " + " | ".join(f"{n} connections" for n in counts) + " |",
        "|---" * (len(counts) + 1) + "|",
    ]
    for name, label in SUMMARY_ROWS.items():
        if all(name in results[n] for n in counts):
            cells = []
            for n in counts:
                bare, server = results[n][BARE], results[n][name]
                share = server["requests_per_s"] / bare["requests_per_s"]
                cells.append(f"{share:.2f} ({server['p99_ms'] / bare['p99_ms']:.1f}x)")
            rows.append(f"| {label} | " + " | ".join(cells) + " |")
    bare_rounds = [results[n][BARE]["requests_per_s_range"] for n in counts]
    low, high = min(r[0] for r in bare_rounds), max(r[1] for r in bare_rounds)
    notes = [
        "",
        f"Medians of {args.rounds} rounds of {args.seconds} s (`bench/run.py --rounds "
        f"{args.rounds}`); the bare endpoint's rounds ranged from {low:.0f} to {high:.0f} "
        "requests a second.",
    ]
    shares = [
        share
        for name, share in against_original(results, first_answer).items()
        if name in SUMMARY_ROWS
    ]
    if shares:
        starts, pss = [start for start, _, _ in shares], [pss for _, pss, _ in shares]
        notes.append(
            f"First answer after launch: {min(starts):.2f} to {max(starts):.2f} of the original "
            f"service's time; memory (PSS) {min(pss):.2f} to {max(pss):.2f} of its."
        )
    return "\n".join(rows + notes) + "\n"


def publish(table: str) -> None:
    """Write ``table`` between the markers of each published page."""
    for page in PUBLISHED:
        text = page.read_text()
        before, found, rest = text.partition(TABLE_START)
        if not found:
            continue
        _, _, after = rest.partition(TABLE_END)
        page.write_text(before + TABLE_START + table + TABLE_END + after)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10, help="wrk duration per round")
    parser.add_argument("--rounds", type=int, default=5, help="load rounds per server")
    parser.add_argument(
        "--connections",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[16, 64],
        help="comma-separated numbers of wrk connections, each measured every round",
    )
    parser.add_argument("--launches", type=int, default=5, help="start-up timings per server")
    parser.add_argument(
        "--against",
        metavar="GIT_REF",
        help="also serve nomads-cluster at this commit (/cluster/preview, and /cluster on "
        "SQLite), to measure a change",
    )
    parser.add_argument(
        "--only",
        metavar="TEXT",
        action="append",
        help="serve only the servers whose name holds TEXT (repeatable), beside the bare "
        "endpoint: a narrower comparison in less time",
    )
    args = parser.parse_args()

    bodies = random_bodies(1000)
    with_cities = random_bodies(1000, cities=True)
    with tempfile.TemporaryDirectory() as work_dir:
        servers = bench_servers(Path(work_dir), args.against)
        if args.only:
            servers = {
                name: server
                for name, server in servers.items()
                if name == BARE or any(text in name for text in args.only)
            }
        scripts = {
            name: write_script(server.path, with_cities if server.cities else bodies)
            for name, server in servers.items()
        }
        try:
            results = load_test(servers, scripts, args)
            launches: dict[str, list[float]] = {name: [] for name in servers}
            for _ in range(args.launches):
                for name, server in servers.items():
                    launches[name].append(
                        time_to_first_answer(server.command, server.cwd, server.env, bodies[0])
                    )
        finally:
            for script in scripts.values():
                script.unlink()
            if args.against:
                subprocess.run(
                    ["git", "worktree", "remove", "--force", str(Path(work_dir) / "against")],
                    cwd=REPO,
                    check=True,
                )
    first_answer = {name: statistics.median(times) for name, times in launches.items()}
    print(
        f"wrk -t1, {args.rounds} rounds of {args.seconds} s per server and number of "
        "connections (medians), 1000 random bodies, 2 gunicorn workers each"
    )
    print_report(results, first_answer)
    if not args.only and not args.against:
        publish(summary_table(results, first_answer, args))
    out_dir = REPO / "bench" / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "latest.json").write_text(
        json.dumps({"load": results, "first_answer_s": first_answer}, indent=2)
    )


if __name__ == "__main__":
    main()
