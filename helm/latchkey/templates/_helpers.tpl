{{- define "latchkey.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "latchkey.fullname" -}}
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

{{- define "latchkey.selectorLabels" -}}
app.kubernetes.io/name: {{ include "latchkey.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "latchkey.labels" -}}
{{ include "latchkey.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "latchkey.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "latchkey.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "latchkey.image" -}}
{{- $repository := required "image.repository is required: build the image from the repository's Dockerfile, push it to a registry the cluster can pull from (docker build -t REGISTRY/latchkey:TAG . && docker push REGISTRY/latchkey:TAG), and set image.repository (and image.tag)" .Values.image.repository -}}
{{- printf "%s:%s" $repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* The settings (not secrets), as LATCHKEY_* name: "value" lines. */}}
{{- define "latchkey.settings" -}}
LATCHKEY_LISTEN_ADDR: "0.0.0.0:{{ .Values.service.port }}"
LATCHKEY_METRICS_ADDR: "0.0.0.0:{{ .Values.service.metricsPort }}"
{{- with .Values.service.httpPort }}
LATCHKEY_HTTP_ADDR: "0.0.0.0:{{ . }}"
{{- end }}
{{- range $name, $value := .Values.config }}
{{- if not (hasPrefix "LATCHKEY_" $name) }}
{{- fail (printf "config.%s: every setting is a LATCHKEY_* name" $name) }}
{{- end }}
{{- if has $name (list "LATCHKEY_DATABASE_URL" "LATCHKEY_HMAC_KEY" "LATCHKEY_HMAC_KEYS" "LATCHKEY_HMAC_KEYS_FILE" "LATCHKEY_ADMIN_TOKEN" "LATCHKEY_LISTEN_ADDR" "LATCHKEY_METRICS_ADDR" "LATCHKEY_HTTP_ADDR") }}
{{- fail (printf "config.%s: set by the chart (secrets come from the Secret named by secrets.name, addresses from service.*)" $name) }}
{{- end }}
{{- /* YAML numbers arrive as floats: 1000000 would print as 1e+06. */}}
{{- if and (kindIs "float64" $value) (eq $value (float64 (int64 $value))) }}
{{- $value = int64 $value }}
{{- end }}
{{ $name }}: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{/* The secrets, by reference to the Secret named by secrets.name. */}}
{{- define "latchkey.secretEnv" -}}
- name: LATCHKEY_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secrets.name }}
      key: {{ .Values.secrets.databaseUrlKey }}
- name: LATCHKEY_HMAC_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secrets.name }}
      key: {{ .Values.secrets.hmacKeysKey }}
{{- if .Values.secrets.adminTokenKey }}
- name: LATCHKEY_ADMIN_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secrets.name }}
      key: {{ .Values.secrets.adminTokenKey }}
      optional: true
{{- end }}
{{- end -}}

{{/* `latchkey migrate`; in a hook Job, which runs before the ConfigMap
exists, with the settings inline. */}}
{{- define "latchkey.migrateContainer" -}}
name: migrate
image: {{ include "latchkey.image" . | quote }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
args: ["migrate"]
env:
  {{- range $name, $value := include "latchkey.settings" . | fromYaml }}
  - name: {{ $name }}
    value: {{ $value | quote }}
  {{- end }}
  {{- include "latchkey.secretEnv" . | nindent 2 }}
resources:
  {{- toYaml .Values.migrations.resources | nindent 2 }}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
{{- end -}}
