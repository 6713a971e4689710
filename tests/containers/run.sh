#!/bin/sh
# `make test-containers`: build the Dockerfile, run docker-compose.yml with podman + podman-compose, and
# walk the README's Containers section step by step, checking each result. Not part of `make test`: it
# needs root (podman runs the containers as root) and apt-get for podman. Run from the repository root.
#
# Where Docker Hub cannot be reached, python:3.11-slim and curlimages/curl are replaced by stand-ins built
# with debootstrap (Debian bookworm, python 3.11), as are the sandbox settings podman needs (vfs storage,
# runc, cgroupfs, ulimits within the hard limit). W=DIR keeps podman's storage and the stand-ins between
# runs (default /var/tmp/shiftproxy-containers). Every check prints PASS or FAIL; the exit status is the
# number of failures (0: all passed).
set -u
ROOT=$(pwd)
W=${W:-/var/tmp/shiftproxy-containers}
P=shiftproxy-test           # compose project: containers are ${P}_<service>_1
N=100                       # requests / connections per split
FAILED=0
PASSED=0

say() { printf '\n== %s\n' "$*"; }
pass() { PASSED=$((PASSED + 1)); echo "PASS: $*"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL: $*"; }
check() {  # check "what" test-command...
  what=$1; shift
  if "$@"; then pass "$what"; else fail "$what"; fi
}
die() { echo "FAIL: $*"; echo "containers: stopped early ($PASSED passed, $((FAILED + 1)) failed)"; exit 1; }

[ "$(id -u)" = 0 ] || die "make test-containers needs root (podman runs the containers as root; apt-get installs it)"
[ -f docker-compose.yml ] && [ -f Dockerfile ] || die "run from the repository root"
git diff --quiet HEAD -- config/compose 2>/dev/null || die "config/compose has local changes: commit or stash them first"
mkdir -p "$W"
BEFORE=$(git status --porcelain)

say "tools: podman, podman-compose"
if ! command -v podman >/dev/null || ! command -v debootstrap >/dev/null; then
  apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
    podman runc netavark aardvark-dns debootstrap >/dev/null || die "apt-get install podman"
fi
if [ ! -x "$W/venv/bin/podman-compose" ]; then
  python3 -m venv "$W/venv" && "$W/venv/bin/pip" install -q podman-compose || die "pip install podman-compose"
fi
PC="$W/venv/bin/podman-compose -p $P"
podman --version

cat > "$W/storage.conf" <<EOF
[storage]
driver = "vfs"
graphroot = "$W/storage"
runroot = "$W/run"
EOF
cat > "$W/containers.conf" <<EOF
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$W/run/events.log"
[network]
network_backend = "netavark"
[containers]
default_ulimits = ["nofile=$(ulimit -Hn):$(ulimit -Hn)", "nproc=4096:4096"]
EOF
export CONTAINERS_STORAGE_CONF="$W/storage.conf" CONTAINERS_CONF="$W/containers.conf"

say "base images"
if ! podman image exists docker.io/library/python:3.11-slim \
   && ! timeout 60 podman pull -q docker.io/library/python:3.11-slim >/dev/null 2>&1; then
  echo "python:3.11-slim cannot be pulled: building a stand-in with debootstrap"
  MIRROR=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null)
  R="$W/rootfs"; rm -rf "$R"
  debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    bookworm "$R" "${MIRROR:-http://deb.debian.org/debian}" >/dev/null || die "debootstrap"
  ln -sf /usr/bin/python3 "$R/usr/local/bin/python"   # the official image has `python` and `pip`
  ln -sf /usr/bin/pip3 "$R/usr/local/bin/pip"
  rm -f "$R/usr/lib/python3.11/EXTERNALLY-MANAGED"      # and no PEP 668 marker
  rm -rf "$R/var/lib/apt/lists/"* "$R/var/cache/apt/archives/"*.deb
  tar -C "$R" -c . | podman import --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - docker.io/library/python:3.11-slim >/dev/null \
    || die "podman import"
  rm -rf "$R"
fi
if ! podman image exists docker.io/curlimages/curl:8.16.0 \
   && ! timeout 60 podman pull -q docker.io/curlimages/curl:8.16.0 >/dev/null 2>&1; then
  echo "curlimages/curl cannot be pulled: building a stand-in (curl + busybox nc)"
  mkdir -p "$W/ctx"
  printf '%s\n' 'FROM python:3.11-slim' \
    'RUN apt-get update -q && apt-get install -y -q --no-install-recommends curl busybox && ln -s /bin/busybox /usr/local/bin/nc && rm -rf /var/lib/apt/lists/*' \
    | podman build -q --pull=never --format docker -t docker.io/curlimages/curl:8.16.0 -f - "$W/ctx" >/dev/null \
    || die "stand-in curl image"
fi

MOUNTS="-v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro"
[ -f /etc/pip.conf ] && MOUNTS="$MOUNTS -v /etc/pip.conf:/etc/pip.conf:ro"
# The README's `docker compose …` lines, run as written by podman-compose. `up --build` builds first with
# podman itself: docker format keeps the HEALTHCHECK (OCI drops it), and the host's CA bundle and pip.conf
# let pip inside the build reach the same index as the host.
docker() {
  [ "$1" = compose ] || { podman "$@"; return; }
  shift
  if [ "$*" = "up -d --build" ]; then
    # shellcheck disable=SC2086
    podman build -q --pull=never --format docker $MOUNTS -t shiftproxy:local . >/dev/null || return 1
    $PC up -d >"$W/up.log" 2>&1 || { tail -20 "$W/up.log"; return 1; }
  else
    $PC "$@"
  fi
}
status() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 http://127.0.0.1:8080/productpage; }
ready() {  # both proxies pass their health check and productpage answers 200 through the gateway
  podman healthcheck run "${P}_ingressgateway_1" >/dev/null 2>&1 \
    && podman healthcheck run "${P}_productpage-sidecar_1" >/dev/null 2>&1 && [ "$(status)" = 200 ]
}
wait_200() {  # until ready, at most 120 s; $code: productpage's last status
  i=0
  until ready || [ $i -ge 240 ]; do sleep 0.5; i=$((i + 1)); done
  code=$(status)
}
cleanup() {
  $PC down -v >/dev/null 2>&1
  podman rm -f "${P}_app_example" >/dev/null 2>&1
}

say "up"
$PC down -v >/dev/null 2>&1   # a previous run's containers and state volume
trap cleanup EXIT
docker compose up -d --build || die "build and up"
check "image runs as uid 10001" [ "$(podman image inspect shiftproxy:local --format '{{.Config.User}}')" = 10001 ]
wait_200
check "productpage answers 200 through the gateway (got $code)" [ "$code" = 200 ]
curl -s localhost:8080/productpage | grep -c 'glyphicon glyphicon-star'

# binomial bounds that a correct split leaves with probability < 1e-6 (each tail < 5e-7)
bounds() {  # bounds N P -> "LO HI"
  python3 -c '
import math, sys
n, p = int(sys.argv[1]), float(sys.argv[2])
pmf = [math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(n + 1)]
lo = 0
while sum(pmf[: lo + 1]) < 5e-7: lo += 1
hi = n
while sum(pmf[hi:]) < 5e-7: hi -= 1
print(lo, hi)' "$1" "$2"
}
red_count() {  # how many of N product pages show v3's red stars; BLACK: how many v2's black ones
  r=0; j=0; BLACK=0
  while [ $j -lt "$1" ]; do j=$((j + 1))
    case $(curl -s --max-time 10 http://127.0.0.1:8080/productpage) in
      *'gap-x-1 text-red-500'*) r=$((r + 1));;
      *'gap-x-1 text-black-500'*) BLACK=$((BLACK + 1));;
    esac
  done
  echo "$r $BLACK"
}

say "HTTP: docker compose exec -T productpage-sidecar shiftproxy apply -f - < config/steps/virtual-service-reviews-50-v3.yaml"
if docker compose exec -T productpage-sidecar shiftproxy apply -f - < config/steps/virtual-service-reviews-50-v3.yaml; then
  pass "apply 50-v3 from the host"
else
  fail "apply 50-v3 from the host"
fi
for i in $(seq 100); do curl -s localhost:8080/productpage | grep -c 'gap-x-1 text-red-500'; done | sort | uniq -c
set -- $(bounds $N 0.5) $(red_count $N)
# no black stars: without the route reviews is spread over v1, v2 and v3 and v3's share could pass the bound
check "50-v3: $3 of $N pages with red stars, bound [$1, $2]; $4 with v2's black stars (none)" \
  sh -c "[ $3 -ge $1 ] && [ $3 -le $2 ] && [ $4 = 0 ]"

say "HTTP: docker compose exec -T productpage-sidecar shiftproxy apply -f - < config/steps/virtual-service-reviews-v3.yaml"
if docker compose exec -T productpage-sidecar shiftproxy apply -f - < config/steps/virtual-service-reviews-v3.yaml; then
  pass "apply v3 from the host"
else
  fail "apply v3 from the host"
fi
for i in $(seq 100); do curl -s localhost:8080/productpage | grep -c 'gap-x-1 text-red-500'; done | sort | uniq -c
red=$(red_count $N)
check "v3: ${red% *} of $N pages with red stars (all)" [ "${red% *}" = $N ]

say "TCP: docker compose exec -T ingressgateway shiftproxy apply -f - < config/steps/tcp-echo-all-v1.yaml"
if docker compose exec -T ingressgateway shiftproxy apply -f - < config/steps/tcp-echo-all-v1.yaml; then
  pass "apply tcp-echo-all-v1 from the host"
else
  fail "apply tcp-echo-all-v1 from the host"
fi
out=$(docker compose exec -T client sh -c '(date; sleep 1) | nc ingressgateway 31400' 2>&1 </dev/null)
echo "$out"
check "tcp-echo-all-v1: the echo starts with 'one'" [ "${out#one }" != "$out" ]

say "TCP: docker compose exec -T ingressgateway shiftproxy apply -f - < config/steps/tcp-echo-20-v2.yaml"
if docker compose exec -T ingressgateway shiftproxy apply -f - < config/steps/tcp-echo-20-v2.yaml; then
  pass "apply tcp-echo-20-v2 from the host"
else
  fail "apply tcp-echo-20-v2 from the host"
fi
docker compose exec -T client sh -c 'for i in $(seq 100); do echo hi | nc ingressgateway 31400; done' | sort | uniq -c | tee "$W/tcp.out"
two=$(awk '$2 == "two" {print $1}' "$W/tcp.out"); one=$(awk '$2 == "one" {print $1}' "$W/tcp.out")
two=${two:-0}; one=${one:-0}
set -- $(bounds $N 0.2)
check "20-v2: $two of $N connections answered 'two', bound [$1, $2]; $one 'one'" \
  sh -c "[ $((one + two)) = $N ] && [ $two -ge $1 ] && [ $two -le $2 ]"

say "nothing applied was written into the checkout"
check "git status is as before the run" [ "$(git -C "$ROOT" status --porcelain)" = "$BEFORE" ]

say "health check, user"
for c in ingressgateway productpage-sidecar; do
  check "$c health check: healthy" podman healthcheck run "${P}_${c}_1"
done
hc=$(podman inspect "${P}_reviews-v3_1" --format '{{if .Config.Healthcheck}}{{.Config.Healthcheck.Test}}{{end}}')
check "app container reviews-v3 has no health check (got '$hc')" sh -c "[ -z '$hc' ] || [ '$hc' = '[NONE]' ]"
uid=$(docker compose exec -T ingressgateway id -u </dev/null | tr -d '\r')
check "the proxy runs as uid 10001 (got $uid)" [ "$uid" = 10001 ]
# the Dockerfile's example app command
podman run -d --name "${P}_app_example" --no-healthcheck --entrypoint python shiftproxy:local \
  -m proxy.samples reviews --host 0.0.0.0 --version v3 >/dev/null
sleep 2
state=$(podman inspect "${P}_app_example" --format '{{.State.Status}} {{.State.Health.Status}}' 2>&1)
check "the Dockerfile's example app runs with no health check (state: $state)" \
  sh -c "case '$state' in 'running '|'running') exit 0;; *) exit 1;; esac"

say "state persists across down/up; down -v starts from config/compose/ alone"
$PC down >/dev/null 2>&1 && $PC up -d >/dev/null 2>&1
wait_200
docker compose exec -T productpage-sidecar shiftproxy get vs </dev/null
red=$(red_count 20)
check "after down/up: reviews is still on v3 (${red% *} of 20 pages red)" [ "${red% *}" = 20 ]
$PC down -v >/dev/null 2>&1 && $PC up -d >/dev/null 2>&1
wait_200
check "after down -v/up: no VirtualService for reviews" \
  sh -c "! $PC exec -T productpage-sidecar shiftproxy get vs reviews </dev/null >/dev/null 2>&1"

say "SIGTERM: every proxy exits 0"
for c in ingressgateway productpage-sidecar; do
  podman stop -t 20 "${P}_${c}_1" >/dev/null 2>&1
  code=$(podman inspect "${P}_${c}_1" --format '{{.State.ExitCode}}')
  check "$c stopped by SIGTERM, exit $code" [ "$code" = 0 ]
done

say "down -v"
trap - EXIT
docker compose down -v >/dev/null 2>&1
podman rm -f "${P}_app_example" >/dev/null 2>&1
check "git status is as before the run, after down" [ "$(git -C "$ROOT" status --porcelain)" = "$BEFORE" ]
echo
echo "containers: $PASSED passed, $FAILED failed"
exit "$FAILED"
