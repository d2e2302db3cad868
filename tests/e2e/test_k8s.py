"""The deployment files: the Kubernetes manifests (deploy/k8s), the container image's default
config (deploy/docker) and deploy/compose.yaml.

Each overlay renders with `kubectl kustomize` (a failure to render fails the test), every
object validates against the Kubernetes API schemas of K8S_VERSION shipped in the
kubernetes-validate package (offline, strict: unknown fields are errors), and the
ServiceMonitor, a CRD that package has no schema for, against SERVICE_MONITOR_SCHEMA below.
Then the pieces are checked against each other and against the gateway's own config: probes,
container ports and Service target ports against gateway.toml's listener, the grace period
against the preStop sleep plus server.drain_timeout_ms, the backend's dns:// name against the
headless Service, TF Serving's flags against its ports and the models the gateway routes to,
and the pod security settings. Last, the gateway.toml and model folders a gateway pod would
see are laid out as the kubelet lays out ConfigMap volumes (`..data` symlinks) and loaded by
the real binary with `infergate check`.

No cluster and no container engine are needed: kubectl only renders.
"""

import base64
import math
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path, PurePosixPath

import jsonschema
import kubernetes_validate
import pytest
import yaml

from support import REPO, gateway_bin

# The oldest Kubernetes the manifests target: preStop `sleep` needs 1.30, the schemas are
# those of 1.33 (a version every major cloud still supports).
K8S_VERSION = "1.33"
K8S = REPO / "deploy" / "k8s"
OVERLAYS = ["cpu", "gpu"]
NAMESPACE = "infergate"
GATEWAY = {"app.kubernetes.io/name": "infergate", "app.kubernetes.io/component": "gateway"}
TFSERVING = {"app.kubernetes.io/name": "tfserving", "app.kubernetes.io/component": "model-server"}
# The API server's limit on a ConfigMap's data and binaryData together.
CONFIGMAP_MAX_BYTES = 1 << 20
# model.toml's [batching] max_batch_size when absent (README, src/config/model.rs).
DEFAULT_MAX_BATCH_SIZE = 32

# The fields of monitoring.coreos.com/v1 ServiceMonitor these manifests may use, as the
# Prometheus Operator's CRD (v0.84) types them; anything else is rejected, so a misspelt
# field fails here instead of being dropped by the API server's pruning.
_DURATION = {"type": "string",
             "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?"
                        r"(([0-9]+)s)?(([0-9]+)ms)?)$"}
_STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
SERVICE_MONITOR_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object", "required": ["name", "namespace"], "additionalProperties": False,
            "properties": {"name": {"type": "string"}, "namespace": {"type": "string"},
                           "labels": _STRINGS, "annotations": _STRINGS},
        },
        "spec": {
            "type": "object", "required": ["endpoints", "selector"], "additionalProperties": False,
            "properties": {
                "jobLabel": {"type": "string"},
                "targetLabels": {"type": "array", "items": {"type": "string"}},
                "podTargetLabels": {"type": "array", "items": {"type": "string"}},
                "namespaceSelector": {
                    "type": "object", "additionalProperties": False,
                    "properties": {"any": {"type": "boolean"},
                                   "matchNames": {"type": "array", "items": {"type": "string"}}},
                },
                "selector": {
                    "type": "object", "additionalProperties": False,
                    "properties": {"matchLabels": _STRINGS},
                },
                "endpoints": {
                    "type": "array", "minItems": 1,
                    "items": {
                        "type": "object", "required": ["port"], "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": _DURATION,
                            "scrapeTimeout": _DURATION,
                            "honorLabels": {"type": "boolean"},
                        },
                    },
                },
            },
        },
    },
}


def _duration_s(text):
    """Seconds in a Prometheus duration such as `15s` or `1m30s`."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+)(ms|h|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"unparsed duration {text!r}"
    return sum(int(n) * units[u] for n, u in parts)


def _render(overlay):
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is not on PATH: the manifests can't be rendered (CI installs it)"
    wasm = K8S / "base/plugins/digits/plugin.wasm"
    # The component is a build output copied in by deploy/k8s/plugins.sh (scripts/test.sh
    # builds plugins/digits/plugin.wasm before this suite runs).
    copied = subprocess.run([str(K8S / "plugins.sh"), "--no-build"], capture_output=True,
                            text=True)
    assert copied.returncode == 0, f"deploy/k8s/plugins.sh failed:\n{copied.stderr}"
    assert wasm.is_file()
    result = subprocess.run([kubectl, "kustomize", str(K8S / "overlays" / overlay)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"kubectl kustomize {overlay} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


class Rendered:
    """One overlay's objects, with look-ups by kind and name."""

    def __init__(self, overlay):
        self.overlay = overlay
        self.objects = _render(overlay)

    def all(self, kind):
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind, name):
        found = [o for o in self.all(kind) if o["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.overlay}: expected one {kind} {name}, found {len(found)}"
        return found[0]

    def configmap(self, name):
        return self.one("ConfigMap", name)

    def gateway(self):
        return self.one("Deployment", "infergate")

    def tfserving(self):
        return self.one("Deployment", "tfserving")

    def gateway_container(self):
        return _container(self.gateway(), "gateway")

    def gateway_toml_path(self):
        args = self.gateway_container()["args"]
        assert args[0] == "serve" and "--config" in args, args
        return PurePosixPath(args[args.index("--config") + 1])

    def mounted_file(self, pod_spec, container, path):
        """The ConfigMap key mounted at `path` in `container`: (configmap, key)."""
        for mount in container.get("volumeMounts", []):
            mount_path = PurePosixPath(mount["mountPath"])
            if path.parent == mount_path:
                volume = _volume(pod_spec, mount["name"])
                assert "configMap" in volume, f"{path} is on a volume that isn't a ConfigMap"
                return self.configmap(volume["configMap"]["name"]), path.name
        raise AssertionError(f"no volume mounted at {path.parent}")

    def gateway_config(self):
        pod = self.gateway()["spec"]["template"]["spec"]
        configmap, key = self.mounted_file(pod, self.gateway_container(),
                                           self.gateway_toml_path())
        return tomllib.loads(configmap["data"][key])


def _container(deployment, name):
    found = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    assert len(found) == 1, f"{deployment['metadata']['name']} has no container {name}"
    return found[0]


def _volume(pod_spec, name):
    found = [v for v in pod_spec.get("volumes", []) if v["name"] == name]
    assert len(found) == 1, f"no volume {name}"
    return found[0]


def _port_number(container, port):
    """A probe's or Service's port (a number or a container port's name) as a number."""
    if isinstance(port, int):
        return port
    names = {p["name"]: p["containerPort"] for p in container.get("ports", []) if "name" in p}
    assert port in names, f"container {container['name']} has no port named {port}"
    return names[port]


def _flags(container):
    """`--name=value` arguments as a dict."""
    flags = {}
    for arg in container.get("args", []):
        assert arg.startswith("--") and "=" in arg, f"unexpected argument {arg!r}"
        name, value = arg[2:].split("=", 1)
        flags[name] = value
    return flags


def _selects(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def _listen_port(address):
    return int(address.rsplit(":", 1)[1])


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request):
    return Rendered(request.param)


def test_every_object_validates_against_the_api_schemas(rendered):
    kinds = set()
    for obj in rendered.objects:
        name = f"{rendered.overlay}: {obj['kind']}/{obj['metadata']['name']}"
        kinds.add(obj["kind"])
        if obj["apiVersion"] == "monitoring.coreos.com/v1":
            try:
                jsonschema.validate(obj, SERVICE_MONITOR_SCHEMA)
            except jsonschema.ValidationError as e:
                pytest.fail(f"{name}: {'.'.join(map(str, e.path))}: {e.message}")
            continue
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{name} is not valid Kubernetes {K8S_VERSION}: "
                        f"{'.'.join(map(str, e.path))}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            pytest.fail(f"{name}: {e.message}")
    assert kinds >= {"Namespace", "ServiceAccount", "ConfigMap", "Deployment", "Service",
                     "HorizontalPodAutoscaler", "PodDisruptionBudget", "ServiceMonitor",
                     "NetworkPolicy"}, kinds


def test_namespace_and_labels_are_consistent(rendered):
    namespaces = rendered.all("Namespace")
    assert [n["metadata"]["name"] for n in namespaces] == [NAMESPACE]
    for obj in rendered.objects:
        meta = obj["metadata"]
        what = f"{obj['kind']}/{meta['name']}"
        if obj["kind"] != "Namespace":
            assert meta.get("namespace") == NAMESPACE, f"{what} is not in {NAMESPACE}"
        labels = meta.get("labels", {})
        assert labels.get("app.kubernetes.io/part-of") == "infergate", what
        if obj["kind"] != "Namespace":
            assert {"app.kubernetes.io/name", "app.kubernetes.io/component"} <= labels.keys(), what
    for deployment, labels in ((rendered.gateway(), GATEWAY), (rendered.tfserving(), TFSERVING)):
        spec = deployment["spec"]
        assert spec["selector"]["matchLabels"] == labels
        assert _selects(labels, spec["template"]["metadata"]["labels"])
        assert _selects(labels, deployment["metadata"]["labels"])
    # Every selector picks exactly the pods it is meant for.
    pods = {"infergate": rendered.gateway()["spec"]["template"]["metadata"]["labels"],
            "tfserving": rendered.tfserving()["spec"]["template"]["metadata"]["labels"]}
    expected = {("Service", "infergate"): "infergate",
                ("Service", "tfserving-headless"): "tfserving",
                ("PodDisruptionBudget", "infergate"): "infergate",
                ("PodDisruptionBudget", "tfserving"): "tfserving",
                ("NetworkPolicy", "tfserving"): "tfserving"}
    for (kind, name), target in expected.items():
        obj = rendered.one(kind, name)
        selector = (obj["spec"].get("selector") if kind == "Service" else
                    obj["spec"]["podSelector"]["matchLabels"] if kind == "NetworkPolicy" else
                    obj["spec"]["selector"]["matchLabels"])
        matched = [pod for pod, labels in pods.items() if _selects(selector, labels)]
        assert matched == [target], f"{kind}/{name} selects {matched}"


def test_probes_and_ports_follow_gateway_toml(rendered):
    config = rendered.gateway_config()
    port = _listen_port(config["server"]["listen"])
    assert config["server"]["listen"].startswith("0.0.0.0:"), \
        "the kubelet and the Service reach the pod IP: listen on all addresses"
    container = rendered.gateway_container()
    assert _port_number(container, "http") == port
    probes = {kind: container[kind] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert probes["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert probes["startupProbe"]["httpGet"]["path"] == "/healthz"
    for kind, probe in probes.items():
        assert _port_number(container, probe["httpGet"]["port"]) == port, kind
    # The admin listener: loopback (nothing outside the pod reaches it) or behind a token.
    admin = config["server"]["admin_listen"]
    if not admin.startswith("127.") and not admin.startswith("[::1]"):
        env = {e["name"]: e for e in container.get("env", [])}
        assert "admin_token" in config["server"] or \
            "secretKeyRef" in env.get("INFERGATE_ADMIN_TOKEN", {}).get("valueFrom", {}), \
            "a non-loopback admin_listen needs a token from a Secret"
    service = rendered.one("Service", "infergate")
    service_ports = {p["name"]: p for p in service["spec"]["ports"]}
    for p in service_ports.values():
        assert _port_number(container, p["targetPort"]) == port, p
    monitor = rendered.one("ServiceMonitor", "infergate")
    assert _selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in service_ports, endpoint
        assert endpoint.get("path", "/metrics") == "/metrics"
        if "scrapeTimeout" in endpoint:
            assert _duration_s(endpoint["scrapeTimeout"]) <= _duration_s(endpoint["interval"])


def test_grace_period_covers_prestop_and_drain(rendered):
    config = rendered.gateway_config()
    drain_s = math.ceil(config["server"].get("drain_timeout_ms", 30000) / 1000)
    pod = rendered.gateway()["spec"]["template"]["spec"]
    pre_stop = rendered.gateway_container()["lifecycle"]["preStop"]
    if "sleep" in pre_stop:
        sleep_s = pre_stop["sleep"]["seconds"]
    else:
        command = pre_stop["exec"]["command"]
        assert command[0] == "sleep", command
        sleep_s = int(command[1])
    assert sleep_s >= 1, "without a preStop pause new connections race the endpoint removal"
    grace = pod["terminationGracePeriodSeconds"]
    # The kubelet's SIGKILL comes `grace` seconds after preStop starts; the gateway gives up
    # on requests drain_timeout after SIGTERM, and needs a moment to exit after that.
    assert grace >= sleep_s + drain_s + 1, \
        f"terminationGracePeriodSeconds {grace} < preStop {sleep_s} s + drain {drain_s} s + 1 s"


def test_pods_run_restricted(rendered):
    for deployment in (rendered.gateway(), rendered.tfserving()):
        name = deployment["metadata"]["name"]
        pod = deployment["spec"]["template"]["spec"]
        assert pod.get("automountServiceAccountToken") is False, name
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
        pod_security = pod.get("securityContext", {})
        assert pod_security.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
        for c in pod.get("initContainers", []) + pod["containers"]:
            what = f"{name}/{c['name']}"
            sc = c.get("securityContext", {})
            assert sc.get("runAsNonRoot", pod_security.get("runAsNonRoot")) is True, what
            assert sc.get("runAsUser", pod_security.get("runAsUser", 1)) != 0, what
            assert sc.get("allowPrivilegeEscalation") is False, what
            assert not sc.get("privileged"), what
            assert sc.get("readOnlyRootFilesystem") is True, what
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], what
            assert not sc.get("capabilities", {}).get("add"), what
            resources = c.get("resources", {})
            assert {"cpu", "memory"} <= resources.get("requests", {}).keys(), what
            assert "memory" in resources.get("limits", {}), what
        for volume in pod.get("volumes", []):
            assert "hostPath" not in volume, f"{name}: hostPath volume {volume['name']}"
    # With a read-only root, everything the gateway writes must be on a writable volume.
    config = rendered.gateway_config()
    pod = rendered.gateway()["spec"]["template"]["spec"]
    cache = PurePosixPath(config["plugins"]["cache_dir"])
    writable = [PurePosixPath(m["mountPath"]) for m in rendered.gateway_container()["volumeMounts"]
                if "emptyDir" in _volume(pod, m["name"]) and not m.get("readOnly")]
    assert any(cache.is_relative_to(w) for w in writable), \
        f"plugins.cache_dir {cache} is not on a writable emptyDir ({writable})"


def test_autoscaling_and_disruption_budget(rendered):
    gateway = rendered.gateway()
    hpa = rendered.one("HorizontalPodAutoscaler", "infergate")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == \
        ("apps/v1", "Deployment", gateway["metadata"]["name"])
    assert "replicas" not in gateway["spec"], "the HPA owns the replica count"
    assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    cpu = [m for m in hpa["spec"]["metrics"]
           if m["type"] == "Resource" and m["resource"]["name"] == "cpu"]
    assert cpu and cpu[0]["resource"]["target"]["type"] == "Utilization"
    # Utilization is measured against the request: it must be there.
    assert "cpu" in rendered.gateway_container()["resources"]["requests"]
    for name, replicas in (("infergate", hpa["spec"]["minReplicas"]),
                           ("tfserving", rendered.tfserving()["spec"]["replicas"])):
        pdb = rendered.one("PodDisruptionBudget", name)["spec"]
        # A budget that allows no eviction at the usual size blocks every node drain.
        if "minAvailable" in pdb:
            assert isinstance(pdb["minAvailable"], int) and pdb["minAvailable"] < replicas, name
        else:
            assert pdb["maxUnavailable"] not in (0, "0%"), name


def test_gateway_discovers_tfserving_through_the_headless_service(rendered):
    config = rendered.gateway_config()
    tfs = _container(rendered.tfserving(), "tfserving")
    flags = _flags(tfs)
    headless = {s["metadata"]["name"]: s for s in rendered.all("Service")
                if s["spec"].get("clusterIP") == "None"}
    backends = {n: b for n, b in config["backends"].items() if b["kind"] == "tfserving"}
    assert backends, "gateway.toml has no tfserving backend"
    for name, backend in backends.items():
        for endpoint in backend["endpoints"]:
            match = re.fullmatch(r"dns://([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.cluster\.local:(\d+)",
                                 endpoint)
            assert match, f"backends.{name}: {endpoint} is not dns://<service>.<ns>.svc…:<port>"
            service, namespace, port = match[1], match[2], int(match[3])
            assert service in headless, f"{endpoint}: no headless Service {service}"
            assert namespace == headless[service]["metadata"]["namespace"], endpoint
            # A headless Service has no port mapping: DNS gives pod IPs, so the endpoint's
            # port is the container's, and the Service's ports must say the same.
            ports = {p["port"]: p for p in headless[service]["spec"]["ports"]}
            assert port in ports, f"{endpoint}: {service} has no port {port}"
            assert _port_number(tfs, ports[port]["targetPort"]) == port
            assert _selects(headless[service]["spec"]["selector"],
                            rendered.tfserving()["spec"]["template"]["metadata"]["labels"])
            assert int(flags["port"]) == port, "TF Serving's --port is not the endpoint's"
    assert _port_number(tfs, "grpc") == int(flags["port"])
    assert _port_number(tfs, "rest") == int(flags["rest_api_port"])
    for kind in ("startupProbe", "readinessProbe"):
        probe = tfs[kind]["httpGet"]
        assert _port_number(tfs, probe["port"]) == int(flags["rest_api_port"]), kind
        assert probe["path"] == f"/v1/models/{flags['model_name']}", kind
    assert _port_number(tfs, tfs["livenessProbe"]["tcpSocket"]["port"]) == int(flags["port"])
    assert flags["enable_batching"] == "true"
    # The model's files are on a volume, and its batches fit what the gateways send.
    pod = rendered.tfserving()["spec"]["template"]["spec"]
    mounts = [PurePosixPath(m["mountPath"]) for m in tfs["volumeMounts"]]
    assert any(PurePosixPath(flags["model_base_path"]).is_relative_to(m) for m in mounts)
    batching, key = rendered.mounted_file(pod, tfs, PurePosixPath(flags["batching_parameters_file"]))
    tf_max = int(re.search(r"max_batch_size\s*\{\s*value:\s*(\d+)", batching["data"][key])[1])
    # Every model folder mounted into the gateway names a model TF Serving serves.
    for model in _plugin_folders(rendered):
        toml = tomllib.loads(model["files"]["model.toml"].decode())
        if config["backends"][toml["backend"]]["kind"] != "tfserving":
            continue
        assert toml.get("model", model["name"]) == flags["model_name"], model["name"]
        rows = toml.get("batching", {}).get("max_batch_size", DEFAULT_MAX_BATCH_SIZE)
        assert rows <= tf_max, f"{model['name']}: batches of {rows} > TF Serving's {tf_max}"


def test_overlay_hardware(rendered):
    tfs = _container(rendered.tfserving(), "tfserving")
    image, tag = tfs["image"].rsplit(":", 1)
    assert image == "tensorflow/serving"
    flags = _flags(tfs)
    limits = tfs["resources"].get("limits", {})
    if rendered.overlay == "gpu":
        assert tag.endswith("-gpu"), tag
        assert int(limits["nvidia.com/gpu"]) >= 1
        assert 0 < float(flags["per_process_gpu_memory_fraction"]) <= 1
    else:
        assert not tag.endswith("-gpu") and tag != "latest", tag
        assert "nvidia.com/gpu" not in limits
        assert "per_process_gpu_memory_fraction" not in flags
    # The gateway and the model-copying init container use the same, pinned image.
    gateway_image = rendered.gateway_container()["image"]
    assert re.fullmatch(r"infergate:[0-9][\w.-]*", gateway_image), gateway_image
    init = rendered.tfserving()["spec"]["template"]["spec"]["initContainers"]
    assert [c["image"] for c in init] == [gateway_image]


def test_configmaps_fit_and_plugins_reload_in_place(rendered):
    for cm in rendered.all("ConfigMap"):
        size = sum(len(v.encode()) for v in cm.get("data", {}).values()) + \
            sum(len(base64.b64decode(v)) for v in cm.get("binaryData", {}).values())
        assert size <= CONFIGMAP_MAX_BYTES, f"ConfigMap {cm['metadata']['name']}: {size} bytes"
    folders = _plugin_folders(rendered)
    assert [f["name"] for f in folders] == ["digits"]
    for folder in folders:
        # A fixed name: an update changes the mounted files (hot reload), not the pod template.
        assert folder["configmap"] == f"infergate-plugin-{folder['name']}"
        assert "plugin.wasm" in folder["files"] and folder["files"]["plugin.wasm"][:4] == b"\0asm"
        wasm = (REPO / "plugins" / folder["name"] / "plugin.wasm").read_bytes()
        assert folder["files"]["plugin.wasm"] == wasm, "the ConfigMap holds a stale component"


def _plugin_folders(rendered):
    """The model folders mounted under plugins.dir: name, ConfigMap and files (bytes)."""
    config = rendered.gateway_config()
    plugins_dir = PurePosixPath(config["plugins"]["dir"])
    pod = rendered.gateway()["spec"]["template"]["spec"]
    folders = []
    for mount in rendered.gateway_container()["volumeMounts"]:
        path = PurePosixPath(mount["mountPath"])
        if path.parent != plugins_dir:
            continue
        assert "subPath" not in mount, "a subPath mount never sees ConfigMap updates"
        name = _volume(pod, mount["name"])["configMap"]["name"]
        cm = rendered.configmap(name)
        files = {k: v.encode() for k, v in cm.get("data", {}).items()}
        files.update({k: base64.b64decode(v) for k, v in cm.get("binaryData", {}).items()})
        folders.append({"name": path.name, "configmap": name, "files": files})
    return folders


def _configmap_volume(directory, files):
    """Lays out `files` as the kubelet does a ConfigMap volume: the files in a timestamped
    folder, `..data` a symlink to it, each file a symlink through `..data`."""
    stamp = "..2026_01_01_00_00_00.000000001"
    (directory / stamp).mkdir(parents=True)
    for key, data in files.items():
        (directory / stamp / key).write_bytes(data)
        os.symlink(f"..data/{key}", directory / key)
    os.symlink(stamp, directory / "..data")


def _rooted(root, toml_text):
    """The TOML with every absolute path value moved under `root`."""
    return re.sub(r'(=\s*")/', lambda m: f"{m[1]}{root}/", toml_text)


def _check(config_path, tmp_path):
    env = dict(os.environ, HOME=str(tmp_path / "home"), RUST_LOG="warn")
    env.pop("XDG_CACHE_HOME", None)
    env.pop("INFERGATE_ADMIN_TOKEN", None)
    result = subprocess.run([str(gateway_bin()), "check", "--config", str(config_path)],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, \
        f"infergate check {config_path} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_gateway_pod_config_loads_with_the_binary(rendered, tmp_path):
    """The gateway container's filesystem as the kubelet builds it from the rendered volumes,
    under a temporary root, loaded by `infergate check`."""
    assert gateway_bin().is_file(), f"{gateway_bin()} not found: build it first (cargo build)"
    root = tmp_path / "pod"
    pod = rendered.gateway()["spec"]["template"]["spec"]
    for mount in rendered.gateway_container()["volumeMounts"]:
        target = root / mount["mountPath"].lstrip("/")
        volume = _volume(pod, mount["name"])
        if "emptyDir" in volume:
            target.mkdir(parents=True)
            continue
        cm = rendered.configmap(volume["configMap"]["name"])
        files = {k: v.encode() for k, v in cm.get("data", {}).items()}
        files.update({k: base64.b64decode(v) for k, v in cm.get("binaryData", {}).items()})
        for key in files:
            if key.endswith(".toml"):
                files[key] = _rooted(root, files[key].decode()).encode()
        _configmap_volume(target, files)
    config_path = root / str(rendered.gateway_toml_path()).lstrip("/")
    out = _check(config_path, tmp_path)
    folders = _plugin_folders(rendered)
    assert f"ok, {len(folders)} model(s)" in out, out
    for folder in folders:
        assert re.search(rf"^\s*{folder['name']} → tfs `digits` pre=.*plugin\.wasm", out, re.M), out
    # The compiled plugin went to cache_dir, on the emptyDir: the path is writable in the pod.
    cache = root / rendered.gateway_config()["plugins"]["cache_dir"].lstrip("/")
    assert list(cache.glob("*.cwasm")), f"no compiled plugin in {cache}"


# The image's layout (Dockerfile, runtime stage): source in the repository → path in the image.
IMAGE_FILES = {
    "plugins/digits/model.toml": "/usr/share/infergate/plugins/digits/model.toml",
    "plugins/digits/model.onnx": "/usr/share/infergate/plugins/digits/model.onnx",
    "plugins/digits/plugin.wasm": "/usr/share/infergate/plugins/digits/plugin.wasm",
    "deploy/docker/gateway.toml": "/etc/infergate/gateway.toml",
}
IMAGE_DIRS = ["/etc/infergate/plugins", "/var/cache/infergate"]


def _image_root(root, mounts=()):
    """The image's files under `root`, then `mounts` (container path → repository file or
    folder) over them, with every absolute path in the TOML files moved under `root`."""
    for source, target in IMAGE_FILES.items():
        path = root / target.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes((REPO / source).read_bytes())
    for directory in IMAGE_DIRS:
        (root / directory.lstrip("/")).mkdir(parents=True, exist_ok=True)
    for target, source in dict(mounts).items():
        destination = root / target.lstrip("/")
        if source.is_dir():
            shutil.copytree(source, destination, dirs_exist_ok=True)
        else:
            destination.write_bytes(source.read_bytes())
    for toml in root.rglob("*.toml"):
        toml.write_text(_rooted(root, toml.read_text()))


def test_dockerfile_lays_out_what_the_configs_expect():
    dockerfile = (REPO / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)(?: AS (\w+))?$", dockerfile, re.M)
    assert re.search(r"^ARG RUST_IMAGE=rust:1\.95-\w+$", dockerfile, re.M)
    assert [s[1] for s in stages] == ["build", "plugins", "runtime"], stages
    assert "rustup target add wasm32-wasip2" in dockerfile
    assert "scripts/build-plugins.sh --examples" in dockerfile
    for target in IMAGE_FILES.values():
        directory = target.rsplit("/", 1)[0] + "/"
        assert target in dockerfile or directory in dockerfile, f"the image has no {target}"
    user = re.findall(r"^USER (\S+)$", dockerfile, re.M)
    assert user and user[-1].split(":")[0] not in ("0", "root"), user
    # Kubernetes' runAsNonRoot can only verify a numeric user.
    assert user[-1].split(":")[0].isdigit(), user
    uid = int(user[-1].split(":")[0])
    for deployment in ("base/gateway.yaml",):
        assert f"runAsUser: {uid}" in (K8S / deployment).read_text()
    config = tomllib.loads((REPO / "deploy/docker/gateway.toml").read_text())
    assert re.search(rf"^EXPOSE {_listen_port(config['server']['listen'])}$", dockerfile, re.M)
    ignored = (REPO / ".dockerignore").read_text().split()
    assert "**/target" in ignored and ".git" in ignored


def test_image_default_config_loads_with_the_binary(tmp_path):
    assert gateway_bin().is_file(), f"{gateway_bin()} not found: build it first (cargo build)"
    assert (REPO / "plugins/digits/plugin.wasm").is_file(), "build the example plugin first"
    root = tmp_path / "image"
    _image_root(root)
    out = _check(root / "etc/infergate/gateway.toml", tmp_path)
    assert "ok, 1 model(s)" in out and "digits → local" in out, out


def test_compose_runs_each_gateway_beside_its_tf_serving(tmp_path):
    compose = yaml.safe_load((REPO / "deploy/compose.yaml").read_text())
    services = compose["services"]
    gateways = {n: s for n, s in services.items() if s.get("image", "").startswith("infergate")}
    assert set(gateways) == {"gateway", "gateway-gpu"}, gateways
    for name, service in gateways.items():
        assert service["build"]["context"] == ".." and service["build"]["dockerfile"] == "Dockerfile"
        mounts = {}
        for volume in service["volumes"]:
            source, target = volume.split(":")[:2]
            mounts[target] = REPO / "deploy" / source
        config_file = mounts["/etc/infergate/gateway.toml"]
        config = tomllib.loads(config_file.read_text())
        # The backend is another service of the same profile, by its compose name.
        (backend,) = config["backends"].values()
        (endpoint,) = backend["endpoints"]
        host, port = re.fullmatch(r"http://([\w-]+):(\d+)", endpoint).groups()
        assert host in services, f"{name}: {endpoint} names no service"
        assert services[host].get("profiles") == service.get("profiles"), name
        assert host in service["depends_on"], name
        assert any(p.split(":")[-1] == port for p in services[host]["ports"]), name
        assert "--enable_batching=true" in services[host]["command"]
        if "gpu" in service.get("profiles", []):
            assert services[host]["image"].endswith("-gpu")
        drain_s = config["server"]["drain_timeout_ms"] / 1000
        assert _duration_s(service["stop_grace_period"]) > drain_s, name
        published = [p.split(":")[-1] for p in service["ports"]]
        assert published == [str(_listen_port(config["server"]["listen"]))], name
        # The gateway's view: the image's files plus the mounted config and model folders.
        root = tmp_path / name
        _image_root(root, mounts)
        out = _check(root / "etc/infergate/gateway.toml", tmp_path)
        assert "ok, 1 model(s)" in out and "digits → tfs `digits`" in out, out
