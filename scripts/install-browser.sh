#!/usr/bin/env bash
# Install Debian's Chromium and ChromeDriver for the dashboard's browser test
# (tests/integration/test_web_browser.py): /usr/bin/chromium and /usr/bin/chromedriver.
# Idempotent: does nothing when /usr/bin/chromedriver already exists.
set -euo pipefail

if [ -x /usr/bin/chromedriver ] && [ -x /usr/bin/chromium ]; then
    echo "install-browser: $(/usr/bin/chromedriver --version | head -n1) already installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q chromium chromium-driver
echo "install-browser: installed $(/usr/bin/chromium --version) and $(/usr/bin/chromedriver --version | head -n1)"
