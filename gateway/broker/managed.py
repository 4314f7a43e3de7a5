"""Start and stop a Mosquitto child process with the project's configuration.

Used by `run` when no external broker URL is configured, and by the tests (each test broker on
a free port with the same files), so the tests exercise the configuration that ships.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import getpass
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from gateway import topics
from gateway.model import is_valid_vin

GATEWAY_USER = "gateway"


class BrokerStartError(Exception):
    """The managed broker could not be started."""


@dataclass(frozen=True, slots=True)
class TlsListener:
    """The broker's TLS listener: client certificates from ``cafile``'s CA required, the
    certificate's CN is the username and client id; ``gateway_identity`` gets the gateway's
    rights in the ACL. Paths only (the broker reads the key itself)."""

    host: str
    port: int
    cafile: Path
    certfile: Path
    keyfile: Path
    gateway_identity: str

    @property
    def connect_host(self) -> str:
        """Where a local client reaches it (a wildcard bind is reached on loopback)."""
        return "127.0.0.1" if self.host in ("0.0.0.0", "") else "::1" if self.host == "::" else self.host


@dataclass(frozen=True, slots=True)
class BrokerCredentials:
    username: str
    password: str = field(repr=False)  # a repr may end up in a log line or a traceback


def find_mosquitto(explicit: str = "") -> str:
    for candidate in (explicit, shutil.which("mosquitto") or "", "/usr/sbin/mosquitto"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise BrokerStartError(
        "mosquitto not found: run `make setup` (installs it with apt-get) or set GATEWAY_MQTT_URL "
        "to use an external broker"
    )


def _passwd_tool(mosquitto: str) -> str:
    for candidate in (
        shutil.which("mosquitto_passwd") or "",
        str(Path(mosquitto).parent.parent / "bin" / "mosquitto_passwd"),
        "/usr/bin/mosquitto_passwd",
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise BrokerStartError("mosquitto_passwd not found (Debian package: mosquitto)")


def write_broker_files(
    directory: Path,
    *,
    host: str,
    port: int,
    mosquitto: str,
    max_packet_size: int,
    tls: TlsListener | None = None,
) -> tuple[Path, BrokerCredentials]:
    """Render the config, the ACLs and a password file with a fresh gateway password (for the
    plain listener; on the TLS listener the gateway is known by its certificate)."""
    directory.mkdir(parents=True, exist_ok=True)
    creds = BrokerCredentials(GATEWAY_USER, secrets.token_urlsafe(24))
    password_file = directory / "passwd"
    password_file.unlink(missing_ok=True)
    password_file.touch(mode=0o600)
    tool = _passwd_tool(mosquitto)
    done = subprocess.run(
        [tool, "-b", str(password_file), creds.username, creds.password],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        # Not CalledProcessError: its message holds the argv, and so the password.
        said = done.stderr.strip().replace(creds.password, "***")
        raise BrokerStartError(f"{tool} failed with exit code {done.returncode}: {said}")
    acl_file, tls_acl_file = write_acls(directory, gateway_user=creds.username, tls=tls)
    package = resources.files("gateway.broker")
    tls_listener = ""
    if tls is not None:
        tls_listener = package.joinpath("mosquitto-tls.conf").read_text().format(
            tls_port=tls.port,
            tls_host=tls.host,
            cafile=tls.cafile,
            certfile=tls.certfile,
            keyfile=tls.keyfile,
            tls_acl_file=tls_acl_file,
        )
    conf = package.joinpath("mosquitto.conf").read_text().format(
        tls_listener=tls_listener,
        port=port,
        host=host,
        password_file=password_file,
        acl_file=acl_file,
        data_dir=directory,
        max_packet_size=max_packet_size,
        user=getpass.getuser(),
    )
    conf_file = directory / "mosquitto.conf"
    conf_file.write_text(conf)
    return conf_file, creds


def write_acls(
    directory: Path, *, gateway_user: str, tls: TlsListener | None, denied: frozenset[str] = frozenset()
) -> tuple[Path, Path]:
    """Render the plain and TLS listeners' ACLs; ``denied``: VINs whose uplink the broker drops
    (quarantined for flooding, gateway/session/quarantine.py). Returns both paths (the TLS one
    is written only with a TLS listener)."""
    for vin in denied:  # a line break in a name would add an ACL rule of the sender's choosing
        if not is_valid_vin(vin):
            raise ValueError(f"not a VIN: {vin!r}")
    package = resources.files("gateway.broker")
    # Deny lines come first: Mosquitto checks denials before grants, and the plain listener's
    # anonymous clients (the cars) are the lines before the first `user`.
    deny = "".join(f"topic deny {topics.uplink(vin)}\n" for vin in sorted(denied))
    acl_file = directory / "mosquitto.acl"
    _write_replacing(acl_file, _QUARANTINE_HEAD + deny + package.joinpath("mosquitto.acl").read_text()
                     .replace("{gateway_user}", gateway_user))
    tls_acl_file = directory / "mosquitto-tls.acl"
    if tls is not None:
        # On the TLS listener a car's username is its VIN: a denial in its own user section.
        per_car = "".join(f"user {vin}\ntopic deny {topics.uplink(vin)}\n" for vin in sorted(denied))
        _write_replacing(tls_acl_file, package.joinpath("mosquitto-tls.acl").read_text()
                         .replace("{gateway_user}", tls.gateway_identity) + _QUARANTINE_TAIL + per_car)
    return acl_file, tls_acl_file


_QUARANTINE_HEAD = "# Quarantined cars (flooding; written by the gateway, see README \"Limits\"):\n"
_QUARANTINE_TAIL = "\n" + _QUARANTINE_HEAD


def _write_replacing(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all: the broker may read it at any moment (SIGHUP)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _die_with_parent() -> None:
    """Runs in the child before exec: Linux sends it SIGTERM when the gateway dies, even by
    SIGKILL, so a crashed gateway never leaves its broker holding the port."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


_PR_SET_PDEATHSIG = 1


def _port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
        return True
    return False


class ManagedBroker:
    """A Mosquitto child process. ``start`` returns once the port accepts connections."""

    def __init__(
        self,
        *,
        directory: Path,
        host: str = "127.0.0.1",
        port: int,
        mosquitto: str = "",
        max_packet_size: int = 256 * 1024,
        tls: TlsListener | None = None,
    ) -> None:
        """
        directory: where config, ACL, password file, persistence and log are written.
        host, port: the plain listener (loopback: it is unauthenticated).
        mosquitto: path of the binary; empty to search PATH and /usr/sbin.
        max_packet_size: the broker refuses larger packets (the gateway's own limit is lower).
        tls: the TLS listener with client certificates; None for none.
        """
        self.directory = directory
        self.host = host
        self.port = port
        self.tls = tls
        self._binary = find_mosquitto(mosquitto)
        self._max_packet_size = max_packet_size
        self._proc: subprocess.Popen[bytes] | None = None
        self._conf: Path | None = None  # the configuration written by start_sync
        self.credentials: BrokerCredentials | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def _reclaim_orphan(self) -> None:
        """Stop a broker of ours that outlived a gateway killed without cleanup (SIGKILL)."""
        pid_file = self.directory / "mosquitto.pid"
        try:
            pid = int(pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return
        if str(self.directory / "mosquitto.conf").encode() not in cmdline:
            return  # the pid was reused by another process
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.02)

    def start_sync(self, timeout: float = 10.0) -> BrokerCredentials:
        self._reclaim_orphan()
        if _port_open(self.host, self.port):
            raise BrokerStartError(
                f"cannot start the managed broker: {self.host}:{self.port} is already in use "
                "(set GATEWAY_MQTT_PORT, or GATEWAY_MQTT_URL for an external broker)"
            )
        tls = self.tls
        if tls is not None and _port_open(tls.connect_host, tls.port):
            raise BrokerStartError(
                f"cannot start the managed broker: {tls.host}:{tls.port} is already in use "
                "(set GATEWAY_MQTT_TLS_PORT, 0 for no TLS listener)"
            )
        conf, self.credentials = write_broker_files(
            self.directory,
            host=self.host,
            port=self.port,
            mosquitto=self._binary,
            max_packet_size=self._max_packet_size,
            tls=tls,
        )
        self._conf = conf
        self._proc = self._spawn(conf)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._listening():
                return self.credentials
            time.sleep(0.02)
        self.stop_sync()
        raise BrokerStartError(f"mosquitto did not listen on {self.host}:{self.port} in {timeout}s")

    def _spawn(self, conf: Path) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [self._binary, "-c", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C in the terminal goes to the gateway, which stops us
            # Death signals follow the forking *thread*: spawn on the main thread only.
            preexec_fn=_die_with_parent,
        )

    def _listening(self) -> bool:
        """True once every listener accepts; BrokerStartError if the child has exited."""
        proc = self._proc
        if proc is None:
            raise BrokerStartError("the managed broker is not running")
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise BrokerStartError(f"mosquitto exited with {proc.returncode}: {err.strip()}")
        tls = self.tls
        return _port_open(self.host, self.port) and (tls is None or _port_open(tls.connect_host, tls.port))

    async def restart(self, timeout: float = 10.0) -> None:
        """Start the broker again after it died, from the files of the first start: the same
        gateway password (the gateway's client keeps it), the ACL as it stands (quarantined
        cars stay denied) and the persistence file (the sessions and queued messages of the
        last autosave). Call on the event loop of the main thread (the death signal follows
        the forking thread). Returns once the listeners accept connections."""
        old, conf = self._proc, self._conf
        if old is None or conf is None:
            raise BrokerStartError("the managed broker was never started (or was stopped)")
        if old.poll() is None:
            raise BrokerStartError(f"the managed broker (pid {old.pid}) is still running")
        if old.stderr:
            old.stderr.close()
        self._reclaim_orphan()
        self._proc = self._spawn(conf)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self._listening():
            if loop.time() > deadline:
                self._proc.kill()  # the supervisor tries again after a delay
                self._proc.wait()
                raise BrokerStartError(f"mosquitto did not listen on {self.host}:{self.port} in {timeout}s")
            await asyncio.sleep(0.02)

    async def wait_exit(self) -> int:
        """Wait until the broker process ends (it died, or was killed); its exit status as
        Popen reports it (negative: the signal that ended it)."""
        proc = self._proc
        if proc is None:
            raise BrokerStartError("the managed broker is not running")
        if proc.poll() is None:
            try:
                pidfd = os.pidfd_open(proc.pid)
            except OSError:  # no pidfd (Linux before 5.3, a sandbox): a thread waits instead
                await asyncio.to_thread(proc.wait)  # ends at the latest when stop() ends the child
            else:
                loop = asyncio.get_running_loop()
                ended: asyncio.Future[None] = loop.create_future()

                def readable() -> None:  # the pidfd becomes readable when the process exits
                    if not ended.done():
                        ended.set_result(None)

                loop.add_reader(pidfd, readable)
                try:
                    await ended
                finally:
                    loop.remove_reader(pidfd)
                    os.close(pidfd)
        return proc.wait()

    def deny_uplinks(self, vins: frozenset[str]) -> None:
        """Have the running broker drop the uplink messages of ``vins``, and only theirs (the
        set replaces the last one): rewrite the ACLs and have Mosquitto reload them (SIGHUP),
        which applies to clients already connected. A car publishing QoS 1 is answered "not
        authorized" (MQTT 5 reason 0x87), so it can tell."""
        proc, creds = self._proc, self.credentials
        if proc is None or creds is None or proc.poll() is not None:
            raise BrokerStartError("the managed broker is not running")
        write_acls(self.directory, gateway_user=creds.username, tls=self.tls, denied=vins)
        proc.send_signal(signal.SIGHUP)

    def stop_sync(self, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        self._conf = None  # stopped on purpose: nothing to restart
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()

    async def stop(self, timeout: float = 10.0) -> None:
        await asyncio.to_thread(self.stop_sync, timeout)
