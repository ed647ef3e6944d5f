#!/bin/sh
# Writes this machine's package-index settings for `docker build` as BuildKit secrets and
# prints the --secret arguments: DIR/pip.conf (index URLs from `pip config` and PIP_*; local
# file:// indexes stay out, a container cannot read them) and DIR/cert.pem (the CA bundle pip
# trusts). Neither ends up in an image layer; the Dockerfiles mount them for one RUN each.
#   sh docker/pip-secrets.sh DIR
set -eu
dir=${1:?usage: pip-secrets.sh DIR}
mkdir -p "$dir"
chmod 700 "$dir"
pip=$(command -v pip3 || command -v pip || true)
setting() { # first value of a pip setting (environment first, then pip's configuration files)
    env_value=$(printenv "PIP_$(echo "$1" | tr 'a-z-' 'A-Z_')" || true)
    if [ -n "$env_value" ]; then echo "$env_value"; elif [ -n "$pip" ]; then "$pip" config get "global.$1" 2>/dev/null || true; fi
}
{
    echo "[global]"
    index=$(setting index-url)
    [ -n "$index" ] && echo "index-url = $index"
    extra=$(for url in $(setting extra-index-url); do case "$url" in http://* | https://*) printf '%s ' "$url" ;; esac; done)
    [ -n "$extra" ] && echo "extra-index-url = $extra"
    echo "timeout = $(setting default-timeout | grep . || echo 60)"
    echo "disable-pip-version-check = true"
    echo "cert = /run/secrets/pipcert"
} >"$dir/pip.conf"
cert=$(setting cert)
cp "${cert:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}" "$dir/cert.pem"
chmod 600 "$dir/pip.conf" "$dir/cert.pem"
echo "--secret id=pipconf,src=$dir/pip.conf --secret id=pipcert,src=$dir/cert.pem"
