"""Generate Python code and type stubs for protos/ into libs/protos (``make protos``), or check freshness.

``python tools/gen_protos.py`` regenerates; ``python tools/gen_protos.py --check`` exits 1 when the
generated tree differs from what the current .proto files produce (stale or hand-edited code).
"""

from __future__ import annotations

import filecmp
import os
import shutil
import sys
import tempfile
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUT = ROOT / "libs" / "protos"


def generate(out: Path) -> None:
    """Run protoc over every .proto file into ``out`` and add the package __init__ files."""
    files = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    include = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out=quiet:{out}",
        f"--mypy_grpc_out=quiet:{out}",
        *files,
    ]
    # The mypy-protobuf plugins are scripts beside this interpreter; protoc finds plugins on PATH.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for directory in (out / "crm").rglob("*"):
        if directory.is_dir():
            (directory / "__init__.py").touch()
    (out / "crm" / "__init__.py").touch()
    (out / "crm" / "py.typed").touch()


def main() -> int:
    """Generate, or with --check compare against a fresh generation."""
    if "--check" in sys.argv:
        with tempfile.TemporaryDirectory() as tmp:
            generate(Path(tmp))
            fresh, current = Path(tmp) / "crm", OUT / "crm"
            stale = _differences(fresh, current)
        if stale:
            print("generated protobuf code is stale; run `make protos`:", *stale, sep="\n  ")
            return 1
        print("generated protobuf code is current")
        return 0
    shutil.rmtree(OUT / "crm", ignore_errors=True)
    generate(OUT)
    return 0


def _differences(fresh: Path, current: Path) -> list[str]:
    if not current.exists():
        return [str(current)]
    out: list[str] = []
    cmp = filecmp.dircmp(fresh, current, ignore=["__pycache__"])
    stack = [cmp]
    while stack:
        node = stack.pop()
        out += [f"missing {node.right}/{n}" for n in node.left_only]
        out += [f"extra {node.right}/{n}" for n in node.right_only]
        _, mismatch, errors = filecmp.cmpfiles(node.left, node.right, node.common_files, shallow=False)
        out += [f"differs {node.right}/{n}" for n in mismatch + errors]
        stack.extend(node.subdirs.values())
    return out


if __name__ == "__main__":
    sys.exit(main())
