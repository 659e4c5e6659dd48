{{/* Labels every object of the release carries. */}}
{{- define "membrane.labels" -}}
app.kubernetes.io/name: membrane
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{/* An image reference: repository:tag, the tag defaulting to appVersion.
Called with (list $ .Values.<component>.image). */}}
{{- define "membrane.image" -}}
{{- $root := index . 0 }}{{ $img := index . 1 -}}
{{ $img.repository }}:{{ $img.tag | default $root.Chart.AppVersion }}
{{- end }}

{{/* The pull secrets of every pod the chart makes (imagePullSecrets), as
the pod spec's field, indented for a pod template's spec. */}}
{{- define "membrane.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The API server address for components that start before Services
work (kubeProxyReplacement): in-cluster config reads these variables. */}}
{{- define "membrane.apiServerEnv" -}}
{{- if .Values.k8sServiceHost }}
- name: KUBERNETES_SERVICE_HOST
  value: {{ .Values.k8sServiceHost | quote }}
- name: KUBERNETES_SERVICE_PORT
  value: {{ .Values.k8sServicePort | quote }}
{{- end }}
{{- end }}

{{/* Checks across values the schema cannot express; each failure names the
value at fault. */}}
{{- define "membrane.validate" -}}
{{- $na := "is not available in this version of Membrane; remove it or set it to false" }}
{{- if and .Values.gatewayAPI.enabled (not .Values.l7Proxy) }}
{{- fail "gatewayAPI.enabled=true: needs l7Proxy=true (the node Envoys serve the Gateways)" }}
{{- end }}
{{- if and .Values.gatewayAPI.enabled (has .Values.gatewayAPI.secretsNamespace (list .Release.Namespace "default" "kube-system" "kube-public" "kube-node-lease")) }}
{{- fail (printf "gatewayAPI.secretsNamespace=%s: must be a namespace of its own (the agents may read every Secret in it)" .Values.gatewayAPI.secretsNamespace) }}
{{- end }}
{{- if and .Values.ingressController.enabled (not .Values.gatewayAPI.enabled) }}
{{- fail "ingressController.enabled=true: needs gatewayAPI.enabled=true (Ingresses are served like Gateways, with addresses from the MembraneLoadBalancerIPPools)" }}
{{- end }}
{{- if and .Values.authentication.mutual.spire.enabled (not .Values.authentication.mutual.enabled) }}
{{- fail "authentication.mutual.spire.enabled=true: needs authentication.mutual.enabled=true" }}
{{- end }}
{{- if and .Values.authentication.mutual.spire.enabled (ne (int .Values.operator.replicas) 1) }}
{{- fail (printf "operator.replicas=%v: must be 1 with authentication.mutual.spire.enabled=true (the SPIRE server, with its sqlite datastore, runs in the operator's pod)" .Values.operator.replicas) }}
{{- end }}
{{- if .Values.clustermesh.useAPIServer }}
{{- fail (printf "clustermesh.useAPIServer=true: cluster mesh %s" $na) }}
{{- end }}
{{- if and .Values.cni.install (not .Values.agent.apiSocket) }}
{{- fail "agent.apiSocket: required with cni.install=true (membrane-cni reports each new pod to the agent over it, so the pod is policed from its first packet); set it, e.g. /var/run/membrane/agent/api.sock, or set cni.install=false and install a CNI config yourself" }}
{{- end }}
{{- if and .Values.kubeProxyReplacement (not .Values.k8sServiceHost) }}
{{- fail "k8sServiceHost: required with kubeProxyReplacement=true (without kube-proxy the agent and the operator cannot reach the API server through its Service)" }}
{{- end }}
{{- range $component, $v := dict "agent" .Values.agent "operator" .Values.operator "envoy" .Values.envoy }}
{{- range $label := list "k8s-app" "app.kubernetes.io/name" "app.kubernetes.io/component" }}
{{- if hasKey $v.podLabels $label }}
{{- fail (printf "%s.podLabels.%s: the chart sets this label on its pods (their selectors use it); choose another" $component $label) }}
{{- end }}
{{- end }}
{{- end }}
{{- $ports := dict }}
{{- $_ := set $ports (toString .Values.agent.apiPort) "agent.apiPort" }}
{{- range $name, $port := dict "envoy.xdsPort" .Values.envoy.xdsPort "envoy.adminPort" .Values.envoy.adminPort "envoy.proxyPort" .Values.envoy.proxyPort "operator.healthPort" .Values.operator.healthPort "prometheus.operatorPort" .Values.prometheus.operatorPort }}
{{- if hasKey $ports (toString $port) }}
{{- fail (printf "%s=%v: the port is %s's already (every component shares the node's network)" $name $port (get $ports (toString $port))) }}
{{- end }}
{{- $_ := set $ports (toString $port) $name }}
{{- end }}
{{- end }}
