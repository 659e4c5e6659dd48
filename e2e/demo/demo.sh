#!/usr/bin/env bash
# `make demo`: a 2-node local cluster with the tutorial pair, showing the
# frontend reaching the backends on both nodes, by pod IP and through the
# backend Service; then a policy that lets only the frontend in, with the
# flows it forwards and drops; then L7 rules on it (only GET /), enforced by
# the node's Envoy, with the HTTP flows.
set -euo pipefail
cd "$(dirname "$0")/../.."

NAME=${DEMO_CLUSTER:-demo}
BIN=${MEMBRANE_BIN_DIR:-$PWD/bin}
CACHE=${MEMBRANE_CACHE:-$HOME/.cache/membrane}
membrane="$BIN/membrane"
kubectl="$CACHE/bin/kubectl"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

if "$membrane" dev kubeconfig --name "$NAME" >/dev/null 2>&1; then
	step "Cluster $NAME exists: reusing it (make demo-down removes it)"
else
	step "Bringing up cluster $NAME (2 nodes)"
	"$membrane" dev up --name "$NAME" --nodes 2
fi
export KUBECONFIG
KUBECONFIG=$("$membrane" dev kubeconfig --name "$NAME")

step "Deploying the tutorial pair (e2e/testdata/tutorial.yaml)"
"$kubectl" apply -f e2e/testdata/tutorial.yaml
"$kubectl" -n tutorial rollout status deployment/backend --timeout=120s
"$kubectl" -n tutorial rollout status deployment/frontend --timeout=120s

step "Nodes and pods"
"$kubectl" get nodes -o wide
"$kubectl" -n tutorial get pods -o wide

step "Each frontend calls each backend by pod IP, across nodes"
backends=$("$kubectl" -n tutorial get pods -l app=backend -o jsonpath='{range .items[*]}{.metadata.name},{.spec.nodeName},{.status.podIP}{"\n"}{end}')
for fe in $("$kubectl" -n tutorial get pods -l app=frontend -o jsonpath='{range .items[*]}{.metadata.name},{.spec.nodeName}{"\n"}{end}'); do
	for be in $backends; do
		IFS=, read -r fname fnode <<<"$fe"
		IFS=, read -r bname bnode bip <<<"$be"
		reply=$("$kubectl" -n tutorial exec "$fname" -- timeout 5 wget -q -O- "http://$bip:8080" 2>&1 || true)
		printf '%s (%s) -> %s (%s, %s): %s\n' "$fname" "$fnode" "$bname" "$bnode" "$bip" "$reply"
	done
done

step "The frontend's loop calls http://backend:8080 (CoreDNS + Membrane's socket load balancer, no kube-proxy)"
sleep 4 # two more rounds of the loop, now that the backends are Ready
"$kubectl" -n tutorial logs "$(echo "$fe" | cut -d, -f1)" --tail=3

step "Service load balancing programmed by membrane-agent on each node"
"$membrane" --kubeconfig "$KUBECONFIG" service list

step "A backend's own log"
"$kubectl" -n tutorial logs "$(echo "$backends" | head -1 | cut -d, -f1)" | tail -5

step "Policy: only the frontend may call the backend (e2e/demo/policy.yaml)"
"$kubectl" -n tutorial run intruder --image=busybox:1.36 --restart=Never --labels=app=intruder -- sleep 3600 2>/dev/null || true
"$kubectl" -n tutorial wait --for=condition=Ready pod/intruder --timeout=60s
"$kubectl" apply -f e2e/demo/policy.yaml
sleep 1
"$kubectl" -n tutorial get mnp
fname=$(echo "$fe" | cut -d, -f1)
printf 'frontend %s -> backend: %s\n' "$fname" "$("$kubectl" -n tutorial exec "$fname" -- timeout 3 wget -q -O- http://backend:8080 2>&1 || echo "no answer")"
printf 'intruder -> backend: %s\n' "$("$kubectl" -n tutorial exec intruder -- timeout 3 wget -q -O- http://backend:8080 2>/dev/null || echo "no answer (dropped)")"

step "Endpoints and their enforcement, on every node"
"$membrane" --kubeconfig "$KUBECONFIG" endpoint list

step "Flows: what the policy forwarded and dropped (membrane observe)"
"$membrane" --kubeconfig "$KUBECONFIG" observe -n tutorial --to-label app=backend --verdict FORWARDED --last 3
"$membrane" --kubeconfig "$KUBECONFIG" observe -n tutorial --verdict DROPPED --last 3

step "L7 policy: the frontend may only GET / (e2e/demo/policy-l7.yaml), enforced by the node's Envoy"
"$kubectl" apply -f e2e/demo/policy-l7.yaml
for i in $(seq 1 50); do # until every node's Envoy runs it
	"$kubectl" -n tutorial exec "$fname" -- timeout 3 wget -q -O- http://backend:8080/admin >/dev/null 2>&1 || break
	sleep 0.2
done
printf 'frontend GET /      -> %s\n' "$("$kubectl" -n tutorial exec "$fname" -- timeout 3 wget -q -O- http://backend:8080/ 2>&1 || echo "no answer")"
printf 'frontend GET /admin -> %s\n' "$("$kubectl" -n tutorial exec "$fname" -- timeout 3 wget -q -O- http://backend:8080/admin 2>&1 || true)"
"$membrane" --kubeconfig "$KUBECONFIG" status
sleep 1 # Envoy sends its access logs about every second
"$membrane" --kubeconfig "$KUBECONFIG" observe -n tutorial --protocol http --last 4

cat <<MSG

Explore:
  export KUBECONFIG=$KUBECONFIG
  $kubectl get pods -A -o wide
  $membrane dev status --name $NAME
  $membrane observe -n tutorial --follow            # flows as they come
  $membrane policy get -n tutorial <backend-pod>    # the rules a pod gets
  ip netns exec membrane-$NAME-node1 ip route      # a node's routes to the other node's pods
Tear down:
  make demo-down        (or: $membrane dev down --name $NAME)
MSG
