{{- define "twilio-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "twilio-operator.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "twilio-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "twilio-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "twilio-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "twilio-operator.leaderElection" -}}
{{- if kindIs "bool" .Values.leaderElection.enabled -}}
{{- .Values.leaderElection.enabled -}}
{{- else -}}
{{- gt (int .Values.replicaCount) 1 -}}
{{- end -}}
{{- end -}}

{{/* The rules the operator needs on the namespaced objects it manages: nothing more. */}}
{{- define "twilio-operator.namespacedRules" -}}
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- if .Values.restartWorkloads.enabled }}
{{- /* get and list (metadata) to find what a selector names and whether a patch changed it */}}
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets", "daemonsets"]
  verbs: ["get", "list", "patch"]
- apiGroups: ["argoproj.io"]
  resources: ["rollouts"]
  verbs: ["get", "list", "patch"]
{{- end }}
{{- end -}}

{{/*
The Twilio kinds, granted through a ClusterRoleBinding even in a namespaced install: a Role in a
namespace is deleted with it, possibly before the objects whose finalizers need the operator
(kubernetes/kubernetes#115070), and namespace deletion must complete.
*/}}
{{- define "twilio-operator.objectRules" -}}
- apiGroups: ["twilio.operator.dev"]
  resources: ["twilioapikeys", "twiliosubaccounts"]
  # finalize: the custom verb the chart's admission policy asks for before the finalizer or a
  # twilio.operator.dev/ label may be removed or changed.
  verbs: ["get", "list", "watch", "patch", "finalize"]
- apiGroups: ["twilio.operator.dev"]
  resources: ["twilioapikeys/status", "twiliosubaccounts/status"]
  verbs: ["patch"]
{{- end -}}

{{/* A Prometheus duration such as 1h or 90m, in seconds. */}}
{{- define "twilio-operator.seconds" -}}
{{- $d := . | toString -}}
{{- $units := dict "ms" 0.001 "s" 1 "m" 60 "h" 3600 "d" 86400 "w" 604800 "y" 31536000 -}}
{{- $total := 0.0 -}}
{{- range regexFindAll "[0-9]+(ms|s|m|h|d|w|y)" $d -1 -}}
{{- $n := regexFind "^[0-9]+" . | float64 -}}
{{- $u := trimPrefix (regexFind "^[0-9]+" .) . -}}
{{- $total = addf $total (mulf $n (get $units $u)) -}}
{{- end -}}
{{- $total -}}
{{- end -}}
