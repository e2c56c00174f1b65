"""`latentqa up` / `latentqa down` (`make serve` / `make stop`): operate the project on a local Prefect server.

`up` starts `prefect server start` on 127.0.0.1 (analytics off, its own PREFECT_HOME, so the database, results
and logs stay in one folder), waits for it, creates the `latentqa` process work pool, deploys every deployment
of prefect.yaml and starts a worker. The PIDs go to <home>/services.json; `down` stops them (and their process
groups). Running `up` twice is harmless: it finds the running services and says so.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from storage.store import append_log, remove_file, write_json_atomic, write_text_atomic

CHECKOUT = Path(__file__).resolve().parents[1]
DEFAULT_HOME = CHECKOUT / ".prefect-local"
POOL = "latentqa"
STATE = "services.json"


@dataclass
class Services:
    home: str
    port: int
    api_url: str
    ui_url: str
    server_pid: int
    worker_pid: int | None


def prefect_env(home: Path, port: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment every process of the local deployment runs with (server, deploy, worker, flow runs)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}  # no stray profile settings
    env.update({
        "PREFECT_HOME": str(home), "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
        "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true", "LATENTQA_CHECKOUT": str(CHECKOUT),
        **(extra or {}),
    })
    return env


def _prefect(*args: str) -> list[str]:
    return [sys.executable, "-m", "prefect", *args]


def _spawn(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with append_log(log) as fh:  # the child keeps its own descriptor
        return subprocess.Popen(cmd, env=env, cwd=CHECKOUT, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def running(home: Path = DEFAULT_HOME) -> Services | None:
    path = Path(home) / STATE
    if not path.is_file():
        return None
    services = Services(**json.loads(path.read_text()))
    return services if _alive(services.server_pid) else None


def wait_healthy(api_url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited with {proc.returncode}; its log ({log}) ends:\n"
                               + log.read_text()[-2000:])
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1.0)
    raise TimeoutError(f"prefect server at {api_url} not healthy after {timeout_s:.0f} s; see {log}")


def up(home: Path = DEFAULT_HOME, port: int = 4200, worker: bool = True, deploy: bool = True,
       extra_env: dict[str, str] | None = None, say=print) -> Services:
    home = Path(home).resolve()
    if services := running(home):
        say(f"already running: Prefect UI {services.ui_url} (stop with `make stop`)")
        return services
    home.mkdir(parents=True, exist_ok=True)
    env = prefect_env(home, port, extra_env)
    api_url = env["PREFECT_API_URL"]
    say(f"starting prefect server on 127.0.0.1:{port} (PREFECT_HOME={home})")
    server = _spawn(_prefect("server", "start", "--host", "127.0.0.1", "--port", str(port)), env, home / "server.log")
    services = Services(str(home), port, api_url, f"http://127.0.0.1:{port}", server.pid, None)
    _save(home, services)  # saved at once, so `down` can stop a half-started set
    wait_healthy(api_url, server, home / "server.log")
    subprocess.run(_prefect("work-pool", "create", POOL, "--type", "process", "--overwrite"), env=env, cwd=CHECKOUT,
                   check=True, stdout=subprocess.DEVNULL)
    if deploy:
        say("deploying prefect.yaml")
        out = subprocess.run(_prefect("--no-prompt", "deploy", "--all"), env=env, cwd=CHECKOUT,
                             capture_output=True, text=True)
        write_text_atomic(home / "deploy.log", out.stdout + out.stderr)
        if out.returncode != 0:
            raise RuntimeError(f"prefect deploy failed ({home / 'deploy.log'}):\n{(out.stdout + out.stderr)[-3000:]}")
    if worker:
        services.worker_pid = _spawn(_prefect("worker", "start", "--pool", POOL, "--type", "process"), env,
                                     home / "worker.log").pid
        _save(home, services)
    say(f"Prefect UI: {services.ui_url}   API: {api_url}   logs: {home}/*.log   stop: make stop")
    return services


def _save(home: Path, services: Services) -> None:
    write_json_atomic(home / STATE, asdict(services))


def down(home: Path = DEFAULT_HOME, say=print) -> bool:
    """Stop the worker, then the server (each with its process group); False when nothing was running."""
    path = Path(home).resolve() / STATE
    if not path.is_file():
        say(f"nothing to stop ({path} not found)")
        return False
    services = Services(**json.loads(path.read_text()))
    for name, pid in (("worker", services.worker_pid), ("server", services.server_pid)):
        if _alive(pid):
            _stop_group(pid)
            say(f"stopped {name} (pid {pid})")
    remove_file(path)
    return True


def _stop_group(pid: int, grace_s: float = 15.0) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        try:  # reap it if it is our child (tests), so it does not linger as a zombie
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
