"""Child processes: a client or emulator whose stdout lines are queued and which is reaped
with ``wait4`` (whole-process CPU and peak RSS), a fresh zero-compute emulator per run, and
the command line of each client."""

import json
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
import urllib.request

from . import settings
from .settings import BENCH, BENCH_PY, CLIENT_PY, EMU, LIB, OFFICIAL_PY, REPO, log, mono


class Child:
    """A child process whose stdout lines are queued and which is reaped with wait4."""

    def __init__(self, name, cmd, env=None, stdin=False):
        self.name = name
        self.err_path = os.path.join(settings.LOG_DIR, f"{name}.stderr")
        self.errf = open(self.err_path, "ab")
        self.p = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=self.errf,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            env=env, cwd=REPO, start_new_session=True)
        self.lines = queue.Queue()
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()
        self.rusage = None
        self.status = None

    def _read(self):
        for raw in self.p.stdout:
            self.lines.put(raw.decode(errors="replace").rstrip("\n"))
        self.lines.put(None)

    def line(self, timeout):
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            return None

    def send(self, text):
        self.p.stdin.write((text + "\n").encode())
        self.p.stdin.flush()

    def wait(self, timeout):
        """Waits for exit (killing the process group after `timeout` s); returns the last
        JSON line of stdout or None."""
        deadline = mono() + timeout
        out = []
        while True:
            left = deadline - mono()
            if left <= 0:
                log(f"{self.name}: timeout after {timeout:.0f} s, killing")
                self.kill()
                break
            l = self.line(min(left, 1.0))
            if l is None and not self.t.is_alive() and self.lines.empty():
                break
            if l is not None:
                out.append(l)
        self.reap()
        for l in reversed(out):
            if l.startswith("{"):
                try:
                    return json.loads(l)
                except ValueError:
                    pass
        log(f"{self.name}: no result (exit status {self.status}); see {self.err_path}")
        return None

    def reap(self):
        if self.rusage is None:
            _, status, ru = os.wait4(self.p.pid, 0)
            self.rusage = ru
            self.status = os.waitstatus_to_exitcode(status)
            self.p.returncode = self.status
            self.errf.close()
        return self.rusage

    def kill(self, sig=signal.SIGKILL):
        try:
            os.killpg(self.p.pid, sig)
        except ProcessLookupError:
            pass


class Emulator:
    """A fresh emulator on a free port (its own state dir, nothing persisted): zero-compute
    (canned results) unless `zero_compute` is False (the emulator's tiny model); `args`: more
    command-line flags (e.g. `--client-config`)."""

    def __init__(self, name, zero_compute=True, args=()):
        self.dir = tempfile.mkdtemp(prefix="tinkex-bench-emu-")
        self.child = Child(f"{name}.emulator", [
            EMU, "--port", "0", "--state-dir", self.dir, "--no-persist"]
            + (["--zero-compute"] if zero_compute else []) + list(args))
        self.url = self.child.line(30)
        if not self.url or not self.url.startswith("http"):
            raise RuntimeError(f"emulator did not start: {self.url!r}; see {self.child.err_path}")

    def control(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + "/_emulator/" + path, data=data, method=method,
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read() or b"null")

    def requests(self, path):
        return self.control("GET", "requests")["requests"].get(path, 0)

    def stop(self):
        self.child.kill(signal.SIGTERM)
        t = threading.Timer(5, lambda: self.child.kill(signal.SIGKILL))
        t.start()
        ru = self.child.reap()
        t.cancel()
        shutil.rmtree(self.dir, ignore_errors=True)
        return ru.ru_utime + ru.ru_stime


def client_cmd(client, workload, args):
    """The command line of one client process for a workload."""
    flags = []
    for k, v in args.items():
        if v is True:
            flags.append("--" + k)
        elif v is not False and v is not None:
            flags += ["--" + k, str(v)]
    if client in ("rust", "raw", "ffi"):
        return [BENCH, workload, "--client", client] + flags, None
    env = dict(os.environ)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if client == "python":
        env["PYTHONPATH"] = os.path.join(REPO, "bindings", "python")
        env["TINKEX_LIBRARY"] = LIB
        return [BENCH_PY, CLIENT_PY, "--sdk", "tinkex", workload] + flags, env
    if client == "official":
        env.pop("PYTHONPATH", None)
        return [OFFICIAL_PY, CLIENT_PY, "--sdk", "tinker", workload] + flags, env
    raise ValueError(client)


def run_client(name, client, workload, args, timeout=600, emulator=True, url=None, emu_args=()):
    """Runs one client process (against a fresh emulator, started with the flags `emu_args`,
    unless `url` is given); returns its JSON result plus the OS's view: whole-process CPU,
    peak RSS, emulator CPU."""
    emu = Emulator(name, args=emu_args) if emulator and url is None else None
    try:
        a = dict(args)
        a["base-url"] = url or emu.url
        cmd, env = client_cmd(client, workload, a)
        c = Child(name, cmd, env)
        res = c.wait(timeout)
        ru = c.rusage
    finally:
        server_cpu = emu.stop() if emu else None
    if res is None:
        return None
    res["proc_cpu_s"] = ru.ru_utime + ru.ru_stime
    res["proc_maxrss_kb"] = ru.ru_maxrss
    res["server_cpu_s"] = server_cpu
    res["exit"] = c.status
    return res
