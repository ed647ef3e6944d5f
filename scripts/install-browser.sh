#!/bin/sh
# Installs Debian's Chromium, the headless browser the review page's tests drive through
# Playwright (tests/integration/test_review_browser.py; Playwright's own browser download is
# not used).  Never fails the install: without apt-get, or not as root, it says what to do.
set -u

[ -x /usr/bin/chromium ] && exit 0
if ! command -v apt-get >/dev/null 2>&1 || [ "$(id -u)" != 0 ]; then
    echo "clearmark: the browser tests need Debian's chromium at /usr/bin/chromium:"
    echo "  install it as root (apt-get install chromium) or with your system's package manager;"
    echo "  everything else works without it."
    exit 0
fi
echo "clearmark: installing chromium (the headless browser of the review page's tests)"
if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; }; then
    echo "clearmark: apt-get could not install chromium (the browser tests fail until it can)."
fi
exit 0
