#!/usr/bin/env bash
# DICOM tools the DICOM tests use: Orthanc + DICOMweb plugin (a real PACS), Orthanc's WSI dicomizer (fixtures),
# dicom3tools' dciodvfy (the validator), dcmtk's dcmdump, OpenSlide (the dicomizer reads SVS through it).
set -euo pipefail
pkgs=(orthanc orthanc-dicomweb orthanc-wsi dicom3tools dcmtk openslide-tools libopenslide0)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
fi
# The Debian package starts an Orthanc service where an init system runs; the tests start their own on a free port.
if command -v service > /dev/null && [ -d /run/systemd/system ]; then systemctl disable --now orthanc > /dev/null 2>&1 || true; fi
