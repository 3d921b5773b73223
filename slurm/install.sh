#!/usr/bin/env bash
# Install the Debian packages of a single-node SLURM with accounting (for development and CI):
# munge, slurmctld + slurmd, slurmdbd on MariaDB; and libudunits2-0, which the tests' CF checker
# (cfchecker, through cfunits) loads. Idempotent: installs only what is missing.
#   sudo slurm/install.sh      (root; Debian 12 or similar)
set -euo pipefail
packages=(munge slurm-wlm slurm-client slurmdbd mariadb-server libudunits2-0)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "slurm/install.sh: all packages present (${packages[*]})"
    exit 0
fi
echo "slurm/install.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# The packages' own services are not started here (no systemd); slurm/start.sh starts the daemons.
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "slurm/install.sh: done"
