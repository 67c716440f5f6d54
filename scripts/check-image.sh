#!/usr/bin/env bash
# Check the image without a container engine: what CI runs in place of `docker build`.
#
#   bash scripts/check-image.sh                 # the whole check (a few minutes, most of it pip)
#   bash scripts/check-image.sh --tree-only     # only the Dockerfile's file tree (a second)
#   options: --dockerfile FILE (default: ./Dockerfile), --keep (leave the temp folder)
#
# 1. Reproduces the image's file tree from the Dockerfile's COPY lines (WORKDIR, .dockerignore
#    and Docker's COPY semantics; ADD, COPY --from and other stages are refused), then checks
#    that it holds every package pyproject.toml declares, with every file git tracks in them.
# 2. Creates a fresh venv with the Python of the FROM line and installs as the Dockerfile does:
#    torch==$TORCH_VERSION first (refused if pip would download it rather than take the wheel
#    on this machine's disk), the [project] dependencies, then the copied tree with
#    `pip install --no-deps .` (NOT editable). Stops if the Dockerfile installs differently.
# 3. Outside the checkout (every package must import from the venv's site-packages): runs
#    `thrifty-nas --version`, `thrifty-nas migrate` on a new, empty PostgreSQL database,
#    `thrifty-nas keys create alice`, then the API (the image's CMD) and one `thrifty-nas worker`
#    on a Redis database of its own, registers a SYNTHETIC phantom dataset, runs a tiny search
#    through the CLI and downloads its genotype.
# Prints "check-image: PASS ..." or "check-image: FAIL: ..."; exits non-zero on any failure.
# Everything it started is stopped on exit; the database is dropped and the Redis database flushed.
#
# Environment: THRIFTY_TEST_PG_HOST/PORT/USER (127.0.0.1, 5432, postgres; trust auth),
# THRIFTY_TEST_REDIS_HOST/PORT (127.0.0.1, 6379), CHECK_IMAGE_PYTHON (default: pythonX.Y of FROM),
# CHECK_IMAGE_ALLOW_TORCH_DOWNLOAD=1 to let pip fetch torch from an index.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DOCKERFILE="$ROOT/Dockerfile"
TREE_ONLY=0
KEEP=0
while [ $# -gt 0 ]; do
    case "$1" in
        --dockerfile) DOCKERFILE="$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"; shift 2 ;;
        --tree-only) TREE_ONLY=1; shift ;;
        --keep) KEEP=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "check-image: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

PG_HOST="${THRIFTY_TEST_PG_HOST:-127.0.0.1}"
PG_PORT="${THRIFTY_TEST_PG_PORT:-5432}"
PG_USER="${THRIFTY_TEST_PG_USER:-postgres}"
REDIS_HOST="${THRIFTY_TEST_REDIS_HOST:-127.0.0.1}"
REDIS_PORT="${THRIFTY_TEST_REDIS_PORT:-6379}"
REDIS_DBS=(9 11 12 13 14 15 1 2 3 4 5 6 7 8)   # as tests/integration/conftest.py: never 0 or 10
CLAIM_KEY="thrifty-integration-claim"          # the same claim, so test sessions and this check share

STARTED_AT=$SECONDS
STEP="start"
WORK=""
DB_NAME=""
REDIS_DB=""
CLAIM_TOKEN=""
PIDS=()          # process-group leaders we started (setsid), stopped on exit
PASSED=0

log() { echo "check-image: [$((SECONDS - STARTED_AT))s] $*" >&2; }
fail() { echo "check-image: FAIL: $STEP: $*" >&2; exit 1; }
step() { STEP="$1"; log "$1"; }

# -- cleanup ------------------------------------------------------------------------------------

descendants() {  # the pids below $1 (by parent id), deepest last
    local child
    for child in $(pgrep -P "$1" 2>/dev/null || true); do
        echo "$child"
        descendants "$child"
    done
}

stop_all() {  # SIGTERM every group we started (and the children that left it), wait, then SIGKILL
    [ "${#PIDS[@]}" -gt 0 ] || return 0
    local leader pid pids="" started=$SECONDS killed=0
    for leader in "${PIDS[@]}"; do pids="$pids $leader $(descendants "$leader" | tr '\n' ' ')"; done
    for leader in "${PIDS[@]}"; do kill -TERM -- "-$leader" 2>/dev/null || true; done
    for _ in $(seq 1 60); do
        local alive=0
        for pid in $pids; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.5
    done
    for pid in $pids; do
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null && killed=$((killed + 1))
    done
    wait 2>/dev/null || true
    log "stopped the API and the worker ($(wc -w <<<"$pids") processes) in $((SECONDS - started))s" \
        "$([ "$killed" = 0 ] || echo "; $killed did not stop on SIGTERM within 30s: SIGKILL")"
}

cleanup() {
    local rc=$?
    set +e
    stop_all
    if [ -n "$DB_NAME" ]; then
        psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres -qAt \
            -c "DROP DATABASE IF EXISTS \"$DB_NAME\" WITH (FORCE)" >/dev/null 2>&1 \
            && log "dropped the database $DB_NAME"
    fi
    if [ -n "$REDIS_DB" ] && [ "$(rcli GET "$CLAIM_KEY")" = "$CLAIM_TOKEN" ]; then
        rcli FLUSHDB >/dev/null  # also drops the claim
    fi
    if [ "$rc" != 0 ] && [ -n "$WORK" ]; then
        local f
        for f in "$WORK"/logs/*.log; do
            [ -s "$f" ] || continue
            echo "--- last lines of $(basename "$f") ---" >&2
            tail -n 30 "$f" >&2
        done
    fi
    if [ -n "$WORK" ] && [ "$KEEP" = 0 ]; then
        [ -d "$WORK/venv" ] && log "removing the temp folder $WORK (its venv: ~2 GB)"
        rm -rf "$WORK"
    elif [ -n "$WORK" ]; then
        echo "check-image: kept $WORK" >&2
    fi
    if [ "$rc" != 0 ] || [ "$PASSED" != 1 ]; then
        echo "check-image: FAIL (at: $STEP; exit $rc)"
        [ "$rc" = 0 ] && rc=1
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

rcli() { redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" -n "${REDIS_DB:-0}" "$@"; }

# -- 1. the image's file tree -----------------------------------------------------------------------

[ -f "$DOCKERFILE" ] || fail "no Dockerfile at $DOCKERFILE"
FROM_RE='s/^FROM[[:space:]]+(docker\.io\/)?(library\/)?python:([0-9]+\.[0-9]+).*/\3/Ip'
FROM_PY="$(sed -nE "$FROM_RE" "$DOCKERFILE" | head -n1)"
[ -n "$FROM_PY" ] || fail "the Dockerfile's FROM is not a python:X.Y image; this check cannot reproduce it"
PY="${CHECK_IMAGE_PYTHON:-python$FROM_PY}"
command -v "$PY" >/dev/null \
    || fail "$PY (the image's Python, FROM python:$FROM_PY) is not on PATH; set CHECK_IMAGE_PYTHON"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/thrifty-image-check.XXXXXX")"
case "$WORK/" in "$ROOT"/*) fail "the temp folder $WORK is inside the checkout $ROOT" ;; esac
mkdir -p "$WORK/logs" "$WORK/run"

step "file tree from the COPY lines of $DOCKERFILE"
TRACKED="$WORK/tracked.txt"
if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git -C "$ROOT" ls-files > "$TRACKED"
else
    : > "$TRACKED"
fi
APP="$("$PY" - "$DOCKERFILE" "$ROOT" "$WORK/rootfs" "$TRACKED" <<'PY'
"""Reproduce a single-stage Dockerfile's COPY lines into ROOTFS; print the final WORKDIR there."""
import glob
import json
import os
import posixpath
import re
import shlex
import shutil
import sys
import tomllib

dockerfile, context, rootfs, tracked_list = sys.argv[1:5]


def die(message):
    print(f"check-image: FAIL: file tree: {message}", file=sys.stderr)
    sys.exit(1)


def instructions(text):
    """(KEYWORD, arguments) with continuation lines joined and comment lines dropped."""
    logical, parts = [], []
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and parts):
            continue
        if raw.rstrip().endswith("\\"):
            parts.append(raw.rstrip()[:-1])
            continue
        parts.append(raw)
        line = " ".join(p.strip() for p in parts).strip()
        parts = []
        if line:
            keyword, _, rest = line.partition(" ")
            logical.append((keyword.upper(), rest.strip()))
    if parts:
        die("the Dockerfile ends inside a continued line")
    return logical


def ignore_rules(path):
    """.dockerignore as moby's patternmatcher reads it: (regex, is_exception), last match wins."""
    rules = []
    if not os.path.isfile(path):
        return rules
    for line in open(path, encoding="utf-8").read().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = posixpath.normpath(line[1:].strip() if exception else line).lstrip("/")
        regex, i = "^", 0
        while i < len(pattern):
            ch = pattern[i]
            if ch == "*" and pattern[i + 1:i + 2] == "*":
                i += 1
                if pattern[i + 1:i + 2] == "/":
                    i += 1
                regex += ".*" if i + 1 >= len(pattern) else "(.*/)?"
            elif ch == "*":
                regex += "[^/]*"
            elif ch == "?":
                regex += "[^/]"
            elif ch == "[":
                end = pattern.find("]", i + 1)
                if end < 0:
                    die(f".dockerignore: unclosed [ in {line!r}")
                cls = pattern[i + 1:end]
                regex += "[" + ("^" + cls[1:] if cls.startswith("^") else cls) + "]"
                i = end
            elif ch == "\\" and i + 1 < len(pattern):
                i += 1
                regex += re.escape(pattern[i])
            else:
                regex += re.escape(ch)
            i += 1
        rules.append((re.compile(regex + "$"), exception))
    return rules


RULES = ignore_rules(os.path.join(context, ".dockerignore"))


def ignored(rel):
    """Whether the context path `rel` (posix, relative) is left out of the build context."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    result = False
    for regex, exception in RULES:
        if any(regex.match(p) for p in prefixes):
            result = not exception
    return result


def files_under(src_rel):
    """Context-relative files of the build context under src_rel (itself when a file)."""
    full = os.path.join(context, src_rel)
    if os.path.isfile(full):
        return [] if ignored(src_rel) else [src_rel]
    found = []
    for dirpath, dirnames, filenames in os.walk(full):
        dirnames.sort()
        for name in sorted(filenames):
            rel = os.path.relpath(os.path.join(dirpath, name), context).replace(os.sep, "/")
            if not ignored(rel) and not os.path.islink(os.path.join(dirpath, name)):
                found.append(rel)
    return found


def copy(args, workdir):
    words = json.loads(args) if args.startswith("[") else shlex.split(args)
    flags = [w for w in words if w.startswith("--")]
    words = [w for w in words if not w.startswith("--")]
    for flag in flags:
        name = flag.split("=", 1)[0]
        if name not in ("--chown", "--chmod", "--link"):
            die(f"COPY {flag} is not reproduced by this check: {args}")
    if len(words) < 2:
        die(f"COPY needs a source and a destination: {args}")
    *sources, dest = words
    if "$" in args:
        die(f"COPY with a variable is not reproduced by this check: {args}")
    dest_abs = posixpath.normpath(posixpath.join(workdir, dest))
    matched = []
    for src in sources:
        rel = posixpath.normpath(src.lstrip("/"))
        hits = sorted(glob.glob(rel, root_dir=context)) if glob.has_magic(rel) else [rel]
        hits = [h for h in hits if os.path.exists(os.path.join(context, h)) and not ignored(h)]
        if not hits:
            die(f"COPY {src}: not found in the build context (or excluded by .dockerignore)")
        matched += hits
    into_dir = dest.endswith("/") or len(matched) > 1
    for src in matched:
        src_full = os.path.join(context, src)
        for rel in files_under(src):
            if os.path.isdir(src_full):
                target = posixpath.join(dest_abs, posixpath.relpath(rel, src))
            elif into_dir or os.path.isdir(rootfs + dest_abs):
                target = posixpath.join(dest_abs, posixpath.basename(rel))
            else:
                target = dest_abs
            out = rootfs + target
            os.makedirs(os.path.dirname(out), exist_ok=True)
            shutil.copy2(os.path.join(context, rel), out)


workdir, stages, copies = "/", 0, 0
for keyword, args in instructions(open(dockerfile, encoding="utf-8").read()):
    if keyword == "FROM":
        stages += 1
        if stages > 1:
            die("a multi-stage Dockerfile is not reproduced by this check")
    elif keyword == "WORKDIR":
        if "$" in args:
            die(f"WORKDIR with a variable is not reproduced by this check: {args}")
        workdir = posixpath.normpath(posixpath.join(workdir, args.strip().strip('"')))
        os.makedirs(rootfs + workdir, exist_ok=True)
    elif keyword == "ADD":
        die(f"ADD is not reproduced by this check (use COPY): ADD {args}")
    elif keyword == "COPY":
        copy(args, workdir)
        copies += 1
if copies == 0:
    die("the Dockerfile has no COPY line")
app = rootfs + workdir

# The checks: every declared package is in the tree, with every file git tracks in it.
pyproject = os.path.join(context, "pyproject.toml")
declared = sorted({p.rstrip("*").rstrip(".") for p in
                   tomllib.load(open(pyproject, "rb"))["tool"]["setuptools"]["packages"]["find"]["include"]})
if not os.path.isfile(os.path.join(app, "pyproject.toml")):
    die(f"pyproject.toml is not in the image's WORKDIR {workdir}")
missing = [p for p in declared if not os.path.isfile(os.path.join(app, p, "__init__.py"))]
if missing:
    die(f"the image lacks the declared package(s) {missing}: add `COPY <package> ./<package>` to the "
        f"Dockerfile (declared in pyproject.toml: {declared})")
tracked = [line for line in open(tracked_list, encoding="utf-8").read().splitlines()
           if line.split("/", 1)[0] in declared]
absent = [t for t in tracked if not os.path.isfile(os.path.join(app, t))]
if absent:
    die(f"the image lacks {len(absent)} tracked file(s) of the declared packages (.dockerignore?): "
        f"{absent[:10]}")
count = sum(len(files) for _, _, files in os.walk(rootfs))
print(f"check-image: file tree: {count} files; WORKDIR {workdir} holds {declared} "
      f"({len(tracked)} tracked files)", file=sys.stderr)
print(app)
PY
)" || fail "the Dockerfile's file tree (above)"

if [ "$TREE_ONLY" = 1 ]; then
    PASSED=1
    echo "check-image: PASS (file tree only: every declared package is copied) in $((SECONDS - STARTED_AT))s"
    exit 0
fi

# -- 2. a fresh venv, installed as the Dockerfile installs --------------------------------------------

step "the Dockerfile installs as this check does"
JOINED="$(sed -e ':a' -e '/\\$/N; s/\\\n//; ta' "$DOCKERFILE")"
for expected in 'pip install "torch==${TORCH_VERSION}"' \
                "['project']['dependencies']" \
                'pip install -r /tmp/requirements.txt' \
                'pip install --no-deps . '; do
    grep -qF -- "$expected" <<<"$JOINED " \
        || fail "the Dockerfile no longer runs \`$expected\`: update scripts/check-image.sh to match"
done
if grep -E '^[[:space:]]*RUN .*pip install' <<<"$JOINED" \
        | grep -vqE 'torch==|requirements\.txt|--no-deps \.'; then
    fail "the Dockerfile has a pip install this check does not reproduce: update scripts/check-image.sh"
fi
TORCH_VERSION="$(sed -nE 's/^ARG[[:space:]]+TORCH_VERSION=([^[:space:]]+).*/\1/p' "$DOCKERFILE" | head -n1)"
[ -n "$TORCH_VERSION" ] || fail "no ARG TORCH_VERSION=... default in the Dockerfile"

step "fresh venv ($("$PY" --version 2>&1)) and torch==$TORCH_VERSION"
cd "$WORK/run"
unset PYTHONPATH PYTHONHOME PYTHONSTARTUP VIRTUAL_ENV
"$PY" -m venv "$WORK/venv" >"$WORK/logs/pip.log" 2>&1 || fail "python -m venv"
VPY="$WORK/venv/bin/python"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
if [ "${CHECK_IMAGE_ALLOW_TORCH_DOWNLOAD:-0}" != 1 ]; then
    "$VPY" -m pip install --dry-run --quiet --report "$WORK/torch-report.json" "torch==$TORCH_VERSION" \
        >>"$WORK/logs/pip.log" 2>&1 || fail "pip cannot resolve torch==$TORCH_VERSION"
    TORCH_URL="$("$VPY" -c 'import json, sys
print(next(i["download_info"]["url"] for i in json.load(open(sys.argv[1]))["install"]
           if i["metadata"]["name"].lower() == "torch"))' "$WORK/torch-report.json")"
    case "$TORCH_URL" in
        file:*) ;;
        *) fail "pip would download torch==$TORCH_VERSION from $TORCH_URL (not a wheel on this machine's" \
                "disk);" \
                "set CHECK_IMAGE_ALLOW_TORCH_DOWNLOAD=1 to allow it" ;;
    esac
fi
"$VPY" -m pip install "torch==$TORCH_VERSION" >>"$WORK/logs/pip.log" 2>&1 \
    || fail "pip install torch==$TORCH_VERSION"

step "the project's dependencies (RUN ... pip install -r requirements.txt)"
(cd "$APP" && "$VPY" -c "import tomllib
print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))") \
    > "$WORK/requirements.txt"
"$VPY" -m pip install -r "$WORK/requirements.txt" >>"$WORK/logs/pip.log" 2>&1 \
    || fail "pip install -r requirements.txt"

step "the copied tree, not editable (RUN pip install --no-deps .)"
(cd "$APP" && "$VPY" -m pip install --no-deps .) >>"$WORK/logs/pip.log" 2>&1 || fail "pip install --no-deps ."
rm -f "$WORK/logs/pip.log"   # passed: not worth showing on a later failure

# -- 3. what the image runs, from outside the checkout -------------------------------------------------

export PATH="$WORK/venv/bin:$PATH" COLUMNS=200  # COLUMNS: rich wraps less in the logs
cd "$WORK/run"
step "every package imports from the venv, with every tracked file installed"
"$VPY" - "$ROOT" "$WORK/venv" "$TRACKED" <<'PY' || fail "the installed packages (above)"
import importlib
import os
import sys
import sysconfig
import tomllib

root, venv, tracked_list = sys.argv[1:4]
site = os.path.realpath(sysconfig.get_paths()["purelib"])
if not site.startswith(os.path.realpath(venv)):
    sys.exit(f"site-packages {site} is not in the venv {venv}")
declared = sorted({p.rstrip("*").rstrip(".") for p in
                   tomllib.load(open(os.path.join(root, "pyproject.toml"), "rb"))["tool"]["setuptools"]
                   ["packages"]["find"]["include"]})
for name in declared:
    where = os.path.realpath(importlib.import_module(name).__file__)
    if not where.startswith(site + os.sep):
        sys.exit(f"{name} imports from {where}, not from the venv's site-packages {site}")
    print(f"  {name}: {where}", file=sys.stderr)
tracked = [t for t in open(tracked_list).read().splitlines() if t.split("/", 1)[0] in declared]
missing = [t for t in tracked if not os.path.isfile(os.path.join(site, t))]
if missing:
    sys.exit(f"the non-editable install lacks {len(missing)} tracked file(s) (package data?): {missing[:10]}")
print(f"  {len(tracked)} tracked files of {declared} are in site-packages", file=sys.stderr)
PY

step "thrifty-nas --version"
VERSION_OUT="$(thrifty-nas --version)" || fail "thrifty-nas --version exited non-zero"
WANT_VERSION="$(cd "$APP" && "$VPY" -c "import tomllib
print(tomllib.load(open('pyproject.toml', 'rb'))['project']['version'])")"
grep -q "^thrifty-nas $WANT_VERSION" <<<"$VERSION_OUT" \
    || fail "thrifty-nas --version printed '$VERSION_OUT', not $WANT_VERSION"
log "  $VERSION_OUT"

step "a new, empty PostgreSQL database and a Redis database of our own"
command -v psql >/dev/null || fail "psql is not on PATH"
command -v redis-cli >/dev/null || fail "redis-cli is not on PATH"
DB_NAME="thrifty_imgcheck_$(date +%s)_$$_${RANDOM}"
psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres -v ON_ERROR_STOP=1 -qAt \
    -c "CREATE DATABASE \"$DB_NAME\"" >/dev/null \
    || { DB_NAME=""; fail "CREATE DATABASE on $PG_HOST:$PG_PORT"; }
rcli PING >/dev/null 2>&1 || fail "Redis at $REDIS_HOST:$REDIS_PORT does not answer PING"
CLAIM_TOKEN="image-check-$$-$RANDOM$RANDOM"
for number in "${REDIS_DBS[@]}"; do
    claimed="$(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" -n "$number" \
               SET "$CLAIM_KEY" "$CLAIM_TOKEN" NX EX 3600)"
    if [ "$claimed" = OK ]; then
        REDIS_DB="$number"
        break
    fi
done
[ -n "$REDIS_DB" ] || fail "every Redis database in ${REDIS_DBS[*]} is claimed ($CLAIM_KEY)"
rcli FLUSHDB >/dev/null && rcli SET "$CLAIM_KEY" "$CLAIM_TOKEN" EX 3600 >/dev/null
log "  database $DB_NAME, redis db $REDIS_DB"

for var in $(compgen -e | grep '^THRIFTY_' || true); do unset "$var"; done
export THRIFTY_HOME="$WORK/home"
export THRIFTY_DATABASE_URL="postgresql+psycopg://$PG_USER@$PG_HOST:$PG_PORT/$DB_NAME"
export THRIFTY_BROKER_URL="redis://$REDIS_HOST:$REDIS_PORT/$REDIS_DB"
export THRIFTY_ARTIFACT_DIR="$WORK/artifacts"
export THRIFTY_UPLOAD_DIR="$WORK/uploads"
export THRIFTY_DATA_ROOTS="$WORK/datasets"
THRIFTY_API_KEY_PEPPER="$("$VPY" -c 'import secrets; print(secrets.token_urlsafe(32))')"
export THRIFTY_API_KEY_PEPPER
mkdir -p "$THRIFTY_HOME" "$THRIFTY_ARTIFACT_DIR" "$THRIFTY_UPLOAD_DIR" "$THRIFTY_DATA_ROOTS"

step "thrifty-nas migrate (empty database)"
thrifty-nas migrate >"$WORK/logs/migrate.log" 2>&1 || fail "thrifty-nas migrate exited non-zero"
"$VPY" -c 'import os, sys
from store.migrate import is_up_to_date
sys.exit(0 if is_up_to_date(os.environ["THRIFTY_DATABASE_URL"]) else "not at head after migrate")' \
    || fail "the database is not at the head revision after thrifty-nas migrate"
log "  $(tr -s '\n ' ' ' <"$WORK/logs/migrate.log")"

step "thrifty-nas keys create alice"
API_KEY="$(thrifty-nas keys create alice 2>"$WORK/logs/keys.log")" || fail "thrifty-nas keys create alice"
[ "$(wc -l <<<"$API_KEY")" = 1 ] && [ "${#API_KEY}" -ge 20 ] \
    || fail "keys create printed $(wc -l <<<"$API_KEY") line(s), ${#API_KEY} characters: not one key"

step "the API (the image's CMD) and one worker (thrifty-nas worker)"
PORT="$("$VPY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
setsid uvicorn api.main:app --host 127.0.0.1 --port "$PORT" --proxy-headers >"$WORK/logs/api.log" 2>&1 &
PIDS+=("$!")
API_PID=$!
setsid thrifty-nas worker --loglevel info >"$WORK/logs/worker.log" 2>&1 &
PIDS+=("$!")
WORKER_PID=$!
export THRIFTY_URL="http://127.0.0.1:$PORT" THRIFTY_API_KEY="$API_KEY"
for _ in $(seq 1 240); do
    kill -0 "$API_PID" 2>/dev/null || fail "the API exited (logs below)"
    kill -0 "$WORKER_PID" 2>/dev/null || fail "the worker exited (logs below)"
    if curl -fsS "$THRIFTY_URL/healthz" >/dev/null 2>&1 && grep -q " ready\." "$WORK/logs/worker.log"; then
        break
    fi
    sleep 0.5
done
curl -fsS "$THRIFTY_URL/healthz" >/dev/null 2>&1 || fail "the API did not answer /healthz within 120s"
grep -q " ready\." "$WORK/logs/worker.log" || fail "the worker was not ready within 120s"

step "a SYNTHETIC phantom dataset, registered through the API"
"$VPY" -c 'import sys
from nas_core.data import make_phantom_dataset
make_phantom_dataset(sys.argv[1], num_cases=6, image_size=32, depth=1, num_classes=3, seed=0)' \
    "$THRIFTY_DATA_ROOTS/phantom" || fail "make_phantom_dataset"
thrifty-nas datasets add phantom "$THRIFTY_DATA_ROOTS/phantom" --json \
    >"$WORK/dataset.json" 2>"$WORK/logs/datasets.log" \
    || fail "thrifty-nas datasets add: $(cat "$WORK/logs/datasets.log")"
DATASET_ID="$("$VPY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["id"])' "$WORK/dataset.json")"

step "a tiny search, submitted and watched with the CLI"
timeout 600 thrifty-nas submit search --dataset "$DATASET_ID" --epochs 1 --warmup-epochs 0 --image-size 16 \
    --batch-size 2 --channels 4 --k 1 --depth 2 --nodes 1 --device cpu --watch --json --interval 0.5 \
    >"$WORK/watch.jsonl" 2>"$WORK/logs/submit.log" \
    || fail "the search did not succeed: $(tail -n 1 "$WORK/watch.jsonl" 2>/dev/null)" \
            "$(cat "$WORK/logs/submit.log")"
JOB_ID="$("$VPY" -c 'import json, sys
states = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
assert states[-1]["status"] == "succeeded", states[-1]
print(states[-1]["id"])' "$WORK/watch.jsonl")" || fail "the last state of the watched job is not succeeded"
log "  job $JOB_ID succeeded"

step "the search's artefacts: listed, genotype downloaded and valid"
thrifty-nas jobs artifacts "$JOB_ID" --json >"$WORK/artifacts.json" || fail "thrifty-nas jobs artifacts"
"$VPY" -c 'import json, sys
names = {a["name"] for a in json.load(open(sys.argv[1]))}
assert "genotype.json" in names, sorted(names)' "$WORK/artifacts.json" \
    || fail "genotype.json is not among the artefacts"
thrifty-nas download "$JOB_ID" genotype.json --out "$WORK/download" --json >"$WORK/download.json" \
    || fail "thrifty-nas download $JOB_ID genotype.json"
thrifty-nas params thrifty --genotype "$WORK/download/genotype.json" --json >"$WORK/params.json" \
    || fail "the downloaded genotype does not build a network (thrifty-nas params)"
thrifty-nas genotypes show --job "$JOB_ID" --json >/dev/null \
    || fail "thrifty-nas genotypes show --job $JOB_ID"
log "  genotype.json: $(wc -c <"$WORK/download/genotype.json") bytes; $(tr -d ' \n' <"$WORK/params.json")"

PASSED=1
echo "check-image: PASS (Dockerfile file tree, non-editable install, --version, migrate, keys create," \
     "API + worker, one search job, genotype downloaded) in $((SECONDS - STARTED_AT))s"
