#!/usr/bin/env bash
# Installs the Python tools the tests start (moto in server mode, for AWS STS and ECR) into a virtualenv kept
# outside the clone, at a pinned version; does nothing when that version is already there.
set -euo pipefail
MOTO_VERSION=5.2.5
venv=${REGCRED_VENV:-$HOME/.cache/regcred/venv}
if [ -x "$venv/bin/moto_server" ] && "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('moto') != '$MOTO_VERSION')" 2>/dev/null; then
  exit 0
fi
command -v python3 >/dev/null || { echo "python-tools: python3 is required (apt-get install python3 python3-venv)" >&2; exit 1; }
echo "python-tools: installing moto[server]==$MOTO_VERSION into $venv"
python3 -m venv "$venv" || { echo "python-tools: could not create a virtualenv: apt-get install python3-venv" >&2; exit 1; }
"$venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
"$venv/bin/moto_server" --help >/dev/null
