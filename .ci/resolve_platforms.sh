#!/usr/bin/env bash
# Resolves requirements.txt (without installing) for Python 3.11, 3.12 and
# 3.13 on Linux x86-64 and macOS arm64, as pip would there: the platform
# markers are applied for each target, and `promise`, a pure-Python
# dependency of tensorflow-datasets published only as source, is built into
# a wheel first (what pip does on every platform). Needs PyPI; prints one
# line per target.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
python -m pip wheel --quiet --no-deps -w "$work/wheels" promise==2.3
linux="--platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64"
macos="--platform macosx_14_0_arm64 --platform macosx_13_0_arm64 --platform macosx_12_0_arm64 --platform macosx_11_0_arm64"
grep -v 'sys_platform == "darwin"' requirements.txt | sed 's/; sys_platform == "linux"//' > "$work/linux.txt"
grep -v 'sys_platform == "linux"' requirements.txt | sed 's/; sys_platform == "darwin"//' > "$work/macos.txt"
for python in 3.11 3.12 3.13; do
  for target in linux macos; do
    platforms=$([ "$target" = linux ] && echo "$linux" || echo "$macos")
    # shellcheck disable=SC2086
    python -m pip install --dry-run --quiet --ignore-installed \
        --only-binary=:all: --find-links "$work/wheels" \
        --python-version "$python" $platforms -r "$work/$target.txt" \
        --target "$work/target" --report "$work/report.json"
    python -c "import json, sys; r = json.load(open('$work/report.json')); print('$target', 'python $python: resolved', len(r['install']), 'packages')"
  done
done
