#!/usr/bin/env python3
"""Build a kubeconform-compatible, offline Kubernetes JSON-schema tree.

Output layout (what kubeconform's -schema-location template expects):
    OUT/v<K8S>-standalone/<kind><kindsuffix>.json          (non-strict)
    OUT/v<K8S>-standalone-strict/<kind><kindsuffix>.json   (strict: additionalProperties=false)
e.g. OUT/v1.34.0-standalone-strict/deployment-apps-v1.json

Used by scripts/kubernetes/kubeconform.sh (see docs/deploy.md).

Two sources, stdlib only:

  kv      SRC = the 'kubernetes-json-schema' folder of the PyPI wheel
          'kubernetes-validate' (has v<K8S>-local and v<K8S>-local-strict,
          JSON Schema 2020-12, refs to a shared _definitions.json).
          Each kind file gets the closure of the definitions it uses
          embedded under "$defs" (refs rewritten to "#/$defs/...").

  crd     SRC = a CustomResourceDefinition YAML (KEDA's ScaledObject from the
          Go module zip of github.com/kedacore/keda/v2); needs PyYAML. Each
          served version's openAPIV3Schema is written to
          OUT/<group>/<kind>_<version>.json (kubeconform's CRD layout),
          with additionalProperties=false wherever properties are listed
          and nothing else is said, so a misspelt field fails.

  swagger SRC = api/openapi-spec/swagger.json from the Go module zip of
          k8s.io/kubernetes@vX.Y.Z (OpenAPI v2). Converted the way
          openapi2jsonschema --kubernetes --stand-alone [--strict] does,
          plus the int-or-string / Quantity patches yannh's schemas carry.

usage:
  schemas.py kv      SRC_DIR   K8S_VERSION OUT_DIR [--kinds k1,k2,...]
  schemas.py swagger SWAGGER   K8S_VERSION OUT_DIR [--kinds k1,k2,...]
  schemas.py crd     CRD_YAML  -           OUT_DIR
K8S_VERSION like 1.37.0. --kinds restricts output to those (lowercase) kinds.
"""
import copy
import json
import os
import re
import sys


def closure(root, defs, ref_re):
    """Names of all definitions reachable from `root` via $ref."""
    seen, todo = set(), [root]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            r = node.get("$ref")
            if isinstance(r, str):
                m = ref_re.match(r)
                if m and m.group(1) not in seen:
                    seen.add(m.group(1))
                    todo.append(defs[m.group(1)])
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
    return seen


def rewrite_refs(node, ref_re, prefix):
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str) and ref_re.match(v):
                out[k] = prefix + ref_re.match(v).group(1)
            else:
                out[k] = rewrite_refs(v, ref_re, prefix)
        return out
    if isinstance(node, list):
        return [rewrite_refs(v, ref_re, prefix) for v in node]
    return node


def write(out_dir, name, doc):
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, name), "w") as f:
        json.dump(doc, f, separators=(",", ":"))


def want(name, kinds):
    return kinds is None or name.split("-", 1)[0] in kinds


# ---------------------------------------------------------------- kubernetes-validate
KV_REF = re.compile(r"^(?:/api/_definitions\.json)?#/\$defs/(.+)$")


def from_kv(src, ver, out, kinds):
    n = 0
    for strict in (False, True):
        sdir = os.path.join(src, "v%s-local%s" % (ver, "-strict" if strict else ""))
        odir = os.path.join(out, "v%s-standalone%s" % (ver, "-strict" if strict else ""))
        defs = json.load(open(os.path.join(sdir, "_definitions.json")))["$defs"]
        for fn in sorted(os.listdir(sdir)):
            if fn in ("_definitions.json", "all.json") or not fn.endswith(".json"):
                continue
            if not want(fn, kinds):
                continue
            doc = json.load(open(os.path.join(sdir, fn)))
            doc.pop("$id", None)  # otherwise refs resolve to https://kubernetes.io/...
            need = closure(doc, defs, KV_REF)
            doc = rewrite_refs(doc, KV_REF, "#/$defs/")
            if need:
                doc["$defs"] = {k: rewrite_refs(defs[k], KV_REF, "#/$defs/") for k in sorted(need)}
            write(odir, fn, doc)
            n += 1
    return n


# ---------------------------------------------------------------- swagger.json (OpenAPI v2)
SW_REF = re.compile(r"^#/definitions/(.+)$")
INT_OR_STRING = {"oneOf": [{"type": "string"}, {"type": "integer"}]}
QUANTITY = {"oneOf": [{"type": "string"}, {"type": "number"}]}


def patch(node, strict):
    """openapi2jsonschema-style fix-ups, walking schema positions only
    (property *names* such as JSONSchemaProps' "type"/"properties" are left alone)."""
    if not isinstance(node, dict):
        return node
    if node.get("format") == "int-or-string":
        return dict(INT_OR_STRING, description=node.get("description", ""))
    node = dict(node)
    if "properties" in node:
        node["properties"] = {k: patch(v, strict) for k, v in node["properties"].items()}
    for k in ("items", "additionalProperties", "not"):
        if isinstance(node.get(k), dict):
            node[k] = patch(node[k], strict)
    for k in ("allOf", "anyOf", "oneOf"):
        if isinstance(node.get(k), list):
            node[k] = [patch(v, strict) for v in node[k]]
    t = node.get("type")
    if isinstance(t, str):  # allow explicit nulls, like yannh/kubernetes-json-schema
        node["type"] = [t, "null"]
    if strict and "properties" in node and "additionalProperties" not in node:
        node["additionalProperties"] = False
    return node


def from_swagger(swagger, ver, out, kinds):
    spec = json.load(open(swagger))
    raw = spec["definitions"]
    # special cases carried by yannh's schemas
    raw["io.k8s.apimachinery.pkg.util.intstr.IntOrString"] = INT_OR_STRING
    raw["io.k8s.apimachinery.pkg.api.resource.Quantity"] = QUANTITY
    n = 0
    for strict in (False, True):
        odir = os.path.join(out, "v%s-standalone%s" % (ver, "-strict" if strict else ""))
        defs = {k: patch(copy.deepcopy(v), strict) for k, v in raw.items()}
        for name, d in defs.items():
            for gvk in d.get("x-kubernetes-group-version-kind", []):
                group, version, kind = gvk["group"], gvk["version"], gvk["kind"]
                suffix = "-" + (group.split(".")[0] + "-" if group else "") + version
                fn = (kind + suffix).lower() + ".json"
                if not want(fn, kinds):
                    continue
                doc = copy.deepcopy(d)
                api_version = (group + "/" if group else "") + version
                props = doc.setdefault("properties", {})
                if "apiVersion" in props:
                    props["apiVersion"] = dict(props["apiVersion"], enum=[api_version])
                if "kind" in props:
                    props["kind"] = dict(props["kind"], enum=[kind])
                need = closure(doc, defs, SW_REF)
                doc = rewrite_refs(doc, SW_REF, "#/definitions/")
                doc["$schema"] = "http://json-schema.org/draft-04/schema#"
                if need:
                    doc["definitions"] = {k: defs[k] for k in sorted(need)}
                write(odir, fn, doc)
                n += 1
    return n


# ---------------------------------------------------------------- CustomResourceDefinition
def closed(node):
    """additionalProperties=false where an object lists its properties and says nothing else
    (x-kubernetes-preserve-unknown-fields keeps an object open)."""
    if isinstance(node, list):
        return [closed(v) for v in node]
    if not isinstance(node, dict):
        return node
    node = {k: closed(v) for k, v in node.items()}
    if ("properties" in node and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        node["additionalProperties"] = False
    return node


def from_crd(src, out):
    import yaml  # PyYAML: tests/requirements.txt
    n = 0
    for crd in yaml.safe_load_all(open(src)):
        if not crd or crd.get("kind") != "CustomResourceDefinition":
            continue
        spec = crd["spec"]
        group, kind = spec["group"], spec["names"]["kind"].lower()
        for version in spec["versions"]:
            schema = version.get("schema", {}).get("openAPIV3Schema")
            if not version.get("served", True) or schema is None:
                continue
            write(os.path.join(out, group), "%s_%s.json" % (kind, version["name"]), closed(schema))
            n += 1
    return n


def main(argv):
    kinds = None
    if "--kinds" in argv:
        i = argv.index("--kinds")
        kinds = set(argv[i + 1].lower().split(","))
        argv = argv[:i] + argv[i + 2:]
    if len(argv) != 5 or argv[1] not in ("kv", "swagger", "crd"):
        sys.exit(__doc__)
    mode, src, ver, out = argv[1:]
    ver = ver.lstrip("v")
    if mode == "crd":
        n = from_crd(src, out)
    else:
        n = (from_kv if mode == "kv" else from_swagger)(src, ver, out, kinds)
    print("wrote %d schema files under %s" % (n, out))


if __name__ == "__main__":
    main(sys.argv)
