{{/* Chart name, truncated to the 63 characters a DNS label allows. */}}
{{- define "histoseg.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-qualified name; the release name alone when it already contains the chart name. */}}
{{- define "histoseg.fullname" -}}
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

{{- define "histoseg.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "histoseg.selectorLabels" -}}
app.kubernetes.io/name: {{ include "histoseg.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "histoseg.labels" -}}
helm.sh/chart: {{ include "histoseg.chart" . }}
{{ include "histoseg.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: server
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "histoseg.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "histoseg.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "histoseg.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Labels of the training Deployment's pods: another app name, so the serving Service never selects them. */}}
{{- define "histoseg.trainingSelectorLabels" -}}
app.kubernetes.io/name: {{ include "histoseg.name" . }}-training
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "histoseg.trainingLabels" -}}
helm.sh/chart: {{ include "histoseg.chart" . }}
{{ include "histoseg.trainingSelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: training
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* True (non-empty) when the model repository is a mounted volume: models.volume, or the chart's own PVC. */}}
{{- define "histoseg.hasModelsVolume" -}}
{{- if or .Values.models.volume .Values.persistence.models.enabled }}true{{- end }}
{{- end }}

{{/* The models volume source: models.volume as given, else the PVC (an existing claim or the chart's). */}}
{{- define "histoseg.modelsVolume" -}}
{{- if .Values.models.volume }}
{{- toYaml .Values.models.volume }}
{{- else }}
persistentVolumeClaim:
  claimName: {{ default (printf "%s-models" (include "histoseg.fullname" .)) .Values.persistence.models.existingClaim }}
{{- end }}
{{- end }}

{{- define "histoseg.datasetsClaim" -}}
{{- default (printf "%s-datasets" (include "histoseg.fullname" .)) .Values.persistence.datasets.existingClaim }}
{{- end }}

{{/* Where the server reads models: the mounted volume when one is set, else the image's bundled folder. */}}
{{- define "histoseg.modelsPath" -}}
{{- if include "histoseg.hasModelsVolume" . }}
{{- .Values.models.mountPath }}
{{- else }}
{{- .Values.models.imagePath }}
{{- end }}
{{- end }}

{{/* Mount points of the secrets; HISTOSEG_TLS_* and HISTOSEG_TOKENS_FILE point into them. */}}
{{- define "histoseg.tlsDir" -}}/etc/histoseg/tls{{- end }}
{{- define "histoseg.clientCADir" -}}/etc/histoseg/client-ca{{- end }}
{{- define "histoseg.authDir" -}}/etc/histoseg/auth{{- end }}

{{/* Above the server's own drain timeout, so the kubelet never kills a pod that is still draining. */}}
{{- define "histoseg.terminationGracePeriodSeconds" -}}
{{- add (int .Values.shutdown.preStopSleepSeconds) (int .Values.shutdown.drainTimeoutSeconds) (int .Values.shutdown.extraGraceSeconds) }}
{{- end }}

{{/*
A value for an env var or ConfigMap entry. Helm reads numbers as float64, which prints 16777216 as 1.6777216e+07:
whole numbers go out as integers.
*/}}
{{- define "histoseg.envValue" -}}
{{- if and (kindIs "float64" .) (eq (floor .) .) }}
{{- int64 . | quote }}
{{- else }}
{{- . | quote }}
{{- end }}
{{- end }}

{{/*
HISTOSEG_THREADS: the value set in config.threads, else the CPU limit (or request) through the downward API, which
rounds up to whole cores ("500m" gives 1). Unset when the container has neither: the server then counts the cores.
*/}}
{{- define "histoseg.threadsEnv" -}}
{{- $cpu := "" }}
{{- $resources := .Values.resources | default dict }}
{{- if dig "limits" "cpu" "" $resources }}
{{- $cpu = "limits.cpu" }}
{{- else if dig "requests" "cpu" "" $resources }}
{{- $cpu = "requests.cpu" }}
{{- end }}
{{- if not (kindIs "invalid" .Values.config.threads) }}
- name: HISTOSEG_THREADS
  value: {{ include "histoseg.envValue" .Values.config.threads }}
{{- else if $cpu }}
- name: HISTOSEG_THREADS
  valueFrom:
    resourceFieldRef:
      resource: {{ $cpu }}
      divisor: "1"
{{- end }}
{{- end }}

{{/* Readiness: gRPC health on the serving port, or GET /readyz when the kubelet's plaintext gRPC probe cannot work. */}}
{{- define "histoseg.readinessProbe" -}}
{{- $type := .Values.probes.readiness.type }}
{{- if eq $type "auto" }}
{{- $type = ternary "http" "grpc" .Values.tls.enabled }}
{{- end }}
{{- if and (eq $type "grpc") .Values.tls.enabled }}
{{- fail "probes.readiness.type grpc cannot work with tls.enabled: the kubelet's gRPC probe speaks plaintext only; use auto or http" }}
{{- end }}
{{- if eq $type "grpc" }}
grpc:
  port: {{ .Values.ports.grpc }}
{{- else if eq $type "http" }}
httpGet:
  path: /readyz
  port: metrics
{{- else }}
{{- fail (printf "probes.readiness.type must be auto, grpc or http, not %q" $type) }}
{{- end }}
periodSeconds: {{ .Values.probes.readiness.periodSeconds }}
timeoutSeconds: {{ .Values.probes.readiness.timeoutSeconds }}
failureThreshold: {{ .Values.probes.readiness.failureThreshold }}
{{- end }}
