"""`make containers`: the image built and run, and the compose stack scaled out, with
podman on this machine (no registry: every image is made here).

1. A Debian bookworm base (mmdebstrap, minbase, Python 3.11 in a venv on the PATH, the
   machine's extra CA certificates for pip), imported into podman.
2. The project's Dockerfile built on it (`--build-arg BASE=...`), run against the
   PostgreSQL server of the machine (host network): /health, a /cluster answer, the
   process not root, and the image's HEALTHCHECK reporting healthy.
3. docker-compose.yml run by podman-compose, with stand-ins for the postgres and nginx
   images (deploy/containers/): db, then migrate, then `--scale app=3`, then nginx, one
   step at a time (podman 4.3 cannot wait for a healthy dependency); requests spread
   over the 3 replicas; one replica stopped while requests flow, and every assignment
   answered 200 found stored afterwards.

Everything it starts it stops, and it removes its images. Figures (build and start
times, image size) are printed at the end.
"""

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "nomadsci"
BASE = "localhost/nomads-ci-base:bookworm"
APP = "localhost/nomads-ci-app"
STANDINS = {"POSTGRES_IMAGE": "postgres", "NGINX_IMAGE": "nginx"}  # variable: directory
SINGLE = "nomads-ci-single"
PORT = 18123  # the single container's, on the host network
STACK_URL = "http://127.0.0.1:8080"  # nginx, as docker-compose.yml publishes it
DATABASE = "nomads_ci"
HOST_POSTGRES = "postgresql://postgres@127.0.0.1:5432"
KEYS = {
    "NOMADS_API_KEY": "ci-admin-key-0123456789",
    "NOMADS_READ_API_KEY": "ci-read-key-0123456789",
}
CONTAINERS_CONF = """\
# The runtime that works here (crun fails on setrlimit and cgroups), and no ulimits.
[containers]
default_ulimits = []
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
"""
FIGURES: dict[str, str] = {}


def run(*command: str, check: bool = True, timeout: float = 900) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return done.stdout


def timed(name: str, step: Callable[[], object]) -> None:
    started = time.perf_counter()
    step()
    FIGURES[name] = f"{time.perf_counter() - started:.1f} s"
    print(f"{name}: {FIGURES[name]}", flush=True)


def wait_for(what: str, ready: Callable[[], bool], seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not ready after {seconds:g} s")
        time.sleep(0.25)


def http(url: str, body: dict | None = None, key: str | None = None) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, {}
    except OSError:
        return 0, {}


def answers(url: str) -> bool:
    return http(url)[0] == 200


def make_base(work: Path) -> None:
    rootfs = work / "rootfs.tar"
    run(
        "mmdebstrap",
        "--variant=minbase",
        "--include=python3,python3-venv,ca-certificates,passwd",
        # pip in the image trusts what the machine trusts (its extra CAs included).
        "--customize-hook=cp /usr/local/share/ca-certificates/*.crt"
        ' "$1/usr/local/share/ca-certificates/" 2>/dev/null || true',
        '--customize-hook=chroot "$1" update-ca-certificates',
        '--customize-hook=chroot "$1" python3 -m venv /opt/python',
        '--customize-hook=printf "[global]\\ncert = /etc/ssl/certs/ca-certificates.crt\\n"'
        ' > "$1/etc/pip.conf"',
        "bookworm",
        str(rootfs),
    )
    path = "/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    run(
        "podman",
        "import",
        "--change",
        f"ENV PATH={path}",
        "--change",
        'CMD ["python3"]',
        str(rootfs),
        BASE,
    )
    rootfs.unlink()


def build(tag: str, context: Path) -> None:
    run(
        "podman",
        "build",
        "--format",
        "docker",
        "--network",
        "host",
        "--pull=never",
        "--build-arg",
        f"BASE={BASE}",
        "-t",
        tag,
        str(context),
    )


def fresh_host_database() -> str:
    for statement in (f"DROP DATABASE IF EXISTS {DATABASE}", f"CREATE DATABASE {DATABASE}"):
        run("psql", f"{HOST_POSTGRES}/postgres", "-qc", statement)
    return f"{HOST_POSTGRES}/{DATABASE}"


def check_single_image() -> None:
    database_url = fresh_host_database()
    run(
        "podman",
        "run",
        "-d",
        "--name",
        SINGLE,
        "--network",
        "host",
        "-e",
        f"PORT={PORT}",
        "-e",
        f"DATABASE_URL={database_url}",
        APP,
    )
    base = f"http://127.0.0.1:{PORT}"
    timed(
        "image: first /health answered after start",
        lambda: wait_for("the image", lambda: answers(f"{base}/health")),
    )
    status, answer = http(f"{base}/cluster", {"_id": "ci-1", "interests": {"surf": True}})
    assert status == 200 and 1 <= answer["cluster"] <= 4, (status, answer)
    users = run("podman", "top", SINGLE, "huser", "user").split()[2:]
    assert users and "root" not in users and "0" not in users, users
    assert healthy(SINGLE)
    health = run("podman", "inspect", "--format", "{{.State.Health.Status}}", SINGLE).strip()
    assert health == "healthy", health
    print(f"image: /health and /cluster answered, runs as {sorted(set(users))}, {health}")


def compose(*args: str) -> str:
    podman_compose = Path(sys.executable).parent / "podman-compose"
    return run(str(podman_compose), "-p", PROJECT, "--podman-build-args=--network=host", *args)


def healthy(container: str) -> bool:
    """The container's HEALTHCHECK, run now (no systemd here to run it on a timer)."""
    check = ["podman", "healthcheck", "run", container]
    return subprocess.run(check, capture_output=True).returncode == 0


def replica_requests(name: str) -> int:
    """The /cluster requests in a replica's access log (the app logs to stderr)."""
    logs = subprocess.run(["podman", "logs", name], capture_output=True, text=True)
    return (logs.stdout + logs.stderr).count('"path": "/cluster"')


def bring_up_stack() -> None:
    """One step at a time: podman 4.3 cannot wait for a healthy dependency."""
    compose("up", "-d", "db")
    wait_for("db", lambda: healthy(f"{PROJECT}_db_1"))
    compose("up", "-d", "--no-deps", "migrate")
    assert run("podman", "wait", f"{PROJECT}_migrate_1").strip() == "0"
    compose("up", "-d", "--no-deps", "--scale", "app=3", "app")
    compose("up", "-d", "--no-deps", "nginx")
    wait_for("nginx", lambda: answers(f"{STACK_URL}/health"))


def check_stack() -> None:
    timed("stack: db, migrate, 3 apps and nginx up, /health through nginx", bring_up_stack)
    replicas = [f"{PROJECT}_app_{n}" for n in (1, 2, 3)]
    # nginx looks `app` up at most every 10 s: a replica that reached the network's DNS
    # after its last lookup gets requests from the next one. Requests in rounds of 20
    # until each replica has answered some, for up to 30 s (one CI run saw 44, 16 and 0
    # after 60 requests sent at once).
    sent, deadline = 0, time.monotonic() + 30
    while True:
        for _ in range(20):
            body = {"_id": f"spread-{sent}", "interests": {"coffee": True}}
            assert http(f"{STACK_URL}/cluster", body)[0] == 200
            sent += 1
        spread = {name: replica_requests(name) for name in replicas}
        if all(spread.values()) or time.monotonic() > deadline:
            break
        time.sleep(1)
    print(f"stack: {sent} requests through nginx, by replica: {spread}")
    assert all(spread.values()), spread

    acknowledged, stop = [], threading.Event()
    refused: list[int] = []

    def sign_up() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            status, _ = http(
                f"{STACK_URL}/cluster", {"_id": f"ack-{n}", "interests": {"surf": True}}
            )
            (acknowledged.append(f"ack-{n}") if status == 200 else refused.append(status))

    load = threading.Thread(target=sign_up)
    load.start()
    wait_for("load", lambda: len(acknowledged) >= 100)
    before = len(acknowledged)
    run("podman", "stop", "-t", "10", replicas[1])
    wait_for("load after the stop", lambda: len(acknowledged) >= before + 200)
    stop.set()
    load.join()
    reader = KEYS["NOMADS_READ_API_KEY"]
    missing = [u for u in acknowledged if http(f"{STACK_URL}/users/{u}", key=reader)[0] != 200]
    print(
        f"stack: {len(acknowledged)} acknowledged while {replicas[1]} stopped "
        f"({before} before), {len(refused)} refused {sorted(set(refused))}, "
        f"{len(missing)} missing"
    )
    assert not missing, missing[:10]


def clean() -> None:
    with suppress(Exception):
        compose("down", "-v")
    for name in (
        SINGLE,
        *(f"{PROJECT}_{s}_{n}" for s in ("db", "migrate", "app", "nginx") for n in (1, 2, 3)),
    ):
        run("podman", "rm", "-f", "--ignore", name, check=False)
    images = [
        APP,
        BASE,
        f"{PROJECT}_app",
        f"{PROJECT}_migrate",
        *(f"localhost/nomads-ci-{d}" for d in STANDINS.values()),
    ]
    run("podman", "rmi", "-f", "--ignore", *images, check=False)
    with suppress(Exception):
        run("psql", f"{HOST_POSTGRES}/postgres", "-qc", f"DROP DATABASE IF EXISTS {DATABASE}")


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="nomads-containers-"))
    (work / "containers.conf").write_text(CONTAINERS_CONF)
    os.environ["CONTAINERS_CONF"] = str(work / "containers.conf")
    os.environ["BUILDAH_FORMAT"] = "docker"  # podman keeps HEALTHCHECK only in this format
    standins = {variable: f"localhost/nomads-ci-{d}" for variable, d in STANDINS.items()}
    os.environ.update(KEYS, BASE_IMAGE=BASE, **standins)
    clean()
    try:
        timed("base image (mmdebstrap + import)", lambda: make_base(work))
        timed("service image build", lambda: build(APP, ROOT))
        size = int(run("podman", "image", "inspect", "--format", "{{.Size}}", APP))
        base_size = int(run("podman", "image", "inspect", "--format", "{{.Size}}", BASE))
        FIGURES["service image size"] = f"{size / 1e6:.0f} MB (base {base_size / 1e6:.0f} MB)"
        check_single_image()
        run("podman", "rm", "-f", SINGLE)
        timed(
            "stand-in images build (postgres, nginx)",
            lambda: [
                build(f"localhost/nomads-ci-{d}", ROOT / "deploy" / "containers" / d)
                for d in STANDINS.values()
            ],
        )
        check_stack()
    finally:
        clean()
    print("\n" + "\n".join(f"{name}: {value}" for name, value in FIGURES.items()))


if __name__ == "__main__":
    main()
