"""The deploy files (deploy/compose.yaml, Dockerfile, k8s/, prometheus.yml,
alert-rules.yml) hang together: no docker engine or cluster runs here, so
they are parsed and cross-checked, against each other, the README's
Configuration and Topics tables and the metrics the code defines.

When ``promtool`` is on the PATH (Debian package ``prometheus``), the
Prometheus config and rules are also checked by it, and the alert rules are
unit-tested with ``promtool test rules`` on synthetic series.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from shopwatch.agents.sinks import SINKS_ENV
from shopwatch.agents.web import OPEN_PATHS, PLACEHOLDER_PREFIX, TOKEN_ENV

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
README = ROOT / "README.md"


# --------------------------------------------------------------------------- README


def _section(title: str) -> list[str]:
    lines = README.read_text(encoding="utf-8").splitlines()
    start = lines.index(f"## {title}")
    out = []
    for line in lines[start + 1:]:
        if line.startswith("## "):
            break
        out.append(line)
    return out


def readme_topics() -> set[str]:
    """Topic names of the README's Topics table."""
    topics = set()
    for line in _section("Topics"):
        if line.startswith("| `"):
            topics.add(re.findall(r"`([^`]+)`", line.split("|")[1])[0])
    return topics


def readme_env_vars() -> set[str]:
    """Env vars of the README's Configuration table (rows starting with "| `").

    A row may abbreviate: "`SHOPWATCH_TOPIC_ORDERS` … `_CHATS`, `_ALERTS`" names
    SHOPWATCH_TOPIC_CHATS, SHOPWATCH_TOPIC_ALERTS and, for the "…", every topic
    of the Topics table.
    """
    names: set[str] = set()
    for line in _section("Configuration"):
        if not line.startswith("| `"):
            continue
        cell = line.split("|")[1]
        tokens = re.findall(r"`([^`]+)`", cell)
        first = tokens[0]
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*", first), line
        names.add(first)
        prefix = first.rsplit("_", 1)[0]
        for t in tokens[1:]:
            if t.startswith("_"):
                names.add(prefix + t)
        if "…" in cell:
            names |= {f"{prefix}_{t.split('.', 1)[1].upper()}" for t in readme_topics()}
    return names


def allowed_env() -> set[str]:
    # SHOPWATCH_SINKS is documented in shopwatch.agents.sinks, SHOPWATCH_WEB_TOKEN in
    # shopwatch.agents.web (both belong in the README table).
    return readme_env_vars() | {SINKS_ENV, TOKEN_ENV}


def test_readme_tables_parse():
    env = readme_env_vars()
    for name in ("KAFKA_BOOTSTRAP", "SHOPWATCH_WEB_PORT", "SHOPWATCH_DATA_DIR", "SHOPWATCH_STORE",
                 "SHOPWATCH_WEB_BIND", "SHOPWATCH_TOPIC_ORDERS", "SHOPWATCH_TOPIC_SHIPMENTS", "SHOPWATCH_TOPIC_DLQ"):
        assert name in env, name
    assert {"shop.orders", "shop.scores", "shop.dlq", "shop.ticks"} <= readme_topics()


# --------------------------------------------------------------------------- helpers


def load(path: Path):
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def compose() -> dict:
    return load(DEPLOY / "compose.yaml")


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def worker_services(c: dict) -> dict[str, dict]:
    return {n: s for n, s in c["services"].items()
            if isinstance(s.get("build"), dict) and s["build"].get("dockerfile") == "deploy/Dockerfile"}


def mounts(service: dict) -> list[tuple[str, str]]:
    """(source, target) of each volume entry (short syntax)."""
    out = []
    for v in service.get("volumes", []):
        if isinstance(v, dict):
            out.append((v["source"], v["target"]))
        else:
            parts = v.split(":")
            out.append((parts[0], parts[1]))
    return out


def depends(service: dict) -> dict[str, dict]:
    d = service.get("depends_on") or {}
    return {k: {} for k in d} if isinstance(d, list) else d


def cpu_cores(v) -> float:
    s = str(v)
    return int(s[:-1]) / 1000 if s.endswith("m") else float(s)


def mem_bytes(v) -> int:
    s = str(v)
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9}
    for u, f in units.items():
        if s.endswith(u):
            return int(float(s[: -len(u)]) * f)
    return int(s)


def code_metric_names() -> set[str]:
    """Prometheus metric names the code defines (Counter/Gauge/Histogram("name", ...))."""
    names = set()
    for py in (ROOT / "agents").glob("*.py"):
        names |= set(re.findall(r"(?:Counter|Gauge|Histogram|Summary)\(\s*\"(shopwatch_[a-z0-9_]+)\"", py.read_text("utf-8")))
    return names


# --------------------------------------------------------------------------- compose


def test_compose_kafka_is_single_node_kraft_4x():
    c = compose()
    kafka = c["services"]["kafka"]
    image, _, tag = kafka["image"].partition(":")
    assert image == "apache/kafka" and int(tag.split(".")[0]) >= 4, kafka["image"]
    env = env_of(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env.get("CLUSTER_ID")
    node_id = env["KAFKA_NODE_ID"]
    voter_id, _, voter = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].partition("@")
    assert voter_id == node_id
    voter_host, voter_port = voter.rsplit(":", 1)
    assert voter_host in ("kafka", kafka.get("hostname"))
    listeners = dict(re.fullmatch(r"(\w+)://[^:]*:(\d+)", lst).groups() for lst in env["KAFKA_LISTENERS"].split(","))
    assert listeners[env["KAFKA_CONTROLLER_LISTENER_NAMES"]] == voter_port
    protocol_map = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(listeners) <= set(protocol_map)
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    # the log dir is on a declared volume
    assert any(t == env["KAFKA_LOG_DIRS"] and s in c["volumes"] for s, t in mounts(kafka))
    assert "healthcheck" in kafka


def test_compose_workers_are_consistent():
    c = compose()
    services = c["services"]
    workers = worker_services(c)
    assert len(workers) == 2, sorted(workers)
    kafka_env = env_of(services["kafka"])
    advertised = {a.split("://", 1)[1] for a in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    allowed = allowed_env()
    data_volumes = set()
    for name, w in workers.items():
        assert (DEPLOY / w["build"]["context"]).resolve() == ROOT, name
        assert (ROOT / w["build"]["dockerfile"]).is_file()
        assert w.get("command") in (None, ["worker"]), w.get("command")
        env = env_of(w)
        assert set(env) <= allowed, f"{name}: env not in the README's Configuration table: {set(env) - allowed}"
        assert env["KAFKA_BOOTSTRAP"] in advertised, (env["KAFKA_BOOTSTRAP"], advertised)
        assert env["KAFKA_BOOTSTRAP"].split(":")[0] in services
        assert env["SHOPWATCH_WEB_BIND"] == "0.0.0.0", "probes and Prometheus must reach the worker"
        assert env["SHOPWATCH_STORE"].startswith("rocksdb")
        data = [s for s, t in mounts(w) if t == env["SHOPWATCH_DATA_DIR"]]
        assert len(data) == 1 and data[0] in c["volumes"], f"{name}: no volume at SHOPWATCH_DATA_DIR"
        data_volumes.add(data[0])
        deps = depends(w)
        assert deps["kafka"].get("condition") == "service_healthy"
        assert deps["kafka-topics"].get("condition") == "service_completed_successfully"
        assert w.get("hostname") == name, "each worker needs a stable, resolvable host name"
    assert len(data_volumes) == 2, "each worker needs its own RocksDB volume"
    assert len({env_of(w)["SHOPWATCH_APP_ID"] for w in workers.values()}) == 1, "one consumer group"


def test_compose_workers_have_a_web_token():
    """Bound to 0.0.0.0 the workers refuse to start without a token: compose passes one, from the
    caller's environment, with a placeholder default that says to change it; both workers share it
    (each forwards requests for keys the other owns, token included)."""
    c = compose()
    tokens = {env_of(w).get(TOKEN_ENV) for w in worker_services(c).values()}
    assert len(tokens) == 1, tokens
    [token] = tokens
    m = re.fullmatch(r"\$\{" + TOKEN_ENV + r":-([^}]+)\}", token or "")
    assert m, f"{TOKEN_ENV} must come from the environment (${{{TOKEN_ENV}:-placeholder}}), not {token!r}"
    assert m.group(1).startswith(PLACEHOLDER_PREFIX), "the default must be an obvious placeholder"
    text = (DEPLOY / "compose.yaml").read_text(encoding="utf-8")
    assert re.search(r"#.*CHANGE IT", text), "a comment must say to change the placeholder"
    for w in worker_services(c).values():  # published on the host's loopback only
        for port in w.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), port


def test_compose_references_resolve():
    c = compose()
    services, volumes = c["services"], set(c.get("volumes") or {})
    used = set()
    for name, s in services.items():
        for dep in depends(s):
            assert dep in services, f"{name} depends on unknown service {dep}"
        for src, _target in mounts(s):
            if src.startswith((".", "/")):
                assert (DEPLOY / src).exists(), f"{name} mounts missing file {src}"
            else:
                assert src in volumes, f"{name} uses undeclared volume {src}"
                used.add(src)
    assert used == volumes, f"declared but unused volumes: {volumes - used}"


def test_compose_creates_the_readme_topics():
    c = compose()
    svc = c["services"]["kafka-topics"]
    assert svc["image"] == c["services"]["kafka"]["image"]
    assert depends(svc)["kafka"]["condition"] == "service_healthy"
    script = "\n".join(svc["command"]) if isinstance(svc["command"], list) else svc["command"]
    assert not re.search(r"(?<!\$)\$(?!\$)", script.replace("$$", "")), "escape shell $ as $$ in compose"
    created = dict(re.findall(r"--topic (\S+) --partitions (\d+)", script))
    assert set(created) == readme_topics()
    partitions = {env_of(w)["SHOPWATCH_PARTITIONS"] for w in worker_services(c).values()}
    assert set(created.values()) == partitions, "topics and workers disagree on SHOPWATCH_PARTITIONS"
    assert re.search(r"--topic shop\.scores [^\n]*cleanup\.policy=compact", script)
    assert "--bootstrap-server kafka:9092" in script


def test_prometheus_scrapes_the_workers():
    c = compose()
    prom = load(DEPLOY / "prometheus.yml")
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    job = jobs["shopwatch"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = {t for sc in job["static_configs"] for t in sc["targets"]}
    expected = {f"{n}:{env_of(w)['SHOPWATCH_WEB_PORT']}" for n, w in worker_services(c).items()}
    assert targets == expected
    assert expected == {f"{n}:6066" for n in worker_services(c)}
    for j in jobs.values():
        for sc in j["static_configs"]:
            for t in sc["targets"]:
                assert t.split(":")[0] in c["services"] or t.startswith("localhost:"), t
    # the config and its rule files are mounted where Prometheus looks for them
    p = c["services"]["prometheus"]
    mounted = {Path(t): Path(s).name for s, t in mounts(p) if s.startswith(".")}
    cfg_path = next(t for t in mounted if mounted[t] == "prometheus.yml")
    assert f"--config.file={cfg_path}" in p["command"]
    for rule_file in prom["rule_files"]:
        in_container = cfg_path.parent / rule_file
        assert in_container in mounted, rule_file
        assert (DEPLOY / mounted[in_container]).is_file()
        assert (DEPLOY / rule_file).is_file()


# --------------------------------------------------------------------------- alert rules


def rules() -> dict[str, dict]:
    doc = load(DEPLOY / "alert-rules.yml")
    return {r["alert"]: r for g in doc["groups"] for r in g["rules"]}


def test_alert_rules_structure():
    rs = rules()
    for name, r in rs.items():
        assert r["expr"] and r["labels"]["severity"] in ("info", "warning", "critical"), name
        assert r["annotations"]["summary"], name
        assert re.fullmatch(r"\d+[smh]", r.get("for", "0s")), name
    assert 'up{job="shopwatch"}' in rs["ShopwatchWorkerDown"]["expr"]
    inv = rs["ShopwatchInvalidEvents"]
    assert "rate(shopwatch_invalid_events_total[5m])" in inv["expr"] and "> 0" in inv["expr"]
    assert inv["for"] == "5m"
    assert "kafka_consumergroup_lag" in rs["ShopwatchConsumerLagGrowing"]["expr"]
    assert "shopwatch_events_total" in rs["ShopwatchNotConsuming"]["expr"]
    # every shopwatch_* metric a rule uses is one the code defines
    defined = code_metric_names()
    assert {"shopwatch_events_total", "shopwatch_invalid_events_total", "shopwatch_sink_deliveries_total"} <= defined
    for name, r in rs.items():
        for metric in re.findall(r"\bshopwatch_[a-z0-9_]+", r["expr"]):
            assert metric in defined, f"{name} uses {metric}, which no code defines"
    # the consumer group in the lag rules is the app id
    app_id = env_of(next(iter(worker_services(compose()).values())))["SHOPWATCH_APP_ID"]
    for r in rs.values():
        for group in re.findall(r'consumergroup="([^"]+)"', r["expr"]):
            assert group == app_id


# --------------------------------------------------------------------------- Dockerfile


def dockerfile() -> list[tuple[str, str]]:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instr, _, rest = line.partition(" ")
            out.append((instr.upper(), rest.strip()))
    return out


def test_dockerfile():
    ins = dockerfile()
    assert ins[0] == ("FROM", "python:3.11-slim")
    last = {k: v for k, v in ins}
    assert last["ENTRYPOINT"] == '["shopwatch"]'
    assert last["CMD"] == '["worker"]'
    assert any(k == "RUN" and re.search(r"pip install (\S+ )*\.(\s|$)", v) for k, v in ins)
    copied = set()
    for k, v in ins:
        if k == "COPY":
            *sources, _dest = v.split()
            for s in sources:
                assert (ROOT / s).exists(), f"COPY {s}: not in the build context (the repository root)"
                copied.add(s.rstrip("/"))
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    for src in re.findall(r'"shopwatch\.\w+" = "(\w+)"', pyproject):
        assert src in copied, f"package source {src}/ is not copied"
    assert {"pyproject.toml", "README.md"} <= copied
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(v for k, v in ins if k == "ENV")))
    assert set(env) - {"PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "PIP_NO_CACHE_DIR",
                       "PIP_DISABLE_PIP_VERSION_CHECK"} <= allowed_env()
    assert env["SHOPWATCH_WEB_BIND"] == "0.0.0.0"
    assert last["EXPOSE"] == env["SHOPWATCH_WEB_PORT"] == "6066"
    assert any(k == "USER" and v != "root" for k, v in ins), "run as a non-root user"
    # no token baked into the image: it comes at run time, from a secret
    assert TOKEN_ENV not in env
    assert not any(TOKEN_ENV in v for k, v in ins if k in ("ENV", "ARG", "RUN", "LABEL"))
    # the health check reads an open page, without a token
    check = last["HEALTHCHECK"]
    paths = set(re.findall(r"/(healthz|readyz|metrics)\b", check))
    assert paths and {"/" + p for p in paths} <= OPEN_PATHS, check
    assert "Authorization" not in check


# --------------------------------------------------------------------------- Kubernetes


def k8s_docs() -> list[dict]:
    with (DEPLOY / "k8s" / "shopwatch.yaml").open(encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def by_kind(docs, kind) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def test_k8s_documents_are_well_formed():
    docs = k8s_docs()
    for d in docs:
        assert d.get("apiVersion") and d.get("kind") and d.get("metadata", {}).get("name"), d
    kinds = {d["kind"] for d in docs}
    assert {"ConfigMap", "Service", "StatefulSet"} <= kinds
    assert len({(d["kind"], d["metadata"]["name"]) for d in docs}) == len(docs), "duplicate objects"
    apis = {"ConfigMap": "v1", "Secret": "v1", "Service": "v1", "StatefulSet": "apps/v1",
            "PodDisruptionBudget": "policy/v1"}
    for d in docs:
        assert d["apiVersion"] == apis[d["kind"]], d["kind"]


def test_k8s_configmap_matches_the_readme():
    docs = k8s_docs()
    [cm] = by_kind(docs, "ConfigMap")
    allowed = readme_env_vars()
    assert set(cm["data"]) <= allowed, f"not in the README's Configuration table: {set(cm['data']) - allowed}"
    for k, v in cm["data"].items():
        assert isinstance(v, str), f"ConfigMap values must be strings: {k}={v!r}"
    assert cm["data"]["SHOPWATCH_WEB_BIND"] == "0.0.0.0"
    assert TOKEN_ENV not in cm["data"], "the token belongs in a Secret"
    assert cm["data"]["SHOPWATCH_STORE"].startswith("rocksdb")
    for secret in by_kind(docs, "Secret"):
        keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))
        assert keys <= allowed_env(), keys


def test_k8s_statefulset():
    docs = k8s_docs()
    [cm] = by_kind(docs, "ConfigMap")
    [sts] = by_kind(docs, "StatefulSet")
    spec = sts["spec"]
    assert spec["replicas"] == 2
    pod = spec["template"]
    labels = pod["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    # the governing Service is headless and selects these pods
    services = {s["metadata"]["name"]: s for s in by_kind(docs, "Service")}
    svc = services[spec["serviceName"]]
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["selector"].items() <= labels.items()
    [c] = pod["spec"]["containers"]
    assert c.get("args", ["worker"]) == ["worker"] and "command" not in c
    ports = {p.get("name"): p["containerPort"] for p in c["ports"]}
    web_port = int(cm["data"]["SHOPWATCH_WEB_PORT"])
    assert web_port in ports.values()

    def resolve(port):
        return ports[port] if isinstance(port, str) else port

    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = c[probe]["httpGet"]
        assert get["path"] == path, probe
        assert resolve(get["port"]) == web_port, probe
    if "startupProbe" in c:
        assert resolve(c["startupProbe"]["httpGet"]["port"]) == web_port
    for p in svc["spec"]["ports"]:
        assert resolve(p.get("targetPort", p["port"])) == web_port
    # env from the ConfigMap (and the optional sinks Secret) of this file
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    refs = c["envFrom"]
    assert {"configMapRef": {"name": cm["metadata"]["name"]}} in refs
    for r in refs:
        if "configMapRef" in r:
            assert ("ConfigMap", r["configMapRef"]["name"]) in names
        if "secretRef" in r:
            assert ("Secret", r["secretRef"]["name"]) in names or r["secretRef"].get("optional")
    # RocksDB data on the claim template, at SHOPWATCH_DATA_DIR
    claims = {t["metadata"]["name"]: t for t in spec["volumeClaimTemplates"]}
    mounts_ = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert set(claims) <= set(mounts_)
    assert cm["data"]["SHOPWATCH_DATA_DIR"] in [mounts_[n] for n in claims]
    for t in claims.values():
        assert "ReadWriteOnce" in t["spec"]["accessModes"]
        assert mem_bytes(t["spec"]["resources"]["requests"]["storage"]) >= 2**30
    # fits a 2-core node: both replicas' requests, and one pod's limit, within 2 cores
    res = c["resources"]
    req_cpu, lim_cpu = cpu_cores(res["requests"]["cpu"]), cpu_cores(res["limits"]["cpu"])
    assert req_cpu * spec["replicas"] <= 1.5, "leave room for the kubelet and system pods"
    assert req_cpu <= lim_cpu <= 2
    assert mem_bytes(res["requests"]["memory"]) <= mem_bytes(res["limits"]["memory"]) <= 4 * 2**30
    sc = pod["spec"].get("securityContext", {})
    assert sc.get("runAsNonRoot") and sc.get("fsGroup"), "the volume must be writable by the image's user"


def test_k8s_web_token_from_a_secret():
    """The workers bind 0.0.0.0, so they get SHOPWATCH_WEB_TOKEN from a Secret of this file (a
    required one: without it the pod would not start); probes and Prometheus need no token."""
    docs = k8s_docs()
    [sts] = by_kind(docs, "StatefulSet")
    [c] = sts["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in c.get("env", [])}
    ref = env[TOKEN_ENV]["valueFrom"]["secretKeyRef"]
    assert not ref.get("optional"), "the token is required"
    secrets = {s["metadata"]["name"]: s for s in by_kind(docs, "Secret")}
    secret = secrets[ref["name"]]
    values = {**secret.get("stringData", {}), **secret.get("data", {})}
    assert ref["key"] in values
    assert str(values[ref["key"]]).startswith(PLACEHOLDER_PREFIX), "an obvious placeholder, to be replaced"
    text = (DEPLOY / "k8s" / "shopwatch.yaml").read_text(encoding="utf-8")
    assert re.search(r"#.*CHANGE IT", text) and "kubectl create secret generic " + ref["name"] in text
    # the token is only in that Secret, not in the ConfigMap or the sinks Secret
    [cm] = by_kind(docs, "ConfigMap")
    assert TOKEN_ENV not in cm["data"]
    for name, s in secrets.items():
        if name != ref["name"]:
            assert TOKEN_ENV not in {**s.get("stringData", {}), **s.get("data", {})}, name
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        if probe in c:
            get = c[probe]["httpGet"]
            assert get["path"] in OPEN_PATHS, probe
            assert not get.get("httpHeaders"), f"{probe}: probes need no token"
    annotations = sts["spec"]["template"]["metadata"].get("annotations", {})
    assert annotations.get("prometheus.io/path", "/metrics") in OPEN_PATHS


def test_prometheus_needs_no_token():
    prom = load(DEPLOY / "prometheus.yml")
    job = {j["job_name"]: j for j in prom["scrape_configs"]}["shopwatch"]
    assert job.get("metrics_path", "/metrics") in OPEN_PATHS
    assert not {"authorization", "bearer_token", "bearer_token_file"} & set(job)


# --------------------------------------------------------------------------- promtool


def promtool() -> str:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip("promtool not installed (Debian package: prometheus)")
    return tool


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def test_promtool_check_config_and_rules():
    tool = promtool()
    r = run(tool, "check", "config", str(DEPLOY / "prometheus.yml"))
    assert r.returncode == 0, r.stdout + r.stderr
    r = run(tool, "check", "rules", str(DEPLOY / "alert-rules.yml"))
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_alert_rules_fire_when_they_should(tmp_path):
    """``promtool test rules`` over synthetic series (annotations stripped: their texts are not the point)."""
    tool = promtool()
    doc = load(DEPLOY / "alert-rules.yml")
    for g in doc["groups"]:
        for r in g["rules"]:
            r.pop("annotations", None)
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(doc), encoding="utf-8")
    w1 = {"job": "shopwatch", "instance": "shopwatch-worker-1:6066"}
    lag = {"consumergroup": "shopwatch", "topic": "shop.orders", "partition": "0"}
    tests = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {   # a worker dies; the other keeps running; invalid events keep coming
                "interval": "1m",
                "input_series": [
                    {"series": 'up{job="shopwatch", instance="shopwatch-worker-1:6066"}', "values": "1 1 0x20"},
                    {"series": 'up{job="shopwatch", instance="shopwatch-worker-2:6066"}', "values": "1x22"},
                    {"series": 'shopwatch_invalid_events_total{job="shopwatch", instance="shopwatch-worker-2:6066", topic="shop.orders"}',
                     "values": "0+3x22"},
                    {"series": 'shopwatch_events_total{job="shopwatch", instance="shopwatch-worker-2:6066", topic="shop.orders", type="order.created"}',
                     "values": "0+100x22"},
                    {"series": 'kafka_consumergroup_lag{consumergroup="shopwatch", topic="shop.orders", partition="0"}',
                     "values": "5x22"},
                ],
                "alert_rule_test": [
                    {"eval_time": "1m", "alertname": "ShopwatchWorkerDown", "exp_alerts": []},
                    {"eval_time": "5m", "alertname": "ShopwatchWorkerDown",
                     "exp_alerts": [{"exp_labels": {**w1, "severity": "critical"}}]},
                    {"eval_time": "5m", "alertname": "ShopwatchNoWorkers", "exp_alerts": []},
                    {"eval_time": "3m", "alertname": "ShopwatchInvalidEvents", "exp_alerts": []},
                    {"eval_time": "10m", "alertname": "ShopwatchInvalidEvents",
                     "exp_alerts": [{"exp_labels": {"topic": "shop.orders", "severity": "warning"}}]},
                    {"eval_time": "20m", "alertname": "ShopwatchConsumerLagGrowing", "exp_alerts": []},
                    {"eval_time": "20m", "alertname": "ShopwatchNotConsuming", "exp_alerts": []},
                ],
            },
            {   # consumption stalls while the lag grows
                "interval": "1m",
                "input_series": [
                    {"series": 'up{job="shopwatch", instance="shopwatch-worker-1:6066"}', "values": "1x40"},
                    {"series": 'shopwatch_events_total{job="shopwatch", instance="shopwatch-worker-1:6066", topic="shop.orders", type="order.created"}',
                     "values": "100x40"},
                    {"series": 'kafka_consumergroup_lag{consumergroup="shopwatch", topic="shop.orders", partition="0"}',
                     "values": "0+50x40"},
                ],
                "alert_rule_test": [
                    {"eval_time": "10m", "alertname": "ShopwatchConsumerLagGrowing", "exp_alerts": []},
                    {"eval_time": "30m", "alertname": "ShopwatchConsumerLagGrowing",
                     "exp_alerts": [{"exp_labels": {"consumergroup": lag["consumergroup"], "topic": lag["topic"],
                                                    "severity": "warning"}}]},
                    {"eval_time": "30m", "alertname": "ShopwatchNotConsuming",
                     "exp_alerts": [{"exp_labels": {"severity": "critical"}}]},
                    {"eval_time": "30m", "alertname": "ShopwatchWorkerDown", "exp_alerts": []},
                ],
            },
        ],
    }
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(tests, sort_keys=False), encoding="utf-8")
    r = run(tool, "test", "rules", str(tmp_path / "tests.yml"))
    assert r.returncode == 0, r.stdout + r.stderr


# --------------------------------------------------------------------------- Grafana dashboard, operator rules

DASHBOARD = DEPLOY / "grafana" / "shopwatch.json"
DS_VAR = "${DS_PROMETHEUS}"
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
                "offset", "inf", "nan", "le"}


def dashboard() -> dict:
    import json

    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def dashboard_panels(d: dict) -> list[dict]:
    """Every panel, rows' nested panels included (rows themselves left out)."""
    out = []
    for p in d["panels"]:
        if p["type"] == "row":
            out.extend(p.get("panels") or ())
        else:
            out.append(p)
    return out


def dashboard_exprs(d: dict) -> list[str]:
    return [t["expr"] for p in dashboard_panels(d) for t in p["targets"]]


def dashboard_var_queries(d: dict) -> list[str]:
    out = []
    for v in d["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]
            out.append(q["query"] if isinstance(q, dict) else q)
    return out


def concrete(expr: str) -> str:
    """A dashboard expression with Grafana's variables filled in, as Prometheus gets it."""
    return (expr.replace("$__rate_interval", "5m").replace("$__interval", "1m")
            .replace("$platform", ".*").replace("$shop", ".*"))


def promql_metrics(expr: str) -> set[str]:
    """Metric names an expression selects: identifiers outside strings, label matchers, ranges and
    grouping clauses that are not functions, keywords or numbers."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    s = re.sub(r"\{[^}]*\}", "", s)
    s = re.sub(r"\[[^\]]*\]", "", s)
    s = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for m in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)\s*(\()?", s):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in PROMQL_WORDS:
            continue
        names.add(word)
    return names


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(metric, label names matched) of each ``metric{...}`` selector."""
    return [(m.group(1), set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", m.group(2))))
            for m in re.finditer(r"\b(shopwatch_\w+)\s*\{([^}]*)\}", expr)]


def exposed_metric_names() -> set[str]:
    """Names on /metrics for the metrics the code defines (a histogram's _bucket/_sum/_count)."""
    names = code_metric_names()
    return names | {n + suffix for n in names for suffix in ("_bucket", "_sum", "_count")}


def metric_labels() -> dict[str, set[str]]:
    """Label names of each metric the code defines (the worker's modules imported)."""
    from prometheus_client import REGISTRY

    from shopwatch.agents import delivery, ingest, metrics, topology  # noqa: F401  (they register theirs)

    out = {}
    for c in [*list(REGISTRY._collector_to_names), *metrics.GAUGES]:
        name, labels = getattr(c, "_name", None), getattr(c, "_labelnames", None)
        if name and name.startswith("shopwatch_") and labels is not None:
            base = name[:-len("_total")] if name.endswith("_total") else name
            out[base] = out[base + "_total"] = set(labels)
            for suffix in ("_bucket", "_sum", "_count"):
                out[name + suffix] = set(labels) | ({"le"} if suffix == "_bucket" else set())
    return out


def test_grafana_dashboard_is_well_formed():
    d = dashboard()
    assert d["title"] and d["uid"] and isinstance(d["schemaVersion"], int) and d["schemaVersion"] >= 36
    assert d.get("id") is None, "an exported dashboard has no database id"
    variables = {v["name"]: v for v in d["templating"]["list"]}
    ds = variables["DS_PROMETHEUS"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    for inp in d.get("__inputs", []):
        assert inp["name"] == "DS_PROMETHEUS" and inp["pluginId"] == "prometheus"
    ids = [p["id"] for p in d["panels"]] + [q["id"] for p in d["panels"] for q in p.get("panels") or ()]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells = set()
    for p in d["panels"]:
        g = p["gridPos"]
        assert all(isinstance(g[k], int) for k in ("h", "w", "x", "y")), p["title"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        here = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not here & cells, f"panel {p['title']!r} overlaps another"
        cells |= here
    for p in dashboard_panels(d):
        assert p["type"] in ("timeseries", "stat", "table", "gauge", "bargauge", "heatmap", "text"), p["type"]
        assert p["title"] and p["datasource"] == {"type": "prometheus", "uid": DS_VAR}, p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert refs and len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == DS_VAR and t["expr"].strip(), p["title"]
    for v in variables.values():
        if v["type"] == "query":
            assert v["datasource"]["uid"] == DS_VAR, v["name"]


def test_grafana_dashboard_uses_only_metrics_the_code_defines():
    d = dashboard()
    defined = exposed_metric_names()
    exprs = dashboard_exprs(d)
    used = set()
    # a variable's label_values(SELECTOR, LABEL): its selector
    selects = [re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", q.strip()) for q in dashboard_var_queries(d)]
    for expr in exprs + selects:
        names = promql_metrics(concrete(expr))
        assert names, f"no metric in {expr!r}"
        assert names <= defined, f"{expr!r} uses {sorted(names - defined)}, which no code defines"
        used |= names
    # what an operator needs, each in some panel
    for name in ("shopwatch_events_total", "shopwatch_consumer_lag", "shopwatch_watermark_lag_seconds",
                 "shopwatch_alerts_total", "shopwatch_event_alert_latency_seconds_bucket", "shopwatch_shop_score",
                 "shopwatch_shop_indicator", "shopwatch_open_entities", "shopwatch_pending_deadlines",
                 "shopwatch_table_partitions_recovered", "shopwatch_sink_queue_depth"):
        assert name in used, f"the dashboard shows no {name}"
    # label matchers only name labels the metric has (shopwatch_alerts_total: kind and status, no severity)
    labels = metric_labels()
    assert labels["shopwatch_alerts_total"] == {"kind", "status"}
    for expr in exprs:
        for metric, matched in selectors(expr):
            assert matched <= labels[metric] | {"job", "instance"}, (expr, metric, matched - labels[metric])
    assert any("histogram_quantile(0.99" in e and "shopwatch_event_alert_latency_seconds_bucket" in e for e in exprs)


def test_promtool_parses_the_dashboard_queries(tmp_path):
    """Every dashboard query, variables filled in, as a recording rule: promtool parses it."""
    tool = promtool()
    d = dashboard()
    rules_ = [{"record": f"dashboard:query_{i}", "expr": concrete(e)} for i, e in enumerate(dashboard_exprs(d))]
    (tmp_path / "dashboard-rules.yml").write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules_}]}), encoding="utf-8")
    r = run(tool, "check", "rules", str(tmp_path / "dashboard-rules.yml"))
    assert r.returncode == 0, r.stdout + r.stderr


def test_operator_alert_rules():
    rs = rules()
    assert "shopwatch_consumer_lag" in rs["ShopwatchConsumerLagHigh"]["expr"]
    assert "shopwatch_watermark_lag_seconds" in rs["ShopwatchWatermarkLagHigh"]["expr"]
    assert "shopwatch_event_clock" in rs["ShopwatchWatermarkLagHigh"]["expr"], "backfills are not late"
    assert "shopwatch_shop_score" in rs["ShopwatchShopScoreLow"]["expr"]


def test_promtool_operator_rules_fire_when_they_should(tmp_path):
    tool = promtool()
    doc = load(DEPLOY / "alert-rules.yml")
    for g in doc["groups"]:
        for r in g["rules"]:
            r.pop("annotations", None)
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(doc), encoding="utf-8")
    w1 = {"job": "shopwatch", "instance": "shopwatch-worker-1:6066"}
    w2 = {"job": "shopwatch", "instance": "shopwatch-worker-2:6066"}

    def series(name, labels, values):
        return {"series": name + "{" + ", ".join(f'{k}="{v}"' for k, v in labels.items()) + "}", "values": values}

    tests = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [
                # orders lag above 10000 (two partitions, two workers) from minute 5; chats small
                series("shopwatch_consumer_lag", {**w1, "topic": "shop.orders", "partition": "0"}, "100x4 6000x40"),
                series("shopwatch_consumer_lag", {**w2, "topic": "shop.orders", "partition": "1"}, "100x4 6000x40"),
                series("shopwatch_consumer_lag", {**w1, "topic": "shop.chats", "partition": "0"}, "50x44"),
                # worker 1 on the wall clock falls 10 minutes behind; worker 2 backfills (event clock)
                series("shopwatch_event_clock", w1, "0x44"),
                series("shopwatch_event_clock", w2, "1x44"),
                series("shopwatch_watermark_lag_seconds", {**w1, "kind": "shops", "partition": "0"}, "2x4 600x40"),
                series("shopwatch_watermark_lag_seconds", {**w2, "kind": "orders", "partition": "1"}, "5e6x44"),
                # one shop's score drops below 4 (seen by both workers during a rebalance); another is fine
                series("shopwatch_shop_score", {**w1, "platform": "xiaohongshu", "shop": "xi-1"}, "4.5x4 3.8x40"),
                series("shopwatch_shop_score", {**w2, "platform": "xiaohongshu", "shop": "xi-1"}, "4.5x4 3.8x40"),
                series("shopwatch_shop_score", {**w1, "platform": "xiaohongshu", "shop": "xi-2"}, "4.6x44"),
            ],
            "alert_rule_test": [
                {"eval_time": "10m", "alertname": "ShopwatchConsumerLagHigh", "exp_alerts": []},
                {"eval_time": "20m", "alertname": "ShopwatchConsumerLagHigh",
                 "exp_alerts": [{"exp_labels": {"topic": "shop.orders", "severity": "warning"}}]},
                {"eval_time": "10m", "alertname": "ShopwatchWatermarkLagHigh", "exp_alerts": []},
                {"eval_time": "20m", "alertname": "ShopwatchWatermarkLagHigh",
                 "exp_alerts": [{"exp_labels": {"instance": w1["instance"], "kind": "shops",
                                                "severity": "critical"}}]},
                {"eval_time": "20m", "alertname": "ShopwatchShopScoreLow", "exp_alerts": []},
                {"eval_time": "40m", "alertname": "ShopwatchShopScoreLow",
                 "exp_alerts": [{"exp_labels": {"platform": "xiaohongshu", "shop": "xi-1", "severity": "warning"}}]},
            ],
        }],
    }
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(tests, sort_keys=False), encoding="utf-8")
    r = run(tool, "test", "rules", str(tmp_path / "tests.yml"))
    assert r.returncode == 0, r.stdout + r.stderr
