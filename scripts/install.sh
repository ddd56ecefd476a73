#!/usr/bin/env bash
# Install xmodal and its dev tools into a virtual environment.
#
# torch comes first and is chosen for the machine: a torch that is already importable (for
# example a CUDA build in a venv made with --system-site-packages) is kept; a machine with an
# NVIDIA driver gets PyPI's default (CUDA) build; any other machine gets the CPU build, which is
# a few hundred MB instead of several GB.
set -euo pipefail
venv="${1:-.venv}"
py="$venv/bin/python"
pip=("$py" -m pip --disable-pip-version-check)

# pyproject.toml's torch floor (releases before it have known advisories); the CPU pin meets it
# (tests/test_dependencies.py checks both).
torch_floor="2.13"
torch_cpu_pin="2.13.0+cpu"
# A torch below the floor is not kept: pip would otherwise replace it with PyPI's default build.
recent_torch="import torch, sys; v = torch.__version__.split('+')[0].split('.')
sys.exit(tuple(map(int, v[:2])) < tuple(map(int, '$torch_floor'.split('.'))))"

if "$py" -c "$recent_torch" 2>/dev/null; then
    echo "keeping torch $("$py" -c 'import torch; print(torch.__version__)')"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    "${pip[@]}" install "torch>=$torch_floor"
else
    # A local wheelhouse or mirror that carries the CPU build is used first; otherwise
    # PyTorch's CPU index.
    "${pip[@]}" install "torch==$torch_cpu_pin" \
        || "${pip[@]}" install --index-url https://download.pytorch.org/whl/cpu "torch>=$torch_floor"
fi
"${pip[@]}" install -e ".[dev]"
