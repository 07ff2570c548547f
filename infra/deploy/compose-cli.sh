#!/usr/bin/env bash
# Docker Compose v2 (the `docker compose` CLI plugin) for validating infra/deploy/docker-compose.yaml.
#
#   infra/deploy/compose-cli.sh DIR     -> DIR/cli-plugins/docker-compose; use it with DOCKER_CONFIG=DIR
#
# `docker compose config` needs no Docker engine, only the docker client (on the machine) and the
# compose plugin (missing). Debian 12's own docker-compose package is the retired Python v1, so the
# plugin comes from the next Debian release's package: a Go binary that needs only libc6 >= 2.34
# (Debian 12 has 2.36). It is downloaded with apt from the archive the machine's apt already uses,
# with apt state kept under DIR: nothing on the system changes. Nothing happens when DIR already has
# the plugin (the caller checks whether `docker compose` works as the machine stands).
set -euo pipefail
dest=${1:?usage: compose-cli.sh DIR}
suite=trixie
mkdir -p "$dest/cli-plugins"
dest=$(cd "$dest" && pwd)
plugin="$dest/cli-plugins/docker-compose"
if [ -x "$plugin" ] && DOCKER_CONFIG="$dest" docker compose version >/dev/null 2>&1; then exit 0; fi
command -v apt-get >/dev/null || { echo "compose-cli: no docker compose and no apt-get; fix: install Docker Compose v2" >&2; exit 1; }
# the Debian archive this machine's apt is configured with (deb822 .sources or a one-line sources.list)
archive=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ {print $2}' | grep -v -- '-security' | head -1)
if [ -z "$archive" ]; then
    archive=$(grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
        | grep -v -- '-security' | awk '{for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}')
fi
[ -n "$archive" ] || { echo "compose-cli: no Debian archive in the apt sources; fix: install Docker Compose v2" >&2; exit 1; }
apt_dir="$dest/apt"
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/deb"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $archive $suite main" > "$apt_dir/sources.list"
opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
      -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache" -o Dir::State::status=/dev/null
      -o APT::Sandbox::User=root -o Debug::NoLocking=1 -qq)
apt-get "${opts[@]}" update
(cd "$apt_dir/deb" && apt-get "${opts[@]}" download docker-compose)
deb=$(ls -t "$apt_dir"/deb/docker-compose_*.deb | head -1)
rm -rf "$apt_dir/x" && dpkg-deb -x "$deb" "$apt_dir/x"
install -m 0755 "$apt_dir/x/usr/libexec/docker/cli-plugins/docker-compose" "$plugin"
rm -rf "$apt_dir/x" "$apt_dir/lists" "$apt_dir/cache"
DOCKER_CONFIG="$dest" docker compose version
