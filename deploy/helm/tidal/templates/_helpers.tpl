{{/* The namespace of every object: the value, else the release's. */}}
{{- define "tidal.namespace" -}}
{{- .Values.namespace | default .Release.Namespace -}}
{{- end -}}

{{/* Selector labels (the same as `tidal export kubernetes --control-plane`); pass (list $ "component"). */}}
{{- define "tidal.selector" -}}
app.kubernetes.io/name: tidal
app.kubernetes.io/component: {{ index . 1 }}
app.kubernetes.io/part-of: tidal
{{- end -}}

{{/* Labels of every object: the selector's and Helm's own. */}}
{{- define "tidal.labels" -}}
{{ include "tidal.selector" . }}
app.kubernetes.io/instance: {{ (index . 0).Release.Name }}
app.kubernetes.io/managed-by: {{ (index . 0).Release.Service }}
app.kubernetes.io/version: {{ (index . 0).Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" (index . 0).Chart.Name (index . 0).Chart.Version }}
{{- end -}}

{{- define "tidal.image" -}}
{{- printf "%s:%s" .Values.image.repository (toString .Values.image.tag) -}}
{{- end -}}
