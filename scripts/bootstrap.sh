#!/usr/bin/env bash
# Set up handrail on a fresh Debian machine and run one of its two jobs.
#   scripts/bootstrap.sh demo   -> install (regular) and run the main job
#   scripts/bootstrap.sh test   -> install (editable, with dev+train extras), lint and run the test suite
# Creates its own virtual environment (.venv, or $HANDRAIL_VENV); installs missing system libraries when
# run as root. DEMO_SECONDS (default 20) is how long the demo's policy runs.
set -euo pipefail

job="${1:?usage: scripts/bootstrap.sh demo|test}"
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
venv="${HANDRAIL_VENV:-.venv}"
demo_seconds="${DEMO_SECONDS:-20}"

# System libraries: libusb for pyrealsense2, EGL/Mesa for headless MuJoCo rendering.
system_packages=(libusb-1.0-0 libegl1 libegl-mesa0 libgl1 libgl1-mesa-dri libopengl0 libglib2.0-0)
missing=()
if command -v dpkg-query >/dev/null 2>&1; then
    for package in "${system_packages[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
    done
fi
python_bin="${PYTHON:-}"
if [[ -z "$python_bin" ]]; then
    for candidate in python3.11 python3.12 python3.13 python3; do
        if command -v "$candidate" >/dev/null 2>&1 \
            && "$candidate" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            python_bin="$candidate"
            break
        fi
    done
fi
if [[ -z "$python_bin" ]]; then
    missing+=(python3 python3-venv)
fi
if (( ${#missing[@]} )); then
    if [[ "$(id -u)" == "0" ]] && command -v apt-get >/dev/null 2>&1; then
        echo "bootstrap: installing system packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "bootstrap: missing system packages: ${missing[*]}" >&2
        echo "bootstrap: install them with: sudo apt-get install ${missing[*]}" >&2
        exit 1
    fi
fi
python_bin="${python_bin:-python3}"

if [[ ! -x "$venv/bin/python" ]]; then
    echo "bootstrap: creating $venv with $("$python_bin" --version)"
    "$python_bin" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip "setuptools>=70" wheel

export MUJOCO_GL="${MUJOCO_GL:-egl}"
case "$job" in
    demo)
        # A regular install with no extras: what `pip install handrail` gives a user.
        "$venv/bin/python" -m pip install -q .
        mkdir -p out
        "$venv/bin/handrail" model render --out out/hand.png
        # The bundled policy turns the cube on the virtual hand (a pty speaking Dynamixel), through the
        # safety layer, logged to out/demo/; prints its scores and the sim-vs-real report's path.
        "$venv/bin/handrail" demo --seconds "$demo_seconds" --out out/demo
        ;;
    test)
        "$venv/bin/python" -m pip install -q -e ".[train,dev,calibrate]"
        "$venv/bin/ruff" check .
        "$venv/bin/ruff" format --check .
        # pytest exits 5 when it collects no tests: that is a failure here, never a silent pass.
        "$venv/bin/python" -m pytest -x -q
        ;;
    *)
        echo "usage: scripts/bootstrap.sh demo|test" >&2
        exit 2
        ;;
esac
