#!/bin/sh
# Install deployable packages of this repository into a fresh virtual environment, the way every image
# is built: generate the protobuf code, build the local packages as wheels, install them with their
# dependencies pinned by constraints.txt. The Dockerfiles run it, and tests/deploy/test_images.py runs
# it with the same arguments, so a dependency missing from an image fails a test without Docker.
#
#   sh deploy/docker/build-venv.sh VENV_DIR PACKAGE_DIR...     (from the repository root)
#
# PYTHON is the builder interpreter (needs grpcio-tools); default: python.
set -eu

if [ "$#" -lt 2 ]; then
    echo "usage: $0 VENV_DIR PACKAGE_DIR..." >&2
    exit 2
fi
venv="$1"
shift
python="${PYTHON:-python}"
wheels="$(mktemp -d)"
trap 'rm -rf "$wheels"' EXIT

# Build requirements (hatchling) resolve against the same pins as everything else.
PIP_CONSTRAINT="$(pwd)/constraints.txt"
export PIP_CONSTRAINT

# Generated code is never committed: produce it exactly as `make protos` does.
# shellcheck disable=SC2046
"$python" -m grpc_tools.protoc -Iprotos --python_out=libs/protos --grpc_python_out=libs/protos \
    --pyi_out=libs/protos $(find protos -name '*.proto')

# "./" makes pip read each argument as a directory ("gateway" alone would be looked up on the index).
for package in "$@"; do
    "$python" -m pip wheel --quiet --no-deps --wheel-dir "$wheels" "./$package"
done
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --no-cache-dir -c constraints.txt "$wheels"/*.whl
"$venv/bin/python" -m pip check
# The runtime needs no installer or build tool: leave none behind for an attacker or a drifting hot-fix.
"$venv/bin/python" -m pip uninstall --quiet --yes pip setuptools
