#!/usr/bin/env python3
"""Validates rendered Kubernetes manifests (kustomize output), for deploy/validate.sh.

  check_manifests.py validate NAME=FILE...   schema + the deployment's own rules; exit 1 on any
  check_manifests.py config FILE DIR         writes the ConfigMap's authgate.toml to DIR and
                                             prints the gateway container's env as NAME=VALUE
                                             (a Secret's value as a 64-hex-digit stand-in)

Schemas: built-in kinds against Kubernetes' OpenAPI schemas (kubernetes-validate, strict: an
unknown field is an error); custom resources against the JSON schemas in deploy/schemas/, named
<kind>.<group>-<version>.json. A kind with neither schema is an error, never skipped.

Then rules no schema can state, each from a way these manifests could break in a cluster while
still being well-formed: selectors that select nothing, probe ports that name no port, the
grace period shorter than the gateway's own shutdown, a container that may run as root.
"""

import json
import pathlib
import sys
import tomllib

import jsonschema
import kubernetes_validate
import yaml

KUBERNETES_VERSION = "1.33.0"
SCHEMAS = pathlib.Path(__file__).resolve().parent / "schemas"
CONFIG_MAP = "authgate-config"
ADMIN_PORT = 9901


def load(path):
    with open(path) as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


def ident(doc):
    return "%s/%s" % (doc.get("kind", "?"), (doc.get("metadata") or {}).get("name", "?"))


def schema_errors(doc):
    api = doc.get("apiVersion", "")
    group = api.split("/")[0] if "/" in api else ""
    if "." in group and not group.endswith(".k8s.io"):
        version = api.split("/")[1]
        path = SCHEMAS / ("%s.%s-%s.json" % (doc["kind"].lower(), group, version))
        if not path.exists():
            return ["no schema for %s %s: add %s" % (api, doc.get("kind"), path)]
        validator = jsonschema.Draft202012Validator(json.loads(path.read_text()))
        return [
            "%s: %s" % ("/".join(str(p) for p in e.absolute_path) or "(root)", e.message)
            for e in validator.iter_errors(doc)
        ]
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        return ["%s: %s" % ("/".join(str(p) for p in e.absolute_path) or "(root)", e.message)]
    except kubernetes_validate.SchemaNotFoundError as e:
        return [e.message]
    return []


def parse_duration(text):
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for unit in ("ms", "s", "m", "h"):
        if text.endswith(unit) and text[: -len(unit)].isdigit():
            return int(text[: -len(unit)]) * units[unit]
    raise ValueError("not a duration: %r" % text)


def gateway_config(docs):
    for doc in docs:
        if doc.get("kind") == "ConfigMap" and doc["metadata"]["name"] == CONFIG_MAP:
            return doc.get("data", {}).get("authgate.toml")
    return None


def pod_templates(docs):
    for doc in docs:
        if doc.get("kind") in ("Deployment", "StatefulSet", "DaemonSet"):
            yield doc, doc.get("spec", {}).get("template", {})


def all_containers(pod):
    spec = pod.get("spec", {})
    return spec.get("initContainers", []) + spec.get("containers", [])


def is_gateway(container):
    return "authgate" in container.get("image", "")


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def probe_port(container, probe):
    port = (probe.get("httpGet") or probe.get("tcpSocket") or {}).get("port")
    if isinstance(port, str):
        for p in container.get("ports", []):
            if p.get("name") == port:
                return p["containerPort"]
        return None
    return port


def rule_errors(docs):
    """Yields (resource, message) for every broken rule."""
    text = gateway_config(docs)
    if text is None:
        yield "ConfigMap/" + CONFIG_MAP, "missing: the gateway has no config"
        return
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        yield "ConfigMap/" + CONFIG_MAP, "authgate.toml is not TOML: %s" % e
        return
    server = config.get("server", {})
    shutdown = parse_duration(server.get("shutdown_delay", "5s")) + parse_duration(
        server.get("drain_timeout", "30s")
    )
    admin = config.get("admin", {}).get("address", "")
    if not admin.endswith(":%d" % ADMIN_PORT):
        yield "ConfigMap/" + CONFIG_MAP, "[admin] address must use port %d, as the probes do" % ADMIN_PORT

    pods = list(pod_templates(docs))
    for workload, pod in pods:
        name = ident(workload)
        labels = pod.get("metadata", {}).get("labels", {})
        spec = pod.get("spec", {})
        if not selects(workload["spec"].get("selector", {}).get("matchLabels"), labels):
            yield name, "selector does not match the pod template's labels"
        pod_security = spec.get("securityContext", {})
        if pod_security.get("runAsNonRoot") is not True:
            yield name, "pod securityContext.runAsNonRoot must be true"
        if pod_security.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            yield name, "pod securityContext.seccompProfile.type must be RuntimeDefault"
        volumes = {v["name"] for v in spec.get("volumes", [])}
        gateways = [c for c in all_containers(pod) if is_gateway(c)]
        for container in all_containers(pod):
            where = "%s container %s" % (name, container["name"])
            security = container.get("securityContext", {})
            if security.get("readOnlyRootFilesystem") is not True:
                yield where, "securityContext.readOnlyRootFilesystem must be true"
            if security.get("allowPrivilegeEscalation") is not False:
                yield where, "securityContext.allowPrivilegeEscalation must be false"
            if "ALL" not in security.get("capabilities", {}).get("drop", []):
                yield where, "securityContext.capabilities.drop must hold ALL"
            resources = container.get("resources", {})
            if "memory" not in resources.get("limits", {}) or not resources.get("requests"):
                yield where, "needs resource requests and a memory limit"
            for mount in container.get("volumeMounts", []):
                if mount["name"] not in volumes:
                    yield where, "mounts volume %r, which the pod does not have" % mount["name"]
                if "subPath" in mount:
                    yield where, "a subPath mount never sees ConfigMap or Secret updates"
            for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
                probe = container.get(kind)
                if probe and probe_port(container, probe) is None:
                    yield where, "%s names a port the container does not declare" % kind
        if not gateways:
            continue
        if spec.get("terminationGracePeriodSeconds", 30) <= shutdown:
            yield name, "terminationGracePeriodSeconds must exceed shutdown_delay + drain_timeout (%ss)" % shutdown
        annotations = pod.get("metadata", {}).get("annotations", {})
        wanted = {"prometheus.io/scrape": "true", "prometheus.io/port": str(ADMIN_PORT), "prometheus.io/path": "/metrics"}
        for key, value in wanted.items():
            if annotations.get(key) != value:
                yield name, "pod annotation %s should be %r" % (key, value)
        init_names = {c["name"] for c in spec.get("initContainers", [])}
        for gateway in gateways:
            where = "%s container %s" % (name, gateway["name"])
            if gateway["name"] in init_names and gateway.get("restartPolicy") != "Always":
                yield where, "an init container gateway must be a native sidecar (restartPolicy: Always)"
            for kind, path in (("startupProbe", None), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
                probe = gateway.get(kind)
                if not probe:
                    yield where, "needs a %s" % kind
                    continue
                if probe_port(gateway, probe) != ADMIN_PORT:
                    yield where, "%s must use the admin port %d" % (kind, ADMIN_PORT)
                if path and probe.get("httpGet", {}).get("path") != path:
                    yield where, "%s must GET %s" % (kind, path)

    def pods_selected_by(selector):
        return [pod for _, pod in pods if selects(selector, pod.get("metadata", {}).get("labels", {}))]

    services = [d for d in docs if d.get("kind") == "Service"]
    for service in services:
        selected = pods_selected_by(service["spec"].get("selector"))
        if not selected:
            yield ident(service), "selects no pod in this overlay"
        for port in service["spec"].get("ports", []):
            target = port.get("targetPort", port.get("port"))
            if isinstance(target, str) and not any(
                p.get("name") == target for pod in selected for c in all_containers(pod) for p in c.get("ports", [])
            ):
                yield ident(service), "targetPort %r names no container port of the pods it selects" % target
    for doc in docs:
        if doc.get("kind") == "PodDisruptionBudget" and not pods_selected_by(doc["spec"]["selector"].get("matchLabels")):
            yield ident(doc), "selects no pod in this overlay"
        if doc.get("kind") == "ServiceMonitor":
            matched = [s for s in services if selects(doc["spec"]["selector"].get("matchLabels"), s["metadata"].get("labels", {}))]
            if not matched:
                yield ident(doc), "selects no Service in this overlay"
            for endpoint in doc["spec"].get("endpoints", []):
                if endpoint.get("port") and not any(
                    p.get("name") == endpoint["port"] for s in matched for p in s["spec"].get("ports", [])
                ):
                    yield ident(doc), "endpoint port %r is not a port of the Services it selects" % endpoint["port"]


def validate(named_files):
    failed = 0
    for item in named_files:
        name, _, path = item.partition("=")
        docs = load(path)
        problems = []
        for doc in docs:
            problems += ["%s: %s" % (ident(doc), message) for message in schema_errors(doc)]
        problems += ["%s: %s" % (where, message) for where, message in rule_errors(docs)]
        for problem in problems:
            print("%s: %s" % (name, problem))
        print("%s: %d resource(s), %s" % (name, len(docs), "%d problem(s)" % len(problems) if problems else "valid"))
        failed += len(problems)
    return 1 if failed else 0


def config(path, directory):
    docs = load(path)
    text = gateway_config(docs)
    if text is None:
        print("no ConfigMap %s in %s" % (CONFIG_MAP, path), file=sys.stderr)
        return 1
    pathlib.Path(directory, "authgate.toml").write_text(text)
    for _, pod in pod_templates(docs):
        for container in all_containers(pod):
            if is_gateway(container):
                for var in container.get("env", []):
                    if "value" in var:
                        print("%s=%s" % (var["name"], var["value"]))
                    elif "secretKeyRef" in var.get("valueFrom", {}):
                        # A Secret's value is never in the manifests: check with a stand-in of
                        # 64 hex digits, what `openssl rand -hex 32` makes.
                        print("%s=%s" % (var["name"], "0123456789abcdef" * 4))
                return 0
    print("no authgate container in %s" % path, file=sys.stderr)
    return 1


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "validate":
        sys.exit(validate(sys.argv[2:]))
    if len(sys.argv) == 4 and sys.argv[1] == "config":
        sys.exit(config(sys.argv[2], sys.argv[3]))
    print(__doc__, file=sys.stderr)
    sys.exit(2)
