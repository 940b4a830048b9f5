{{/* The release's base name: <release>-pizzeria, or the release name when it says pizzeria. */}}
{{- define "pizzeria.fullname" -}}
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

{{/* The name of one service's Deployment, Service, HPA: (dict "root" $ "name" "orders"). */}}
{{- define "pizzeria.component" -}}
{{- printf "%s-%s" (include "pizzeria.fullname" .root) .name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "pizzeria.selectorLabels" -}}
app.kubernetes.io/name: {{ default .root.Chart.Name .root.Values.nameOverride }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .name }}
{{- end -}}

{{- define "pizzeria.labels" -}}
{{ include "pizzeria.selectorLabels" . }}
app.kubernetes.io/part-of: pizzeria
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "pizzeria.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "pizzeria.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "pizzeria.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* One service's values: the defaults, overridden by what the service sets. */}}
{{- define "pizzeria.service" -}}
{{- toYaml (mergeOverwrite (deepCopy .root.Values.defaults) (deepCopy .values)) -}}
{{- end -}}

{{- define "pizzeria.authSecretName" -}}
{{- default (printf "%s-auth" (include "pizzeria.fullname" .)) .Values.auth.existingSecret -}}
{{- end -}}

{{/* Settings every process reads that are not secret (the ConfigMap; the migration job gets
     them inline because hooks run before the ConfigMap exists). */}}
{{- define "pizzeria.config" -}}
{{- $data := dict
  "PIZZERIA_MODE" "production"
  "PIZZERIA_HOST" "0.0.0.0"
  "PIZZERIA_VAR_DIR" "/tmp/pizzeria"
  "BROKER_URL" (printf "kafka://%s" (join "," (required "kafka.bootstrapServers: the Kafka brokers" .Values.kafka.bootstrapServers)))
  "TOPIC_PARTITIONS" (toString .Values.kafka.topics.partitions)
  "TOPIC_REPLICATION_FACTOR" (toString .Values.kafka.topics.replicationFactor)
  "TOPIC_MIN_INSYNC_REPLICAS" (toString .Values.kafka.topics.minInsyncReplicas)
  "KAFKA_SECURITY_PROTOCOL" .Values.kafka.securityProtocol
  "KAFKA_SASL_MECHANISM" .Values.kafka.sasl.mechanism
  "DB_POOL_SIZE" (toString .Values.postgresql.poolSize)
  "OTEL_EXPORTER_OTLP_ENDPOINT" .Values.tracing.otlpEndpoint
  "TRACE_SAMPLE_RATIO" (ternary (toString .Values.tracing.sampleRatio) "0.0" (ne .Values.tracing.otlpEndpoint ""))
-}}
{{- if .Values.kafka.tls.caSecret -}}
{{- $_ := set $data "KAFKA_SSL_CA_LOCATION" (printf "%s/%s" (include "pizzeria.kafkaCaDir" .) .Values.kafka.tls.caKey) -}}
{{- end -}}
{{- if not .Values.redis.existingSecret -}}
{{- $_ := set $data "REDIS_URL" (required "redis.url or redis.existingSecret" .Values.redis.url) -}}
{{- end -}}
{{- range $name, $values := .Values.services -}}
{{- $service := include "pizzeria.service" (dict "root" $ "values" $values) | fromYaml -}}
{{- if $service.enabled -}}
{{- $_ := set $data (printf "%s_URL" (upper $name)) (printf "http://%s:%v" (include "pizzeria.component" (dict "root" $ "name" $name)) $service.port) -}}
{{- $_ := set $data (printf "%s_PORT" (upper $name)) (toString $service.port) -}}
{{- end -}}
{{- end -}}
{{- range $name, $value := .Values.config -}}
{{- $_ := set $data $name (toString $value) -}}
{{- end -}}
{{- if and (not (include "pizzeria.service" (dict "root" $ "values" .Values.services.provider) | fromYaml).enabled) (not (hasKey $data "PAYMENT_PROVIDER_URL")) -}}
{{- fail "services.provider is disabled: set config.PAYMENT_PROVIDER_URL to the real payment provider" -}}
{{- end -}}
{{- toYaml $data -}}
{{- end -}}

{{/* The secret settings: from existing Secrets, never from values. The database and Redis
     (what the migration job needs too) first, then the token key (a chart-made Secret does not
     exist yet when the pre-install job runs). */}}
{{- define "pizzeria.storeEnv" -}}
{{- $pg := .Values.postgresql -}}
# Only to build DATABASE_URL below (Kubernetes expands $(NAME) from variables defined before).
- name: PIZZERIA_DATABASE_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ required "postgresql.existingSecret: the Secret with PostgreSQL's password" $pg.existingSecret }}
      key: {{ $pg.passwordKey }}
- name: DATABASE_URL
  value: {{ printf "postgresql+asyncpg://%s:$(PIZZERIA_DATABASE_PASSWORD)@%s:%v/%s" $pg.user $pg.host $pg.port $pg.database | quote }}
{{- if .Values.redis.existingSecret }}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.existingSecret }}
      key: {{ .Values.redis.urlKey }}
{{- end }}
{{- end -}}

{{- define "pizzeria.secretEnv" -}}
{{ include "pizzeria.storeEnv" . }}
- name: JWT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "pizzeria.authSecretName" . }}
      key: {{ .Values.auth.jwtSecretKey }}
{{- end -}}


{{/* The migration job's environment: the settings inline, then the stores. */}}
{{- define "pizzeria.jobEnv" -}}
{{- range $key, $value := include "pizzeria.config" . | fromYaml }}
- name: {{ $key }}
  value: {{ $value | toString | quote }}
{{- end }}
{{ include "pizzeria.storeEnv" . }}
{{- end -}}

{{/* The services on the bus, each its own Kafka user (src/pizzeria/contracts/topology.py
     BUS_SERVICES; tests/deploy/test_helm.py keeps the two equal). */}}
{{- define "pizzeria.busServices" -}}
{{- list "identity" "catalog" "kitchen" "payments" "delivery" "devices" "telemetry" "orders" "notifications" "audit" | toJson -}}
{{- end -}}

{{- define "pizzeria.kafkaCaDir" -}}
/etc/pizzeria/kafka-ca
{{- end -}}

{{/* One service's Kafka password: (dict "root" $ "name" "orders"). */}}
{{- define "pizzeria.kafkaLoginEnv" -}}
- name: KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .root.Values.kafka.sasl.existingSecret }}
      key: {{ .name }}
{{- end -}}

{{/* The topics job's Kafka logins: the administrator's, and every service's password to give
     its user. */}}
{{- define "pizzeria.kafkaAdminEnv" -}}
{{- $sasl := .Values.kafka.sasl -}}
- name: KAFKA_ADMIN_USERNAME
  value: {{ $sasl.adminUsername | quote }}
- name: KAFKA_ADMIN_SASL_MECHANISM
  value: {{ $sasl.adminMechanism | quote }}
- name: KAFKA_ADMIN_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $sasl.existingSecret }}
      key: {{ $sasl.adminKey }}
{{- range $name := include "pizzeria.busServices" . | fromJsonArray }}
- name: {{ printf "%s_KAFKA_SASL_PASSWORD" (upper $name) }}
  valueFrom:
    secretKeyRef:
      name: {{ $sasl.existingSecret }}
      key: {{ $name }}
{{- end }}
{{- end -}}

{{/* The brokers' CA certificate, where KAFKA_SSL_CA_LOCATION points (volumeMounts, volumes). */}}
{{- define "pizzeria.kafkaCaMount" -}}
{{- if .Values.kafka.tls.caSecret }}
- name: kafka-ca
  mountPath: {{ include "pizzeria.kafkaCaDir" . }}
  readOnly: true
{{- end }}
{{- end -}}

{{- define "pizzeria.kafkaCaVolume" -}}
{{- if .Values.kafka.tls.caSecret }}
- name: kafka-ca
  secret:
    secretName: {{ .Values.kafka.tls.caSecret }}
    items:
      - key: {{ .Values.kafka.tls.caKey }}
        path: {{ .Values.kafka.tls.caKey }}
{{- end }}
{{- end -}}
