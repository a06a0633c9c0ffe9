{{/* Name of the Secret whose key "key" encrypts the hub's stored peer tokens. */}}
{{- define "temper.planeHubKeySecretName" -}}
{{- .Values.plane.hub.keySecret | default (printf "%s-hub-key" (include "temper.componentName" (dict "ctx" . "component" "plane"))) -}}
{{- end -}}

{{/* True (non-empty) when the price table has at least one price. */}}
{{- define "temper.planeHasPrices" -}}
{{- if or .Values.plane.prices.machineTypes .Values.plane.prices.default -}}true{{- end -}}
{{- end -}}

{{/*
The plane's price table as the file --price-table-path reads: currency, machineTypes and,
when set, default.
*/}}
{{- define "temper.planePriceTable" -}}
{{- $prices := .Values.plane.prices -}}
{{- $table := dict "currency" $prices.currency "machineTypes" $prices.machineTypes -}}
{{- with $prices.default -}}
{{- $_ := set $table "default" . -}}
{{- end -}}
{{- toYaml $table -}}
{{- end -}}

{{/*
Checks of the plane's values that values.schema.json cannot express; renders nothing.
*/}}
{{- define "temper.validatePlane" -}}
{{- $plane := .Values.plane -}}
{{- include "temper.checkRange" (dict "name" "plane.shutdownTimeoutSeconds" "value" $plane.shutdownTimeoutSeconds "above" 0) -}}
{{- include "temper.checkRange" (dict "name" "plane.hub.peerTimeoutSeconds" "value" $plane.hub.peerTimeoutSeconds "above" 0 "max" 120) -}}
{{- range $type, $price := $plane.prices.machineTypes -}}
{{- include "temper.checkRange" (dict "name" (printf "plane.prices.machineTypes.%s.cpuCoreHour" $type) "value" $price.cpuCoreHour "min" 0) -}}
{{- include "temper.checkRange" (dict "name" (printf "plane.prices.machineTypes.%s.nodeHour" $type) "value" $price.nodeHour "min" 0) -}}
{{- end -}}
{{- if le (float64 $plane.terminationGracePeriodSeconds) (float64 $plane.shutdownTimeoutSeconds) -}}
{{- fail (printf "plane.terminationGracePeriodSeconds (%v) must be greater than plane.shutdownTimeoutSeconds (%v), or the kubelet kills the plane before its shutdown ends; raise the grace period or lower the timeout" $plane.terminationGracePeriodSeconds $plane.shutdownTimeoutSeconds) -}}
{{- end -}}
{{- end -}}
