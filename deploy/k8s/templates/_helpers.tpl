{{/*
Names, labels and the per-service view of the values that every template shares.
*/}}

{{- define "dealerline.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "dealerline.fullname" -}}
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

{{/* The name of one component's objects: <fullname>-<component>. */}}
{{- define "dealerline.componentName" -}}
{{- printf "%s-%s" (include "dealerline.fullname" .root) .name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "dealerline.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object; `.name` is the component (a service name, nats, redis...). */}}
{{- define "dealerline.labels" -}}
helm.sh/chart: {{ include "dealerline.chart" .root }}
{{ include "dealerline.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: dealerline
{{- end -}}

{{- define "dealerline.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dealerline.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .name }}
{{- end -}}

{{/*
Deep merge of two maps where the second wins, key by key. Unlike sprig's merge and
mergeOverwrite, an explicit false, 0 or "" in the second map wins too (mergo treats those
as "unset", so `pdb: {enabled: false}` would silently stay enabled). Lists are replaced,
not merged. Returns JSON: use `include ... | fromJson`.
*/}}
{{- define "dealerline.deepMerge" -}}
{{- $base := index . 0 | default dict -}}
{{- $over := index . 1 | default dict -}}
{{- $out := dict -}}
{{- range $key, $value := $base -}}
{{- if hasKey $over $key -}}
{{- $o := index $over $key -}}
{{- if and (kindIs "map" $value) (kindIs "map" $o) -}}
{{- $_ := set $out $key (include "dealerline.deepMerge" (list $value $o) | fromJson) -}}
{{- else -}}
{{- $_ := set $out $key $o -}}
{{- end -}}
{{- else -}}
{{- $_ := set $out $key $value -}}
{{- end -}}
{{- end -}}
{{- range $key, $o := $over -}}
{{- if not (hasKey $base $key) -}}
{{- $_ := set $out $key $o -}}
{{- end -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/*
The enabled services, each resolved as serviceDefaults <- its entry in `services` <- its
entry in `serviceOverrides` (an overlay values file changes one service by name there
instead of restating the whole list). Also checks the list itself. Returns JSON
{"services": [...]}.
*/}}
{{- define "dealerline.services" -}}
{{- $root := . -}}
{{- $seen := dict -}}
{{- $out := list -}}
{{- range $entry := .Values.services -}}
{{- if hasKey $seen $entry.name -}}
{{- fail (printf "services: %q is listed twice" $entry.name) -}}
{{- end -}}
{{- $_ := set $seen $entry.name true -}}
{{- $override := index ($root.Values.serviceOverrides | default dict) $entry.name | default dict -}}
{{- $merged := include "dealerline.deepMerge" (list $entry $override) | fromJson -}}
{{- $svc := include "dealerline.deepMerge" (list $root.Values.serviceDefaults $merged) | fromJson -}}
{{- if $svc.enabled -}}
{{- $out = append $out $svc -}}
{{- end -}}
{{- end -}}
{{- range $name, $_ := .Values.serviceOverrides | default dict -}}
{{- if not (hasKey $seen $name) -}}
{{- fail (printf "serviceOverrides.%s: there is no service %q in `services`" $name $name) -}}
{{- end -}}
{{- end -}}
{{- toJson (dict "services" $out) -}}
{{- end -}}

{{/* Whether an autoscaler (KEDA or an HPA) owns the replica count of a service. */}}
{{- define "dealerline.autoscaled" -}}
{{- if .svc.autoscaling.enabled -}}true{{- end -}}
{{- end -}}

{{/* Whether a service scales through a KEDA ScaledObject (else an HPA, when autoscaled). */}}
{{- define "dealerline.useKeda" -}}
{{- if and .svc.autoscaling.enabled .root.Values.keda.enabled .svc.autoscaling.keda.enabled -}}true{{- end -}}
{{- end -}}

{{/* Image reference of a service: <registry>/<image.name>:<tag><tagSuffix>. */}}
{{- define "dealerline.image" -}}
{{- $img := .svc.image -}}
{{- $repo := $img.repository | default (printf "%s/%s" .root.Values.image.registry ($img.name | default .svc.name)) -}}
{{- $tag := $img.tag | default .root.Values.image.tag | default .root.Chart.AppVersion -}}
{{- printf "%s:%s%s" $repo $tag ($img.tagSuffix | default "") -}}
{{- end -}}

{{/*
GPU requests and limits: the one place a GPU is asked for. The resource type is
gpu.resourceName (per service) or the chart-wide gpu.resourceName (nvidia.com/gpu by
default: amd.com/gpu, gpu.intel.com/i915 or a MIG profile such as nvidia.com/mig-1g.10gb
work the same). Extended resources are not overcommitted, so requests equal limits.
Renders the container's whole `resources` map.
*/}}
{{- define "dealerline.resources" -}}
{{- $res := deepCopy (.svc.resources | default dict) -}}
{{- if .svc.gpu.enabled -}}
{{- $type := .svc.gpu.resourceName | default .root.Values.gpu.resourceName -}}
{{- if not $type -}}
{{- fail (printf "services.%s.gpu: set gpu.resourceName (e.g. nvidia.com/gpu)" .svc.name) -}}
{{- end -}}
{{- $count := int (.svc.gpu.count | default 1) -}}
{{- $limits := get $res "limits" | default dict -}}
{{- $requests := get $res "requests" | default dict -}}
{{- $_ := set $limits $type $count -}}
{{- $_ := set $requests $type $count -}}
{{- $_ := set $res "limits" $limits -}}
{{- $_ := set $res "requests" $requests -}}
{{- end -}}
{{- toYaml $res -}}
{{- end -}}

{{/* Name of the Secret holding credentials and URLs. */}}
{{- define "dealerline.secretName" -}}
{{- if .Values.secrets.create -}}
{{- printf "%s-secrets" (include "dealerline.fullname" .) -}}
{{- else if .Values.secrets.existingSecret -}}
{{- .Values.secrets.existingSecret -}}
{{- else -}}
{{- fail "secrets: set secrets.existingSecret to the Secret holding the Twilio token, LLM key, database and Redis URLs, or secrets.create=true with secrets.values (trial installs)" -}}
{{- end -}}
{{- end -}}

{{- define "dealerline.natsUrl" -}}
{{- if .Values.nats.internal.enabled -}}
{{- printf "%s://%s:4222" (ternary "tls" "nats" .Values.nats.tls.enabled) (include "dealerline.componentName" (dict "root" . "name" "nats")) -}}
{{- else -}}
{{- required "nats.url is required (or nats.internal.enabled=true for a trial install)" .Values.nats.url -}}
{{- end -}}
{{- end -}}

{{/* Host of the public URL (the Ingress host unless ingress.host says otherwise). */}}
{{- define "dealerline.publicHost" -}}
{{- $url := urlParse (required "publicUrl is required: the https base URL Twilio reaches" .Values.publicUrl) -}}
{{- if not (has $url.scheme (list "http" "https")) -}}
{{- fail (printf "publicUrl %q must be an absolute http(s) URL such as https://dealer.example.com" .Values.publicUrl) -}}
{{- end -}}
{{- regexReplaceAll ":[0-9]+$" $url.host "" -}}
{{- end -}}

{{/* Pod security context every dealerline image runs with (uid 10001 from the Dockerfiles). */}}
{{- define "dealerline.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "dealerline.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/*
The NATS users of files/nats-authorization.conf (generated from
dealerline_common.bus.permissions: one per service, named after it). Returns JSON
{"users": [...]}.
*/}}
{{- define "dealerline.natsUsers" -}}
{{- $users := list -}}
{{- range $m := regexFindAll "user: \"[-a-z0-9]+\"" (.Files.Get "files/nats-authorization.conf") -1 -}}
{{- $users = append $users (regexReplaceAll "user: \"([-a-z0-9]+)\"" $m "${1}") -}}
{{- end -}}
{{- if not $users -}}
{{- fail "files/nats-authorization.conf names no users: run `python -m dealerline_common.bus.permissions --helm`" -}}
{{- end -}}
{{- toJson (dict "users" $users) -}}
{{- end -}}

{{/* The variable holding a NATS user's password in the server's configuration. */}}
{{- define "dealerline.natsPasswordVar" -}}
{{- printf "NATS_PASSWORD_%s" (. | upper | replace "-" "_") -}}
{{- end -}}

{{/* Whether a service reads the Redis URL / the database URL from the Secret (so it talks
to Redis / PostgreSQL). */}}
{{- define "dealerline.usesRedis" -}}
{{- if has "redisUrl" (values (.secretEnv | default dict)) -}}true{{- end -}}
{{- end -}}

{{- define "dealerline.usesDatabase" -}}
{{- if has "databaseUrl" (values (.secretEnv | default dict)) -}}true{{- end -}}
{{- end -}}

{{/* NetworkPolicy egress rule: DNS (networkPolicy.dns peers, port 53 UDP and TCP). */}}
{{- define "dealerline.netpol.dns" -}}
- {{- with .Values.networkPolicy.dns }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- end -}}

{{/*
NetworkPolicy egress rule to a store (nats, redis, postgresql) on its port: the in-chart
one's pods when `internal`, else the `peers` given (none = any address, that port only).
*/}}
{{- define "dealerline.netpol.store" -}}
- {{- if .internal }}
  to:
    - podSelector:
        matchLabels:
          {{- include "dealerline.selectorLabels" (dict "root" .root "name" .store) | nindent 10 }}
  {{- else if .peers }}
  to:
    {{- toYaml .peers | nindent 4 }}
  {{- end }}
  ports:
    - port: {{ .port }}
      protocol: TCP
{{- end -}}
