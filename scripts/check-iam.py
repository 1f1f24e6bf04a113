#!/usr/bin/env python3
"""Least-privilege check of template.yaml: each function may do only its own job.

Runs with the test venv's Python (cfn-lint and the SAM translator come with it):

    .venv/bin/python scripts/check-iam.py              # check template.yaml, print a summary
    .venv/bin/python scripts/check-iam.py --self-test  # prove the check fails on bad templates

The template is read with cfn-lint's decoder (so !Ref/!GetAtt/!Sub parse) and expanded with the
SAM translator, offline: a fixed region, no credentials, and a managed-policy lookup that never
calls AWS. The expansion matters: SAM policy templates (SNSPublishMessagePolicy, ...) and the
permissions SAM adds for event sources (the stream's managed policy, sqs:SendMessage for an
OnFailure destination) only become IAM statements there.

Then, for every Lambda function of the expanded template, every permission its role gets (inline
policies, AWS::IAM::Policy resources attached to the role, managed policies) must be exactly the
set listed in EXPECTED below: each Allow statement's (action, resource) pairs must be listed, each
listed pair must be granted, no action or resource may contain a wildcard, and NotAction /
NotResource are refused. The only grants on "*" are the AWS managed policies in MANAGED_POLICIES,
allowed per function. Roles must be assumable by Lambda only, and the functions' resource policies
(AWS::Lambda::Permission) must let only this stack's HTTP API invoke them.

Exit status: 0 when the template complies, 1 on any violation (each one printed), 2 on a usage or
template error.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# The AWS managed policies a function may carry, and what they grant (on Resource "*"; AWS owns
# their content, this is the documented content at the time of writing).
MANAGED_POLICIES = {
    "service-role/AWSLambdaBasicExecutionRole": "logs:CreateLogGroup, logs:CreateLogStream, logs:PutLogEvents",
    "AWSXrayWriteOnlyAccess": "xray:PutTraceSegments, xray:PutTelemetryRecords, xray:GetSampling*",
    "service-role/AWSLambdaDynamoDBExecutionRole": "dynamodb:DescribeStream, GetRecords, GetShardIterator, ListStreams + the basic logs actions",
}
BASIC = {"service-role/AWSLambdaBasicExecutionRole", "AWSXrayWriteOnlyAccess"}

# Resources, as rendered by `render` below: "${Logical.Attr}" for !GetAtt, "${Logical}" for !Ref.
EVENTS_TABLE = "${EventsTable.Arn}"


def topic(name: str) -> frozenset[str]:
    """The ways a template names one topic's ARN: !Ref, or the ARN SNSPublishMessagePolicy builds."""
    return frozenset({
        "${%s}" % name,
        "arn:${AWS::Partition}:sns:${AWS::Region}:${AWS::AccountId}:${%s.TopicName}" % name,
    })


WEBHOOK = {
    "managed": BASIC,
    "grants": {("dynamodb:PutItem", EVENTS_TABLE)},
}
EXPECTED = {
    "MemberfulFunction": WEBHOOK,
    "ConscentFunction": WEBHOOK,
    "RainforestFunction": WEBHOOK,
    "WebforceFunction": WEBHOOK,
    "FoloosiFunction": WEBHOOK,
    "FanoutFunction": {
        "managed": BASIC | {"service-role/AWSLambdaDynamoDBExecutionRole"},
        "grants": {
            ("dynamodb:UpdateItem", EVENTS_TABLE),
            ("sns:Publish", topic("InternalTopic")),
            ("sns:Publish", topic("MerchantTopic")),
            ("sns:Publish", topic("PayorTopic")),
            ("sqs:SendMessage", "${FanoutDeadLetterQueue.Arn}"),
        },
    },
}


# ---------------------------------------------------------------------------------------------
# Loading and expanding the template
# ---------------------------------------------------------------------------------------------


class TemplateError(Exception):
    pass


def load(path: Path) -> dict:
    from cfnlint.decode import decode

    template, matches = decode(str(path))
    if matches:
        raise TemplateError("; ".join(str(m) for m in matches))
    # Plain dicts and lists: the decoder's node classes carry line marks we do not need.
    return json.loads(json.dumps(template))


class _ManagedPolicyNames(dict):
    """A managed_policy_map that never calls AWS: any name `Policies` lists maps to the AWS
    managed policy of that name, so it is then judged like any other managed policy."""

    def get(self, name, default=None):  # noqa: D401 - the dict protocol
        return "arn:aws:iam::aws:policy/" + name


def expand(sam: dict) -> dict:
    """The CloudFormation the SAM transform makes of `sam`, computed locally."""
    import boto3
    from samtranslator.model.exceptions import InvalidDocumentException
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator

    sam = copy.deepcopy(sam)
    for resource in sam.get("Resources", {}).values():
        # The translator wants code in S3; `sam build` puts it there. Irrelevant to IAM.
        if resource.get("Type") == "AWS::Serverless::Function":
            resource.setdefault("Properties", {})["CodeUri"] = "s3://bucket/key"
    # A session with only a region: the translator needs one for ARNs and never calls AWS.
    session = boto3.session.Session(region_name="us-east-1")
    translator = Translator(managed_policy_map=None, sam_parser=Parser(), plugins=[], boto_session=session)
    try:
        return translator.translate(
            sam_template=sam,
            parameter_values={},
            get_managed_policy_map=lambda: _ManagedPolicyNames(),
        )
    except InvalidDocumentException as e:
        raise TemplateError("SAM transform failed: " + "; ".join(str(c) for c in e.causes)) from e
    finally:
        translator.metrics.publish()  # to its dummy publisher: nothing leaves the machine


# ---------------------------------------------------------------------------------------------
# The check
# ---------------------------------------------------------------------------------------------


def render(value) -> str:
    """A resource or ARN expression as one string: !GetAtt A.B -> ${A.B}, !Ref A -> ${A}, !Sub
    with its variables substituted, !Join joined. Anything else is marked unresolved."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        (fn, arg), = value.items()
        if fn == "Ref" and isinstance(arg, str):
            return "${%s}" % arg
        if fn == "Fn::GetAtt":
            parts = arg.split(".", 1) if isinstance(arg, str) else arg
            if isinstance(parts, list) and len(parts) == 2 and all(isinstance(p, str) for p in parts):
                return "${%s.%s}" % tuple(parts)
        if fn == "Fn::Sub":
            text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
            return re.sub(
                r"\$\{([^}!]+)\}",
                lambda m: render(variables[m.group(1)]) if m.group(1) in variables else m.group(0),
                text,
            )
        if fn == "Fn::Join" and isinstance(arg, list) and len(arg) == 2 and isinstance(arg[1], list):
            return render(arg[0]).join(render(p) for p in arg[1])
    return "<unresolved %s>" % json.dumps(value, sort_keys=True)


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def short(resource: str) -> str:
    """A readable name for the summary table."""
    m = re.fullmatch(r"arn:\$\{AWS::Partition\}:sns:\$\{AWS::Region\}:\$\{AWS::AccountId\}:\$\{(\w+)\.TopicName\}", resource)
    if m:
        return m.group(1)
    m = re.fullmatch(r"\$\{([\w.]+)\}", resource)
    return m.group(1) if m else resource


def managed_name(arn: str) -> str | None:
    m = re.fullmatch(r"arn:(?:aws|aws-cn|aws-us-gov|\$\{AWS::Partition\}):iam::aws:policy/(.+)", arn)
    return m.group(1) if m else None


def role_of(function: dict, resources: dict) -> str | None:
    role = function.get("Properties", {}).get("Role")
    if isinstance(role, dict) and "Fn::GetAtt" in role:
        name = render(role)[2:-1].split(".")[0]
        if resources.get(name, {}).get("Type") == "AWS::IAM::Role":
            return name
    return None


def refers_to(value, logical: str) -> bool:
    return render(value) in ("${%s}" % logical, "${%s.Arn}" % logical)


def check(cfn: dict) -> tuple[list[str], list[tuple[str, list[str], list[tuple[str, str]]]]]:
    """Violations, and per function (name, managed policies, (action, resource) grants)."""
    violations: list[str] = []
    summary = []
    resources = cfn.get("Resources", {})
    functions = {n: r for n, r in resources.items() if r.get("Type") == "AWS::Lambda::Function"}

    for name in sorted(set(EXPECTED) - set(functions)):
        violations.append(f"{name}: expected in the template, not found")

    roles_used = set()
    for name, function in functions.items():
        expected = EXPECTED.get(name)
        if expected is None:
            violations.append(f"{name}: a function this check does not know; list its permissions in EXPECTED")
            expected = {"managed": set(), "grants": set()}
        role_name = role_of(function, resources)
        if role_name is None:
            violations.append(f"{name}: its role is not a role of this template ({render(function.get('Properties', {}).get('Role'))}), so it cannot be checked")
            summary.append((name, [], []))
            continue
        roles_used.add(role_name)
        role = resources[role_name].get("Properties", {})

        # Who may assume the role: Lambda only.
        for st in as_list(role.get("AssumeRolePolicyDocument", {}).get("Statement", [])):
            if st.get("Effect") != "Allow":
                continue
            principal = st.get("Principal")
            lambda_only = (
                isinstance(principal, dict)
                and set(principal) == {"Service"}
                and as_list(principal["Service"]) == ["lambda.amazonaws.com"]
                and as_list(st.get("Action")) == ["sts:AssumeRole"]
            )
            if not lambda_only:
                violations.append(f"{name}: role {role_name} lets {json.dumps(principal)} {st.get('Action')}; only lambda.amazonaws.com sts:AssumeRole is expected")

        # Managed policies.
        managed = []
        for arn in as_list(role.get("ManagedPolicyArns", [])):
            text = render(arn)
            policy = managed_name(text)
            managed.append(policy or text)
            if policy not in expected["managed"]:
                why = "not an AWS managed policy this function is allowed" if policy else "a customer managed policy (its content is not in this template)"
                violations.append(f"{name}: managed policy {text}: {why}")
        for policy in sorted(expected["managed"] - set(managed)):
            violations.append(f"{name}: managed policy {policy} missing (the function needs it, or update EXPECTED in scripts/check-iam.py)")

        # Inline policies, and AWS::IAM::Policy resources attached to the role.
        documents = [(f"{role_name}/{p.get('PolicyName')}", p.get("PolicyDocument", {})) for p in as_list(role.get("Policies", []))]
        for pname, presource in resources.items():
            if presource.get("Type") in ("AWS::IAM::Policy", "AWS::IAM::RolePolicy", "AWS::IAM::ManagedPolicy"):
                props = presource.get("Properties", {})
                attached = as_list(props.get("Roles", [])) + ([props["RoleName"]] if "RoleName" in props else [])
                if any(refers_to(r, role_name) for r in attached):
                    documents.append((pname, props.get("PolicyDocument", {})))

        granted: set[tuple[str, str]] = set()
        for where, document in documents:
            for st in as_list(document.get("Statement", [])):
                if st.get("Effect") != "Allow":
                    continue  # a Deny only takes permissions away
                for key in ("NotAction", "NotResource"):
                    if key in st:
                        violations.append(f"{name}: {where}: {key} grants everything not listed")
                actions = [str(a) for a in as_list(st.get("Action", []))]
                targets = [render(r) for r in as_list(st.get("Resource", []))]
                for action in actions:
                    if "*" in action or "?" in action:
                        violations.append(f"{name}: {where}: wildcard action {action}")
                    for target in targets:
                        if "*" in target or "?" in target:
                            violations.append(f"{name}: {where}: {action} on wildcard resource {target}")
                        granted.add((action, target))

        allowed = {(a.lower(), r) for a, rs in expected["grants"] for r in ([rs] if isinstance(rs, str) else rs)}
        for action, target in sorted(granted):
            if (action.lower(), target) not in allowed and "*" not in action + target:
                violations.append(f"{name}: {action} on {short(target)}: not this function's job")
        for action, rs in sorted(expected["grants"], key=str):
            options = [rs] if isinstance(rs, str) else sorted(rs)
            if not any((g.lower(), t) in {(action.lower(), o) for o in options} for g, t in granted):
                violations.append(f"{name}: {action} on {short(options[0])} missing (the function needs it, or update EXPECTED)")
        summary.append((name, managed, sorted(granted)))

    # IAM principals or policies not belonging to a checked function.
    for rname, resource in resources.items():
        kind = resource.get("Type", "")
        if kind == "AWS::IAM::Role" and rname not in roles_used:
            violations.append(f"{rname}: an IAM role no checked function uses")
        elif kind in ("AWS::IAM::User", "AWS::IAM::Group", "AWS::IAM::AccessKey"):
            violations.append(f"{rname}: {kind} in a template of Lambda functions")
        elif kind in ("AWS::IAM::Policy", "AWS::IAM::RolePolicy", "AWS::IAM::ManagedPolicy"):
            props = resource.get("Properties", {})
            attached = as_list(props.get("Roles", [])) + ([props["RoleName"]] if "RoleName" in props else [])
            if props.get("Users") or props.get("Groups") or not any(refers_to(r, role) for r in attached for role in roles_used):
                violations.append(f"{rname}: a policy attached to something other than a checked function's role")

    # Who may invoke the functions: API Gateway, from this stack's HTTP API only.
    for pname, resource in resources.items():
        if resource.get("Type") != "AWS::Lambda::Permission":
            continue
        props = resource.get("Properties", {})
        source = render(props.get("SourceArn", ""))
        if props.get("Action") != "lambda:InvokeFunction" or props.get("Principal") != "apigateway.amazonaws.com" or "${HttpApi}" not in source:
            violations.append(
                f"{pname}: lets {props.get('Principal')} {props.get('Action')} from {source or 'anywhere'}; "
                "only apigateway.amazonaws.com invoking from HttpApi is expected"
            )
    return violations, summary


def print_summary(summary) -> None:
    rows = []
    for name, managed, grants in summary:
        lines = [f"{a} on {short(r)}" for a, r in grants] or ["-"]
        policies = [m.split("/")[-1] for m in managed] or ["-"]
        for i in range(max(len(lines), len(policies))):
            rows.append((name if i == 0 else "", lines[i] if i < len(lines) else "", policies[i] if i < len(policies) else ""))
    widths = [max(len(r[c]) for r in rows + [("function", "action on resource", "managed policies")]) for c in range(3)]
    header = ("function", "action on resource", "managed policies")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())


# ---------------------------------------------------------------------------------------------
# Self-test: the check must reject templates that grant too much (or too little)
# ---------------------------------------------------------------------------------------------


def _props(t, name):
    return t["Resources"][name]["Properties"]


def _add_statement(name, statement):
    def mutate(t):
        _props(t, name)["Policies"].append({"Statement": [statement]})
    return mutate


def _set_webhook_action(name, action):
    def mutate(t):
        _props(t, name)["Policies"][0]["Statement"][0]["Action"] = action
    return mutate


def _add_policy(name, policy):
    def mutate(t):
        _props(t, name)["Policies"].append(policy)
    return mutate


def _drop_dlq_type(t):
    del _props(t, "FanoutFunction")["Events"]["Stream"]["Properties"]["DestinationConfig"]["OnFailure"]["Type"]


def _extra_topic(t):
    _props(t, "FanoutFunction")["Policies"].append({"SNSPublishMessagePolicy": {"TopicName": {"Fn::GetAtt": ["AlarmTopic", "TopicName"]}}})


def _topic_wildcard(t):
    _props(t, "FanoutFunction")["Policies"][1]["SNSPublishMessagePolicy"]["TopicName"] = "*"


def _update_index(t):
    _props(t, "FanoutFunction")["Policies"][0]["Statement"][0]["Resource"] = {"Fn::Sub": "${EventsTable.Arn}/index/*"}


def _standalone_policy(t):
    t["Resources"]["SneakyPolicy"] = {
        "Type": "AWS::IAM::Policy",
        "Properties": {
            "PolicyName": "sneaky",
            "Roles": [{"Ref": "MemberfulFunctionRole"}],
            "PolicyDocument": {"Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::bucket/key"}]},
        },
    }


def _not_action(t):
    _props(t, "WebforceFunction")["Policies"][0]["Statement"][0] = {"Effect": "Allow", "NotAction": "iam:*", "Resource": {"Fn::GetAtt": ["EventsTable", "Arn"]}}


def _public_invoke(t):
    t["Resources"]["PublicInvoke"] = {
        "Type": "AWS::Lambda::Permission",
        "Properties": {"Action": "lambda:InvokeFunction", "FunctionName": {"Ref": "MemberfulFunction"}, "Principal": "*"},
    }


def _drop_put(t):
    _props(t, "RainforestFunction")["Policies"] = []


SELF_TESTS = [
    # (what, mutation, a text the violations must contain)
    ("MemberfulFunction also gets dynamodb:Scan", _add_statement("MemberfulFunction", {"Effect": "Allow", "Action": "dynamodb:Scan", "Resource": {"Fn::GetAtt": ["EventsTable", "Arn"]}}), "MemberfulFunction: dynamodb:Scan on EventsTable.Arn"),
    ("ConscentFunction writes Resource: \"*\"", _add_statement("ConscentFunction", {"Effect": "Allow", "Action": "dynamodb:PutItem", "Resource": "*"}), "ConscentFunction: ConscentFunctionRole/ConscentFunctionRolePolicy1: dynamodb:PutItem on wildcard resource *"),
    ("FoloosiFunction gets dynamodb:*", _set_webhook_action("FoloosiFunction", "dynamodb:*"), "FoloosiFunction: FoloosiFunctionRole/FoloosiFunctionRolePolicy0: wildcard action dynamodb:*"),
    ("WebforceFunction gets the DynamoDBCrudPolicy template", _add_policy("WebforceFunction", {"DynamoDBCrudPolicy": {"TableName": {"Ref": "EventsTable"}}}), "WebforceFunction: dynamodb:DeleteItem on"),
    ("RainforestFunction gets a managed policy by name", _add_policy("RainforestFunction", "AmazonDynamoDBFullAccess"), "RainforestFunction: managed policy arn:aws:iam::aws:policy/AmazonDynamoDBFullAccess"),
    ("RainforestFunction loses its PutItem", _drop_put, "RainforestFunction: dynamodb:PutItem on EventsTable.Arn missing"),
    ("WebforceFunction uses NotAction", _not_action, "WebforceFunction: WebforceFunctionRole/WebforceFunctionRolePolicy0: NotAction"),
    ("FanoutFunction publishes to AlarmTopic too", _extra_topic, "FanoutFunction: sns:Publish on AlarmTopic: not this function's job"),
    ("FanoutFunction publishes to topic \"*\"", _topic_wildcard, "FanoutFunction: FanoutFunctionRole/FanoutFunctionRolePolicy1: sns:Publish on wildcard resource"),
    ("FanoutFunction updates the table's indexes", _update_index, "FanoutFunction: FanoutFunctionRole/FanoutFunctionRolePolicy0: dynamodb:UpdateItem on wildcard resource ${EventsTable.Arn}/index/*"),
    ("FanoutFunction's DLQ destination loses Type: SQS", _drop_dlq_type, "FanoutFunction: sqs:SendMessage on FanoutDeadLetterQueue.Arn missing"),
    ("an AWS::IAM::Policy attached to MemberfulFunctionRole", _standalone_policy, "MemberfulFunction: s3:GetObject on arn:aws:s3:::bucket/key: not this function's job"),
    ("anyone may invoke MemberfulFunction", _public_invoke, "PublicInvoke: lets * lambda:InvokeFunction"),
]


def self_test(sam: dict) -> int:
    failures = 0
    violations, _ = check(expand(sam))
    if violations:
        print("FAIL  the unchanged template must pass first:")
        for v in violations:
            print("      " + v)
        return 1
    print("ok    the unchanged template passes")
    for what, mutate, needle in SELF_TESTS:
        mutated = copy.deepcopy(sam)
        mutate(mutated)
        try:
            violations, _ = check(expand(mutated))
        except TemplateError as e:
            violations = [f"(template error) {e}"]
        hit = [v for v in violations if needle in v]
        if hit:
            print(f"ok    rejected: {what}\n        -> {hit[0]}")
        else:
            failures += 1
            print(f"FAIL  not rejected as expected: {what}\n        wanted a violation containing: {needle}")
            for v in violations or ["(no violation at all)"]:
                print("        got: " + v)
    print(f"{len(SELF_TESTS) + 1 - failures} passed, {failures} failed")
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--template", type=Path, default=REPO / "template.yaml")
    parser.add_argument("--self-test", action="store_true", help="mutate the template in memory and check that every mutation is rejected")
    args = parser.parse_args()
    try:
        sam = load(args.template)
        if args.self_test:
            return self_test(sam)
        violations, summary = check(expand(sam))
    except TemplateError as e:
        print(f"check-iam: {args.template}: {e}", file=sys.stderr)
        return 2
    print_summary(summary)
    print()
    print("managed policies allowed (AWS-owned, on Resource \"*\"):")
    for policy, grants in MANAGED_POLICIES.items():
        print(f"  {policy}: {grants}")
    if violations:
        print(f"\ncheck-iam: FAILED, {len(violations)} violation(s) of least privilege in {args.template.name}:", file=sys.stderr)
        for v in violations:
            print("  - " + v, file=sys.stderr)
        return 1
    print(f"\ncheck-iam: ok, {len(summary)} functions, each with only its own actions and resources")
    return 0


if __name__ == "__main__":
    sys.exit(main())
