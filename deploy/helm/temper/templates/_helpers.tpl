{{/*
Base name of every object: the release name when it contains the chart name, else
<release>-temper; cut to 52 characters so "-scheduler" and the like still fit in 63.
*/}}
{{- define "temper.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Name of one component's objects; call with (dict "ctx" $ "component" "agent"). */}}
{{- define "temper.componentName" -}}
{{- printf "%s-%s" (include "temper.fullname" .ctx) .component -}}
{{- end -}}

{{/* Selector labels of one component; call with (dict "ctx" $ "component" "agent"). */}}
{{- define "temper.selectorLabels" -}}
app.kubernetes.io/name: {{ .ctx.Chart.Name }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* All labels of one component's objects; call with (dict "ctx" $ "component" "agent"). */}}
{{- define "temper.labels" -}}
{{ include "temper.selectorLabels" . }}
app.kubernetes.io/part-of: temper
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The Temper image (agent, extender, webhook). */}}
{{- define "temper.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/*
The kube-scheduler image. Without a tag, the cluster's version with any vendor suffix
removed (v1.30.2-gke.100 becomes v1.30.2), because the upstream images carry plain tags.
*/}}
{{- define "temper.schedulerImage" -}}
{{- $image := .Values.extender.scheduler.image -}}
{{- $tag := $image.tag -}}
{{- if not $tag -}}
{{- $tag = regexFind "^v[0-9]+\\.[0-9]+\\.[0-9]+" .Capabilities.KubeVersion.Version -}}
{{- end -}}
{{- printf "%s:%s" $image.repository $tag -}}
{{- end -}}

{{- define "temper.safeModeNamespace" -}}
{{- .Values.safeMode.namespace | default .Release.Namespace -}}
{{- end -}}

{{/* Name of the webhook's TLS Secret (tls.crt, tls.key, ca.crt). */}}
{{- define "temper.webhookSecretName" -}}
{{- printf "%s-tls" (include "temper.componentName" (dict "ctx" . "component" "webhook")) -}}
{{- end -}}

{{/* DNS names of the webhook Service, as the API server addresses it. */}}
{{- define "temper.webhookDNSNames" -}}
{{- $service := include "temper.componentName" (dict "ctx" . "component" "webhook") -}}
{{- $namespace := .Release.Namespace -}}
{{- list $service (printf "%s.%s" $service $namespace) (printf "%s.%s.svc" $service $namespace) | toJson -}}
{{- end -}}

{{/*
Environment variables every Temper service reads; call with (dict "ctx" $ "prefix"
"TEMPER_AGENT_" "shutdown" <seconds>).
*/}}
{{- define "temper.serviceEnv" -}}
- name: {{ .prefix }}LOG_LEVEL
  value: {{ .ctx.Values.logLevel | quote }}
- name: {{ .prefix }}LOG_JSON
  value: {{ .ctx.Values.logJson | quote }}
- name: {{ .prefix }}SHUTDOWN_TIMEOUT_SECONDS
  value: {{ .shutdown | quote }}
{{- end -}}

{{/* Pod security context of the unprivileged components. */}}
{{- define "temper.restrictedPodSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container security context of the unprivileged components. */}}
{{- define "temper.restrictedContainerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}

{{/* Prometheus scrape annotations; call with (dict "ctx" $ "port" <port>). */}}
{{- define "temper.scrapeAnnotations" -}}
{{- if .ctx.Values.monitoring.scrapeAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end -}}

{{/*
Fail unless .value lies in its range: "min" (inclusive), "above" (exclusive), "max"
(inclusive). values.schema.json checks numbers; this covers the decimal strings that
`helm --set key=0.5` produces, which the schema can only match by pattern.
*/}}
{{- define "temper.checkRange" -}}
{{- $value := float64 .value -}}
{{- $bounds := list -}}
{{- $valid := true -}}
{{- if hasKey . "min" -}}
{{- $bounds = append $bounds (printf "at least %v" .min) -}}
{{- $valid = and $valid (ge $value (float64 .min)) -}}
{{- end -}}
{{- if hasKey . "above" -}}
{{- $bounds = append $bounds (printf "above %v" .above) -}}
{{- $valid = and $valid (gt $value (float64 .above)) -}}
{{- end -}}
{{- if hasKey . "max" -}}
{{- $bounds = append $bounds (printf "at most %v" .max) -}}
{{- $valid = and $valid (le $value (float64 .max)) -}}
{{- end -}}
{{- if not $valid -}}
{{- fail (printf "%s=%v is out of range: it must be %s" .name .value (join " and " $bounds)) -}}
{{- end -}}
{{- end -}}

{{/*
Checks that values.schema.json cannot express: the ranges of decimals given with --set,
relations between values, and features that are not available yet. Renders nothing; fails
the install with the value to change.
*/}}
{{- define "temper.validate" -}}
{{- $webhook := .Values.webhook -}}
{{- $checks := list
  (dict "name" "publishIntervalSeconds" "value" .Values.publishIntervalSeconds "min" 1 "max" 600)
  (dict "name" "agent.debounceSeconds" "value" .Values.agent.debounceSeconds "min" 0 "max" 300)
  (dict "name" "agent.minRestartIntervalSeconds" "value" .Values.agent.minRestartIntervalSeconds "min" 0)
  (dict "name" "agent.shutdownTimeoutSeconds" "value" .Values.agent.shutdownTimeoutSeconds "above" 0)
  (dict "name" "extender.shutdownTimeoutSeconds" "value" .Values.extender.shutdownTimeoutSeconds "above" 0)
  (dict "name" "extender.httpTimeoutSeconds" "value" .Values.extender.httpTimeoutSeconds "above" 0 "max" 60)
  (dict "name" "webhook.shutdownTimeoutSeconds" "value" $webhook.shutdownTimeoutSeconds "above" 0)
  (dict "name" "webhook.factors.high" "value" $webhook.factors.high "above" 0 "max" 1)
  (dict "name" "webhook.factors.normal" "value" $webhook.factors.normal "above" 0 "max" 1)
  (dict "name" "webhook.factors.low" "value" $webhook.factors.low "above" 0 "max" 1)
  (dict "name" "webhook.factors.background" "value" $webhook.factors.background "above" 0 "max" 1)
-}}
{{- range $checks -}}
{{- include "temper.checkRange" . -}}
{{- end -}}
{{- range $component := list "agent" "extender" "webhook" -}}
{{- $values := index $.Values $component -}}
{{- if le (float64 $values.terminationGracePeriodSeconds) (float64 $values.shutdownTimeoutSeconds) -}}
{{- fail (printf "%s.terminationGracePeriodSeconds (%v) must be greater than %s.shutdownTimeoutSeconds (%v), or the kubelet kills the %s before its shutdown ends; raise the grace period or lower the timeout" $component $values.terminationGracePeriodSeconds $component $values.shutdownTimeoutSeconds $component) -}}
{{- end -}}
{{- end -}}
{{- if .Values.rightsizer.enabled -}}
{{- fail "rightsizer.enabled=true: the rightsizer is not available yet and this chart cannot deploy it; set rightsizer.enabled=false" -}}
{{- end -}}
{{- if and .Values.webhook.enabled .Values.webhook.selfRegistration.enabled (not .Values.webhook.selfRegistration.url) -}}
{{- fail "webhook.selfRegistration.enabled=true needs webhook.selfRegistration.url, the https URL of /mutate as the API server reaches it" -}}
{{- end -}}
{{- if and .Values.extender.enabled (not .Values.extender.scheduler.image.tag) (not (regexMatch "^v[0-9]+\\.[0-9]+\\.[0-9]+" .Capabilities.KubeVersion.Version)) -}}
{{- fail (printf "cannot derive the kube-scheduler image tag from the cluster version %q; set extender.scheduler.image.tag" .Capabilities.KubeVersion.Version) -}}
{{- end -}}
{{- end -}}

{{/* ServiceAccount of one component; call with (dict "ctx" $ "component" "agent"). */}}
{{- define "temper.serviceAccount" -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "temper.componentName" . }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "temper.labels" . | nindent 4 }}
{{- end -}}

{{/* PodDisruptionBudget of one Deployment; call with (dict "ctx" $ "component" "webhook"). */}}
{{- define "temper.podDisruptionBudget" -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "temper.componentName" . }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "temper.labels" . | nindent 4 }}
spec:
  maxUnavailable: {{ .ctx.Values.podDisruptionBudget.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "temper.selectorLabels" . | nindent 6 }}
{{- end -}}

{{/*
The second scheduler's KubeSchedulerConfiguration: one profile with its own schedulerName,
leader election on a Lease in the release namespace, and the extender as an ignorable,
node-cache-capable filter and prioritizer. Without clientConnection.kubeconfig,
kube-scheduler uses its pod's service account.
*/}}
{{- define "temper.schedulerConfig" -}}
{{- $extender := .Values.extender -}}
{{- $service := include "temper.componentName" (dict "ctx" . "component" "extender") -}}
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
leaderElection:
  leaderElect: true
  resourceLock: leases
  resourceName: {{ include "temper.componentName" (dict "ctx" . "component" "scheduler") }}
  resourceNamespace: {{ .Release.Namespace }}
profiles:
  - schedulerName: {{ $extender.scheduler.name }}
extenders:
  - urlPrefix: {{ printf "http://%s.%s.svc:%v" $service .Release.Namespace $extender.port }}
    filterVerb: filter
    prioritizeVerb: prioritize
    weight: {{ $extender.weight }}
    # The extender keeps its own Node cache, so kube-scheduler sends node names only.
    nodeCacheCapable: true
    # An unreachable extender is skipped: scheduling goes on without the tier scores.
    ignorable: true
    httpTimeout: {{ printf "%vs" $extender.httpTimeoutSeconds }}
{{- end -}}
