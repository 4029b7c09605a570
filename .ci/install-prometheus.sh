#!/usr/bin/env bash
# promtool (Debian's prometheus package) for test/promtool.test.ts: /metrics must pass `promtool check metrics`.
set -euo pipefail
if command -v promtool > /dev/null; then exit 0; fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends prometheus > /dev/null
command -v promtool > /dev/null
