#!/bin/sh
# Local stand-ins for the official base images, for a Docker host that reaches no image
# registry (only Debian and PyPI mirrors). A registry-connected host needs none of this:
# the Dockerfiles and docker-compose.yaml default to the official images.
#
#   sh docker/local-bases/build.sh [ENV_FILE]
#
# 1. a Debian bookworm root file system from the machine's configured Debian mirror
#    (debootstrap, run as root), imported with `docker import`;
# 2. small Dockerfiles on it giving each stand-in the interface docker-compose.yaml uses
#    (users, ports, variables, entry points, health-check tools) of python:3.11-slim,
#    apache/airflow, postgres, redis and chrislusf/seaweedfs.
# Package-index settings reach the builds as BuildKit secrets (docker/pip-secrets.sh).
# Prints (or appends to ENV_FILE) the variables that point the stack at the stand-ins.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
docker=${DOCKER:-docker}
prefix=${LOCAL_BASES_PREFIX:-clearmark-local}
suite=bookworm
work=${LOCAL_BASES_WORKDIR:-/var/tmp/clearmark-local-bases}

# The Debian mirror apt uses here (deb822 or one-line sources), unless DEBIAN_MIRROR is set.
mirror=${DEBIAN_MIRROR:-$(
    cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}'
)}
mirror=${mirror:-$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
    awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; exit}}')}
: "${mirror:?no Debian mirror found in /etc/apt/sources.list*; set DEBIAN_MIRROR}"

step() { printf '[local-bases] %s\n' "$*" >&2; }
build() { # build TAG DOCKERFILE [--build-arg ...]
    tag=$1 file=$2
    shift 2
    step "building $tag"
    # shellcheck disable=SC2086 # the secret arguments are words
    DOCKER_BUILDKIT=1 "$docker" build --quiet $secrets --tag "$tag" --file "$here/$file" "$@" "$repo" >/dev/null
}

bookworm=$prefix/bookworm:12
if ! "$docker" image inspect "$bookworm" >/dev/null 2>&1; then
    command -v debootstrap >/dev/null || { echo "debootstrap is missing: apt-get install debootstrap" >&2; exit 1; }
    [ "$(id -u)" = 0 ] || { echo "debootstrap needs root: run this script with sudo" >&2; exit 1; }
    rm -rf "$work/rootfs"
    mkdir -p "$work/rootfs"
    step "debootstrap $suite from $mirror"
    debootstrap --variant=minbase --include=ca-certificates "$suite" "$work/rootfs" "$mirror" >"$work/debootstrap.log"
    # Like the official Debian images: no services start during package installs, no caches kept.
    printf '#!/bin/sh\nexit 101\n' >"$work/rootfs/usr/sbin/policy-rc.d"
    chmod 755 "$work/rootfs/usr/sbin/policy-rc.d"
    printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' >"$work/rootfs/etc/apt/apt.conf.d/90local-bases"
    rm -rf "$work/rootfs/var/lib/apt/lists/"* "$work/rootfs/var/cache/apt/archives/"*.deb
    step "importing $bookworm"
    tar -C "$work/rootfs" -c . | "$docker" import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
        --change 'CMD ["bash"]' - "$bookworm" >/dev/null
    rm -rf "$work/rootfs"
fi

secrets_dir=$(mktemp -d)
trap 'rm -rf "$secrets_dir"' EXIT
secrets=$(sh "$repo/docker/pip-secrets.sh" "$secrets_dir")

python=$prefix/python:3.11
build "$python" Dockerfile.python --build-arg "BOOKWORM_IMAGE=$bookworm"
build "$prefix/airflow:3.3.2" Dockerfile.airflow --build-arg "PYTHON_IMAGE=$python"
build "$prefix/postgres:15" Dockerfile.postgres --build-arg "BOOKWORM_IMAGE=$bookworm"
build "$prefix/redis:7" Dockerfile.redis --build-arg "BOOKWORM_IMAGE=$bookworm"
build "$prefix/seaweedfs:4.48" Dockerfile.seaweedfs --build-arg "BOOKWORM_IMAGE=$bookworm" --build-arg "PYTHON_IMAGE=$python"

# The variables docker-compose.yaml and the image builds read (.env.example documents them).
variables="AIRFLOW_BASE_IMAGE=$prefix/airflow:3.3.2
PYTHON_BASE_IMAGE=$python
POSTGRES_IMAGE=$prefix/postgres:15
REDIS_IMAGE=$prefix/redis:7
SEAWEEDFS_IMAGE=$prefix/seaweedfs:4.48"
if [ $# -gt 0 ]; then echo "$variables" >>"$1"; else echo "$variables"; fi
step "done"
