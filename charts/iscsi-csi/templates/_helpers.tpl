{{/* The CSI driver name: kubelet, the sidecars and the StorageClasses match volumes by it. */}}
{{- define "iscsi-csi.driverName" -}}iscsi.csi.tsdriver.dev{{- end -}}

{{- define "iscsi-csi.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "iscsi-csi.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "iscsi-csi.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/part-of: {{ include "iscsi-csi.fullname" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{/* Selector labels of one component: (list $ "controller") */}}
{{- define "iscsi-csi.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "iscsi-csi.fullname" $root }}-{{ index . 1 }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
{{- end -}}

{{- define "iscsi-csi.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* "true" when the csi-snapshotter sidecar and its RBAC are rendered: enabled, and the tgt backend (the static one has no snapshots, and the sidecar exits against a driver without them). */}}
{{- define "iscsi-csi.snapshots" -}}
{{- if and .Values.sidecars.snapshotter.enabled (eq .Values.controller.backend "tgt") -}}true{{- end -}}
{{- end -}}

{{/* The metrics Service of one component: (list $ "controller") */}}
{{- define "iscsi-csi.metricsServiceName" -}}
{{- include "iscsi-csi.fullname" (index . 0) }}-{{ index . 1 }}-metrics
{{- end -}}

{{/* prometheus.io annotations of a pod template, when metrics.scrapeAnnotations */}}
{{- define "iscsi-csi.scrapeAnnotations" -}}
{{- if and .Values.metrics.enabled .Values.metrics.scrapeAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .Values.metrics.port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end -}}

{{- define "iscsi-csi.sidecarImage" -}}
{{- printf "%s:%s" .repository .tag -}}
{{- end -}}

{{/*
Finds the running iscsid in /proc (hostPID) and runs the tool in its mount and network namespaces.
Used as the node's commandPrefix: [sh, -c, <this>, iscsid-nsenter] + the tool's argv.
*/}}
{{- define "iscsi-csi.iscsidNsenter" -}}
for c in /proc/[0-9]*/comm; do read -r n 2>/dev/null <"$c" || continue; if [ "$n" = iscsid ]; then p=${c#/proc/}; exec nsenter --target "${p%/comm}" --mount --net -- "$@"; fi; done; echo "iscsi-csi: no iscsid process in /proc" >&2; exit 127
{{- end -}}

{{/* The node's commandPrefix, as JSON. */}}
{{- define "iscsi-csi.nodeCommandPrefix" -}}
{{- $h := .Values.hostAccess -}}
{{- if $h.nodeCommandPrefix -}}
{{- toJson $h.nodeCommandPrefix -}}
{{- else if eq $h.strategy "chroot" -}}
{{- toJson (list "chroot" $h.chroot.hostRoot) -}}
{{- else if eq $h.strategy "nsenter" -}}
{{- if eq (toString $h.nsenter.nodeTarget) "iscsid" -}}
{{- toJson (list "sh" "-c" (include "iscsi-csi.iscsidNsenter" .) "iscsid-nsenter") -}}
{{- else -}}
{{- toJson (list "nsenter" "--target" (toString $h.nsenter.nodeTarget) "--mount" "--net" "--") -}}
{{- end -}}
{{- else -}}
{{- fail (printf "hostAccess.strategy must be nsenter or chroot, not %q" (toString $h.strategy)) -}}
{{- end -}}
{{- end -}}

{{/* The controller's commandPrefix (tgtadm reaches tgtd over a unix socket in the host's filesystem), as JSON. */}}
{{- define "iscsi-csi.controllerCommandPrefix" -}}
{{- $h := .Values.hostAccess -}}
{{- if $h.controllerCommandPrefix -}}
{{- toJson $h.controllerCommandPrefix -}}
{{- else if eq $h.strategy "chroot" -}}
{{- toJson (list "chroot" $h.chroot.hostRoot) -}}
{{- else -}}
{{- toJson (list "nsenter" "--target" "1" "--mount" "--") -}}
{{- end -}}
{{- end -}}

{{/* The host's / for the chroot strategy: a volume and its mount (HostToContainer: later host mounts show). */}}
{{- define "iscsi-csi.hostRootMount" -}}
{{- if eq .Values.hostAccess.strategy "chroot" }}
- name: host-root
  mountPath: {{ .Values.hostAccess.chroot.hostRoot }}
  mountPropagation: HostToContainer
{{- end }}
{{- end -}}

{{- define "iscsi-csi.hostRootVolume" -}}
{{- if eq .Values.hostAccess.strategy "chroot" }}
- name: host-root
  hostPath:
    path: /
    type: Directory
{{- end }}
{{- end -}}

{{/* The securityContext of every sidecar: root for the 0600 root socket, nothing else. */}}
{{- define "iscsi-csi.sidecarSecurityContext" -}}
securityContext:
  runAsUser: 0
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities:
    drop: ["ALL"]
{{- end -}}

{{/* Leader-election health of a controller sidecar: (list <name> <port>) */}}
{{- define "iscsi-csi.leaderElectionProbe" -}}
ports:
  - name: {{ index . 0 }}
    containerPort: {{ index . 1 }}
    protocol: TCP
livenessProbe:
  httpGet:
    path: /healthz/leader-election
    port: {{ index . 0 }}
  initialDelaySeconds: 10
  periodSeconds: 20
  timeoutSeconds: 10
  failureThreshold: 5
{{- end -}}
