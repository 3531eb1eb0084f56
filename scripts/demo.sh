#!/usr/bin/env bash
# What `make demo` runs: the whole of tidemark on one machine, syncing from
# cmd/demo-upstream, until Ctrl-C.
#
# 1. Redis and PostgreSQL: reuse ones already reachable at TIDEMARK_REDIS_URL /
#    TIDEMARK_DATABASE_URL; else start local ones (data under .demo/); else start
#    them with `docker compose`; else say what to install.
# 2. Build bin/tidemark and bin/demo-upstream, apply migrations (creating the
#    database), start demo-upstream and `tidemark run` with examples/demo.yaml.
# 3. Wait until every resource has synced once, print where to look, and wait.
# On exit it stops what it started and leaves reused services running.
#
# Overridable (defaults in brackets):
#   TIDEMARK_DATABASE_URL  [postgres://postgres@127.0.0.1:5432/tidemark?sslmode=disable]
#   TIDEMARK_REDIS_URL     [redis://127.0.0.1:6379/0]
#   TIDEMARK_ADDR          [127.0.0.1:8080]
#   DEMO_UPSTREAM_ADDR     [127.0.0.1:9000]   DEMO_UPSTREAM_URL [http://$DEMO_UPSTREAM_ADDR]
#   DEMO_RECORDS           [2000]             DEMO_CHANGE_RATE  [2]
#   DEMO_RATE              [0]    requests/s the demo upstream allows (0 = any); beyond: 429
#   DEMO_SYNC_WAIT         [60s]  how long `tidemark status --wait` may take
#
# shellcheck disable=SC2317 # functions called from traps and wait_until look unreachable
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
DEMO_DIR=$ROOT/.demo
mkdir -p "$DEMO_DIR"

export TIDEMARK_DATABASE_URL="${TIDEMARK_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/tidemark?sslmode=disable}"
export TIDEMARK_REDIS_URL="${TIDEMARK_REDIS_URL:-redis://127.0.0.1:6379/0}"
export TIDEMARK_ADDR="${TIDEMARK_ADDR:-127.0.0.1:8080}"
export TIDEMARK_CONFIG=examples/demo.yaml
DEMO_UPSTREAM_ADDR="${DEMO_UPSTREAM_ADDR:-127.0.0.1:9000}"
export DEMO_UPSTREAM_URL="${DEMO_UPSTREAM_URL:-http://$DEMO_UPSTREAM_ADDR}"
DEMO_RECORDS="${DEMO_RECORDS:-2000}"
DEMO_CHANGE_RATE="${DEMO_CHANGE_RATE:-2}"
DEMO_RATE="${DEMO_RATE:-0}"
DEMO_SYNC_WAIT="${DEMO_SYNC_WAIT:-60s}"

if ! command -v go >/dev/null && [[ -x /usr/local/go/bin/go ]]; then
	export PATH="/usr/local/go/bin:$PATH"
fi

log() { printf '==> %s\n' "$*"; }
fail() {
	printf 'demo: %s\n' "$*" >&2
	exit 1
}

# --- cleanup: stop only what this script started, newest first -------------

started_pids=()     # background children, in start order
started_names=()    # their names, for messages
started_logs=()     # their log files
pg_started_dir=""   # data directory of a Postgres cluster we started
compose_started=()  # docker compose services we started

stop_pid() { # stop_pid PID NAME: TERM, wait up to 15s, then KILL
	local pid=$1 name=$2 i
	kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null || return 0
	for ((i = 0; i < 150; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		printf 'demo: %s (pid %s) did not stop in 15s; killing it\n' "$name" "$pid" >&2
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
}

cleaned=0
cleanup() {
	local status=$? i
	((cleaned)) && return
	cleaned=1
	trap '' INT TERM
	if ((${#started_pids[@]} + ${#compose_started[@]})) || [[ -n $pg_started_dir ]]; then
		log "stopping what the demo started"
	fi
	for ((i = ${#started_pids[@]} - 1; i >= 0; i--)); do
		stop_pid "${started_pids[i]}" "${started_names[i]}"
	done
	if [[ -n $pg_started_dir ]]; then
		as_pg pg_ctl -D "$pg_started_dir" -m fast -w stop >/dev/null 2>&1 || true
	fi
	if ((${#compose_started[@]})); then
		compose stop "${compose_started[@]}" >/dev/null 2>&1 || true
	fi
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start_bg NAME LOGFILE COMMAND...: start COMMAND in the background, remember it.
start_bg() {
	local name=$1 logfile=$2
	shift 2
	"$@" >"$logfile" 2>&1 &
	started_pids+=("$!")
	started_names+=("$name")
	started_logs+=("$logfile")
}
last_pid() { echo "${started_pids[${#started_pids[@]} - 1]}"; }

# wait_until SECONDS DESCRIPTION COMMAND...: poll COMMAND until it succeeds;
# fails after SECONDS, or at once when COMMAND returns 99 (no point waiting).
wait_until() {
	local seconds=$1 rc
	shift 2 # the description is for the reader of the call
	local deadline=$((SECONDS + seconds))
	while true; do
		rc=0
		"$@" >/dev/null 2>&1 || rc=$?
		((rc == 0)) && return 0
		((rc != 99)) || return 1
		((SECONDS < deadline)) || return 1
		sleep 0.2
	done
}

show_log() { # show_log FILE: the end of a log, for a failure message
	[[ -f $1 ]] || return 0
	printf -- '--- last lines of %s ---\n' "${1#"$ROOT"/}" >&2
	tail -n 20 "$1" >&2
}

# --- addresses ---------------------------------------------------------------

# url_host URL / url_port URL DEFAULT / url_user URL DEFAULT: parts of a URL.
url_authority() {
	local rest=${1#*://}
	rest=${rest%%[/?#]*}
	echo "${rest##*@}"
}
url_host() {
	local a
	a=$(url_authority "$1")
	if [[ $a == \[* ]]; then
		a=${a#[}
		echo "${a%%]*}"
	else
		echo "${a%%:*}"
	fi
}
url_port() {
	local a
	a=$(url_authority "$1")
	if [[ $a == *\]:* ]]; then
		echo "${a##*]:}"
	elif [[ $a != \[* && $a == *:* ]]; then
		echo "${a##*:}"
	else
		echo "$2"
	fi
}
url_user() {
	local rest=${1#*://}
	rest=${rest%%[/?#]*}
	if [[ $rest == *@* ]]; then
		rest=${rest%@*}
		echo "${rest%%:*}"
	else
		echo "$2"
	fi
}
addr_host() { local h=${1%:*}; h=${h#[}; echo "${h%]}"; }
addr_port() { echo "${1##*:}"; }
# browse_host HOST: a host to put in a URL for a browser on this machine.
browse_host() {
	case $1 in
	"" | 0.0.0.0 | "::") echo 127.0.0.1 ;;
	*:*) echo "[$1]" ;;
	*) echo "$1" ;;
	esac
}

# tcp_open HOST PORT: whether something accepts connections there.
# shellcheck disable=SC2016 # $0 and $1 expand in the inner bash
tcp_open() { timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2" 2>/dev/null; }
is_local_host() { [[ $1 == 127.* || $1 == localhost || $1 == ::1 ]]; }

REDIS_HOST=$(url_host "$TIDEMARK_REDIS_URL")
REDIS_PORT=$(url_port "$TIDEMARK_REDIS_URL" 6379)
PG_HOST=$(url_host "$TIDEMARK_DATABASE_URL")
PG_PORT=$(url_port "$TIDEMARK_DATABASE_URL" 5432)
PG_USER=$(url_user "$TIDEMARK_DATABASE_URL" postgres)
UP_HOST=$(addr_host "$DEMO_UPSTREAM_ADDR")
UP_PORT=$(addr_port "$DEMO_UPSTREAM_ADDR")
TM_HOST=$(addr_host "$TIDEMARK_ADDR")
TM_PORT=$(addr_port "$TIDEMARK_ADDR")

# --- docker compose fallback ----------------------------------------------

have_compose() {
	command -v docker >/dev/null && docker compose version >/dev/null 2>&1 && docker info >/dev/null 2>&1
}
# compose publishes redis and postgres on the demo's ports only for the demo:
# docker-compose.yml itself publishes nothing but the server, so the full
# stack does not collide with a local Redis or Postgres.
compose() {
	docker compose -f "$ROOT/docker-compose.yml" -f "$DEMO_DIR/compose.ports.yml" "$@"
}
compose_up() { # compose_up SERVICE
	cat >"$DEMO_DIR/compose.ports.yml" <<-YAML
		# Written by scripts/demo.sh: publishes Redis and Postgres on the demo's ports.
		services:
		  redis:
		    ports: ["127.0.0.1:$REDIS_PORT:6379"]
		  postgres:
		    ports: ["127.0.0.1:$PG_PORT:5432"]
	YAML
	log "$1: starting with docker compose"
	compose up -d --wait "$1" || fail "docker compose up $1 failed"
	compose_started+=("$1")
}

no_way() { # no_way WHAT ADDRESS: nothing to run WHAT with
	cat >&2 <<-MSG
		demo: no $1 is reachable at $2, and there is neither a
		local $1 to start nor a working \`docker compose\`. Install one of:
		  apt-get install redis-server postgresql     (Debian, Ubuntu)
		  Docker with the compose plugin              (then \`make demo\` uses docker-compose.yml)
		or point TIDEMARK_REDIS_URL / TIDEMARK_DATABASE_URL at running servers.
	MSG
	exit 1
}

# --- 1a. Redis ---------------------------------------------------------------

redis_ping() ( # a subshell: the descriptor and a failed exec stay in it
	reply=""
	exec 3<>"/dev/tcp/$REDIS_HOST/$REDIS_PORT" || exit 1
	printf 'PING\r\n' >&3
	IFS= read -r -t 2 reply <&3 || true
	[[ $reply == +PONG* || $reply == -NOAUTH* ]]
)

if tcp_open "$REDIS_HOST" "$REDIS_PORT"; then
	redis_ping 2>/dev/null || fail "something listens on $REDIS_HOST:$REDIS_PORT but does not answer like Redis; set TIDEMARK_REDIS_URL"
	log "redis: reusing $REDIS_HOST:$REDIS_PORT"
elif command -v redis-server >/dev/null && is_local_host "$REDIS_HOST"; then
	log "redis: starting redis-server on $REDIS_HOST:$REDIS_PORT (data in .demo/redis)"
	mkdir -p "$DEMO_DIR/redis"
	start_bg redis-server "$DEMO_DIR/redis.log" redis-server --bind "$REDIS_HOST" --port "$REDIS_PORT" \
		--dir "$DEMO_DIR/redis" --save "" --appendonly no --maxmemory-policy noeviction
	if ! wait_until 20 redis redis_ping; then
		show_log "$DEMO_DIR/redis.log"
		fail "redis-server did not start on $REDIS_HOST:$REDIS_PORT"
	fi
elif have_compose && is_local_host "$REDIS_HOST"; then
	compose_up redis
else
	no_way Redis "$REDIS_HOST:$REDIS_PORT"
fi

# --- 1b. PostgreSQL ----------------------------------------------------------

pg_ready() {
	if command -v pg_isready >/dev/null; then
		pg_isready -q -h "$PG_HOST" -p "$PG_PORT"
	else
		tcp_open "$PG_HOST" "$PG_PORT"
	fi
}

PG_BIN=""
if compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
	PG_BIN=$(dirname "$(printf '%s\n' /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n 1)")
elif command -v initdb >/dev/null && command -v pg_ctl >/dev/null; then
	PG_BIN=$(dirname "$(command -v initdb)")
fi

# as_pg runs a Postgres server binary: it refuses to run as root, so as root it
# runs as the postgres user (from /, which that user can always enter).
as_pg() {
	local cmd=$1
	shift
	if [[ $EUID -eq 0 ]]; then
		(cd / && runuser -u postgres -- "$PG_BIN/$cmd" "$@")
	else
		"$PG_BIN/$cmd" "$@"
	fi
}

start_local_postgres() {
	local pgroot=$DEMO_DIR/pg
	if [[ $EUID -eq 0 ]]; then
		id postgres >/dev/null 2>&1 || fail "running as root and there is no postgres user to run PostgreSQL as"
		mkdir -p "$pgroot"
		chown postgres: "$pgroot"
		# The postgres user must reach the directory (a checkout under /root
		# is closed to it); else keep the cluster where it can.
		if ! runuser -u postgres -- test -w "$pgroot"; then
			pgroot=${TMPDIR:-/tmp}/tidemark-demo-pg-$PG_PORT
			mkdir -p "$pgroot"
			chown postgres: "$pgroot"
			chmod 700 "$pgroot"
		fi
	else
		mkdir -p "$pgroot"
	fi
	local data=$pgroot/data
	if [[ ! -f $data/PG_VERSION ]]; then
		log "postgres: initdb in ${data#"$ROOT"/} (trust auth, user $PG_USER)"
		as_pg initdb -D "$data" -U "$PG_USER" --auth=trust -E UTF8 --no-sync >"$DEMO_DIR/initdb.log" 2>&1 ||
			{ show_log "$DEMO_DIR/initdb.log"; fail "initdb failed"; }
	fi
	log "postgres: starting on $PG_HOST:$PG_PORT"
	# TCP only: the default socket directory may not exist or be writable.
	if ! as_pg pg_ctl -D "$data" -l "$pgroot/postgres.log" -w -t 30 \
		-o "-p $PG_PORT -c listen_addresses=$PG_HOST -c unix_socket_directories=''" start >/dev/null; then
		cp "$pgroot/postgres.log" "$DEMO_DIR/postgres.log" 2>/dev/null || true
		show_log "$DEMO_DIR/postgres.log"
		fail "PostgreSQL did not start on $PG_HOST:$PG_PORT"
	fi
	pg_started_dir=$data
	wait_until 20 postgres pg_ready || fail "PostgreSQL started but does not accept connections on $PG_HOST:$PG_PORT"
	if [[ $pgroot != "$DEMO_DIR/pg" ]]; then
		log "postgres: log in $pgroot/postgres.log"
	fi
}

if pg_ready; then
	log "postgres: reusing $PG_HOST:$PG_PORT"
elif [[ -n $PG_BIN ]] && is_local_host "$PG_HOST"; then
	start_local_postgres
elif have_compose && is_local_host "$PG_HOST"; then
	compose_up postgres
else
	no_way PostgreSQL "$PG_HOST:$PG_PORT"
fi

# --- 2. build, migrate, start ------------------------------------------------

command -v go >/dev/null || fail "go is not installed (Go 1.26: https://go.dev/dl/)"
log "building bin/tidemark and bin/demo-upstream"
go build -trimpath -o bin/ ./cmd/tidemark ./cmd/demo-upstream

log "migrating $(url_authority "$TIDEMARK_DATABASE_URL")"
bin/tidemark migrate --create-db

port_free() { # port_free HOST PORT VARIABLE
	local h
	h=$(browse_host "$1")
	h=${h#[}
	h=${h%]}
	if tcp_open "$h" "$2"; then
		fail "port $2 is taken on $h; set $3 to a free address"
	fi
}
port_free "$UP_HOST" "$UP_PORT" DEMO_UPSTREAM_ADDR
port_free "$TM_HOST" "$TM_PORT" TIDEMARK_ADDR

log "starting demo-upstream on $DEMO_UPSTREAM_ADDR ($DEMO_RECORDS records per resource, $DEMO_CHANGE_RATE changes/s)"
start_bg demo-upstream "$DEMO_DIR/demo-upstream.log" bin/demo-upstream --addr "$DEMO_UPSTREAM_ADDR" \
	--records "$DEMO_RECORDS" --change-rate "$DEMO_CHANGE_RATE" --rate "$DEMO_RATE"
up_pid=$(last_pid)
upstream_ready() {
	kill -0 "$up_pid" 2>/dev/null || return 99
	grep -q 'demo-upstream listening on' "$DEMO_DIR/demo-upstream.log"
}
if ! wait_until 30 demo-upstream upstream_ready; then
	show_log "$DEMO_DIR/demo-upstream.log"
	fail "demo-upstream did not start"
fi

log "starting tidemark run (config $TIDEMARK_CONFIG, server on $TIDEMARK_ADDR)"
start_bg tidemark "$DEMO_DIR/tidemark.log" bin/tidemark run
tm_pid=$(last_pid)

# --- 3. wait for the first sync, then show where to look --------------------

resources=$(awk '
	/^[[:space:]]*-[[:space:]]+name:/ {
		n = match($0, /[^[:space:]]/)
		if (min == "" || n < min) { min = n }
		indent[++count] = n
	}
	END { r = 0; for (i = 1; i <= count; i++) if (indent[i] > min) r++; print r }
' "$TIDEMARK_CONFIG")

log "waiting up to $DEMO_SYNC_WAIT for every resource to sync once"
t0=$(date +%s.%N)
if ! bin/tidemark status --wait "$DEMO_SYNC_WAIT"; then
	show_log "$DEMO_DIR/tidemark.log"
	fail "not every resource synced within $DEMO_SYNC_WAIT (see .demo/tidemark.log)"
fi
t1=$(date +%s.%N)
elapsed=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
echo
if [[ $resources == 1 ]]; then
	log "the resource synced in ${elapsed}s"
else
	log "all $resources resources synced in ${elapsed}s"
fi

# The commands to paste into another shell carry the settings that differ
# from tidemark's defaults.
env_prefix="TIDEMARK_CONFIG=$TIDEMARK_CONFIG"
[[ $TIDEMARK_DATABASE_URL == "postgres://postgres@127.0.0.1:5432/tidemark?sslmode=disable" ]] ||
	env_prefix+=" TIDEMARK_DATABASE_URL='$TIDEMARK_DATABASE_URL'"
[[ $TIDEMARK_REDIS_URL == "redis://127.0.0.1:6379/0" ]] ||
	env_prefix+=" TIDEMARK_REDIS_URL='$TIDEMARK_REDIS_URL'"

web="http://$(browse_host "$TM_HOST"):$TM_PORT"
upstream="http://$(browse_host "$UP_HOST"):$UP_PORT"
cat <<EOF

tidemark is running against the demo upstream. Where to look:

  dashboard       $web/   (click a resource for its page)
  queues          $web/monitoring/
  resources       $web/api/resources
  runs            $web/api/runs
  health          $web/healthz  $web/readyz
  upstream stats  $upstream/_stats
  break it        curl -X POST $upstream/_faults -d '{"mode":"error_500","resource":"transactions"}'
                  (docs/demo-upstream.md lists the modes; curl -X DELETE $upstream/_faults mends it)
  logs            .demo/tidemark.log  .demo/demo-upstream.log

  $env_prefix bin/tidemark status
  $env_prefix bin/tidemark runs

Ctrl-C stops what the demo started (reused Redis/Postgres keep running).
EOF

# Wait for Ctrl-C; a child that exits by itself ends the demo.
set +e
wait -n "$up_pid" "$tm_pid"
code=$?
set -e
for i in "${!started_pids[@]}"; do
	if ! kill -0 "${started_pids[i]}" 2>/dev/null; then
		printf 'demo: %s exited (status %s)\n' "${started_names[i]}" "$code" >&2
		show_log "${started_logs[i]}"
		break
	fi
done
exit 1
