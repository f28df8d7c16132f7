#!/usr/bin/env bash
# Builds and runs the container image's steps WITHOUT a Docker engine, in temporary folders (npm run docker:smoke).
#
# The Dockerfile itself is the script: it is parsed, and every stage is replayed in order on this machine —
#   FROM/WORKDIR   a fresh folder per stage stands for its file system (/app -> <tmp>/<stage>/app)
#   ENV            set for that stage's RUN steps (and, in the last stage, for the container)
#   COPY           from the build context, honouring .dockerignore (moby's pattern rules), or --from a stage
#   RUN            run verbatim with `sh -c` in the stage's WORKDIR, `node` on PATH = Node 24
#   USER           the container runs as a non-root user (nobody when this script runs as root)
#   HEALTHCHECK    run verbatim against the running gateway (with its --timeout)
#   CMD            started verbatim (exec form; `node` = Node 24 from the build stage's node_modules)
# then the "container" is checked: only dist/ + production dependencies in it, no devDependency installed,
# /healthz 200 while the IdP is unreachable (/readyz 503), /readyz 200 against a test IdP (+ Redis when one is
# available), the HEALTHCHECK exits 0 (and 1 when nothing listens), SIGTERM to the node process exits 0.
#
# Differences from a real `docker build` (none of them in the image's steps):
# - the base image is this machine + Node 24 (node:24-slim is Debian + Node 24 as well);
# - the npm cache is a private copy of yours (Docker starts empty): fast, and the runtime stage's
#   `npm cache clean --force` cannot touch your own cache;
# - node is not PID 1 here; exec form means SIGTERM reaches it directly there too.
#
# Exit 0 when every check passed; 1 on the first failure. GATEHOUSE_SMOKE_KEEP=1 keeps the temp folder.
# Uses REDIS_URL / GATEHOUSE_REDIS_URL when set (the jest suite sets REDIS_URL), else a private redis-server from
# PATH when there is one, else the in-memory store.
set -euo pipefail
umask 022

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DOCKERFILE="$ROOT/Dockerfile"
START=$SECONDS

step() { printf '\n==> [%3ds] %s\n' $((SECONDS - START)) "$*"; }
ok() { printf '    ok: %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
fail() {
  printf '\ndocker-smoke: FAIL: %s\n' "$*" >&2
  exit 1
}

# --- a clean environment: nothing of the caller's npm/jest/gateway settings leaks into the build or the container
EXT_REDIS_URL="${REDIS_URL:-${GATEHOUSE_REDIS_URL:-}}"
unset NODE_OPTIONS NODE_ENV NODE_PATH REDIS_URL INIT_CWD JEST_WORKER_ID npm_command npm_execpath npm_node_execpath \
  npm_config_local_prefix
while IFS='=' read -r name _; do
  case "$name" in GATEHOUSE_* | npm_package_* | npm_lifecycle_*) unset "$name" ;; esac
done < <(env)
# `npm run` puts the repository's node_modules/.bin on PATH: drop it, the build folders have their own.
CLEAN_PATH="$(printf '%s' "$PATH" | tr ':' '\n' | grep -v '/node_modules/\.bin$' | paste -sd: -)"

# --- Node 24: what `npm run` gives us, or the repository's devDependency `node`
NODE24=''
for candidate in "$(command -v node || true)" "$ROOT/node_modules/.bin/node"; do
  if [[ -n "$candidate" && -x "$candidate" && "$("$candidate" --version 2>/dev/null)" == v24.* ]]; then
    NODE24="$(readlink -f "$candidate")"
    break
  fi
done
[[ -n "$NODE24" ]] || fail 'no Node 24 found (run through `npm run docker:smoke`, after `npm ci`)'

WORK="$(mktemp -d "${TMPDIR:-/tmp}/gatehouse-docker-smoke.XXXXXX")"
chmod 755 "$WORK" # the container user (nobody) must reach the runtime folder
mkdir -p "$WORK/bin" "$WORK/logs"
ln -s "$NODE24" "$WORK/bin/node"
export PATH="$WORK/bin:$CLEAN_PATH"
HELPER="$WORK/helper.cjs"

cleanup() {
  local rc=$? pid
  for pid in $(jobs -p); do kill -KILL "$pid" 2>/dev/null || true; done # only what this script started
  wait 2>/dev/null || true
  if [[ "${GATEHOUSE_SMOKE_KEEP:-}" == 1 ]]; then
    echo "docker-smoke: kept $WORK" >&2
  else
    chmod -R u+w "$WORK" 2>/dev/null || true
    rm -rf "$WORK"
  fi
  if [[ $rc -eq 0 ]]; then
    printf '\ndocker-smoke: PASSED in %ds\n' $((SECONDS - START))
  else
    printf 'docker-smoke: FAILED after %ds (exit %d)\n' $((SECONDS - START)) "$rc" >&2
  fi
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

# --- helper (CommonJS, run by Node 24): Dockerfile parser, .dockerignore-aware COPY, checks, HTTP probes ----------
cat >"$HELPER" <<'JS'
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const net = require('node:net');

const die = (msg) => { process.stderr.write(`docker-smoke: ${msg}\n`); process.exit(1); };
const q = (s) => `'${String(s).replace(/'/g, `'\\''`)}'`;

/** Dockerfile -> bash calls of df_* functions, one per instruction (unknown instructions are an error). */
function plan(file) {
  const lines = fs.readFileSync(file, 'utf8').split('\n');
  const instructions = [];
  let current = '';
  for (const line of lines) {
    if (/^\s*#/.test(line)) continue; // comments, also inside continuations
    if (current === '' && line.trim() === '') continue;
    if (/\\\s*$/.test(line)) { current += line.replace(/\\\s*$/, '') + ' '; continue; }
    current += line;
    if (current.trim()) instructions.push(current.trim());
    current = '';
  }
  if (current.trim()) instructions.push(current.trim());
  const args = {};
  const subst = (s) => s.replace(/\$\{(\w+)\}|\$(\w+)/g, (_, a, b) => args[a ?? b] ?? '');
  const json = (s) => { try { const v = JSON.parse(s); if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return v; } catch {} return undefined; };
  const out = [];
  let inStage = false;
  for (const ins of instructions) {
    const m = /^(\w+)\s*(.*)$/s.exec(ins);
    const op = m[1].toUpperCase();
    const rest = m[2].trim();
    switch (op) {
      case 'ARG': {
        const [k, ...v] = rest.split('=');
        if (!inStage) args[k] = process.env[`SMOKE_BUILD_ARG_${k}`] ?? v.join('=');
        break;
      }
      case 'FROM': {
        const f = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(rest) || die(`cannot parse FROM ${rest}`);
        out.push(`df_from ${q(subst(f[1]))} ${q(f[2] ?? '')}`);
        inStage = true;
        break;
      }
      case 'WORKDIR': out.push(`df_workdir ${q(rest)}`); break;
      case 'ENV': {
        const words = [...rest.matchAll(/(\w+)=("(?:[^"\\]|\\.)*"|\S*)/g)];
        if (!words.length) { const [k, ...v] = rest.split(/\s+/); out.push(`df_env ${q(k)} ${q(v.join(' '))}`); }
        for (const [, k, v] of words) out.push(`df_env ${q(k)} ${q(v.startsWith('"') ? JSON.parse(v) : v)}`);
        break;
      }
      case 'COPY': {
        const words = rest.split(/\s+/);
        let from = '';
        while (words[0]?.startsWith('--')) {
          const flag = words.shift();
          if (flag.startsWith('--from=')) from = flag.slice(7);
          else if (!/^--(chown|chmod|link)=?/.test(flag)) die(`COPY flag ${flag} is not supported by this script`);
        }
        const list = json(words.join(' ')) ?? words;
        out.push(`df_copy ${q(from)} ${list.map(q).join(' ')}`);
        break;
      }
      case 'RUN': {
        if (json(rest)) die('RUN in exec form is not supported by this script');
        out.push(`df_run ${q(rest)}`);
        break;
      }
      case 'USER': out.push(`df_user ${q(rest)}`); break;
      case 'EXPOSE': out.push(`df_expose ${rest.split(/\s+/).map(q).join(' ')}`); break;
      case 'STOPSIGNAL': out.push(`df_stopsignal ${q(rest)}`); break;
      case 'LABEL': break;
      case 'HEALTHCHECK': {
        const h = /^((?:--\S+\s+)*)CMD\s+(.*)$/s.exec(rest) || die(`HEALTHCHECK must be "HEALTHCHECK [options] CMD [...]": ${rest}`);
        const argv = json(h[2]) ?? die('HEALTHCHECK CMD must be in exec form (a JSON array): no shell in the probe');
        out.push(`df_healthcheck_options ${h[1].trim().split(/\s+/).filter(Boolean).map(q).join(' ')}`);
        out.push(`df_healthcheck ${argv.map(q).join(' ')}`);
        break;
      }
      case 'ENTRYPOINT':
      case 'CMD': {
        const argv = json(rest) ?? die(`${op} must be in exec form (a JSON array), so SIGTERM reaches node and not a shell`);
        out.push(`df_${op.toLowerCase()} ${argv.map(q).join(' ')}`);
        break;
      }
      default: die(`Dockerfile instruction ${op} is not supported by this script — teach it, or the smoke test proves nothing`);
    }
  }
  out.push('df_end');
  console.log(out.join('\n'));
}

/** .dockerignore as moby/patternmatcher reads it: last matching pattern wins, a match of a parent excludes its files. */
function ignoreRules(context) {
  const file = path.join(context, '.dockerignore');
  if (!fs.existsSync(file)) return [];
  const rules = [];
  for (let line of fs.readFileSync(file, 'utf8').split('\n')) {
    line = line.trim();
    if (!line || line.startsWith('#')) continue;
    const negate = line.startsWith('!');
    if (negate) line = line.slice(1).trim();
    line = path.posix.normalize(line).replace(/^\/+/, '').replace(/\/+$/, '');
    let re = '^';
    for (let i = 0; i < line.length; i++) {
      const c = line[i];
      if (c === '*') {
        if (line[i + 1] === '*') {
          i++;
          if (line[i + 1] === '/') i++;
          re += i + 1 >= line.length ? '.*' : '(.*/)?';
        } else re += '[^/]*';
      } else if (c === '?') re += '[^/]';
      else if (c === '\\' && i + 1 < line.length) re += '\\' + line[++i];
      else re += c.replace(/[.+^${}()|[\]]/g, '\\$&');
    }
    rules.push({ negate, re: new RegExp(re + '$'), text: line });
  }
  return rules;
}
function excluded(rules, rel) {
  const parents = rel.split('/').map((_, i, parts) => parts.slice(0, i + 1).join('/'));
  let out = false;
  for (const r of rules) if (parents.some((p) => r.re.test(p))) out = !r.negate;
  return out;
}

/** COPY <src>... <dest> from the build context: directories copy their contents, excluded files are not there. */
function copy(context, dest, ...srcs) {
  const rules = ignoreRules(context);
  const prune = !rules.some((r) => r.negate);
  let files = 0;
  const walk = (rel, to) => {
    const from = path.join(context, rel);
    const st = fs.lstatSync(from);
    if (st.isDirectory()) {
      fs.mkdirSync(to, { recursive: true });
      for (const name of fs.readdirSync(from)) {
        const child = rel ? `${rel}/${name}` : name;
        if (excluded(rules, child) && (prune || !fs.lstatSync(path.join(context, child)).isDirectory())) continue;
        walk(child, path.join(to, name));
      }
    } else if (st.isSymbolicLink()) { fs.symlinkSync(fs.readlinkSync(from), to); files++; }
    else { fs.copyFileSync(from, to); fs.chmodSync(to, st.mode & 0o777); files++; }
  };
  for (const src of srcs) {
    const rel = path.posix.normalize(src).replace(/^\.?\/+/, '').replace(/\/+$/, '').replace(/^\.$/, '');
    if (/[*?[]/.test(rel)) die(`COPY ${src}: wildcards are not supported by this script`);
    if (rel && (!fs.existsSync(path.join(context, rel)) || excluded(rules, rel))) die(`COPY ${src}: not found in build context or excluded by .dockerignore`);
    const isDir = fs.lstatSync(path.join(context, rel)).isDirectory();
    if (!isDir) fs.mkdirSync(path.dirname(dest + '.'), { recursive: true });
    walk(rel, isDir ? dest : dest.endsWith('/') ? path.join(dest, path.basename(rel)) : dest);
  }
  console.log(`${files} files`);
}

/** Prints the given context paths that .dockerignore does NOT exclude. */
function included(context, ...rels) {
  const rules = ignoreRules(context);
  for (const rel of rels) if (!excluded(rules, rel)) console.log(rel);
}

/** No production dependency may need an install script: the runtime stage installs with --ignore-scripts. */
function lockScripts(lockFile) {
  const lock = JSON.parse(fs.readFileSync(lockFile, 'utf8'));
  const bad = Object.entries(lock.packages).filter(([k, v]) => k && !v.dev && v.hasInstallScript).map(([k]) => k);
  if (bad.length) die(`production dependencies with install scripts (skipped by --ignore-scripts): ${bad.join(', ')}`);
  const n = Object.entries(lock.packages).filter(([k, v]) => k && !v.dev).length;
  console.log(`none of the ${n} production packages in package-lock.json has an install script`);
}

/** The runtime node_modules holds exactly package-lock.json's production packages: every one, and no dev one. */
function modules(dir) {
  const lock = JSON.parse(fs.readFileSync(path.join(dir, 'package-lock.json'), 'utf8'));
  const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'));
  const problems = [];
  let prod = 0, dev = 0;
  for (const [key, v] of Object.entries(lock.packages)) {
    if (!key.startsWith('node_modules/') || v.link) continue;
    const present = fs.existsSync(path.join(dir, key, 'package.json'));
    if (v.dev) { dev++; if (present) problems.push(`devDependency ${key} is installed`); }
    else if (!v.devOptional && !v.optional) { prod++; if (!present) problems.push(`production dependency ${key} is missing`); }
  }
  const lockKeys = new Set(Object.keys(lock.packages));
  const top = fs.readdirSync(path.join(dir, 'node_modules')).filter((n) => !n.startsWith('.'))
    .flatMap((n) => (n.startsWith('@') ? fs.readdirSync(path.join(dir, 'node_modules', n)).map((s) => `${n}/${s}`) : [n]));
  for (const name of top) if (!lockKeys.has(`node_modules/${name}`)) problems.push(`node_modules/${name} is not in package-lock.json`);
  for (const name of Object.keys(pkg.devDependencies ?? {})) {
    if (fs.existsSync(path.join(dir, 'node_modules', name)) && lock.packages[`node_modules/${name}`]?.dev) problems.push(`devDependency ${name} is installed`);
  }
  if (fs.existsSync(path.join(dir, 'node_modules', '.bin', 'node'))) problems.push('node_modules/.bin/node exists (the devDependency `node`)');
  if (problems.length) die(problems.join('\n  '));
  console.log(`${prod} production packages present, none of the ${dev} dev-only packages ` +
    `(devDependencies absent: ${Object.keys(pkg.devDependencies ?? {}).length}, e.g. typescript, jest, oidc-provider, node)`);
}

function freePort() {
  const s = net.createServer().listen(0, '127.0.0.1', () => { console.log(s.address().port); s.close(); });
}

/** HTTP status of a GET (000 when nothing answers). */
async function status(url) {
  const r = await fetch(url, { signal: AbortSignal.timeout(3000) }).then((res) => res.status, () => 0);
  console.log(String(r).padStart(3, '0'));
}

/** Test IdP (oidc-provider, a devDependency) from the BUILD folder: the IdP lives outside the container. */
async function idp(buildDir) {
  const { startTestIdp } = require(path.join(buildDir, 'dist/src/testing/testIdp.js'));
  const p = await startTestIdp({ redirectUri: 'http://127.0.0.1:9/auth/callback' });
  console.log(JSON.stringify({ issuer: p.issuer, clientId: p.clientId, clientSecret: p.clientSecret }));
  process.on('SIGTERM', () => Promise.resolve(p.close()).finally(() => process.exit(0)));
}

const [cmd, ...rest] = process.argv.slice(2);
const commands = { plan, copy, included, 'lock-scripts': lockScripts, modules, 'free-port': freePort, status, idp };
(commands[cmd] ?? (() => die(`unknown helper command ${cmd}`)))(...rest);
JS
helper() { node "$HELPER" "$@"; }

# --- the df_* functions the Dockerfile plan calls ------------------------------------------------------------------
STAGE_NAMES=()
STAGE_DIRS=()
STAGE_WORKDIRS=()
STAGE_RUNS=() # RUN commands of the current stage
STAGE=''        # current stage's root folder (stands for its "/")
WORKDIR_ABS='/' # current WORKDIR inside the stage
STAGE_ENV=()
FROM_IMAGES=()
USER_NAME=''
EXPOSED=()
HEALTH_OPTS=()
HEALTH_CMD=()
ENTRYPOINT_ARGV=()
CMD_ARGV=()
STOP_SIGNAL='SIGTERM'

in_stage() { printf '%s%s' "$STAGE" "$1"; } # absolute container path -> host path
resolve() { if [[ "$1" == /* ]]; then in_stage "$1"; else in_stage "${WORKDIR_ABS%/}/$1"; fi; }

df_from() {
  local image="$1" name="${2:-stage${#STAGE_NAMES[@]}}"
  FROM_IMAGES+=("$image")
  STAGE="$WORK/stage-$name"
  mkdir -p "$STAGE"
  STAGE_NAMES+=("$name")
  STAGE_DIRS+=("$STAGE")
  STAGE_WORKDIRS+=('/')
  WORKDIR_ABS='/'
  STAGE_ENV=()
  STAGE_RUNS=()
  USER_NAME='' EXPOSED=() HEALTH_OPTS=() HEALTH_CMD=() ENTRYPOINT_ARGV=() CMD_ARGV=() STOP_SIGNAL='SIGTERM'
  step "FROM $image AS $name  (stage folder $STAGE)"
}
df_workdir() {
  if [[ "$1" == /* ]]; then WORKDIR_ABS="$1"; else WORKDIR_ABS="${WORKDIR_ABS%/}/$1"; fi
  mkdir -p "$(in_stage "$WORKDIR_ABS")"
  STAGE_WORKDIRS[-1]="$WORKDIR_ABS"
  note "WORKDIR $WORKDIR_ABS"
}
df_env() {
  STAGE_ENV+=("$1=$2")
  note "ENV $1=$2"
}
df_copy() {
  local from="$1" raw dest i src_dir=''
  shift
  raw="${*: -1}"
  dest="$(realpath -m "$(resolve "$raw")")"
  # Docker: the destination is a folder when it ends with / (or is one, or there are several sources)
  [[ "$raw" == */ || "$raw" == . || -d "$dest" || $# -gt 2 ]] && dest="$dest/"
  set -- "${@:1:$#-1}"
  if [[ -z "$from" ]]; then
    note "COPY $* ${dest#"$STAGE"}  (build context, .dockerignore applied): $(helper copy "$ROOT" "$dest" "$@")"
    return
  fi
  for i in "${!STAGE_NAMES[@]}"; do [[ "${STAGE_NAMES[$i]}" == "$from" ]] && src_dir="${STAGE_DIRS[$i]}"; done
  [[ -n "$src_dir" ]] || fail "COPY --from=$from: no such stage"
  for src in "$@"; do
    [[ "$src" == /* ]] || fail "COPY --from=$from $src: use an absolute path"
    if [[ -d "$src_dir$src" ]]; then # a directory copies its contents
      mkdir -p "$dest"
      cp -a "$src_dir$src/." "$dest/"
    elif [[ -f "$src_dir$src" ]]; then
      mkdir -p "$(dirname "$dest.")"
      cp -a "$src_dir$src" "$dest"
    else
      fail "COPY --from=$from $src: not found in stage $from"
    fi
  done
  note "COPY --from=$from $* ${dest#"$STAGE"}"
}
df_run() {
  local t=$SECONDS
  STAGE_RUNS+=("$1")
  note "RUN $1"
  (cd "$(in_stage "$WORKDIR_ABS")" && env "${STAGE_ENV[@]}" sh -c "$1") >"$WORK/logs/run.log" 2>&1 || {
    tail -n 40 "$WORK/logs/run.log" >&2
    fail "RUN $1 exited non-zero"
  }
  ok "RUN took $((SECONDS - t))s"
}
df_user() {
  USER_NAME="$1"
  note "USER $1"
}
df_expose() { EXPOSED+=("$@"); }
df_stopsignal() { STOP_SIGNAL="$1"; }
df_healthcheck_options() { HEALTH_OPTS=("$@"); }
df_healthcheck() { HEALTH_CMD=("$@"); }
df_entrypoint() { ENTRYPOINT_ARGV=("$@"); }
df_cmd() { CMD_ARGV=("$@"); }
df_end() { :; }

# ================================================================================================================
step "Dockerfile: $DOCKERFILE"
PLAN="$(helper plan "$DOCKERFILE")" || fail 'could not parse the Dockerfile'
printf '%s\n' "$PLAN" >"$WORK/plan.sh"

step 'static checks: .dockerignore and package-lock.json'
[[ -f "$ROOT/.dockerignore" ]] || fail '.dockerignore is missing'
leaked="$(helper included "$ROOT" node_modules/x dist/src/main.js .git/HEAD coverage/x .env config/.env .env.local key.pem npm-debug.log)"
[[ -z "$leaked" ]] || fail ".dockerignore lets these into the build context: $(echo $leaked)"
ok '.dockerignore keeps node_modules/, dist/, .git/, coverage/, .env*, *.pem and logs out of the build context'
ok "$(helper lock-scripts "$ROOT/package-lock.json")"

# npm cache: a private copy of the caller's (content hard-linked: cacache never rewrites a content file).
USER_CACHE="$(npm config get cache 2>/dev/null || echo "$HOME/.npm")"
mkdir -p "$WORK/npm-cache/_cacache"
if [[ -d "$USER_CACHE/_cacache/content-v2" ]]; then
  # a plain copy never goes over half-made hard links (it would write into your cache's files through them)
  cp -al "$USER_CACHE/_cacache/content-v2" "$WORK/npm-cache/_cacache/" 2>/dev/null ||
    { rm -rf "$WORK/npm-cache/_cacache/content-v2" && cp -a "$USER_CACHE/_cacache/content-v2" "$WORK/npm-cache/_cacache/"; }
  [[ -d "$USER_CACHE/_cacache/index-v5" ]] && cp -a "$USER_CACHE/_cacache/index-v5" "$WORK/npm-cache/_cacache/"
fi
export npm_config_cache="$WORK/npm-cache"

# shellcheck disable=SC1090
source "$WORK/plan.sh" # runs every stage: COPY, RUN (npm ci, npm run build, npm ci --omit=dev ...)

# ================================================================================================================
RUNTIME="$STAGE$WORKDIR_ABS"
BUILD="${STAGE_DIRS[0]}${STAGE_WORKDIRS[0]}" # the first (build) stage's WORKDIR
step "checks of the image (last stage, ${STAGE_NAMES[-1]}): $RUNTIME"
((${#STAGE_NAMES[@]} >= 2)) || fail 'the Dockerfile is not multi-stage'
ok "multi-stage: ${STAGE_NAMES[*]}"
for image in "${FROM_IMAGES[@]}"; do
  [[ "$image" =~ ^node:24-slim(@sha256:[0-9a-f]{64})?$ ]] || fail "FROM $image: expected node:24-slim (optionally @sha256:<digest>)"
done
ok "every stage FROM ${FROM_IMAGES[-1]}"
[[ -n "$USER_NAME" && "$USER_NAME" != root && "$USER_NAME" != 0 && "$USER_NAME" != 0:* ]] || fail "USER is '${USER_NAME:-<unset>}': the container must not run as root"
ok "USER $USER_NAME"
for port in 8080 9464; do [[ " ${EXPOSED[*]} " == *" $port "* ]] || fail "EXPOSE lacks $port"; done
ok "EXPOSE ${EXPOSED[*]}"
[[ "$STOP_SIGNAL" == SIGTERM || "$STOP_SIGNAL" == TERM || "$STOP_SIGNAL" == 15 ]] || fail "STOPSIGNAL $STOP_SIGNAL: main.ts drains on SIGTERM"
ARGV=("${ENTRYPOINT_ARGV[@]}" "${CMD_ARGV[@]}")
((${#ARGV[@]})) || fail 'no CMD'
[[ "${ARGV[0]}" == node ]] || fail "the container starts ${ARGV[0]}, not node: SIGTERM must reach node directly (no npm/sh/tini wrapper)"
ok "exec-form CMD: ${ARGV[*]}"
((${#HEALTH_CMD[@]})) || fail 'no HEALTHCHECK'
[[ "${HEALTH_CMD[*]}" == */healthz* ]] || fail 'the HEALTHCHECK does not probe /healthz'
ok "HEALTHCHECK ${HEALTH_OPTS[*]} CMD [${HEALTH_CMD[0]} ...] probes /healthz"
[[ "${STAGE_RUNS[*]}" =~ npm\ ci\ [^\&\;]*--omit=dev ]] || fail 'the last stage does not install with `npm ci --omit=dev`'
ok "the last stage installs with: ${STAGE_RUNS[*]}"

entries="$(cd "$RUNTIME" && ls -A | sort | paste -sd' ' -)"
[[ "$entries" == 'dist node_modules package-lock.json package.json' ]] || fail "the runtime folder holds: $entries (expected only dist, node_modules and the two manifests)"
ok "runtime folder holds only: $entries"
[[ -f "$RUNTIME/${ARGV[1]:-dist/src/main.js}" ]] || fail "${ARGV[1]} is missing from the runtime folder"
ok "$(helper modules "$RUNTIME")"
for name in typescript jest oidc-provider node @swc/core; do
  [[ ! -e "$RUNTIME/node_modules/$name" ]] || fail "devDependency $name is in the runtime node_modules"
done
ok 'no typescript, jest, oidc-provider, node or @swc/core in the runtime node_modules'
note "runtime size: $(du -sh "$RUNTIME" | cut -f1) ($(du -sh "$RUNTIME/node_modules" | cut -f1) node_modules, $(du -sh "$RUNTIME/dist" | cut -f1) dist)"

# ================================================================================================================
# The container: env -i (the image's ENV + the --env-file variables only), as a non-root user, in WORKDIR.
RUNTIME_NODE="$(readlink -f "$BUILD/node_modules/.bin/node")"
[[ "$("$RUNTIME_NODE" --version)" == v24.* ]] || fail "$RUNTIME_NODE is not Node 24"
mkdir -p "$WORK/runtime-bin"
ln -s "$RUNTIME_NODE" "$WORK/runtime-bin/node"
CONTAINER_PATH="$WORK/runtime-bin:/usr/local/bin:/usr/bin:/bin"
AS_USER=()
if [[ $EUID -eq 0 ]]; then
  command -v setpriv >/dev/null || fail 'running as root without setpriv: cannot run the container as a non-root user'
  AS_USER=(setpriv --reuid=65534 --regid=65534 --clear-groups --)
  CONTAINER_USER='nobody (uid 65534; the image has USER '"$USER_NAME"')'
else
  CONTAINER_USER="$(id -un) (uid $EUID)"
fi
chmod -R a-w "$RUNTIME" # root owns /app in the image: the process can read it, not write it
note "node $("$RUNTIME_NODE" --version) from the build stage's node_modules/.bin/node; user $CONTAINER_USER; runtime folder read-only"

GW_PID=''
GW_LOG=''
GW_ENV=()
container_env() { env -i PATH="$CONTAINER_PATH" HOME=/nonexistent "${STAGE_ENV[@]}" "${GW_ENV[@]}" "$@"; }
start_gateway() { # $1: log name; GW_ENV set by the caller
  GW_LOG="$WORK/logs/$1.log"
  (cd "$RUNTIME" && exec env -i PATH="$CONTAINER_PATH" HOME=/nonexistent "${STAGE_ENV[@]}" "${GW_ENV[@]}" \
    "${AS_USER[@]}" "${ARGV[@]}") >"$GW_LOG" 2>&1 &
  GW_PID=$!
  local i
  for ((i = 0; i < 150; i++)); do
    [[ "$(helper status "http://127.0.0.1:$GW_PORT/healthz")" == 200 ]] && break
    kill -0 "$GW_PID" 2>/dev/null || { cat "$GW_LOG" >&2; fail 'the gateway exited during start-up'; }
    sleep 0.1
  done
  [[ "$(helper status "http://127.0.0.1:$GW_PORT/healthz")" == 200 ]] || { cat "$GW_LOG" >&2; fail '/healthz did not answer 200 within 15 s'; }
  grep -q 'gatehouse listening' "$GW_LOG" || { cat "$GW_LOG" >&2; fail 'no "gatehouse listening" log line'; }
  if [[ -r "/proc/$GW_PID/status" ]]; then # Linux: the pid we signal is node itself, not a wrapper, and not root
    [[ "$(readlink -f "/proc/$GW_PID/exe")" == "$RUNTIME_NODE" ]] || fail "pid $GW_PID is $(readlink -f "/proc/$GW_PID/exe"), not node"
    local uid
    uid="$(awk '/^Uid:/ { print $2 }' "/proc/$GW_PID/status")"
    [[ "$uid" != 0 ]] || fail 'the gateway runs as root'
    ok "started: pid $GW_PID is node itself (uid $uid); /healthz 200"
  else
    ok "started (pid $GW_PID); /healthz 200"
  fi
}
healthcheck() { # runs the Dockerfile's HEALTHCHECK verbatim, as the container user, in WORKDIR; echoes its exit code
  local t
  t="$(printf '%s\n' "${HEALTH_OPTS[@]}" | sed -n 's/^--timeout=//p')"
  (cd "$RUNTIME" && container_env "$@" timeout "${t:-30s}" "${AS_USER[@]}" "${HEALTH_CMD[@]}") >/dev/null 2>&1 && echo 0 || echo $?
}
stop_gateway() {
  local t=$SECONDS rc i
  kill -TERM "$GW_PID"
  for ((i = 0; i < 150; i++)); do
    kill -0 "$GW_PID" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$GW_PID" 2>/dev/null && { cat "$GW_LOG" >&2; fail 'still running 15 s after SIGTERM'; }
  wait "$GW_PID" && rc=0 || rc=$?
  [[ $rc -eq 0 ]] || { cat "$GW_LOG" >&2; fail "exit code $rc after SIGTERM (expected 0)"; }
  grep -q '"signal":"SIGTERM"' "$GW_LOG" || { cat "$GW_LOG" >&2; fail 'main.ts did not log the SIGTERM drain'; }
  ok "SIGTERM -> drained and exited 0 in $((SECONDS - t))s"
}

# --- 1. IdP unreachable, no Redis: alive (/healthz, HEALTHCHECK) but not ready ----------------------------------------
step "container 1: ${ARGV[*]} with the IdP unreachable and the in-memory store"
GW_PORT="$(helper free-port)"
ADMIN_PORT="$(helper free-port)"
DEAD_PORT="$(helper free-port)"
GW_ENV=(
  GATEHOUSE_ISSUER="http://127.0.0.1:$DEAD_PORT"
  GATEHOUSE_CLIENT_ID=gatehouse
  GATEHOUSE_CLIENT_SECRET=docker-smoke-client-secret-0123456789
  GATEHOUSE_PUBLIC_URL="http://127.0.0.1:$GW_PORT"
  GATEHOUSE_UPSTREAM=http://127.0.0.1:9
  GATEHOUSE_SESSION_SECRET="$(printf 'x%.0s' {1..40})"
  GATEHOUSE_PORT="$GW_PORT"
  GATEHOUSE_METRICS_PORT="$ADMIN_PORT"
)
start_gateway container-1
code="$(helper status "http://127.0.0.1:$GW_PORT/readyz")"
[[ "$code" == 503 ]] || fail "/readyz answered $code with the IdP unreachable (expected 503)"
ok '/readyz 503 (IdP down), /healthz 200: the container stays alive, the load balancer sends it nothing'
code="$(helper status "http://127.0.0.1:$ADMIN_PORT/metrics")"
if grep -q '"prom-client"' "$RUNTIME/package.json"; then # metrics need prom-client: a production dependency
  [[ "$code" == 200 ]] || fail "GET /metrics on the admin port answered $code (expected 200)"
  ok 'admin port (GATEHOUSE_METRICS_PORT): /metrics 200 (prom-client loads from the production dependencies)'
else
  [[ "$code" != 000 ]] || fail "the admin port $ADMIN_PORT does not answer HTTP"
  ok "admin port (GATEHOUSE_METRICS_PORT) answers HTTP ($code)"
fi
rc="$(healthcheck)"
[[ "$rc" == 0 ]] || fail "the Dockerfile's HEALTHCHECK exited $rc against a live gateway"
ok 'HEALTHCHECK (verbatim from the Dockerfile) exit 0'
rc="$(healthcheck GATEHOUSE_PORT="$DEAD_PORT")"
[[ "$rc" != 0 ]] || fail 'the HEALTHCHECK exited 0 with nothing listening on GATEHOUSE_PORT'
ok "HEALTHCHECK against a port with nothing listening: exit $rc (unhealthy)"
rc=0
(cd "$RUNTIME" && container_env "${AS_USER[@]}" node dist/scripts/sessions.js) >"$WORK/logs/sessions.log" 2>&1 || rc=$?
[[ $rc -eq 2 ]] && grep -q 'usage: npm run sessions' "$WORK/logs/sessions.log" ||
  { cat "$WORK/logs/sessions.log" >&2; fail "node dist/scripts/sessions.js (no arguments) exited $rc, expected 2 with usage"; }
ok 'the kill-switch CLI (node dist/scripts/sessions.js) loads with production dependencies only'
stop_gateway

# --- 2. a test IdP (+ Redis): ready ------------------------------------------------------------------------------
step "container 2: ${ARGV[*]} with a test IdP and Redis: ready"
(cd "$BUILD" && exec node "$HELPER" idp "$BUILD") >"$WORK/logs/idp.json" 2>"$WORK/logs/idp.log" &
IDP_PID=$!
for ((i = 0; i < 100; i++)); do [[ -s "$WORK/logs/idp.json" ]] && break; sleep 0.1; done
[[ -s "$WORK/logs/idp.json" ]] || { cat "$WORK/logs/idp.log" >&2; fail 'the test IdP did not start'; }
IDP_JSON="$(cat "$WORK/logs/idp.json")"
json_field() { node -e 'process.stdout.write(JSON.parse(process.argv[1])[process.argv[2]])' "$IDP_JSON" "$1"; }
note "test IdP (oidc-provider from the build stage, outside the container): $(json_field issuer)"

REDIS_DESC='in-memory store (no Redis available)'
REDIS_URL_FOR_GW="$EXT_REDIS_URL"
if [[ -n "$REDIS_URL_FOR_GW" ]]; then
  REDIS_DESC='Redis from REDIS_URL'
elif command -v redis-server >/dev/null; then
  REDIS_PORT="$(helper free-port)"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" >"$WORK/logs/redis.log" 2>&1 &
  REDIS_URL_FOR_GW="redis://127.0.0.1:$REDIS_PORT"
  REDIS_DESC="private redis-server on port $REDIS_PORT"
fi
note "store: $REDIS_DESC"

GW_PORT="$(helper free-port)"
GW_ENV=(
  GATEHOUSE_ISSUER="$(json_field issuer)"
  GATEHOUSE_CLIENT_ID="$(json_field clientId)"
  GATEHOUSE_CLIENT_SECRET="$(json_field clientSecret)"
  GATEHOUSE_PUBLIC_URL="http://127.0.0.1:$GW_PORT"
  GATEHOUSE_UPSTREAM=http://127.0.0.1:9
  GATEHOUSE_SESSION_SECRET="$(printf 'y%.0s' {1..40})"
  GATEHOUSE_PORT="$GW_PORT"
  GATEHOUSE_METRICS_PORT=0
  GATEHOUSE_KEY_PREFIX="docker-smoke-$$:"
)
[[ -n "$REDIS_URL_FOR_GW" ]] && GW_ENV+=(GATEHOUSE_REDIS_URL="$REDIS_URL_FOR_GW")
start_gateway container-2
for ((i = 0; i < 100; i++)); do
  code="$(helper status "http://127.0.0.1:$GW_PORT/readyz")"
  [[ "$code" == 200 ]] && break
  sleep 0.1
done
[[ "$code" == 200 ]] || { cat "$GW_LOG" >&2; fail "/readyz answered $code with a test IdP and $REDIS_DESC (expected 200)"; }
ok "/readyz 200 (IdP metadata loaded, $REDIS_DESC answers)"
rc="$(healthcheck)"
[[ "$rc" == 0 ]] || fail "the Dockerfile's HEALTHCHECK exited $rc"
ok 'HEALTHCHECK exit 0'
stop_gateway
kill -TERM "$IDP_PID" 2>/dev/null || true
