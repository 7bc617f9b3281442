#!/usr/bin/env python3
"""Checks rendered Tollgate manifests for the properties the deployment relies on.

Usage: check-manifests.py RENDERED.yaml   (output of `kubectl kustomize k8s/overlays/X`)
Prints every problem and exits 1 when there is one. Schema validity is checked
separately with `kubernetes-validate --strict`.
"""
import sys

import yaml


def workloads(docs):
    """(name, kind, pod spec) of every workload."""
    for doc in docs:
        if doc and doc.get("kind") in ("Deployment", "StatefulSet"):
            yield doc["metadata"]["name"], doc["kind"], doc["spec"]["template"]["spec"]
        elif doc and doc.get("kind") == "CronJob":
            pod = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
            yield doc["metadata"]["name"], doc["kind"], pod


def main(path):
    with open(path) as f:
        docs = list(yaml.safe_load_all(f))
    problems = []
    kinds = {doc["kind"] for doc in docs if doc}
    for needed in ("Deployment", "Service", "HorizontalPodAutoscaler",
                   "PodDisruptionBudget", "ConfigMap", "NetworkPolicy"):
        if needed not in kinds:
            problems.append(f"no {needed}")
    for name, kind, pod in workloads(docs):
        if not pod.get("securityContext", {}).get("runAsNonRoot"):
            problems.append(f"{name}: pod must set runAsNonRoot")
        for c in pod["containers"]:
            sc = c.get("securityContext", {})
            if not sc.get("readOnlyRootFilesystem"):
                problems.append(f"{name}/{c['name']}: readOnlyRootFilesystem must be true")
            if sc.get("allowPrivilegeEscalation", True):
                problems.append(f"{name}/{c['name']}: allowPrivilegeEscalation must be false")
            res = c.get("resources", {})
            if "requests" not in res or "memory" not in res.get("limits", {}):
                problems.append(f"{name}/{c['name']}: needs resource requests and a memory limit")
            if kind != "CronJob" and "readinessProbe" not in c:
                problems.append(f"{name}/{c['name']}: needs a readiness probe")
        if name == "tollgate-collector":
            c = pod["containers"][0]
            for probe in ("livenessProbe", "readinessProbe"):
                port = c.get(probe, {}).get("httpGet", {}).get("port")
                if port != "admin":
                    problems.append(f"{name}: {probe} must use the admin port, not {port!r}")
            if pod.get("terminationGracePeriodSeconds", 30) <= 20:
                problems.append(f"{name}: terminationGracePeriodSeconds must exceed shutdown_timeout (20 s)")
            mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
            if "/var/lib/tollgate" not in mounts:
                problems.append(f"{name}: needs a writable volume at /var/lib/tollgate")
    for doc in docs:
        if doc and doc.get("kind") == "CronJob":
            name = doc["metadata"]["name"]
            if doc["spec"].get("concurrencyPolicy") != "Forbid":
                problems.append(f"{name}: runs must not overlap (concurrencyPolicy: Forbid)")
            if "activeDeadlineSeconds" not in doc["spec"]["jobTemplate"]["spec"]:
                problems.append(f"{name}: a run needs a deadline (activeDeadlineSeconds)")
    for p in problems:
        print(f"{path}: {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
