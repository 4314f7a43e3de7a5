"""Generate the Python code for proto/ into gateway/_gen (or another directory).

protoc writes cross-file imports as ``from telematics.v1 import x_pb2``; they are rewritten to
``gateway._gen.telematics.v1`` so the generated code lives inside the gateway package and the
top level stays as the layout requires. ``--check`` regenerates into a temporary directory and
fails when the committed code differs (the drift check run by the tests and CI).
"""

from __future__ import annotations

import argparse
import filecmp
import re
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
GEN_DIR = ROOT / "gateway" / "_gen"
_IMPORT = re.compile(rb"^from telematics\.v1 import ", re.MULTILINE)


def generate(out_dir: Path) -> None:
    import grpc_tools
    from grpc_tools import protoc

    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    out_dir.mkdir(parents=True, exist_ok=True)
    # The mypy-protobuf plugins live beside this interpreter, which need not be on PATH.
    bin_dir = Path(sys.executable).parent
    args = [
        "protoc",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"-I{PROTO_DIR}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for path in out_dir.rglob("*"):
        if path.suffix in (".py", ".pyi"):
            path.write_bytes(_IMPORT.sub(b"from gateway._gen.telematics.v1 import ", path.read_bytes()))
    for pkg in {p.parent for p in out_dir.rglob("*_pb2.py")} | {out_dir, out_dir / "telematics"}:
        (pkg / "__init__.py").touch()


def _differences(a: Path, b: Path) -> list[str]:
    cmp = filecmp.dircmp(a, b, ignore=["__pycache__"])
    diffs: list[str] = []

    def walk(c: filecmp.dircmp[str], prefix: str) -> None:
        diffs.extend(f"{prefix}{n}: only in {c.left}" for n in c.left_only)
        diffs.extend(f"{prefix}{n}: missing from {c.left}" for n in c.right_only)
        for name in c.common_files:
            if (Path(c.left) / name).read_bytes() != (Path(c.right) / name).read_bytes():
                diffs.append(f"{prefix}{name}: differs")
        for name, sub in c.subdirs.items():
            walk(sub, f"{prefix}{name}/")

    walk(cmp, "")
    return diffs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if gateway/_gen drifted")
    args = parser.parse_args()
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            generate(Path(tmp))
            diffs = _differences(GEN_DIR, Path(tmp))
        if diffs:
            print("generated code drifted from proto/; run `make proto`:", *diffs, sep="\n  ")
            return 1
        print("generated code matches proto/")
        return 0
    shutil.rmtree(GEN_DIR, ignore_errors=True)
    generate(GEN_DIR)
    print(f"generated into {GEN_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
