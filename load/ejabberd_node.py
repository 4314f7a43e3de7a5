"""A private ejabberd (Debian's `ejabberd` package, its `mod_mqtt`) as a second real MQTT 5 broker.

The system service is never touched: the Erlang VM is started directly (`erl -s ejabberd`, as
`ejabberdctl foreground` does, but as the current user) with its own configuration file, Mnesia
spool and log directory under the test's directory, its own node name and cookie, and an MQTT
listener on a free loopback port. It takes a second or two to start, so the suite starts one per
session (tests/conftest.py `ejabberd`); each test uses its own MQTT client ids. The benchmark
`python -m load.second_broker` starts one per run.

Clients log in with a user name and a password (any: the host runs `auth_method: anonymous`,
`login_anon`); ejabberd refuses a CONNECT without a user name ("Not authorized").
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from load.harness import free_port

# Where Debian installs ejabberd's Erlang application (ERL_LIBS for the VM), as ejabberdctl sets.
_LIB_GLOB = "/usr/lib/*/ejabberd-*/ebin/ejabberd.app"
START_TIMEOUT_S = 60.0  # the VM starts in 1-3 s; a loaded 2-core CI machine may need far more
# The deployment setting README "Brokers other than Mosquitto" recommends: ejabberd's default
# (5,000) overflows while the gateway works through a burst one in-flight message at a time.
MAX_QUEUE = 1_000_000
SESSION_EXPIRY = "1 hour"


class Unavailable(Exception):
    """No ejabberd on this machine (the tests that need it skip with this reason)."""


def ejabberd_lib_dir() -> Path:
    """The directory to put on ERL_LIBS, or Unavailable naming what was looked for."""
    apps = sorted(glob.glob(_LIB_GLOB))
    if not apps:
        raise Unavailable(f"ejabberd is not installed (no {_LIB_GLOB}); "
                          "`make test` installs the Debian package")
    return Path(apps[-1]).parent.parent.parent


def config_text(port: int, *, max_queue: int = MAX_QUEUE, session_expiry: str = SESSION_EXPIRY) -> str:
    """ejabberd.yml with only mod_mqtt: one plain listener on loopback, anonymous logins.
    max_topic_depth: the project's topics are 4 deep (v1/vehicles/<vin>/up), ejabberd's
    default of 8 fits them; set explicitly so a lower default cannot refuse them silently."""
    return f"""\
hosts:
  - localhost
loglevel: warning
auth_method: anonymous
anonymous_protocol: login_anon
listen:
  -
    port: {port}
    ip: "127.0.0.1"
    module: mod_mqtt
modules:
  mod_mqtt:
    max_queue: {max_queue}
    session_expiry: {session_expiry}
    max_topic_depth: 8
"""


@dataclass
class Ejabberd:
    """One private ejabberd node. `start_sync` / `stop_sync` / `restart_sync` (keeps its spool:
    persistent MQTT sessions survive as they would a broker restart in production)."""

    directory: Path
    port: int = 0
    max_queue: int = MAX_QUEUE
    username: str = "gateway"
    password: str = "anonymous-login"

    def __post_init__(self) -> None:
        self.port = self.port or free_port()
        # The node name is bound to the Mnesia spool: fixed for this instance, unique per run.
        self.node = f"gwtest_{secrets.token_hex(4)}"
        self._cookie = secrets.token_hex(16)
        self._process: subprocess.Popen[bytes] | None = None
        self._lib = ejabberd_lib_dir()
        self._erl = shutil.which("erl") or "/usr/bin/erl"

    @property
    def url(self) -> str:
        """The gateway's `mqtt_url` for this broker."""
        return f"mqtt://{self.username}:{self.password}@127.0.0.1:{self.port}"

    def start_sync(self) -> None:
        spool, logs = self.directory / "spool", self.directory / "logs"
        spool.mkdir(parents=True, exist_ok=True)
        logs.mkdir(parents=True, exist_ok=True)
        config = self.directory / "ejabberd.yml"
        config.write_text(config_text(self.port, max_queue=self.max_queue))
        env = dict(os.environ, ERL_LIBS=str(self._lib), EJABBERD_CONFIG_PATH=str(config),
                   EJABBERD_LOG_PATH=str(logs / "ejabberd.log"), ERL_CRASH_DUMP_BYTES="0")
        with open(logs / "erl.out", "ab") as out:  # the child keeps its own descriptor
            self._process = subprocess.Popen(
                [self._erl, "-sname", self.node, "-setcookie", self._cookie, "-noinput", "-noshell",
                 # Erlang distribution on loopback only (the cookie is the only other guard).
                 "-kernel", "inet_dist_use_interface", "{127,0,0,1}",
                 "-mnesia", "dir", f'"{spool}"', "-s", "ejabberd"],
                cwd=spool, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._accepting():
            if self._process.poll() is not None:
                raise RuntimeError(f"ejabberd exited with {self._process.returncode}: {self._tail(logs)}")
            if time.monotonic() > deadline:
                self.stop_sync()
                raise RuntimeError(f"ejabberd did not listen on {self.port} within {START_TIMEOUT_S}s: "
                                   f"{self._tail(logs)}")
            time.sleep(0.1)

    def stop_sync(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)  # the VM stops cleanly on SIGTERM (init:stop())
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart_sync(self) -> None:
        self.stop_sync()
        self.start_sync()

    def _accepting(self) -> bool:
        with socket.socket() as s:
            s.settimeout(1.0)
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    @staticmethod
    def _tail(logs: Path) -> str:
        text = ""
        for name in ("erl.out", "error.log"):
            path = logs / name
            if path.exists():
                text += path.read_text(errors="replace")[-1500:]
        return text or "(no output)"
