{{/* The chart's name, or nameOverride. */}}
{{- define "scimgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release-qualified name of every object (63 characters at most: a DNS label). */}}
{{- define "scimgate.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels the pod is selected by: stable across upgrades. */}}
{{- define "scimgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "scimgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The recommended labels of every object. */}}
{{- define "scimgate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "scimgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: scim-gateway
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* repository:tag, or repository@digest. */}}
{{- define "scimgate.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "scimgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "scimgate.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Secret mounted at /run/secrets/scimgate: the existing one, or ours. */}}
{{- define "scimgate.secretName" -}}
{{- default (include "scimgate.fullname" .) .Values.secrets.existingSecret -}}
{{- end -}}

{{/* The chart-created Secret's data: one key per non-empty value. */}}
{{- define "scimgate.secretData" -}}
{{- $s := .Values.secrets -}}
{{- $d := dict -}}
{{- if $s.scimToken }}{{ $_ := set $d "scim-token" (trim $s.scimToken) }}{{ end -}}
{{- if $s.adminToken }}{{ $_ := set $d "admin-token" (trim $s.adminToken) }}{{ end -}}
{{- if $s.webhookSecret }}{{ $_ := set $d "webhook-secret" (trim $s.webhookSecret) }}{{ end -}}
{{- if $s.apiToken }}{{ $_ := set $d "api-token" (trim $s.apiToken) }}{{ end -}}
{{- toJson $d -}}
{{- end -}}

{{/* The keys of the mounted Secret, as a JSON list. */}}
{{- define "scimgate.secretKeys" -}}
{{- if .Values.secrets.existingSecret -}}
{{- toJson (.Values.secrets.existingSecretKeys | uniq | sortAlpha) -}}
{{- else -}}
{{- toJson (keys (include "scimgate.secretData" . | fromJson) | sortAlpha) -}}
{{- end -}}
{{- end -}}

{{/* The environment variable that reads each Secret key as a file. */}}
{{- define "scimgate.fileVars" -}}
{"scim-token":"SCIMGATE_SCIM_TOKEN_FILE","admin-token":"SCIMGATE_ADMIN_TOKEN_FILE","webhook-secret":"SCIMGATE_WEBHOOK_SECRET_FILE","api-token":"SCIMGATE_API_TOKEN_FILE"}
{{- end -}}

{{- define "scimgate.claimName" -}}
{{- default (include "scimgate.fullname" .) .Values.persistence.existingClaim -}}
{{- end -}}

{{/* The config file's content. */}}
{{- define "scimgate.config" -}}
{{- if .Values.config -}}
{{- .Values.config -}}
{{- else -}}
{{- .Files.Get "files/config.yaml" -}}
{{- end -}}
{{- end -}}

{{/* The label matchers of this release's series in alert expressions. */}}
{{- define "scimgate.promSelector" -}}
namespace="{{ .Release.Namespace }}", job="{{ include "scimgate.fullname" . }}"
{{- end -}}
