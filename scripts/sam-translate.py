"""Print a SAM template transformed into plain CloudFormation JSON.

    python3 scripts/sam-translate.py template.yaml [Region] > out.json

The template is read with cfn-lint's decoder (it understands the
CloudFormation YAML tags) and transformed with aws-sam-translator, the library
the SAM CLI and CloudFormation's AWS::Serverless transform use. The output is
{"template": <transformed template>, "resourceTypes": {<action>: [<types>]}}:
for every IAM action named in the output, the resource types the service
authorization reference lists for it (from cfn-lint's policy data; an empty
list means the action supports no resource-level permissions). Exit status 3
means a library is missing.
"""
import json
import os
import sys

try:
    import cfnlint
    from cfnlint.decode import decode
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.transform import transform
except ImportError as exc:
    sys.stderr.write("SAM_TRANSLATE_IMPORT_ERROR: %s\n" % exc)
    sys.exit(3)


def actions(node, out):
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("Action", "NotAction"):
                for a in value if isinstance(value, list) else [value]:
                    if isinstance(a, str):
                        out.add(a)
            else:
                actions(value, out)
    elif isinstance(node, list):
        for value in node:
            actions(value, out)


def main():
    path = sys.argv[1]
    region = sys.argv[2] if len(sys.argv) > 2 else "eu-west-1"
    os.environ.setdefault("AWS_DEFAULT_REGION", region)
    template, matches = decode(path)
    if matches:
        for m in matches:
            sys.stderr.write("%s\n" % m)
        sys.exit(1)
    # sam package replaces local code locations by S3 URIs; do the same.
    for name, res in template.get("Resources", {}).items():
        props = res.get("Properties") or {}
        if res.get("Type") == "AWS::Serverless::Function" and isinstance(props.get("CodeUri"), str) \
                and not props["CodeUri"].startswith("s3://"):
            props["CodeUri"] = "s3://sam-package-bucket/%s.zip" % name
    # The managed policies SAM adds by name (none here: tracing and basic
    # execution are added by ARN), so no IAM call is needed.
    out = transform(template, {}, lambda: {}, Parser())
    found = set()
    actions(out, found)
    data = os.path.join(os.path.dirname(cfnlint.__file__), "data", "AdditionalSpecs", "Policies.json")
    with open(data) as f:
        policies = json.load(f)
    types = {}
    for a in sorted(found):
        service, _, name = a.partition(":")
        svc = policies.get(service.lower(), {}).get("Actions", {})
        spec = svc.get(name.lower())
        if spec is None:
            types[a] = None  # unknown action (or a wildcard)
        else:
            types[a] = spec.get("Resources", [])
    json.dump({"template": out, "resourceTypes": types}, sys.stdout, indent=1, sort_keys=True, default=str)


if __name__ == "__main__":
    main()
