#!/bin/sh
# Installs the Debian packages whose photos and fonts the synthetic generator's photo styles
# use.  clearmark.data.photos and clearmark.data.marks declare them with their split roles;
# tests/data/test_synth_heldout.py checks that this list is exactly theirs.
# Never fails the install: on a machine without apt-get, or not as root, it says what is missing.
set -u

PACKAGES="
mate-backgrounds lomiri-wallpapers-16.04 lomiri-wallpapers-20.04
fonts-open-sans fonts-cantarell fonts-crosextra-carlito fonts-league-spartan fonts-bebas-neue
fonts-yanone-kaffeesatz fonts-quicksand fonts-crosextra-caladea fonts-ebgaramond fonts-oldstandard
fonts-adf-baskervald fonts-dancingscript fonts-lobster fonts-kristi fonts-dkg-handwriting
fonts-comic-neue fonts-inconsolata fonts-adf-gillius
fonts-cabin fonts-comfortaa fonts-play fonts-jura fonts-adf-switzera fonts-sil-gentium fonts-fanwood
fonts-goudybookletter fonts-adf-romande fonts-isabella fonts-femkeklaver fonts-breip fonts-anonymous-pro
"

missing=""
for package in $PACKAGES; do
    if [ "$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null)" != "install ok installed" ]; then
        missing="$missing $package"
    fi
done
[ -z "$missing" ] && exit 0

if ! command -v apt-get >/dev/null 2>&1 || [ "$(id -u)" != 0 ]; then
    echo "clearmark: the photo styles of the synthetic generator need these Debian packages:$missing"
    echo "  install them as root (apt-get install$missing) or with your system's package manager;"
    echo "  everything else works without them."
    exit 0
fi
echo "clearmark: installing the photo and font packages of the synthetic generator:$missing"
# shellcheck disable=SC2086  # one word per package
if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null; }; then
    echo "clearmark: apt-get could not install:$missing (the photo styles stay unavailable until it can)."
fi
exit 0
