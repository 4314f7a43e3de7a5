"""The build context (.dockerignore, no Docker engine here): what the Dockerfile copies goes in;
nothing local (.git, .venv, data/ with its keys and credentials, caches, benchmark results, tools)
does. Matched with Docker's documented .dockerignore rules: Go filepath.Match patterns plus `**`,
relative to the context root, the last matching line wins, `!` re-includes, and a pattern that
matches a directory excludes everything under it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parents[2]


def _rules() -> list[tuple[re.Pattern[str], bool]]:
    """(pattern, excludes) per line, in order."""
    rules: list[tuple[re.Pattern[str], bool]] = []
    for raw in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        excludes = not line.startswith("!")
        pattern = line.lstrip("!").strip().strip("/")
        rules.append((re.compile(_translate(pattern)), excludes))
    return rules


def _translate(pattern: str) -> str:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            body = pattern[i + 1:end]
            out, i = out + "[" + ("^" + body[1:] if body.startswith("^") else body) + "]", end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return out


def in_context(path: str) -> bool:
    parts = PurePosixPath(path).parts
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    excluded = False
    for pattern, excludes in _rules():
        if any(pattern.fullmatch(prefix) for prefix in prefixes):
            excluded = excludes
    return not excluded


def _git(*args: str) -> list[str]:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True)
    return done.stdout.splitlines()


def _copied_sources() -> list[str]:
    """The context paths the Dockerfile copies (COPY without --from)."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text(encoding="utf-8"))
    sources: list[str] = []
    for line in text.splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
            sources += [w.lstrip("./") or "." for w in words[1:-1] if not w.startswith("--")]
    return sources


def test_everything_the_dockerfile_copies_is_in_the_context() -> None:
    sources = _copied_sources()
    assert {"pyproject.toml", "README.md", "gateway", "sim_profiles", "roaming"} <= set(sources)
    for source in sources:
        tracked = _git("ls-files", "--", source)
        assert tracked, source
        missing = [name for name in tracked if not in_context(name)]
        assert missing == [], f"COPY {source}: left out of the build context: {missing[:5]}"


def test_local_state_secrets_and_caches_stay_out_of_the_context() -> None:
    for path in (".git/HEAD", ".venv/bin/python", "data/gateway.db", "data/pki/ca.key",
                 "data/credentials/admin.token", ".mypy_cache/3.11/x.json", ".ruff_cache/x",
                 ".pytest_cache/v/x", ".hypothesis/examples/x", "load/results/smoke/report.json",
                 "load/.sim-certs/car.key", ".tools/node_modules/.bin/buf", "build/lib/x.py",
                 "telematics_gateway.egg-info/PKG-INFO", "gateway/__pycache__/app.cpython-311.pyc",
                 "gateway/api/__pycache__/server.cpython-311.pyc", "tests/unit/test_config.py",
                 "deploy/compose/init.sh", "Dockerfile.swp", "gateway/app.py.orig"):
        assert not in_context(path), path


def test_nothing_git_ignores_in_this_checkout_enters_the_context() -> None:
    # What .gitignore calls local (virtualenv, data, caches, results, tools) is local for the
    # image too, whatever it is named.
    ignored = _git("ls-files", "--others", "--ignored", "--exclude-standard", "--directory")
    leaked = [name for name in ignored if in_context(name.rstrip("/"))]
    assert leaked == []


def test_the_matcher_follows_dockers_rules() -> None:
    # The rules the tests above rely on, on a known pattern set, so a matcher bug cannot pass
    # them vacuously.
    def match(pattern: str, path: str) -> bool:
        return re.fullmatch(_translate(pattern), path) is not None
    assert match("*", "data") and not match("*", "data/x")
    assert match("**/__pycache__", "__pycache__") and match("**/__pycache__", "a/b/__pycache__")
    assert match("**/*.py[cod]", "gateway/x.pyc") and not match("**/*.py[cod]", "gateway/x.py")
    assert in_context("gateway/app.py") and not in_context("data")
