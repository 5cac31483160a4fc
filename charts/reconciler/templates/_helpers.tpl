{{- define "reconciler.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "reconciler.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "reconciler.labels" -}}
app.kubernetes.io/name: {{ include "reconciler.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "reconciler.selectorLabels" -}}
app.kubernetes.io/name: {{ include "reconciler.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "reconciler.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "reconciler.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "reconciler.specsDir" -}}
{{- if eq .Values.specs.source "gitSync" -}}
{{- printf "/git/specs/%s" .Values.gitSync.subPath | trimSuffix "/" -}}
{{- else -}}
/specs
{{- end -}}
{{- end -}}

{{- define "reconciler.specsConfigMap" -}}
{{- default (printf "%s-specs" (include "reconciler.fullname" .)) .Values.specs.existingConfigMap -}}
{{- end -}}

{{- /* Where the chart mounts the files the settings name. */ -}}
{{- define "reconciler.paths" -}}
{{- dict "signing" "/etc/reconciler/signing" "trust" "/etc/reconciler/trust" "hooks" "/etc/reconciler/hooks" "notifications" "/etc/reconciler/notifications" "registryCAs" "/etc/reconciler/registry-ca" | toJson -}}
{{- end -}}

{{- define "reconciler.trustEnabled" -}}
{{- if and .Values.trust.existingConfigMap .Values.trust.policy -}}
{{- fail "trust: give existingConfigMap or policy, not both" -}}
{{- end -}}
{{- if or .Values.trust.existingConfigMap .Values.trust.policy }}true{{ end -}}
{{- end -}}

{{- define "reconciler.trustConfigMap" -}}
{{- default (printf "%s-trust" (include "reconciler.fullname" .)) .Values.trust.existingConfigMap -}}
{{- end -}}

{{- /* Whether git-sync calls /hooks/git after each sync. It cannot send a token or sign, so the
settings accept that hook from loopback (the pod itself) without credentials. */ -}}
{{- define "reconciler.gitSyncWebhook" -}}
{{- if and (eq .Values.specs.source "gitSync") .Values.gitSync.webhook }}true{{ end -}}
{{- end -}}

{{- /* The settings file: .Values.settings plus the paths of the files mounted for the features. */ -}}
{{- define "reconciler.settings" -}}
{{- $paths := include "reconciler.paths" . | fromJson -}}
{{- $s := deepCopy .Values.settings -}}
{{- $registries := $s.registries | default dict -}}
{{- range $host, $ca := .Values.registryCAs -}}
{{- if eq (empty $ca.configMap) (empty $ca.secret) -}}
{{- fail (printf "registryCAs.%s: give configMap or secret, exactly one" $host) -}}
{{- end -}}
{{- $entry := get $registries $host | default dict -}}
{{- $_ := set $entry "ca_file" (printf "%s/%s/ca.pem" $paths.registryCAs $host) -}}
{{- $_ := set $registries $host $entry -}}
{{- end -}}
{{- $_ := set $s "registries" $registries -}}
{{- $hooks := $s.hooks | default dict -}}
{{- with .Values.webhooks -}}
{{- if .existingSecret -}}
{{- if not (or .tokenItem .hmacSecretItem) -}}
{{- fail "webhooks.existingSecret needs tokenItem or hmacSecretItem" -}}
{{- end -}}
{{- if .tokenItem -}}
{{- $_ := set $hooks "token_file" (printf "%s/token" $paths.hooks) -}}
{{- end -}}
{{- if .hmacSecretItem -}}
{{- $_ := set $hooks "hmac_secret_file" (printf "%s/hmac-secret" $paths.hooks) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if include "reconciler.gitSyncWebhook" . -}}
{{- $_ := set $hooks "git_from_loopback" true -}}
{{- end -}}
{{- /* Shards share events: each replica relays the hook calls it accepts to the others,
  named through the headless peers Service (the daemon skips its own name). */ -}}
{{- $hooksOn := or .Values.webhooks.existingSecret $hooks.allow_unauthenticated -}}
{{- if and .Values.sharding.enabled $hooksOn (gt (int .Values.sharding.shards) 1) -}}
{{- $name := include "reconciler.fullname" . -}}
{{- $peers := list -}}
{{- range $i := until (int .Values.sharding.shards) -}}
{{- $peers = append $peers (printf "http://%s-%d.%s-peers.%s.svc:%d" $name $i $name $.Release.Namespace (int $.Values.service.port)) -}}
{{- end -}}
{{- $_ := set $hooks "peers" $peers -}}
{{- end -}}
{{- if $hooks -}}
{{- $_ := set $s "hooks" $hooks -}}
{{- else -}}
{{- $_ := unset $s "hooks" -}}
{{- end -}}
{{- with .Values.signing -}}
{{- if .existingSecret -}}
{{- $signing := dict "key_file" (printf "%s/key" $paths.signing) "recursive" .recursive -}}
{{- if .passphraseItem -}}
{{- $_ := set $signing "passphrase_file" (printf "%s/passphrase" $paths.signing) -}}
{{- end -}}
{{- $_ := set $s "signing" $signing -}}
{{- end -}}
{{- end -}}
{{- if include "reconciler.trustEnabled" . -}}
{{- $_ := set $s "trust_policy" (printf "%s/%s" $paths.trust .Values.trust.policyItem) -}}
{{- end -}}
{{- $endpoints := list -}}
{{- $names := dict -}}
{{- range .Values.notifications -}}
{{- if hasKey $names .name -}}
{{- fail (printf "notifications: the name %s is used twice (it names the endpoint's files)" .name) -}}
{{- end -}}
{{- $_ := set $names .name true -}}
{{- $endpoint := dict "name" .name "format" .format -}}
{{- $dir := printf "%s/%s" $paths.notifications .name -}}
{{- if eq (empty .url) (empty .urlSecret) -}}
{{- fail (printf "notifications %s: give url or urlSecret, exactly one" .name) -}}
{{- end -}}
{{- if .url -}}
{{- $_ := set $endpoint "url" .url -}}
{{- else -}}
{{- $_ := set $endpoint "url_file" (printf "%s/url" $dir) -}}
{{- end -}}
{{- with .events -}}
{{- $_ := set $endpoint "events" . -}}
{{- end -}}
{{- with .headers -}}
{{- $_ := set $endpoint "headers" . -}}
{{- end -}}
{{- if .headersFromSecrets -}}
{{- $files := dict -}}
{{- range $header, $ref := .headersFromSecrets -}}
{{- $_ := set $files $header (printf "%s/headers/%s" $dir $header) -}}
{{- end -}}
{{- $_ := set $endpoint "headers_from_files" $files -}}
{{- end -}}
{{- if hasKey . "timeout" -}}
{{- $_ := set $endpoint "timeout" .timeout -}}
{{- end -}}
{{- $endpoints = append $endpoints $endpoint -}}
{{- end -}}
{{- if $endpoints -}}
{{- $_ := set $s "notifications" $endpoints -}}
{{- end -}}
{{- toYaml $s -}}
{{- end -}}

{{- /* The paths routed from outside: the hooks, and with ui the status page and its files. */ -}}
{{- define "reconciler.publicPaths" -}}
{{- $paths := list "/hooks/registry" "/hooks/git" -}}
{{- if .ui }}{{ $paths = concat $paths (list "/" "/static/app.css" "/static/app.js") }}{{ end -}}
{{- toJson $paths -}}
{{- end -}}
