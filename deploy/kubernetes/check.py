"""Checks a rendered kustomization against the Portcullis config it mounts.

    kubectl kustomize deploy/kubernetes/base > rendered.yaml
    python3 deploy/kubernetes/check.py rendered.yaml

What the Kubernetes schemas cannot see: the ports, probes and shutdown
timing of the sidecar must agree with its config (carried in the
ConfigMap), and a Redis budget store it names must be a Service of the
kustomization that its NetworkPolicy lets it reach. Exits 1 with every
disagreement.
"""

import re
import sys
import tomllib

import yaml  # PyYAML, a dependency of kubernetes-validate


def seconds(text):
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", text)
    return int(m.group(1)) * units[m.group(2)]


def port(addr):
    return int(addr.rsplit(":", 1)[1])


def main(path):
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    problems = []
    # The sidecar's Deployment (an overlay may add others, as the budget
    # store's).
    (deployment,) = [
        d for d in by_kind["Deployment"]
        if any(c["name"] == "portcullis" for c in d["spec"]["template"]["spec"]["containers"])
    ]
    pod = deployment["spec"]["template"]["spec"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    sidecar = next(c for c in pod["containers"] if c["name"] == "portcullis")
    mount = next(m for m in sidecar["volumeMounts"] if m["name"] == "config")
    volume = next(v for v in pod["volumes"] if v["name"] == "config")
    # A ConfigMap, or a ConfigMap and Secrets projected into one volume.
    sources = volume["projected"]["sources"] if "projected" in volume else [volume]
    (name,) = [s["configMap"]["name"] for s in sources if "configMap" in s]
    (configmap,) = [c for c in by_kind["ConfigMap"] if c["metadata"]["name"] == name]
    projected = {i["path"] for s in sources if "secret" in s for i in s["secret"].get("items", [])}
    config_path = sidecar["args"][sidecar["args"].index("--config") + 1]
    if config_path != f"{mount['mountPath']}/portcullis.toml":
        problems.append(f"--config {config_path} is not the mounted file")
    config = tomllib.loads(configmap["data"]["portcullis.toml"])
    server = config.get("server", {})
    for part in ("cert", "key"):
        file = server.get("tls", {}).get(part)
        if file and file.startswith("/"):
            problems.append(f"server.tls.{part} {file} is outside the mounted volume")
        elif file and file not in projected:
            problems.append(f"server.tls.{part} {file} is not projected from a Secret")
    ports = {p["name"]: p["containerPort"] for p in sidecar["ports"]}
    if ports.get("http") != port(server.get("listen", "0.0.0.0:8080")):
        problems.append(f"port http {ports.get('http')} is not server.listen {server.get('listen')}")
    admin = server.get("admin_listen", "127.0.0.1:9090")
    if ports.get("admin") != port(admin) or admin.startswith("127."):
        problems.append(f"port admin {ports.get('admin')} is not reachable at server.admin_listen {admin}")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        if sidecar[probe]["httpGet"]["port"] != "admin":
            problems.append(f"{probe} does not use the admin port")
    if sidecar["readinessProbe"]["httpGet"]["path"] != "/readyz":
        problems.append("readinessProbe is not /readyz")
    pre_stop = sidecar["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain = seconds(server.get("drain_timeout", "30s"))
    grace = pod["terminationGracePeriodSeconds"]
    if grace < pre_stop + drain:
        problems.append(f"terminationGracePeriodSeconds {grace} < preStop {pre_stop} + drain_timeout {drain}")
    # `[upstream]` and every `[[upstreams]]` entry.
    upstreams = ([config["upstream"]] if "upstream" in config else []) + config.get("upstreams", [])
    upstream_ports = set()
    for u in upstreams:
        scheme, rest = u["url"].rstrip("/").split("//", 1)
        authority = rest.split("/")[0]
        upstream_ports.add(port(authority) if ":" in authority else (443 if scheme == "https:" else 80))
    (service,) = [
        s for s in by_kind["Service"]
        if all(pod_labels.get(k) == v for k, v in s["spec"]["selector"].items())
    ]
    for p in service["spec"]["ports"]:
        if p["targetPort"] != "http":
            problems.append(f"the Service exposes {p['targetPort']}, not only the gateway")
    for policy in by_kind.get("NetworkPolicy", []):
        for rule in policy["spec"].get("ingress", []):
            for p in rule.get("ports", []):
                if p["port"] in upstream_ports and p["port"] != ports.get("http"):
                    problems.append(f"the NetworkPolicy admits the upstream's port {p['port']}")
    store = config.get("budget_store", {})
    if store.get("kind") == "redis":
        host, _, store_port = store["url"].split("//", 1)[1].split("/")[0].rpartition("@")[2].partition(":")
        store_port = int(store_port or 6379)
        services = [s for s in by_kind["Service"] if s["metadata"]["name"] == host]
        if not services:
            problems.append(f"budget_store.url names {host}, which is no Service here")
        elif store_port not in [p["port"] for p in services[0]["spec"]["ports"]]:
            problems.append(f"the Service {host} has no port {store_port}")
        own = [
            n for n in by_kind.get("NetworkPolicy", [])
            if all(pod_labels.get(k) == v for k, v in n["spec"]["podSelector"]["matchLabels"].items())
        ]
        reaches = any(
            p["port"] == store_port
            for n in own for rule in n["spec"].get("egress", []) for p in rule.get("ports", [])
        )
        if own and not reaches:
            problems.append(f"the sidecar's NetworkPolicy lets it reach no port {store_port} (budget_store.url)")
    for problem in problems:
        print(f"{path}: {problem}")
    if not problems:
        print(f"{path}: the sidecar agrees with its config")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(max(main(p) for p in sys.argv[1:]))
