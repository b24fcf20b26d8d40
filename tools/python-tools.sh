#!/usr/bin/env bash
# Installs the Python tools the tests and the demo start, pinned, into a virtualenv kept outside the clone: moto in
# server mode (AWS STS and ECR), bcrypt (htpasswd entries for the local registry), PyJWT (the registry token server of
# the tests), and MkDocs with the Material theme and pymdown-extensions (the docs site: `make docs`, built with
# --strict by `make test`; PyYAML, which MkDocs brings, also reads the CRD for docs/reference/api.md). Does nothing
# when exactly these versions are already there.
set -euo pipefail
PACKAGES=("moto[server]==5.2.5" "bcrypt==5.0.0" "pyjwt==2.15.1" "mkdocs==1.6.1" "mkdocs-material==9.8.2" "pymdown-extensions==13.1.2")
venv=${REGCRED_VENV:-$HOME/.cache/regcred/venv}
stamp="$venv/.regcred-packages"
if [ -x "$venv/bin/moto_server" ] && [ -x "$venv/bin/mkdocs" ] && [ "$(cat "$stamp" 2>/dev/null)" = "${PACKAGES[*]}" ]; then
  exit 0
fi
command -v python3 >/dev/null || { echo "python-tools: python3 is required (apt-get install python3 python3-venv)" >&2; exit 1; }
echo "python-tools: installing ${PACKAGES[*]} into $venv"
python3 -m venv "$venv" || { echo "python-tools: could not create a virtualenv: apt-get install python3-venv" >&2; exit 1; }
"$venv/bin/pip" install --quiet --disable-pip-version-check "${PACKAGES[@]}"
"$venv/bin/moto_server" --help >/dev/null
"$venv/bin/python" -c "import bcrypt, jwt, yaml, material, pymdownx"
"$venv/bin/mkdocs" --version >/dev/null
echo "${PACKAGES[*]}" > "$stamp"
