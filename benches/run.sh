#!/usr/bin/env bash
# tfwire throughput benchmark (issue 7). One command:
#
#   benches/run.sh                 # both profiles
#   benches/run.sh small           # one profile (large or small)
#   benches/run.sh --help          # this text
#
# Builds tfwire and the bench tools (benches/tools) in release mode, generates
# the captures from the fixtures' real traffic into bench-data/ if they are
# missing, then measures on each profile, in the same run:
#   raw-read floor  pcap-parser iterating the file, xor-folding every packet
#   tfwire -j1      tfwire analyze --format jsonl --threads 1 FILE > /dev/null
#   tfwire -jN      the same with N threads (THREADS, default 2), whose output
#                   must be byte-identical to -j1 (checked, by SHA-256)
#   tshark          tshark -r FILE -d tcp.port==8500,http2 -Y grpc -T fields -e grpc.status
# and prints a Markdown table (also written to bench-data/results.md).
# Wall time is the best of RUNS rounds (floor, -j1, -jN in turn each round);
# peak RSS is /usr/bin/time's maximum resident set size. tshark runs once.
#
# Environment:
#   LARGE_MB=1024        size of the large-tensor capture (MiB)
#   SMALL_PACKETS=5000000  packets in the small-request capture
#   FAIL_PERCENT=5       calls of the small-request capture answered
#                        INVALID_ARGUMENT (e.g. 50 for an incident's capture)
#   MSS=1448             TCP segment size of the generated captures
#   RUNS=3               timed rounds (best is reported per tool)
#   THREADS=2            threads of the parallel run
#   TSHARK=1             0 skips tshark (otherwise installed with apt-get if missing)
#   QUIET_LOAD=          e.g. 0.5: wait (up to 10 min) for the 1-minute load
#                        average to drop below this before measuring
#   NICE=                e.g. -10 (root): run the measured commands at this
#                        niceness, for a shared machine
#   BENCH_DATA=bench-data, CARGO_TARGET_DIR=target
# CI (.ci/run) runs a tiny version: LARGE_MB=8 SMALL_PACKETS=20000 RUNS=1 TSHARK=0.
set -euo pipefail

# Arguments first: help or a mistyped profile must not wait for apt-get and a
# release build.
for arg in "$@"; do
    case $arg in
    -h | --help)
        # The header comment above, without its '# '.
        awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
        exit 0 ;;
    large | small) ;;
    *)
        echo "bench: unknown profile '$arg' (profiles: large, small; --help for usage)" >&2
        exit 2 ;;
    esac
done

cd "$(dirname "$0")/.."
ROOT=$PWD

LARGE_MB=${LARGE_MB:-1024}
SMALL_PACKETS=${SMALL_PACKETS:-5000000}
FAIL_PERCENT=${FAIL_PERCENT:-5}
MSS=${MSS:-1448}
RUNS=${RUNS:-3}
THREADS=${THREADS:-2}
TSHARK=${TSHARK:-1}
DATA=${BENCH_DATA:-$ROOT/bench-data}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$CARGO_TARGET_DIR/release
PROFILES=("$@")
[ ${#PROFILES[@]} -gt 0 ] || PROFILES=(large small)

say() { echo "bench: $*" >&2; }

apt_install() {
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        say "installing $*"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null ||
            { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null; }
    else
        say "please install: $*"
        return 1
    fi
}

[ -x /usr/bin/time ] || apt_install time
if [ "$TSHARK" = 1 ] && ! command -v tshark >/dev/null; then
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections 2>/dev/null || true
    apt_install tshark || TSHARK=0
fi

say "building (release) into $CARGO_TARGET_DIR"
cargo build --release --quiet --bin tfwire
cargo build --release --quiet --manifest-path benches/tools/Cargo.toml

mkdir -p "$DATA"
capture_of() {
    case $1 in
    large) echo "$DATA/large-${LARGE_MB}MiB-mss${MSS}.pcap" ;;
    small) echo "$DATA/small-${SMALL_PACKETS}p-mss${MSS}$([ "$FAIL_PERCENT" = 5 ] || echo "-fail$FAIL_PERCENT").pcap" ;;
    *) say "unknown profile $1 (large, small)"; exit 2 ;;
    esac
}
for p in "${PROFILES[@]}"; do
    f=$(capture_of "$p")
    if [ ! -s "$f" ] || [ ! -s "$f.expect.json" ]; then
        say "generating $f"
        case $p in
        large) "$BIN/gen_captures" --profile large --size-mb "$LARGE_MB" --mss "$MSS" --out "$f" >/dev/null ;;
        small) "$BIN/gen_captures" --profile small --packets "$SMALL_PACKETS" --mss "$MSS" \
            --fail-percent "$FAIL_PERCENT" --out "$f" >/dev/null ;;
        esac
    fi
done

if [ -n "${QUIET_LOAD:-}" ]; then
    for _ in $(seq 120); do
        awk -v q="$QUIET_LOAD" '{ exit !($1 < q) }' /proc/loadavg && break
        sleep 5
    done
fi

json_num() { grep -o "\"$1\": *[0-9]*" | head -n1 | grep -o '[0-9]*$'; }

NICE_CMD=()
[ -n "${NICE:-}" ] && NICE_CMD=(nice -n "$NICE")

# measure OUT CMD...: runs CMD with stdout to OUT; prints
# "wall_seconds peak_rss_kb exit cpu_seconds".
measure() {
    local out=$1 tf rc t0 t1
    shift
    tf=$(mktemp)
    t0=$(date +%s%N)
    set +e
    "${NICE_CMD[@]}" /usr/bin/time -f '%M %U %S' -o "$tf" "$@" >"$out"
    rc=$?
    set -e
    t1=$(date +%s%N)
    read -r rss user sys < <(tail -n1 "$tf")
    echo "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }') $rss $rc $(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.2f", u + s }')"
    rm -f "$tf"
}

# timed_rounds FILE: RUNS rounds of floor, tfwire -j1, tfwire -jN, one after
# the other, so that the three see the same machine (a VM's speed drifts over
# minutes; ratios of rows are what the targets compare). Sets BEST_W/C/R
# (best wall time, its CPU time, highest RSS) keyed floor, one, many.
declare -A BEST_W BEST_C BEST_R
timed_rounds() {
    local f=$1 i t w r rc c
    BEST_W=() BEST_C=() BEST_R=()
    for i in $(seq "$RUNS"); do
        for t in floor one many; do
            case $t in
            floor) set -- "$BIN/raw_read" "$f" ;;
            one) set -- "$BIN/tfwire" analyze --format jsonl --threads 1 "$f" ;;
            many) set -- "$BIN/tfwire" analyze --format jsonl --threads "$THREADS" "$f" ;;
            esac
            read -r w r rc c < <(measure /dev/null "$@")
            case $rc in 0 | 1) ;; *) say "$* exited $rc"; exit 1 ;; esac
            if [ -z "${BEST_W[$t]:-}" ] || awk -v a="$w" -v b="${BEST_W[$t]}" 'BEGIN { exit !(a < b) }'; then
                BEST_W[$t]=$w
                BEST_C[$t]=$c
            fi
            if [ "$r" -gt "${BEST_R[$t]:-0}" ]; then
                BEST_R[$t]=$r
            fi
        done
    done
}

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
REV=$(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- src 2>/dev/null || echo '+dirty')
TSHARK_FIELD=grpc.status
if [ "$TSHARK" = 1 ] && ! tshark -G fields 2>/dev/null | awk -F'\t' '$3 == "grpc.status" { f = 1 } END { exit !f }'; then
    # Wireshark < 4.2 has no grpc.status; grpc.message_length makes it do the same dissection.
    TSHARK_FIELD=grpc.message_length
fi

ROWS=()
CHECKS=()
MBS=0
row() { # profile tool wall rss size packets floor_mbs note cpu; sets MBS
    local pps pct
    MBS=$(awk -v s="$5" -v w="$3" 'BEGIN { printf "%.0f", s / 1e6 / w }')
    pps=$(awk -v p="$6" -v w="$3" 'BEGIN { printf "%.2f", p / 1e6 / w }')
    pct=$(awk -v m="$MBS" -v f="$7" 'BEGIN { if (f > 0) printf "%.0f%%", 100 * m / f; else print "100%" }')
    ROWS+=("| $1 | $2 | $3 | $9 | $MBS | $pps | $(awk -v r="$4" 'BEGIN { printf "%.0f", r / 1024 }') | $pct | $8 |")
}

for p in "${PROFILES[@]}"; do
    f=$(capture_of "$p")
    size=$(stat -c %s "$f")
    packets=$(json_num packets <"$f.expect.json")
    expect=$(json_num exchanges <"$f.expect.json")
    say "$p: $f ($((size >> 20)) MiB, $packets packets, $expect exchanges)"

    # Warm-up and checks: the page cache holds the file; tfwire finds every
    # exchange; the parallel output is the single-threaded output, byte for byte.
    cat "$f" >/dev/null
    got=$("$BIN/tfwire" analyze --format jsonl --threads 1 "$f" | tail -n1 | json_num exchanges || true)
    [ "$got" = "$expect" ] || { say "$p: tfwire found ${got:-?} exchanges, the generator wrote $expect"; exit 1; }
    sum1=$("$BIN/tfwire" analyze --format jsonl --threads 1 "$f" | sha256sum | cut -c1-16 || true)
    sumn=$("$BIN/tfwire" analyze --format jsonl --threads "$THREADS" "$f" | sha256sum | cut -c1-16 || true)
    [ "$sum1" = "$sumn" ] || { say "$p: -j$THREADS output differs from -j1 ($sumn vs $sum1)"; exit 1; }

    timed_rounds "$f"
    w=${BEST_W[floor]} r=${BEST_R[floor]} c=${BEST_C[floor]}
    row "$p" "raw-read floor (pcap-parser)" "$w" "$r" "$size" "$packets" 0 "" "$c"
    floor=$MBS
    w=${BEST_W[one]} r=${BEST_R[one]} c=${BEST_C[one]}
    row "$p" "**tfwire analyze --format jsonl -j1**" "$w" "$r" "$size" "$packets" "$floor" "$expect exchanges" "$c"
    mbs=$MBS
    pps=$(awk -v p="$packets" -v w="$w" 'BEGIN { printf "%.2f", p / 1e6 / w }')
    rss=$((r / 1024))
    w1=$w
    w=${BEST_W[many]} r=${BEST_R[many]} c=${BEST_C[many]}
    scale=$(awk -v a="$w1" -v b="$w" 'BEGIN { printf "%.2f", a / b }')
    row "$p" "**tfwire analyze --format jsonl -j$THREADS**" "$w" "$r" "$size" "$packets" "$floor" "same output as -j1 (sha256 $sum1), ${scale}× -j1" "$c"
    rssn=$((r / 1024))
    case $p in
    large) ok=$(awk -v m="$mbs" -v f="$floor" 'BEGIN { print (m >= f / 2) ? "met" : "NOT met" }')
        CHECKS+=("- large: tfwire $mbs MB/s vs floor $floor MB/s (target ≥ 50%): $ok") ;;
    small) ok=$(awk -v p="$pps" 'BEGIN { print (p >= 1.5) ? "met" : "NOT met" }')
        CHECKS+=("- small: tfwire $pps M packets/s (target ≥ 1.5 M/s): $ok") ;;
    esac
    CHECKS+=("- $p: tfwire peak RSS $rss MB with -j1, $rssn MB with -j$THREADS (target ≤ 100 MB): $([ "$rss" -le 100 ] && [ "$rssn" -le 100 ] && echo met || echo 'NOT met')")
    CHECKS+=("- $p: -j$THREADS runs ${scale}× as fast as -j1 with identical output (target ≥ 1.7× on 2 cores): $(awk -v s="$scale" 'BEGIN { print (s >= 1.7) ? "met" : "NOT met" }')")

    if [ "$TSHARK" = 1 ]; then
        tout=$(mktemp)
        read -r w r rc c < <(measure "$tout" tshark -r "$f" -d tcp.port==8500,http2 -Y grpc -T fields -e "$TSHARK_FIELD" 2> >(grep -v '^Running as user' >&2))
        n=$(tr ',' '\n' <"$tout" | grep -c . || true)
        rm -f "$tout"
        what="$n ${TSHARK_FIELD#grpc.} values"
        [ "$rc" = 0 ] || what="$what, exit $rc"
        row "$p" "tshark -Y grpc -e $TSHARK_FIELD" "$w" "$r" "$size" "$packets" "$floor" "$what" "$c"
    fi
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

{
    echo "$(nproc) cores ($CPU), tfwire $REV, $(date -u +%Y-%m-%d); load average $LOAD_START at start, $LOAD_END at end."
    echo "Captures: \`benches/run.sh\` (LARGE_MB=$LARGE_MB, SMALL_PACKETS=$SMALL_PACKETS, FAIL_PERCENT=$FAIL_PERCENT, MSS=$MSS${NICE:+, NICE=$NICE}); best of $RUNS interleaved rounds (floor, -j1, -j$THREADS in turn; tshark: 1), files in the page cache; MB/s and packets/s from wall time."
    echo
    echo "| profile | tool | wall s | CPU s | MB/s | M packets/s | peak RSS MB | of floor | found |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---|"
    printf '%s\n' "${ROWS[@]}"
    echo
    printf '%s\n' "${CHECKS[@]}"
} | tee "$DATA/results.md"
