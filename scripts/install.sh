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

if "$py" -c "import torch" 2>/dev/null; then
    echo "keeping torch $("$py" -c 'import torch; print(torch.__version__)')"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    "${pip[@]}" install "torch>=2.6"
else
    # A local wheelhouse or mirror that carries the CPU build is used first; otherwise
    # PyTorch's CPU index.
    "${pip[@]}" install "torch==2.13.0+cpu" \
        || "${pip[@]}" install --index-url https://download.pytorch.org/whl/cpu "torch>=2.6"
fi
"${pip[@]}" install -e ".[dev]"
