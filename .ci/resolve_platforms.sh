#!/usr/bin/env bash
# Resolves requirements.txt (without installing) for Python 3.11, 3.12 and
# 3.13 on Linux x86-64 and macOS arm64, as pip would there. pip evaluates
# environment markers against the interpreter running it, not against
# --python-version and --platform, so each target's requirements are written
# out first with their markers (sys_platform, python_version) applied for
# that target. `promise`, a pure-Python dependency of tensorflow-datasets
# published only as source, is built into a wheel first (what pip does on
# every platform). Needs PyPI; prints one line per target with the jax and
# flax versions it resolved. Runs pip from a throwaway virtual environment
# with the newest pip: pip 23.2 checked Requires-Python against the running
# interpreter instead of --python-version (jax 0.12 needs Python >= 3.12).
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
python3 -m venv "$work/venv"
. "$work/venv/bin/activate"
python -m pip install --quiet --upgrade pip
python -m pip wheel --quiet --no-deps -w "$work/wheels" promise==2.3
linux="--platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64"
macos="--platform macosx_14_0_arm64 --platform macosx_13_0_arm64 --platform macosx_12_0_arm64 --platform macosx_11_0_arm64"
for python in 3.11 3.12 3.13; do
  for target in linux macos; do
    platforms=$([ "$target" = linux ] && echo "$linux" || echo "$macos")
    python - "$python" "$target" requirements.txt "$work/$target-$python.txt" <<'EOF'
import sys
try:
  from packaging.requirements import Requirement
except ImportError:  # pip vendors packaging
  from pip._vendor.packaging.requirements import Requirement
python, target, source, output = sys.argv[1:]
environment = {'python_version': python, 'python_full_version': python + '.0',
               'sys_platform': target if target == 'linux' else 'darwin',
               'platform_system': 'Linux' if target == 'linux' else 'Darwin',
               'platform_machine': 'x86_64' if target == 'linux' else 'arm64'}
with open(source) as f, open(output, 'w') as out:
  for line in f:
    line = line.split('#', 1)[0].strip()
    if not line:
      continue
    requirement = Requirement(line)
    if requirement.marker is None or requirement.marker.evaluate(environment):
      requirement.marker = None
      out.write(f'{requirement}\n')
EOF
    # shellcheck disable=SC2086
    python -m pip install --dry-run --quiet --ignore-installed \
        --only-binary=:all: --find-links "$work/wheels" \
        --python-version "$python" $platforms -r "$work/$target-$python.txt" \
        --target "$work/target" --report "$work/report.json"
    python -c "
import json
r = json.load(open('$work/report.json'))
versions = {i['metadata']['name'].lower(): i['metadata']['version'] for i in r['install']}
print('$target', 'python $python: resolved', len(r['install']), 'packages;',
      'jax', versions['jax'], 'flax', versions['flax'])"
  done
done
