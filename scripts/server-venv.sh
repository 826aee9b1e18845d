# Sourced by the install-*-server.sh scripts: a test server's own venv, installed from its
# requirements file, idempotent through a hash stamp of that file.
#
#   server_venv LABEL VENV REQUIREMENTS CHECK...   # CHECK: a command proving the server runs
server_venv() {
    local label="$1" venv="$2" requirements="$3"
    shift 3
    local stamp="$venv/.prefdelta-requirements.sha256" want start
    want="$(sha256sum "$requirements" | cut -d' ' -f1)"
    if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        echo "$label venv is up to date: $venv"
        return 0
    fi
    echo "Installing the $label venv into $venv ..."
    start=$SECONDS
    "${PYTHON:-python3}" -m venv "$venv"
    echo '*' > "$venv/.gitignore"  # keep the venv out of git, wherever it lives
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
    "$venv/bin/python" -m pip check --disable-pip-version-check
    "$@"
    echo "$want" > "$stamp"
    echo "$label venv ready in $((SECONDS - start)) s: $venv"
}
