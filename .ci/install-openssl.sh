#!/usr/bin/env bash
# The TLS tests make a throwaway CA and server certificate with the openssl command.
set -euo pipefail
if ! command -v openssl > /dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssl > /dev/null
fi
