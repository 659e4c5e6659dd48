#!/usr/bin/env bash
# own-images.sh BIN_DIR [BASE_ROOTFS]: lays out one image per Membrane binary
# in BIN_DIR/images (an image store of package e2e/images), so that a pod's
# `image: membrane/membrane-agent:dev` runs the binaries of BIN_DIR.
#
# Names: membrane/<binary> for membrane-agent, membrane-operator and
# membrane-cni (any tag; the store drops it: key membrane_<binary>). Every
# image holds all of bin/ in /usr/bin (hard links), the shared objects they
# load, the machine's CA bundle and, when BASE_ROOTFS is given (the busybox
# image), a shell and core utilities for init containers; its entrypoint is
# its binary. Image directories are content-addressed
# (images/.store/<key>-<hash>): an unchanged build reuses them, and older ones
# are removed an hour after they were replaced.
set -euo pipefail

LAYOUT=1
bin=${1:?usage: own-images.sh BIN_DIR [BASE_ROOTFS]}
base=${2:-}
store=$bin/images
binaries=(membrane membrane-agent membrane-cni membrane-operator)
images=(membrane-agent membrane-operator membrane-cni)

for b in "${binaries[@]}"; do
	[[ -x $bin/$b ]] || { echo "own-images: $bin/$b missing: build it first" >&2; exit 1; }
done
[[ -z $base || -d $base ]] || base=''

hash=$( {
	echo "layout $LAYOUT"
	[[ -z $base ]] || echo "base $(readlink -f "$base")"
	(cd "$bin" && sha256sum "${binaries[@]}")
} | sha256sum | cut -c1-16)

mkdir -p "$store/.store"
for img in "${images[@]}"; do
	key=membrane_$img
	dir=$store/.store/$key-$hash
	if [[ ! -f $dir/image.json ]]; then
		tmp=$(mktemp -d "$store/.store/.tmp-$key-XXXXXX")
		chmod 0755 "$tmp"
		root=$tmp/rootfs
		mkdir -p "$root"
		if [[ -n $base ]]; then
			cp -a --link "$base/." "$root/" 2>/dev/null || cp -a "$base/." "$root/"
		fi
		mkdir -p "$root"/{proc,sys,dev,etc,tmp,root,usr/bin,var/run/secrets/kubernetes.io/serviceaccount}
		chmod 1777 "$root/tmp"
		for f in hosts resolv.conf hostname; do [[ -e $root/etc/$f ]] || : >"$root/etc/$f"; done
		[[ -e $root/etc/passwd ]] || echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
		[[ -e $root/etc/group ]] || echo 'root:x:0:' >"$root/etc/group"
		for b in "${binaries[@]}"; do
			ln "$bin/$b" "$root/usr/bin/$b" 2>/dev/null || cp "$bin/$b" "$root/usr/bin/$b"
		done
		# The shared objects the binaries load (glibc and its loader).
		for lib in $(ldd "${binaries[@]/#/$bin/}" 2>/dev/null | grep -o '/[^ ]*\.so[^ ]*' | sort -u); do
			install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
		done
		[[ ! -f /etc/ssl/certs/ca-certificates.crt ]] ||
			install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
		cat >"$tmp/image.json" <<JSON
{
  "names": ["membrane/$img"],
  "version": "dev-$hash",
  "entrypoint": ["/usr/bin/$img"],
  "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"]
}
JSON
		rm -rf "$dir"
		mv "$tmp" "$dir"
	fi
	ln -sfn ".store/$key-$hash" "$store/$key.tmp"
	mv -T "$store/$key.tmp" "$store/$key"
	# Older builds of this image, unlinked for an hour (a pod of a running
	# cluster may still run from a recent one).
	find "$store/.store" -mindepth 1 -maxdepth 1 -name "$key-*" ! -name "$key-$hash" -mmin +60 -exec rm -rf {} +
done
echo "own-images: membrane/{${images[*]}} (dev-$hash) in $store"
