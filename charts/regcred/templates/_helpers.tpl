{{/* The chart name, overridable. */}}
{{- define "regcred.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The full name of every resource: the release name, with the chart name unless it already contains it. */}}
{{- define "regcred.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Labels on every resource. */}}
{{- define "regcred.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "regcred.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels that select the operator's Pods. */}}
{{- define "regcred.selectorLabels" -}}
app.kubernetes.io/name: {{ include "regcred.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels that select the node installer's Pods (templates/credential-provider.yaml): not the operator's. */}}
{{- define "regcred.installerSelectorLabels" -}}
app.kubernetes.io/name: {{ include "regcred.name" . }}-credential-provider
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The healing mode: Evict, Notify or Off. A bare `Off` in a values file reaches the chart as the boolean false (YAML
1.1), so false means Off too; anything else fails the render with the allowed values.
*/}}
{{- define "regcred.healingMode" -}}
{{- $mode := .Values.healing.mode | toString -}}
{{- if eq $mode "false" -}}{{- $mode = "Off" -}}{{- end -}}
{{- if not (has $mode (list "Evict" "Notify" "Off")) -}}
{{- fail (printf "healing.mode is %q: it must be Evict, Notify or Off" $mode) -}}
{{- end -}}
{{- $mode -}}
{{- end -}}
