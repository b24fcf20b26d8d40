{{/*
regcred's alert rule groups (files/alerts.yaml), each alert given its runbook_url (metrics.prometheusRule
.runbookBaseURL, `#`, the alert's name in lower case) and the extra labels and annotations of the values; an
alert's own labels and annotations win. The PrometheusRule's spec, and deploy/prometheus/rules.yaml as rendered by
tools/prometheus-rules.sh.
*/}}
{{- define "regcred.alertGroups" -}}
{{- $values := .Values.metrics.prometheusRule -}}
{{- $source := .Files.Get "files/alerts.yaml" | fromYaml -}}
{{- $groups := list -}}
{{- range $source.groups -}}
{{- $rules := list -}}
{{- range .rules -}}
{{- $runbook := dict "runbook_url" (printf "%s#%s" $values.runbookBaseURL (lower .alert)) -}}
{{- $labels := merge (dict) (.labels | default dict) (deepCopy $values.alertLabels) -}}
{{- $annotations := merge (dict) (.annotations | default dict) $runbook (deepCopy $values.alertAnnotations) -}}
{{- $rules = append $rules (merge (dict "labels" $labels "annotations" $annotations) (omit . "labels" "annotations")) -}}
{{- end -}}
{{- $groups = append $groups (merge (dict "rules" $rules) (omit . "rules")) -}}
{{- end -}}
{{- toYaml (dict "groups" $groups) -}}
{{- end -}}
