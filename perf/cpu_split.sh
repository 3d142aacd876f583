#!/usr/bin/env bash
# User and system CPU per request of one running proxy process under wrk load.
#   perf/cpu_split.sh PID URL [LABEL]
# (pin the proxy to core 0 and run this on core 1, as fastmesh bench does)
set -euo pipefail
pid=$1; url=$2; label=${3:-$pid}
read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
n=$(taskset -c 1 wrk -t1 -c64 -d4s "$url" | awk '/requests in/ {print $1}')
read -r u2 s2 < <(awk '{print $14, $15}' "/proc/$pid/stat")
tick=$(getconf CLK_TCK)
python3 -c "n=$n; t=1e6/$tick; print('$label', n, 'requests: user', round(($u2-$u1)*t/n, 2), 'us/req, system', round(($s2-$s1)*t/n, 2), 'us/req')"
