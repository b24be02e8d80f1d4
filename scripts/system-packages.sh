#!/usr/bin/env bash
# Installs the Debian packages behind what a command needs, when they are missing:
#
#   bash scripts/system-packages.sh redis postgres cc python node curl browser
#
#   redis     redis-server                  the queue (tests and `taskbox dev` start their own)
#   postgres  postgresql                    the SQL tests start a private cluster with its initdb
#   cc        build-essential               the bundled SQLite is C
#   python    python3-venv python3-pip      the Python guest toolchain and the API fuzzer
#   node      nodejs npm                    the JavaScript guest toolchain
#   curl      curl                          the demo talks to the API with it
#   browser   chromium chromium-driver      the dashboard's tests drive a real browser
#
# As root it runs apt-get; otherwise it names the command to run and fails.
set -euo pipefail

missing=()
for need in "$@"; do
    case $need in
    redis) command -v redis-server >/dev/null 2>&1 || missing+=(redis-server) ;;
    postgres)
        compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || command -v initdb >/dev/null 2>&1 ||
            missing+=(postgresql)
        ;;
    cc) command -v cc >/dev/null 2>&1 || missing+=(build-essential) ;;
    python) python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv python3-pip) ;;
    node) command -v npm >/dev/null 2>&1 || missing+=(nodejs npm) ;;
    curl) command -v curl >/dev/null 2>&1 || missing+=(curl) ;;
    browser)
        command -v chromium >/dev/null 2>&1 || missing+=(chromium)
        command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
        ;;
    *) echo "system-packages.sh: unknown need '$need'" >&2 && exit 2 ;;
    esac
done
((${#missing[@]})) || exit 0

if ((EUID != 0)); then
    echo "missing system packages; install them with: sudo apt-get install ${missing[*]}" >&2
    exit 1
fi
echo "installing ${missing[*]} (apt-get)..."
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >/dev/null
