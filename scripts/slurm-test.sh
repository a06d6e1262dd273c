#!/usr/bin/env bash
# Tests the Slurm scale-out path against a real Slurm: installs Debian's
# slurmctld, slurmd, slurm-client and munge if absent, starts a single-node
# cluster on this machine (state and spool under a temporary folder), submits
# a sharded sweep as an array job, waits, merges the shards, compares the
# merged results with an unsharded run, then does the same for image-range
# shards within points (--images-shard J/M, with --shard K/N), and stops the
# daemons it started (by their process ids). Needs root. Run by .ci/run; see
# docs/CLUSTER.md.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SPEC="${SPEC:-$ROOT/fixtures/sweeps/smoke.toml}"
SHARDS="${SHARDS:-3}"
# Image-range shards within points: a spec whose model has three evaluation
# batches, split into IMAGE_SHARDS parts x POINT_SHARDS point shards.
IMAGES_SPEC="${IMAGES_SPEC:-$ROOT/fixtures/sweeps/smoke-images.toml}"
IMAGE_SHARDS="${IMAGE_SHARDS:-3}"
POINT_SHARDS="${POINT_SHARDS:-2}"

if [ "$(id -u)" != 0 ]; then
    echo "slurm-test: needs root (it installs packages and starts daemons)" >&2
    exit 1
fi
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
    echo "slurm-test: installing slurmctld slurmd slurm-client munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
fi

TMP="$(mktemp -d /tmp/raella-slurm.XXXXXX)"
STARTED_PIDS=()
cleanup() {
    for pid in "${STARTED_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${STARTED_PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    done
}
trap cleanup EXIT

wait_for_file() { for _ in $(seq 100); do [ -s "$1" ] && return 0; sleep 0.1; done; echo "slurm-test: $1 never appeared" >&2; return 1; }

# munge: its directories owned by the munge user, munged started as that user.
mkdir -p /run/munge /var/log/munge /var/lib/munge /etc/munge
if [ ! -s /etc/munge/munge.key ]; then
    if command -v mungekey >/dev/null; then mungekey --create --force >/dev/null 2>&1 || true; fi
    [ -s /etc/munge/munge.key ] || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null
fi
chown -R munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge
chmod 0700 /etc/munge /var/lib/munge /var/log/munge
chmod 0755 /run/munge
chmod 0400 /etc/munge/munge.key
if ! munge -n >/dev/null 2>&1; then
    rm -f /run/munge/munged.pid
    runuser -u munge -- munged --force
    wait_for_file /run/munge/munged.pid
    STARTED_PIDS+=("$(cat /run/munge/munged.pid)")
fi
munge -n | unmunge >/dev/null

HOST="$(hostname -s)"
CPUS="$(nproc)"
MEM_MB="$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 512 ))"
mkdir -p "$TMP/state" "$TMP/spool"
cat > "$TMP/slurm.conf" <<CONF
ClusterName=raellatest
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
StateSaveLocation=$TMP/state
SlurmdSpoolDir=$TMP/spool
SlurmctldPidFile=$TMP/slurmctld.pid
SlurmdPidFile=$TMP/slurmd.pid
SlurmctldLogFile=$TMP/slurmctld.log
SlurmdLogFile=$TMP/slurmd.log
SlurmctldPort=16817
SlurmdPort=16818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
JobCompType=jobcomp/none
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$TMP/slurm.conf"

slurmctld -f "$SLURM_CONF"
wait_for_file "$TMP/slurmctld.pid"
STARTED_PIDS+=("$(cat "$TMP/slurmctld.pid")")
slurmd -f "$SLURM_CONF"
wait_for_file "$TMP/slurmd.pid"
STARTED_PIDS+=("$(cat "$TMP/slurmd.pid")")
for _ in $(seq 100); do
    sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)' && break
    sleep 0.2
done
sinfo

# The sweep binary, optimised, and the sharded run as an array job. Built
# with the same package set as scripts/python-test.sh (same features, so CI
# compiles the release workspace once; see crates/raella-py/Cargo.toml).
(cd "$ROOT" && cargo build --quiet --release -p xtask -p raella-sweep -p raella-py)
BIN="$ROOT/target/release/raella-sweep"
cat > "$TMP/shard.sbatch" <<JOB
#!/bin/bash
#SBATCH --job-name=raella-sweep
#SBATCH --array=1-$SHARDS
#SBATCH --cpus-per-task=1
#SBATCH --output=$TMP/shard-%a.log
cd "$ROOT"
"$BIN" "$SPEC" --presets "$ROOT/fixtures/presets.toml" --shard "\$SLURM_ARRAY_TASK_ID/$SHARDS" --out "$TMP/shard-\$SLURM_ARRAY_TASK_ID" --no-cache
JOB
sbatch --wait "$TMP/shard.sbatch"
for k in $(seq "$SHARDS"); do
    [ -s "$TMP/shard-$k/results.csv" ] || { echo "slurm-test: shard $k produced nothing"; cat "$TMP/shard-$k.log" || true; exit 1; }
done
"$BIN" merge --presets "$ROOT/fixtures/presets.toml" --out "$TMP/merged" $(for k in $(seq "$SHARDS"); do echo "$TMP/shard-$k"; done)
"$BIN" "$SPEC" --presets "$ROOT/fixtures/presets.toml" --out "$TMP/unsharded" --no-cache
for f in results.csv results.json report.md energy.csv energy_breakdown.csv energy_layers.csv; do
    if [ -e "$TMP/unsharded/$f" ]; then
        cmp "$TMP/merged/$f" "$TMP/unsharded/$f"
    fi
done
diff -r "$TMP/merged/stats" "$TMP/unsharded/stats" >/dev/null
echo "slurm-test: the $SHARDS-task array job merged to the unsharded result"

# Image-range shards: array task t runs point shard K = (t-1) / IMAGE_SHARDS + 1
# and image shard J = (t-1) % IMAGE_SHARDS + 1; each writes part/, not results.
TASKS=$((POINT_SHARDS * IMAGE_SHARDS))
cat > "$TMP/images.sbatch" <<JOB
#!/bin/bash
#SBATCH --job-name=raella-sweep-images
#SBATCH --array=1-$TASKS
#SBATCH --cpus-per-task=1
#SBATCH --output=$TMP/images-%a.log
cd "$ROOT"
T=\$((SLURM_ARRAY_TASK_ID - 1))
K=\$((T / $IMAGE_SHARDS + 1))
J=\$((T % $IMAGE_SHARDS + 1))
"$BIN" "$IMAGES_SPEC" --presets "$ROOT/fixtures/presets.toml" --shard "\$K/$POINT_SHARDS" --images-shard "\$J/$IMAGE_SHARDS" --out "$TMP/images-\$SLURM_ARRAY_TASK_ID" --no-cache
JOB
sbatch --wait "$TMP/images.sbatch"
for t in $(seq "$TASKS"); do
    [ -s "$TMP/images-$t/part/part.json" ] || { echo "slurm-test: image task $t produced nothing"; cat "$TMP/images-$t.log" || true; exit 1; }
    [ ! -e "$TMP/images-$t/results.csv" ] || { echo "slurm-test: image task $t wrote results from a part"; exit 1; }
done
# A part missing: the merge fails and writes nothing.
if "$BIN" merge --presets "$ROOT/fixtures/presets.toml" --out "$TMP/images-incomplete" $(for t in $(seq 2 "$TASKS"); do echo "$TMP/images-$t"; done) 2>"$TMP/incomplete.err"; then
    echo "slurm-test: a merge with a part missing succeeded"; exit 1
fi
grep -q "is in none of the shard folders" "$TMP/incomplete.err"
[ ! -e "$TMP/images-incomplete" ]
"$BIN" merge --presets "$ROOT/fixtures/presets.toml" --out "$TMP/images-merged" $(for t in $(seq "$TASKS"); do echo "$TMP/images-$t"; done)
"$BIN" "$IMAGES_SPEC" --presets "$ROOT/fixtures/presets.toml" --out "$TMP/images-unsharded" --no-cache
# Every file but timings.csv (wall clock): results, report, energy, stats, plots.
diff -r -x timings.csv "$TMP/images-merged" "$TMP/images-unsharded"
echo "slurm-test: the $TASKS-task array job ($POINT_SHARDS point shards x $IMAGE_SHARDS image shards) merged to the unsharded result"
echo "slurm: 2 passed, 0 failed"
rm -rf "$TMP"
