# shellcheck shell=bash
# scripts/lib/services.sh — the real services warden's tests run against.
#
# Sourced by scripts/test. Installs what is missing (Debian packages, the tansu
# broker), starts redis-server and tansu on free loopback ports in a private
# temp dir, and stops them again. Nothing listens on anything but 127.0.0.1,
# and nothing is left running: stop_services is meant for an EXIT trap.
#
# Variables it sets (read by scripts/test):
#   SERVICES_DIR   temp dir holding data and logs of this run
#   REDIS_PORT REDIS_PID REDIS_LOG
#   TANSU_PORT TANSU_PID TANSU_LOG TANSU_BIN

WARDEN_CACHE="${WARDEN_CACHE:-$HOME/.cache/warden}"
TANSU_VERSION="0.6.0"
TANSU_FEATURES="dynostore,libsql"
TANSU_ROOT="$WARDEN_CACHE/tansu"
TANSU_BIN="$TANSU_ROOT/bin/tansu"
TANSU_INSTALL_LOG="$WARDEN_CACHE/tansu.log"
# sqlite (libsql), a file in the run's temp dir, not memory://: tansu 0.6.0's
# memory/object-store engine answers ListOffsets(latest) with the base offset of
# the newest *batch* + 1, so high watermarks are wrong as soon as a producer
# batches (4 instead of 500 in tests/broker_smoke.rs). sqlite answers per record.
# The path is relative to tansu's cwd (the run's tansu dir).
TANSU_STORAGE="${WARDEN_TEST_TANSU_STORAGE:-sqlite://tansu.db}"

APT_PACKAGES=(redis-server prometheus openssl cmake pkg-config libssl-dev zlib1g-dev libzstd-dev libcurl4-openssl-dev)
REQUIRED_COMMANDS=(redis-server redis-cli prometheus openssl cmake pkg-config python3)

SERVICES_DIR=""
REDIS_PID=""
TANSU_PID=""

say() { printf '[scripts/test] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# Runs a command as root: directly when we are root, else through sudo without a prompt.
as_root() {
  if [[ $(id -u) -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo -n "$@"
  else
    die "need root (or passwordless sudo) to run: $*"
  fi
}

package_installed() {
  [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]
}

# apt-get only when something is missing: a warm machine never touches the network.
ensure_apt_packages() {
  local missing=() pkg cmd
  for pkg in "${APT_PACKAGES[@]}"; do
    package_installed "$pkg" || missing+=("$pkg")
  done
  for cmd in "${REQUIRED_COMMANDS[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("(command $cmd)")
  done
  if [[ ${#missing[@]} -eq 0 ]]; then
    return 0
  fi
  command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get to install them"
  say "installing Debian packages (missing: ${missing[*]})"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -q
  as_root apt-get install -y -q --no-install-recommends "${APT_PACKAGES[@]}" python3
  for cmd in "${REQUIRED_COMMANDS[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || die "$cmd still missing after apt-get install"
  done
}

# True while some process is running `cargo install tansu` (e.g. a provisioning
# step started before us). We wait for it rather than compile tansu twice.
foreign_tansu_install_running() {
  pgrep -f -- 'cargo install tansu' >/dev/null 2>&1
}

# Installs tansu into $TANSU_ROOT once. Concurrent scripts/test runs serialise on
# a lock file; an install started by someone else is waited for.
ensure_tansu() {
  if [[ -x "$TANSU_BIN" ]]; then
    return 0
  fi
  mkdir -p "$WARDEN_CACHE"
  if foreign_tansu_install_running; then
    say "tansu is being installed by another process (log: $TANSU_INSTALL_LOG); waiting for it"
    while foreign_tansu_install_running && [[ ! -x "$TANSU_BIN" ]]; do
      sleep 10
    done
  fi
  if [[ -x "$TANSU_BIN" ]]; then
    return 0
  fi
  exec 9>"$WARDEN_CACHE/tansu.lock"
  say "waiting for the tansu install lock ($WARDEN_CACHE/tansu.lock)"
  flock 9
  if [[ ! -x "$TANSU_BIN" ]]; then
    say "installing tansu $TANSU_VERSION into $TANSU_ROOT (takes a while on a cold machine; log: $TANSU_INSTALL_LOG)"
    # A temp target dir of its own: tansu's build must not share warden's
    # CARGO_TARGET_DIR (locks, disk) and cargo removes it after a success.
    if ! env -u CARGO_TARGET_DIR -u CARGO_BUILD_TARGET_DIR \
      cargo install tansu --locked --version "$TANSU_VERSION" \
      --features "$TANSU_FEATURES" --root "$TANSU_ROOT" >>"$TANSU_INSTALL_LOG" 2>&1; then
      tail -n 50 "$TANSU_INSTALL_LOG" >&2 || true
      die "cargo install tansu failed (log: $TANSU_INSTALL_LOG)"
    fi
  fi
  flock -u 9
  exec 9>&-
  [[ -x "$TANSU_BIN" ]] || die "tansu not found at $TANSU_BIN after install"
}

# Prints a port nobody listens on right now. The kernel picks it (bind to 0), so
# parallel runs do not collide; a start-up that still loses the race retries.
free_port() {
  python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

pid_alive() {
  [[ -n "$1" ]] && kill -0 "$1" 2>/dev/null
}

start_redis() {
  local attempt
  mkdir -p "$SERVICES_DIR/redis"
  REDIS_LOG="$SERVICES_DIR/redis.log"
  for attempt in 1 2 3; do
    REDIS_PORT=$(free_port)
    say "starting redis-server on 127.0.0.1:$REDIS_PORT (data: $SERVICES_DIR/redis, log: $REDIS_LOG)"
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 \
      --appendonly yes --appendfsync always --dir "$SERVICES_DIR/redis" \
      --save '' --daemonize no >>"$REDIS_LOG" 2>&1 &
    REDIS_PID=$!
    if wait_for_redis 30; then
      return 0
    fi
    say "redis-server did not come up (attempt $attempt)"
    stop_pid "$REDIS_PID" redis-server
    REDIS_PID=""
  done
  return 1
}

wait_for_redis() {
  local deadline=$((SECONDS + $1))
  while ((SECONDS < deadline)); do
    pid_alive "$REDIS_PID" || return 1
    if [[ $(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]; then
      return 0
    fi
    sleep 0.2
  done
  return 1
}

start_tansu() {
  local attempt url
  mkdir -p "$SERVICES_DIR/tansu"
  TANSU_LOG="$SERVICES_DIR/tansu.log"
  for attempt in 1 2 3; do
    TANSU_PORT=$(free_port)
    url="tcp://127.0.0.1:$TANSU_PORT"
    say "starting tansu broker on $url (storage: $TANSU_STORAGE in $SERVICES_DIR/tansu, log: $TANSU_LOG)"
    # cwd is the private dir: tansu reads a .env file from its cwd. Flags win over
    # the CLUSTER_ID/LISTENER_URL/... variables tansu also reads; the optional
    # ones (schema registry, OTLP export) must not leak in from our environment.
    (
      cd "$SERVICES_DIR/tansu" &&
        exec env -u SCHEMA_REGISTRY -u OTEL_EXPORTER_OTLP_ENDPOINT "$TANSU_BIN" broker \
          --cluster-id warden-test \
          --listener-url "$url" \
          --advertised-listener-url "$url" \
          --storage-engine "$TANSU_STORAGE"
    ) >>"$TANSU_LOG" 2>&1 &
    TANSU_PID=$!
    if wait_for_tansu 60; then
      return 0
    fi
    say "tansu did not come up (attempt $attempt)"
    stop_pid "$TANSU_PID" tansu
    TANSU_PID=""
  done
  return 1
}

# Up = the port accepts connections and the broker answers a metadata request
# (`tansu topic list` speaks the Kafka protocol to it).
wait_for_tansu() {
  local deadline=$((SECONDS + $1))
  while ((SECONDS < deadline)); do
    pid_alive "$TANSU_PID" || return 1
    if port_open "$TANSU_PORT" &&
      timeout 10 "$TANSU_BIN" topic list --broker "tcp://127.0.0.1:$TANSU_PORT" >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.3
  done
  return 1
}

# stop_pid PID NAME [SECONDS]: SIGTERM, SECONDS of grace (5), then SIGKILL. Only ever
# the pid we started.
stop_pid() {
  local pid=$1 name=$2 seconds=${3:-5} i
  pid_alive "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < seconds * 10; i++)); do
    pid_alive "$pid" || break
    sleep 0.1
  done
  if pid_alive "$pid"; then
    say "$name (pid $pid) ignored SIGTERM; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

print_log_tail() {
  local name=$1 file=$2
  if [[ -f "$file" ]]; then
    say "---- last 50 lines of $name log ($file) ----"
    tail -n 50 "$file" >&2 || true
    say "---- end of $name log ----"
  fi
}

start_services() {
  SERVICES_DIR=$(mktemp -d "${TMPDIR:-/tmp}/warden-test.XXXXXX")
  say "service data and logs: $SERVICES_DIR"
  start_redis || return 1
  start_tansu || return 1
  export WARDEN_TEST_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/"
  export WARDEN_TEST_BROKERS="127.0.0.1:$TANSU_PORT"
  export WARDEN_TEST_TANSU_BIN="$TANSU_BIN"
  WARDEN_TEST_REDIS_SERVER_BIN=$(command -v redis-server)
  export WARDEN_TEST_REDIS_SERVER_BIN
}

print_exports() {
  printf 'export WARDEN_TEST_REDIS_URL=%q\n' "$WARDEN_TEST_REDIS_URL"
  printf 'export WARDEN_TEST_BROKERS=%q\n' "$WARDEN_TEST_BROKERS"
  printf 'export WARDEN_TEST_TANSU_BIN=%q\n' "$WARDEN_TEST_TANSU_BIN"
  printf 'export WARDEN_TEST_REDIS_SERVER_BIN=%q\n' "$WARDEN_TEST_REDIS_SERVER_BIN"
}

# For the EXIT trap. $1 = whether to show the service logs (after a failure).
stop_services() {
  local show_logs=${1:-false}
  if [[ "$show_logs" == true && -n "$SERVICES_DIR" ]]; then
    print_log_tail redis-server "${REDIS_LOG:-}"
    print_log_tail tansu "${TANSU_LOG:-}"
  fi
  stop_pid "$TANSU_PID" tansu
  TANSU_PID=""
  stop_pid "$REDIS_PID" redis-server
  REDIS_PID=""
  if [[ -n "$SERVICES_DIR" && -d "$SERVICES_DIR" ]]; then
    rm -rf -- "$SERVICES_DIR"
    SERVICES_DIR=""
  fi
}
