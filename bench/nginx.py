"""nginx on 127.0.0.1 with its own prefix, config, pid and logs in a temporary folder.

One worker, ``sendfile on``, no access log: the server of the peers' loopback method. It runs in
the foreground as our child (``daemon off``) and is told to stop (SIGTERM) when we exit, when
we die (``PR_SET_PDEATHSIG``) or when the ``with`` block ends in any way.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from tests.fixtures.servers_required import free_port

_PR_SET_PDEATHSIG = 1
_CONF = """\
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
{user}
events {{ worker_connections 1024; }}
http {{
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    default_type application/octet-stream;
    types {{ application/json json; application/zip zip; application/octet-stream bin; }}
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{ }}
    }}
}}
"""


def find_nginx() -> str | None:
    """The nginx binary (Debian installs it in /usr/sbin, not always on a user's PATH)."""
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


def _die_with_parent() -> None:
    """In the child before exec: receive SIGTERM when the benchmark process dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class Nginx:
    """``with Nginx(root) as server:`` serves ``root`` at ``server.url``."""

    def __init__(self, root: Path, binary: str) -> None:
        self.root = root.resolve()
        self.binary = binary
        self.prefix = Path(tempfile.mkdtemp(prefix="aux-bench-nginx-"))
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def version(self) -> str:
        done = subprocess.run([self.binary, "-v"], capture_output=True, text=True, check=False)
        return (done.stderr or done.stdout).strip().removeprefix("nginx version: ")

    def __enter__(self) -> Nginx:
        try:
            for _ in range(5):  # another process may take the port between probe and bind
                self.port = free_port()
                if self._start():
                    return self
            raise RuntimeError(f"nginx did not start: {self._log_tail()}")
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _start(self) -> bool:
        # workers run as the user nginx starts as, so that they read a private cache folder
        user = "user root root;" if os.geteuid() == 0 else ""
        conf = self.prefix / "nginx.conf"
        conf.write_text(_CONF.format(prefix=self.prefix, user=user, port=self.port, root=self.root))
        error_log = str(self.prefix / "error.log")  # -e: even start-up errors go there
        cmd = [self.binary, "-p", str(self.prefix), "-c", str(conf), "-e", error_log]
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=(self.prefix / "stderr.log").open("ab"),
            preexec_fn=_die_with_parent,
            start_new_session=True,  # its own group: stop() also reaches an orphaned worker
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                return False
            try:
                with urllib.request.urlopen(f"{self.url}/", timeout=1) as answer:
                    answer.read()
                return True
            except urllib.error.HTTPError:  # 403/404 for the folder: the server answers
                return True
            except OSError:
                time.sleep(0.05)
        self.stop()
        return False

    def _log_tail(self) -> str:
        text = ""
        for name in ("stderr.log", "error.log"):
            path = self.prefix / name
            if path.exists():
                text += path.read_text(errors="replace")
        return text[-1500:] or "(no log)"

    def stop(self) -> None:
        """Stop nginx (its master and worker) and remove the prefix folder."""
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # fast shutdown: the master stops its worker
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # a worker left behind by a killed master
        shutil.rmtree(self.prefix, ignore_errors=True)
