#!/usr/bin/env bash
# The Python package's checks (run by scripts/test, so by .ci/run): builds the wheel (debug)
# with maturin, installs it into a fresh virtual environment (python/.venv, git-ignored),
# type-checks the package and its stubs with mypy, and runs pytest against the emulator
# (`azure-iot hub start --in-memory`, built here too).
#
# Environment:
#   PYTHON                  the interpreter to make the venv with (default python3, ≥ 3.9)
#   CARGO_TARGET_DIR        where cargo builds (default target/ of the repository)
#   PYTHON_CI_CARGO_LOCK    a lock file: when set, every build runs under `flock` on it (for
#                           machines where other builds share the cores); CI leaves it unset.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
venv="$here/.venv"
target="${CARGO_TARGET_DIR:-$root/target}"

locked=()
if [ -n "${PYTHON_CI_CARGO_LOCK:-}" ]; then
  locked=(flock "$PYTHON_CI_CARGO_LOCK")
fi

rm -rf "$venv" "$here/dist"
"${PYTHON:-python3}" -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check maturin==1.16.0 pytest==9.2.0 mypy==2.4.1

(cd "$root" && ${locked[@]+"${locked[@]}"} cargo build --quiet --locked -p azure_iot_cli)
(cd "$here" && ${locked[@]+"${locked[@]}"} "$venv/bin/maturin" build --quiet --locked --out dist)
wheel="$(ls "$here"/dist/azure_iot_rs-*.whl)"
echo "python: built $(basename "$wheel") ($(du -k "$wheel" | cut -f1) KiB)"
"$venv/bin/pip" install --quiet --disable-pip-version-check "$wheel"

cd "$here"
"$venv/bin/mypy" --check-untyped-defs --no-incremental src/azure_iot_rs tests
# The installed wheel is tested (src/ is not on the path), against a fresh emulator.
AZURE_IOT_BIN="$target/debug/azure-iot" "$venv/bin/python" -m pytest -q -p no:cacheprovider tests
