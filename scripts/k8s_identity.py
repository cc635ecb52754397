"""Workload identity, not static keys, in the Kubernetes examples (run by lint-k8s.sh).

Every pod template runs as the `ferry` service account (IRSA role and AKS client-id
annotations), carries the AKS workload-identity label, and no container reads AWS_*/AZURE_*
variables from a Secret: static keys stay a commented alternative.
Usage: python3 scripts/k8s_identity.py MANIFEST...
"""
import sys

import yaml


def pod_specs(doc):
    kind = doc.get("kind")
    if kind == "Pod":
        return [(doc.get("metadata", {}), doc.get("spec", {}))]
    if kind in ("Job", "Deployment", "StatefulSet", "DaemonSet"):
        template = doc["spec"]["template"]
        return [(template.get("metadata", {}), template.get("spec", {}))]
    return []


def main(paths):
    bad, pods, sa = [], 0, None
    for path in paths:
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        for doc in docs:
            meta = doc.get("metadata", {})
            if doc.get("kind") == "ServiceAccount" and meta.get("name") == "ferry":
                sa = meta.get("annotations", {})
            for pod_meta, spec in pod_specs(doc):
                pods += 1
                if spec.get("serviceAccountName") != "ferry":
                    bad.append(f"{path}: a pod spec without serviceAccountName: ferry")
                if pod_meta.get("labels", {}).get("azure.workload.identity/use") != "true":
                    bad.append(f'{path}: a pod without the label azure.workload.identity/use: "true"')
                for c in spec.get("containers", []) + spec.get("initContainers", []):
                    for e in c.get("env", []):
                        if e["name"].startswith(("AWS_", "AZURE_")) and "valueFrom" in e:
                            bad.append(f"{path}: container {c['name']} reads {e['name']} from a Secret")
    if sa is None:
        bad.append("no ServiceAccount named ferry in the manifests")
    else:
        for key in ("eks.amazonaws.com/role-arn", "azure.workload.identity/client-id"):
            if key not in sa:
                bad.append(f"the ferry ServiceAccount lacks the annotation {key}")
    if pods == 0:
        bad.append("no pod specs found")
    if bad:
        print("\n".join(f"lint-k8s: {b}" for b in bad), file=sys.stderr)
        return 1
    print(f"lint-k8s: {pods} pod specs use workload identity (service account ferry)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
