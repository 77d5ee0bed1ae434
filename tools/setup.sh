#!/usr/bin/env bash
# Installs the Debian packages GROSR builds with, if any are missing.
# Idempotent: safe to run twice and on a machine that already has them.
# Needs the CUDA 13 toolkit at /usr/local/cuda (it is not a Debian package).
set -euo pipefail

packages=(bazel-bootstrap libabsl-dev libgtest-dev libgmock-dev python3-matplotlib)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=()
  [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "setup: all packages present"
fi

if [[ ! -x /usr/local/cuda/bin/nvcc && ! -e /usr/local/cuda/lib64/libnvrtc.so ]]; then
  echo "setup: warning: the CUDA 13 toolkit was not found at /usr/local/cuda" >&2
fi
