#!/usr/bin/env bash
# A/B of the first install as `make` does it (the stamp target), on fresh clones.
# usage: benchmarks/bench_install.sh ROUNDS BASE_COMMIT NEW_COMMIT [REPO]   (env CONFIG=reader|machine)
# Prints a TSV row per install: seconds from `make` to the stamp, exit status, .venv size. CONFIG=reader
# (default) ignores this machine's pip.conf, as a reader has none. Run with PYTHONDONTWRITEBYTECODE unset
# to see what a reader sees (set, the Makefile compiles bytecode up front).
set -u
rounds=$1; base=$2; new=$3; repo=${4:-.}
W=$(mktemp -d /tmp/atlas-lab-bench-XXXX); echo "workdir $W" >&2
if [ "${CONFIG:-reader}" = reader ]; then export PIP_CONFIG_FILE=/dev/null; fi
stamp=.venv/.atlas-lab-installed
run() {  # variant commit cache_dir label
    local v=$1 c=$2 cache=$3 label=$4 d=$W/$v-$label-$RANDOM
    git clone -q "$repo" "$d" && git -C "$d" checkout -q "$c"
    local t0=$(date +%s.%N)
    ( cd "$d" && PIP_CACHE_DIR=$cache/pip UV_CACHE_DIR=$cache/uv make -s $stamp ) > "$d.log" 2>&1
    local rc=$? t1=$(date +%s.%N)
    local venv=$(du -sm "$d/.venv" | cut -f1)
    local cachemb=$(du -sm "$d/.venv" "$cache" 2>/dev/null | awk 'NR==2{print $1}')
    printf "%s\t%s\t%s\t%.1f\t%s\t%s\t%s\n" "$(date +%H:%M:%S)" "$v" "$label" "$(echo "$t1 - $t0" | bc)" "$rc" "$venv" "${cachemb:-0}"
    rm -rf "$d"
}
printf "time\tvariant\tcache\tseconds\trc\tvenv_MB\tcache_MB_beyond_venv\n"
for i in $(seq "$rounds"); do
    cb=$W/cache-base-$i; cn=$W/cache-new-$i
    if [ $((i % 2)) -eq 1 ]; then order="base new"; else order="new base"; fi
    for label in cold warm; do
        for v in $order; do
            if [ $v = base ]; then run base "$base" "$cb" $label; else run new "$new" "$cn" $label; fi
        done
    done
    rm -rf "$cb" "$cn"
done
rm -rf "$W"
