#!/usr/bin/env python3
"""Least-privilege check of template.yaml (each function may do only its own job), and the guards
operating it relies on (topic policy, table protection, alarms, dashboard).

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
NotResource are refused. A pair EXPECTED lists with an IAM condition (a webhook function's
UpdateItem, limited by dynamodb:LeadingKeys to its provider's held-cap counter) must be granted
with exactly that condition, in every statement that grants it. The only grants on "*" are the AWS
managed policies in MANAGED_POLICIES, allowed per function. Roles must be assumable by Lambda only,
and the functions' resource policies (AWS::Lambda::Permission) must let only this stack's HTTP API
invoke them, and EventBridge only the functions in SCHEDULED, each only from a schedule rule of this
template that targets that function alone.

A statement (or policy, or value) inside !If is checked in each branch, under that branch's
condition; a branch of !Ref AWS::NoValue grants nothing. A grant EXPECTED lists under a condition
(a webhook function reading its provider's secret when the secret's Arn parameter is set) must be
granted when the condition holds and only then; the condition must be "that parameter is not
empty", and the parameter's AllowedPattern must refuse a wildcard ARN (for KmsKeyArn, an alias ARN
too). A secret the template creates (Stored<Name>, an AWS::SecretsManager::Secret) must exist under
exactly the condition its readers' grants have, "<Name> is not empty", and hold that NoEcho
parameter unchanged. The secrets a function's environment names (<VAR>_ARN) must be exactly the
secrets its role may read. The kms: grants on KmsKeyArn must exist only under HasKmsKey, each
with exactly the kms:ViaService condition EXPECTED lists.

It also checks what operating the stack relies on: the notification topics' policy denies
sns:Publish without TLS, and to every principal but exactly the fan-out's and the operator
function's roles, each of which only lambda.amazonaws.com may assume (so an operator publishes only
by invoking the operator function); every DynamoDB table has deletion protection and
DeletionPolicy/UpdateReplacePolicy Retain; every alarm notifies AlarmTopic (AlarmActions and
OKActions); every provider with a /webhooks/<provider> route has a burst and a sustained
unauthorized alarm; the reconciliation sweep has an alarm on each of its missed and failed
outcomes; every alarm and dashboard graph in the RefundRelay namespace reads a metric
under a dimension set the functions write; a metric filter on the API's access log compares fields
as the log format writes them; the dashboard body is JSON after !Sub; no function's environment
holds a NoEcho parameter, or a <VAR> whose <VAR>_ARN names a secret; AlarmTopic is encrypted in
every branch, never with an AWS managed key, with KmsKeyArn or a key of the template (existing
whenever it is used, rotated) whose policy lets cloudwatch.amazonaws.com kms:Decrypt and
kms:GenerateDataKey* only with aws:SourceAccount the account, and lets no other service or "*"
use it; every checkov skip in a resource's Metadata has a check id and a reason.

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


def held_cap(provider: str) -> dict:
    """The IAM condition that limits an UpdateItem to the provider's held-cap counter items."""
    return {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["HELDCAP#%s#*" % provider]}}


# The optional customer-managed key (parameter KmsKeyArn), used only under HasKmsKey.
KMS_KEY = "${KmsKeyArn}"


def via(*services: str) -> dict:
    """The IAM condition that lets a kms: action be used only through these AWS services."""
    return {"StringEquals": {"kms:ViaService": ["%s.${AWS::Region}.amazonaws.com" % s for s in services]}}


def reads_secrets(*secrets: str) -> set:
    """secretsmanager:GetSecretValue on each secret: the parameter <Name>Arn's only under the
    condition Has<Name>Arn, and the stack's own Stored<Name> (holding the parameter <Name>) only
    under Store<Name>."""
    return {("secretsmanager:GetSecretValue", "${%sArn}" % s, "Has%sArn" % s) for s in secrets} | {
        ("secretsmanager:GetSecretValue", "${Stored%s}" % s, "Store%s" % s) for s in secrets
    }


def webhook(provider: str, *secrets: str) -> dict:
    """A webhook function: the one PutItem, always; UpdateItem of its provider's held-cap counter
    only (the LeadingKeys condition); reading each of its provider's secrets (reads_secrets); and,
    only under HasKmsKey, kms:Decrypt on that key through DynamoDB (the table's key) and Secrets
    Manager (its secrets) only."""
    return {
        "managed": BASIC,
        "grants": {("dynamodb:PutItem", EVENTS_TABLE)},
        "conditioned": {("dynamodb:UpdateItem", EVENTS_TABLE): held_cap(provider)},
        "if": reads_secrets(*secrets),
        "if_conditioned": {("kms:Decrypt", KMS_KEY, "HasKmsKey"): via("dynamodb", "secretsmanager")},
    }


NOTIFICATION_TOPIC_GRANTS = {
    ("sns:Publish", topic("InternalTopic")),
    ("sns:Publish", topic("MerchantTopic")),
    ("sns:Publish", topic("PayorTopic")),
}


EXPECTED = {
    "MemberfulFunction": webhook("memberful", "MemberfulWebhookSecret"),
    "ConscentFunction": webhook("conscent", "ConscentWebhookSecret", "ConscentBasicAuth"),
    "RainforestFunction": webhook("rainforest", "RainforestWebhookSecret"),
    "WebforceFunction": webhook("webforce", "WebforceWebhookToken"),
    "FoloosiFunction": webhook("foloosi", "FoloosiWebhookToken", "FoloosiSecretKey"),
    # Under HasKmsKey: Decrypt for the table and its stream, and both actions SNS and SQS need
    # from a sender to an encrypted topic or queue, each only through that service.
    "FanoutFunction": {
        "managed": BASIC | {"service-role/AWSLambdaDynamoDBExecutionRole"},
        "grants": {
            ("dynamodb:UpdateItem", EVENTS_TABLE),
            ("sqs:SendMessage", "${FanoutDeadLetterQueue.Arn}"),
        } | NOTIFICATION_TOPIC_GRANTS,
        "if_conditioned": {
            ("kms:Decrypt", KMS_KEY, "HasKmsKey"): via("dynamodb", "sns", "sqs"),
            ("kms:GenerateDataKey", KMS_KEY, "HasKmsKey"): via("sns", "sqs"),
        },
    },
    # reprocess, redrive and replay, invoked by the CLI: reads of events and held items (the two
    # held indexes, no other), redrive's Scan, reprocess's conditional write and resolution,
    # aggregate and told-marker updates, the three topics, Foloosi's API key only when set, and
    # the key only under HasKmsKey, through DynamoDB, Secrets Manager and SNS.
    "OperatorFunction": {
        "managed": BASIC,
        "grants": {
            ("dynamodb:GetItem", EVENTS_TABLE),
            ("dynamodb:Query", EVENTS_TABLE),
            ("dynamodb:Scan", EVENTS_TABLE),
            ("dynamodb:PutItem", EVENTS_TABLE),
            ("dynamodb:UpdateItem", EVENTS_TABLE),
            ("dynamodb:Query", EVENTS_TABLE + "/index/by_held_provider"),
            ("dynamodb:Query", EVENTS_TABLE + "/index/by_held"),
        } | NOTIFICATION_TOPIC_GRANTS,
        "if": reads_secrets("FoloosiSecretKey"),
        "if_conditioned": {
            ("kms:Decrypt", KMS_KEY, "HasKmsKey"): via("dynamodb", "secretsmanager", "sns"),
            ("kms:GenerateDataKey", KMS_KEY, "HasKmsKey"): via("sns"),
        },
    },
    # The scheduled reconciliation sweep: the keys-only BatchGetItem of a page's events, the
    # checkpoint's GetItem and PutItem, PutItem of missed events and held items (no index, no
    # update, delete, query or scan), the Rainforest API key only when given, and the key only
    # under HasKmsKey, through DynamoDB and Secrets Manager. No SNS: the stream's fan-out tells
    # what it stores.
    "ReconcileFunction": {
        "managed": BASIC,
        "grants": {
            ("dynamodb:BatchGetItem", EVENTS_TABLE),
            ("dynamodb:GetItem", EVENTS_TABLE),
            ("dynamodb:PutItem", EVENTS_TABLE),
        },
        "if": reads_secrets("RainforestApiKey"),
        "if_conditioned": {("kms:Decrypt", KMS_KEY, "HasKmsKey"): via("dynamodb", "secretsmanager")},
    },
}

# The functions an EventBridge schedule invokes (each from a rule of its own); every other function
# only the HTTP API invokes, or the stream's event source mapping, or an operator.
SCHEDULED = ("ReconcileFunction",)

# The functions whose roles the notification topics' policy lets publish: the stream's fan-out,
# and the operator function that recovery commands invoke.
PUBLISHERS = ("FanoutFunction", "OperatorFunction")


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


ABSENT = object()  # what !Ref AWS::NoValue resolves to: the key or list item is left out


def variants(value, assumed: frozenset = frozenset()):
    """Every way the !If in `value` can resolve: (assumed, resolved) pairs, `assumed` being the
    (condition, holds) choices made on the way. A condition already assumed takes only its own
    branch; !Ref AWS::NoValue resolves to ABSENT."""
    if isinstance(value, dict):
        args = value.get("Fn::If")
        if len(value) == 1 and isinstance(args, list) and len(args) == 3 and isinstance(args[0], str):
            for holds, branch in ((True, args[1]), (False, args[2])):
                if (args[0], not holds) not in assumed:
                    yield from variants(branch, assumed | {(args[0], holds)})
            return
        if value == {"Ref": "AWS::NoValue"}:
            yield assumed, ABSENT
            return
        for chosen, items in variants(list(value.values()), assumed):
            yield chosen, {k: v for k, v in zip(value, items, strict=True)}
        return
    if isinstance(value, list):
        partial = [(assumed, [])]
        for item in value:
            partial = [(a2, done + [v]) for a, done in partial for a2, v in variants(item, a)]
        # ABSENT items stay in place (the dict case above pairs values with keys); resolved() drops them.
        yield from partial
        return
    yield assumed, value


def resolved(value, assumed: frozenset = frozenset()):
    """variants() with ABSENT list items and dict entries removed, ABSENT itself kept."""
    def strip(v):
        if isinstance(v, dict):
            return {k: strip(x) for k, x in v.items() if x is not ABSENT}
        if isinstance(v, list):
            return [strip(x) for x in v if x is not ABSENT]
        return v
    for chosen, v in variants(value, assumed):
        yield chosen, (v if v is ABSENT else strip(v))


def branches(value, assumed: frozenset = frozenset()):
    """Like resolved(), but only for the !If around `value` itself, not the ones inside it."""
    args = value.get("Fn::If") if isinstance(value, dict) and len(value) == 1 else None
    if isinstance(args, list) and len(args) == 3 and isinstance(args[0], str):
        for holds, branch in ((True, args[1]), (False, args[2])):
            if (args[0], not holds) not in assumed:
                yield from branches(branch, assumed | {(args[0], holds)})
        return
    yield assumed, (ABSENT if value == {"Ref": "AWS::NoValue"} else value)


def when(assumed) -> str:
    """The conditions a grant depends on, readably: "if A and not B", or "" for always."""
    return "if " + " and ".join(c if holds else "not " + c for c, holds in sorted(assumed)) if assumed else ""


def short(resource: str) -> str:
    """A readable name for the summary table."""
    m = re.fullmatch(r"arn:\$\{AWS::Partition\}:sns:\$\{AWS::Region\}:\$\{AWS::AccountId\}:\$\{(\w+)\.TopicName\}", resource)
    if m:
        return m.group(1)
    m = re.fullmatch(r"\$\{([\w.]+)\}(/[\w/.-]+)?", resource)
    return m.group(1) + (m.group(2) or "") if m else resource


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


SAMPLE_SECRET = "arn:aws:secretsmanager:us-east-1:123456789012:secret:refund-relay/provider-AbC123"
WILDCARD_SECRETS = (
    "*",
    "arn:aws:secretsmanager:us-east-1:123456789012:secret:*",
    "arn:aws:secretsmanager:us-east-1:123456789012:secret:refund-relay/*",
    "arn:aws:secretsmanager:us-east-1:123456789012:secret:refund-relay/provider-??????",
)
SAMPLE_KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
# Wildcards match every key they cover; an alias ARN in an IAM statement matches no key at all.
WILDCARD_KEYS = (
    "*",
    "arn:aws:kms:us-east-1:123456789012:key/*",
    "arn:aws:kms:*:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    "arn:aws:kms:us-east-1:123456789012:alias/refund-relay",
    "arn:aws:kms:us-east-1:123456789012:alias/*",
)


def _is_set(cfn: dict, condition: str, name: str) -> bool:
    """Whether the condition is exactly `!Not [!Equals [!Ref name, ""]]`."""
    operands = [{"Ref": name}, ""]
    return cfn.get("Conditions", {}).get(condition) in ({"Fn::Not": [{"Fn::Equals": operands}]}, {"Fn::Not": [{"Fn::Equals": operands[::-1]}]})


def conditional_grant_violations(cfn: dict, action: str, target: str, condition: str) -> list[str]:
    """A grant under `condition` on a parameter's value, or on a secret the template creates.

    A parameter's: the condition must be exactly "the parameter is set", and the parameter must
    refuse a wildcard ARN (IAM would match every secret or key it covers) and, for a kms: action,
    an alias ARN (IAM matches it against no key). CloudFormation matches AllowedPattern against the
    whole value, as fullmatch does.

    A created secret's (AWS::SecretsManager::Secret): it must exist under exactly `condition`, and
    `condition` must be "its parameter is set", its SecretString that NoEcho parameter unchanged."""
    m = re.fullmatch(r"\$\{(\w+)\}", target)
    name = m.group(1) if m else None
    resource = cfn.get("Resources", {}).get(name) if name else None
    if resource is not None and resource.get("Type") == "AWS::SecretsManager::Secret":
        found = []
        if resource.get("Condition") != condition:
            found.append(f"{name}: exists under {resource.get('Condition', 'no condition')}, not under {condition} as its readers' grants")
        value = resource.get("Properties", {}).get("SecretString")
        source = value.get("Ref") if isinstance(value, dict) and set(value) == {"Ref"} else None
        parameter = cfn.get("Parameters", {}).get(source) if isinstance(source, str) else None
        if parameter is None:
            found.append(f"{name}: SecretString is {json.dumps(value)}, not a parameter's value unchanged (what the environment variable would have held)")
        else:
            if str(parameter.get("NoEcho")).lower() != "true":
                found.append(f"{name}: its parameter {source} is not NoEcho")
            if not _is_set(cfn, condition, source):
                found.append(f"{condition}: not !Not [!Equals [!Ref {source}, \"\"]], so {name} does not follow {source} being set")
        return found
    parameter = cfn.get("Parameters", {}).get(name) if name else None
    if parameter is None:
        return [f"{short(target)}: neither a parameter nor a secret of the template (EXPECTED grants on it under {condition})"]
    found = []
    if not _is_set(cfn, condition, name):
        found.append(f"{condition}: not !Not [!Equals [!Ref {name}, \"\"]], so the grant on {name} does not follow {name} being set")
    pattern = parameter.get("AllowedPattern")
    if not isinstance(pattern, str):
        return found + [f"{name}: no AllowedPattern, so it may be a wildcard ARN"]
    try:
        regex = re.compile(pattern)
    except re.error as e:
        return found + [f"{name}: AllowedPattern does not compile: {e}"]
    kms = action.lower().startswith("kms:")
    for value in WILDCARD_KEYS if kms else WILDCARD_SECRETS:
        if regex.fullmatch(value):
            what = "an alias ARN, which IAM matches against no key" if ":alias/" in value else f"the role could use every {'key' if kms else 'secret'} it matches"
            found.append(f"{name}: AllowedPattern accepts {value}: {what}")
    for value in ("", SAMPLE_KEY if kms else SAMPLE_SECRET):
        if not regex.fullmatch(value):
            found.append(f"{name}: AllowedPattern refuses {value or 'the empty string (unset)'}")
    return found


def environment_secrets(function: dict, cfn: dict):
    """(secret, variable) for each Secrets Manager secret a function's environment names in a
    <VAR>_ARN variable, in any branch of its !If: a secret the template creates, or a parameter
    whose AllowedPattern admits Secrets Manager ARNs."""
    variables = function.get("Properties", {}).get("Environment", {}).get("Variables", {})
    found = set()
    for var, value in variables.items() if isinstance(variables, dict) else ():
        if not var.endswith("_ARN"):
            continue
        for _, v in resolved(value):
            m = re.fullmatch(r"\$\{(\w+)\}", render(v)) if v is not ABSENT else None
            if not m:
                continue
            resource = cfn.get("Resources", {}).get(m.group(1), {})
            parameter = cfn.get("Parameters", {}).get(m.group(1), {})
            if resource.get("Type") == "AWS::SecretsManager::Secret" or "secretsmanager" in str(parameter.get("AllowedPattern", "")):
                found.add((render(v), var))
    return found


def references(value) -> set[str]:
    """Every name a value refers to: !Ref, !GetAtt, and ${...} in !Sub, however nested."""
    found = set()
    if isinstance(value, dict):
        if set(value) == {"Ref"} and isinstance(value["Ref"], str):
            found.add(value["Ref"])
        elif set(value) == {"Fn::GetAtt"}:
            found.add(render(value)[2:-1].split(".")[0])
        elif set(value) == {"Fn::Sub"}:
            text = value["Fn::Sub"] if isinstance(value["Fn::Sub"], str) else value["Fn::Sub"][0]
            found |= {r.split(".")[0] for r in re.findall(r"\$\{([^}!]+)\}", str(text))}
            if isinstance(value["Fn::Sub"], list) and len(value["Fn::Sub"]) > 1:
                found |= references(value["Fn::Sub"][1])
        else:
            for v in value.values():
                found |= references(v)
    elif isinstance(value, list):
        for v in value:
            found |= references(v)
    return found


def check(cfn: dict) -> tuple[list[str], list[tuple[str, list[str], list[tuple[str, str, str]]]]]:
    """Violations, and per function (name, managed policies, (action, resource, when) grants)."""
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

        # Inline policies, and AWS::IAM::Policy resources attached to the role, each with the
        # conditions it exists under (a conditional policy, a resource's Condition).
        documents = [
            (f"{role_name}/{p.get('PolicyName')}", p.get("PolicyDocument", {}), assumed)
            for item in as_list(role.get("Policies", []))
            for assumed, p in branches(item)
            if isinstance(p, dict)
        ]
        for pname, presource in resources.items():
            if presource.get("Type") in ("AWS::IAM::Policy", "AWS::IAM::RolePolicy", "AWS::IAM::ManagedPolicy"):
                props = presource.get("Properties", {})
                attached = as_list(props.get("Roles", [])) + ([props["RoleName"]] if "RoleName" in props else [])
                if any(refers_to(r, role_name) for r in attached):
                    condition = presource.get("Condition")
                    documents.append((pname, props.get("PolicyDocument", {}), frozenset({(condition, True)}) if isinstance(condition, str) else frozenset()))

        # (action, resource) -> every set of conditions it is granted under (empty: always), and
        # -> every IAM Condition block it is granted with ("" for none).
        granted: dict[tuple[str, str], set[frozenset]] = {}
        iam_conditions: dict[tuple[str, str], set[str]] = {}
        for where, document, base in documents:
            for raw in as_list(document.get("Statement", [])):
                for assumed, statements in resolved(raw, base):
                    for st in as_list(statements) if statements is not ABSENT else []:
                        if not isinstance(st, dict) or st.get("Effect") != "Allow":
                            continue  # a Deny only takes permissions away
                        for key in ("NotAction", "NotResource"):
                            if key in st:
                                violations.append(f"{name}: {where}: {key} grants everything not listed")
                        actions = [str(a) for a in as_list(st.get("Action", []))]
                        targets = [render(r) for r in as_list(st.get("Resource", []))]
                        iam_condition = _condition_text(st)
                        for action in actions:
                            if "*" in action or "?" in action:
                                violations.append(f"{name}: {where}: wildcard action {action}")
                            for target in targets:
                                if "*" in target or "?" in target:
                                    violations.append(f"{name}: {where}: {action} on wildcard resource {target}")
                                granted.setdefault((action, target), set()).add(assumed)
                                iam_conditions.setdefault((action, target), set()).add(iam_condition)

        allowed = {(a.lower(), r) for a, rs in expected["grants"] for r in ([rs] if isinstance(rs, str) else rs)}
        allowed_if = {(a.lower(), r): c for a, r, c in expected.get("if", set())}
        # A grant EXPECTED lists with an IAM condition: every statement granting it must carry
        # exactly that condition (without it, the action reaches every item of the table).
        conditioned = {(a.lower(), r): _condition_text({"Condition": c}) for (a, r), c in expected.get("conditioned", {}).items()}
        # Both: granted only under a template condition, and then only with that IAM condition
        # (the key's kms: actions, only when KmsKeyArn is set and only through the services named).
        if_conditioned = {(a.lower(), r): (c, _condition_text({"Condition": ic}), a) for (a, r, c), ic in expected.get("if_conditioned", {}).items()}
        for (action, target), conditions in sorted(granted.items()):
            if (action.lower(), target) in if_conditioned:
                condition, wanted, _ = if_conditioned[(action.lower(), target)]
                for got in sorted(iam_conditions[(action, target)]):
                    if got != wanted:
                        violations.append(f"{name}: {action} on {short(target)} is granted {'with ' + got if got else 'without a condition'}, not only with {wanted}")
                for assumed in sorted(conditions, key=sorted):
                    if (condition, True) not in assumed:
                        violations.append(f"{name}: {action} on {short(target)} is granted {when(assumed) or 'always'}, not only if {condition}")
                continue
            wanted = conditioned.get((action.lower(), target))
            if wanted is not None:
                for got in sorted(iam_conditions[(action, target)]):
                    if got != wanted:
                        violations.append(f"{name}: {action} on {short(target)} is granted {'with ' + got if got else 'without a condition'}, not only with {wanted}")
                for assumed in conditions:
                    if assumed:
                        violations.append(f"{name}: {action} on {short(target)} is granted {when(assumed)}, not always")
                continue
            if (action.lower(), target) in allowed or "*" in action + target:
                continue
            condition = allowed_if.get((action.lower(), target))
            for assumed in sorted(conditions, key=sorted):
                if condition is None:
                    shown = f" ({when(assumed)})" if assumed else ""
                    violations.append(f"{name}: {action} on {short(target)}{shown}: not this function's job")
                elif (condition, True) not in assumed:
                    violations.append(f"{name}: {action} on {short(target)} is granted {when(assumed) or 'always'}, not only if {condition}")
        for action, rs in sorted(expected["grants"], key=str):
            options = [rs] if isinstance(rs, str) else sorted(rs)
            found = [c for (g, t), cs in granted.items() if g.lower() == action.lower() and t in options for c in cs]
            if frozenset() not in found:
                only = f", granted only {' or '.join(sorted(when(c) for c in found))}" if found else ""
                violations.append(f"{name}: {action} on {short(options[0])} missing{only} (the function needs it, or update EXPECTED)")
        for (action, target), wanted in sorted(conditioned.items()):
            if not any(g.lower() == action and t == target and frozenset() in cs and wanted in iam_conditions[(g, t)] for (g, t), cs in granted.items()):
                violations.append(f"{name}: {action} on {short(target)} with {wanted} missing (the function needs it, or update EXPECTED)")
        for action, target, condition in sorted(expected.get("if", set())):
            if not any(g.lower() == action.lower() and t == target and any(a <= {(condition, True)} for a in c) for (g, t), c in granted.items()):
                violations.append(f"{name}: {action} on {short(target)} missing if {condition} (the function needs it then, or update EXPECTED)")
            violations += conditional_grant_violations(cfn, action, target, condition)
        for (lowered, target), (condition, wanted, action) in sorted(if_conditioned.items()):
            if not any(g.lower() == lowered and t == target and wanted in iam_conditions[(g, t)] and any(a <= {(condition, True)} for a in c) for (g, t), c in granted.items()):
                violations.append(f"{name}: {action} on {short(target)} with {wanted} missing if {condition} (the function needs it then, or update EXPECTED)")
            violations += conditional_grant_violations(cfn, action, target, condition)

        # The secrets its environment names (<VAR>_ARN) are exactly the secrets it may read: one
        # named but not granted fails at start-up, one granted but not named is a reader too many.
        named = {t for t, _ in environment_secrets(function, cfn)}
        readable = {t for (a, t) in granted if a.lower() == "secretsmanager:getsecretvalue"}
        for target in sorted(named - readable):
            violations.append(f"{name}: its environment names the secret {short(target)}, which its role may not read")
        for target in sorted(readable - named):
            violations.append(f"{name}: may read the secret {short(target)}, which its environment does not name")
        summary.append((name, managed, sorted(
            ((a, r, " ".join(w for w in (when(c), ic and "with " + ic) if w)) for (a, r), cs in granted.items() for c in cs for ic in iam_conditions[(a, r)]),
            key=lambda g: (g[2] != "", g),
        )))

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

    # Who may invoke the functions: API Gateway, from this stack's HTTP API only; EventBridge, only
    # the functions in SCHEDULED, each from a schedule rule of this template targeting it alone.
    scheduled = set()
    for pname, resource in resources.items():
        if resource.get("Type") != "AWS::Lambda::Permission":
            continue
        props = resource.get("Properties", {})
        source = render(props.get("SourceArn", ""))
        if props.get("Action") == "lambda:InvokeFunction" and props.get("Principal") == "events.amazonaws.com":
            found, function = schedule_permission_violations(props, resources)
            violations += [f"{pname}: {v}" for v in found]
            if not found:
                scheduled.add(function)
            continue
        if props.get("Action") != "lambda:InvokeFunction" or props.get("Principal") != "apigateway.amazonaws.com" or "${HttpApi}" not in source:
            violations.append(
                f"{pname}: lets {props.get('Principal')} {props.get('Action')} from {source or 'anywhere'}; "
                "only apigateway.amazonaws.com invoking from HttpApi is expected"
            )
    for name in SCHEDULED:
        if name in functions and name not in scheduled:
            violations.append(f"{name}: no schedule invokes it (an AWS::Events::Rule with a ScheduleExpression and an events.amazonaws.com permission)")
    # A statement under a nested !If is seen once per branch around it: say each thing once.
    return list(dict.fromkeys(violations)), summary


def schedule_permission_violations(props: dict, resources: dict) -> tuple[list[str], str | None]:
    """Why an events.amazonaws.com permission is not a schedule rule of this template invoking a
    function in SCHEDULED and nothing else, and the function it lets be invoked."""
    target = render(props.get("FunctionName", ""))
    m = re.fullmatch(r"\$\{(\w+)(?:\.Arn)?\}", target)
    function = m.group(1) if m else None
    if function not in SCHEDULED:
        return [f"lets events.amazonaws.com invoke {short(target) or 'any function'}; only {', '.join(SCHEDULED)} may run on a schedule"], function
    source = render(props.get("SourceArn", ""))
    m = re.fullmatch(r"\$\{(\w+)\.Arn\}", source)
    rule_name = m.group(1) if m else None
    rule = resources.get(rule_name, {}) if rule_name else {}
    if rule.get("Type") != "AWS::Events::Rule":
        return [f"lets events.amazonaws.com invoke {function} from {source or 'any rule'}; only a schedule rule of this template is expected"], function
    found = []
    rp = rule.get("Properties", {})
    if "ScheduleExpression" not in rp or "EventPattern" in rp:
        found.append(f"{rule_name} invokes {function} on an event pattern; only a schedule (ScheduleExpression, no EventPattern) is expected")
    targets = [t for t in as_list(rp.get("Targets", [])) if isinstance(t, dict)]
    others = [render(t.get("Arn")) for t in targets if not refers_to(t.get("Arn"), function)]
    if others or not targets:
        found.append(f"{rule_name} targets {', '.join(short(o) for o in others) or 'nothing'}; only {function} is expected")
    return found, function


def print_summary(summary) -> None:
    rows = []
    for name, managed, grants in summary:
        lines = [f"{a} on {short(r)}" + (f" {w}" if w else "") for a, r, w in grants] or ["-"]
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
# Operations: who may publish, what cannot be deleted, what every alarm watches and tells
# ---------------------------------------------------------------------------------------------

NOTIFICATION_TOPICS = ("InternalTopic", "MerchantTopic", "PayorTopic")
ALARM_TOPIC = "${AlarmTopic}"
NAMESPACE = "RefundRelay"

# What the functions write in Embedded Metric Format (common/src/metrics.rs): each metric's
# dimension sets, and the values each dimension takes (Provider: the template's routes). CloudWatch
# keeps a metric only under the exact set it was written with, so an alarm or a graph on any other
# combination watches a metric that never exists, and stays quiet forever.
EMITTED = {
    "Webhooks": [frozenset({"Provider", "Outcome"}), frozenset({"Outcome"})],
    "Notifications": [frozenset({"Audience", "Result"}), frozenset({"Result"})],
    "StaleEvents": [frozenset()],
    "SkippedRecords": [frozenset()],
    # ReconcileFunction, one document per provider swept and outcome each run, zeros included.
    "Reconciled": [frozenset({"Provider", "Outcome"}), frozenset({"Outcome"})],
}
VALUES = {
    "Outcome": {"accepted", "duplicate", "ignored", "held", "held_over_cap", "unauthorized", "rejected", "store_unavailable"},
    "Audience": {"internal", "merchant", "payor"},
    "Result": {"published", "failed"},
}
# A dimension whose values are a metric's own: the sweep's outcomes are not the webhooks'.
METRIC_VALUES = {
    "Reconciled": {"Outcome": {"missed", "known", "held", "failed"}},
}
# The reconciliation outcomes that need an alarm: a refund no webhook brought (a provider failing
# to deliver), and questions its API keeps not answering (nothing is being checked).
RECONCILER = "ReconcileFunction"
RECONCILE_ALARMED = ("missed", "failed")

ROUTE = re.compile(r"/webhooks/([a-z0-9_-]+)")


def webhook_providers(sam: dict) -> dict[str, str]:
    """provider -> function, for every function with a /webhooks/<provider> route."""
    found = {}
    for name, resource in sam.get("Resources", {}).items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        for event in resource.get("Properties", {}).get("Events", {}).values():
            m = ROUTE.fullmatch(str(event.get("Properties", {}).get("Path", "")))
            if event.get("Type") in ("HttpApi", "Api") and m:
                found[m.group(1)] = name
    return found


def _metric(namespace, name, dimensions) -> tuple[str, str, dict[str, str]]:
    return (render(namespace), render(name), {render(d.get("Name")): render(d.get("Value")) for d in as_list(dimensions or [])})


def alarm_metrics(props: dict) -> list[tuple[str, str, dict[str, str]]]:
    """(namespace, metric, {dimension: value}) for each metric an alarm reads."""
    if "MetricName" in props:
        return [_metric(props.get("Namespace"), props["MetricName"], props.get("Dimensions"))]
    found = []
    for query in as_list(props.get("Metrics", [])):
        metric = query.get("MetricStat", {}).get("Metric")
        if metric:
            found.append(_metric(metric.get("Namespace"), metric.get("MetricName"), metric.get("Dimensions")))
    return found


def dashboard_metrics(widget: dict) -> list[tuple[str, str, dict[str, str]]]:
    """The same for a dashboard graph: ["Namespace", "Name", "Dim", "value", ..., {options}],
    where "." repeats the previous row's entry."""
    found, previous = [], []
    for row in widget.get("properties", {}).get("metrics", []):
        cells = [c for c in row if not isinstance(c, dict)]
        cells = [previous[i] if c == "." and i < len(previous) else c for i, c in enumerate(cells)]
        previous = cells
        if len(cells) >= 2 and len(cells) % 2 == 0:
            found.append((cells[0], cells[1], dict(zip(cells[2::2], cells[3::2]))))
    return found


def emitted_metrics(sam: dict) -> dict[str, list[frozenset]]:
    """EMITTED, plus what the template's metric filters publish in the namespace."""
    emitted = {name: list(sets) for name, sets in EMITTED.items()}
    for resource in sam.get("Resources", {}).values():
        if resource.get("Type") == "AWS::Logs::MetricFilter":
            for t in as_list(resource.get("Properties", {}).get("MetricTransformations", [])):
                if t.get("MetricNamespace") == NAMESPACE:
                    dims = frozenset(d.get("Key") for d in as_list(t.get("Dimensions") or []))
                    emitted.setdefault(t.get("MetricName"), []).append(dims)
    return emitted


def metric_violations(where: str, metric, emitted, providers) -> list[str]:
    namespace, name, dims = metric
    if namespace != NAMESPACE:
        return []
    shown = f"{NAMESPACE} {name} by [{', '.join(sorted(dims))}]"
    if name not in emitted:
        return [f"{where}: {NAMESPACE} {name}: no function writes this metric (known: {', '.join(sorted(emitted))})"]
    if frozenset(dims) not in emitted[name]:
        sets = " or ".join("[" + ", ".join(sorted(s)) + "]" for s in emitted[name])
        return [f"{where}: {shown} is not written (only {sets}), so this never sees a data point"]
    allowed = dict(VALUES, Provider=set(providers), **METRIC_VALUES.get(name, {}))
    return [
        f"{where}: {shown}: {dim}={value} is never written (one of {', '.join(sorted(allowed[dim]))})"
        for dim, value in sorted(dims.items())
        if dim in allowed and value not in allowed[dim]
    ]


def _everyone(principal) -> bool:
    return principal == "*" or (isinstance(principal, dict) and set(principal) == {"AWS"} and as_list(principal["AWS"]) == ["*"])


def _condition(st: dict) -> dict:
    """A statement's condition with keys in lower case (IAM compares them so) and values rendered."""
    out = {}
    for op, keys in (st.get("Condition") or {}).items():
        if isinstance(keys, dict):
            out[op] = {
                k.lower(): sorted(str(v).lower() if isinstance(v, bool) or op == "Bool" else render(v) for v in as_list(value))
                for k, value in keys.items()
            }
        else:
            out[op] = keys
    return out


def _condition_text(st: dict) -> str:
    """_condition() as one comparable string, "" for a statement without a condition."""
    return json.dumps(_condition(st), sort_keys=True) if st.get("Condition") else ""


def _lambda_only(role: dict) -> str | None:
    """Why a role's trust policy lets anything but Lambda assume it, or None when only
    lambda.amazonaws.com may (sts:AssumeRole, no other principal, no NotPrincipal)."""
    statements = [st for st in as_list(role.get("Properties", {}).get("AssumeRolePolicyDocument", {}).get("Statement", [])) if isinstance(st, dict)]
    allows = [st for st in statements if st.get("Effect") == "Allow"]
    if not allows:
        return "no statement lets Lambda assume it"
    for st in allows:
        principal = st.get("Principal")
        if "NotPrincipal" in st or not (
            isinstance(principal, dict)
            and set(principal) == {"Service"}
            and as_list(principal["Service"]) == ["lambda.amazonaws.com"]
            and as_list(st.get("Action")) == ["sts:AssumeRole"]
        ):
            return f"its trust policy lets {json.dumps(principal if 'NotPrincipal' not in st else {'NotPrincipal': st['NotPrincipal']})} {st.get('Action')}"
    return None


def _denies_publish(st: dict, topic_ref: str) -> bool:
    """A Deny of sns:Publish to every principal, on this topic, with no NotAction/NotResource."""
    if st.get("Effect") != "Deny" or not _everyone(st.get("Principal")) or "NotAction" in st or "NotResource" in st:
        return False
    actions = {str(a).lower() for a in as_list(st.get("Action", []))}
    resources = {render(r) for r in as_list(st.get("Resource", []))}
    return bool(actions & {"sns:publish", "sns:*", "*"}) and bool(resources & {topic_ref, "*"})


def _int(value) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def check_operations(sam: dict, cfn: dict) -> tuple[list[str], list[str]]:
    """Violations, and a summary line per kind of check. `sam` is the template as written (routes
    live there), `cfn` its expansion (the fan-out's role exists only there)."""
    violations: list[str] = []
    summary: list[str] = []
    resources = sam.get("Resources", {})
    providers = webhook_providers(sam)
    emitted = emitted_metrics(sam)

    # Only the publishers' roles (the fan-out's, the operator function's) publish to the
    # notification topics, and only over TLS; each role exempted from the Deny must be one only
    # Lambda can assume, so no person's credentials publish. SNS keeps one policy per topic (the
    # last applied), so a topic must be in exactly one.
    cfn_resources = cfn.get("Resources", {})
    publisher_roles = []
    for function in PUBLISHERS:
        role = role_of(cfn_resources.get(function, {}), cfn_resources)
        if role is None:
            violations.append(f"{function}: its role is not found in the expanded template, so the topic policy cannot be checked")
        else:
            publisher_roles.append(role)
    publishers = sorted("${%s.Arn}" % r for r in publisher_roles)
    names = " and ".join(publisher_roles)
    tls_only = {"Bool": {"aws:securetransport": ["false"]}}
    policies = {n: r.get("Properties", {}) for n, r in resources.items() if r.get("Type") == "AWS::SNS::TopicPolicy"}
    for topic in NOTIFICATION_TOPICS:
        ref = "${%s}" % topic
        covering = [n for n, p in policies.items() if ref in {render(t) for t in as_list(p.get("Topics", []))}]
        if not covering:
            violations.append(f"{topic}: no AWS::SNS::TopicPolicy names it, so any principal of the account allowed sns:Publish may publish to it")
            continue
        if len(covering) > 1:
            violations.append(f"{topic}: in {len(covering)} topic policies ({', '.join(sorted(covering))}); SNS keeps only the last one applied")
        for pname in covering:
            statements = [st for st in as_list(policies[pname].get("PolicyDocument", {}).get("Statement", [])) if _denies_publish(st, ref)]
            # A Deny to all but the principals of its one ArnNotEquals aws:PrincipalArn.
            exempting = [
                _condition(st)["ArnNotEquals"]["aws:principalarn"] for st in statements
                if set(_condition(st)) == {"ArnNotEquals"} and set(_condition(st)["ArnNotEquals"]) == {"aws:principalarn"}
            ]
            if not exempting:
                violations.append(f"{topic}: {pname} does not deny sns:Publish to every principal but {names} (Deny, Principal *, ArnNotEquals aws:PrincipalArn [their role ARNs], no other condition)")
            elif publishers not in exempting:
                for exempted in exempting:
                    extra = [short(a) for a in exempted if a not in publishers]
                    missing = [short(a) for a in publishers if a not in exempted]
                    violations.append(
                        f"{topic}: {pname} lets {', '.join(short(a) for a in exempted)} publish; exactly {names} are expected"
                        + (f" (not expected: {', '.join(extra)})" if extra else "") + (f" (missing: {', '.join(missing)})" if missing else "")
                    )
            for exempted in exempting:
                for arn in exempted:
                    m = re.fullmatch(r"\$\{(\w+)\.Arn\}", arn)
                    role = cfn_resources.get(m.group(1)) if m else None
                    if role is None or role.get("Type") != "AWS::IAM::Role":
                        violations.append(f"{topic}: {pname} lets {arn} publish: not a role of this template, so nothing shows only Lambda can assume it")
                    elif (why := _lambda_only(role)) is not None:
                        violations.append(f"{topic}: {pname} lets {m.group(1)} publish, but {why}; only lambda.amazonaws.com may assume a publisher's role")
            if not any(_condition(st) == tls_only for st in statements):
                violations.append(f"{topic}: {pname} does not deny sns:Publish without TLS (Deny, Principal *, Bool aws:SecureTransport false, no other condition)")
    summary.append(f"topics: {', '.join(NOTIFICATION_TOPICS)}: only {names} publish (roles only Lambda can assume), over TLS only")

    # The table is the record of every webhook: a stack delete, a replacement or an update
    # must not be able to remove it.
    tables = [n for n, r in resources.items() if r.get("Type") == "AWS::DynamoDB::Table"]
    if "EventsTable" not in tables:
        violations.append("EventsTable: expected in the template, not found")
    for name in tables:
        resource = resources[name]
        for attribute in ("DeletionPolicy", "UpdateReplacePolicy"):
            if resource.get(attribute) != "Retain":
                violations.append(f"{name}: {attribute} is {resource.get(attribute, 'unset (Delete)')}, not Retain")
        if str(resource.get("Properties", {}).get("DeletionProtectionEnabled")).lower() != "true":
            violations.append(f"{name}: DeletionProtectionEnabled is not true")
    summary.append(f"tables: {', '.join(tables)}: DeletionProtectionEnabled, DeletionPolicy and UpdateReplacePolicy Retain")

    # Every alarm tells AlarmTopic when it fires and when it clears, and watches a metric
    # that exists.
    alarms = {n: r.get("Properties", {}) for n, r in resources.items() if r.get("Type") in ("AWS::CloudWatch::Alarm", "AWS::CloudWatch::CompositeAlarm")}
    for name, props in sorted(alarms.items()):
        for key in ("AlarmActions", "OKActions"):
            if ALARM_TOPIC not in {render(a) for a in as_list(props.get(key, []))}:
                violations.append(f"{name}: {key} does not include AlarmTopic")
        if str(props.get("ActionsEnabled", True)).lower() == "false":
            violations.append(f"{name}: ActionsEnabled is false")
        for metric in alarm_metrics(props):
            violations += metric_violations(name, metric, emitted, providers)
    summary.append(f"alarms: {len(alarms)}, each to AlarmTopic (alarm and OK), each on a metric that is written")

    # Every provider has both unauthorized alarms: a burst on the one metric, and a sustained
    # one (metric math over unauthorized and accepted, every one of 3 or more periods breaching).
    def reads(props, provider, outcome):
        return (NAMESPACE, "Webhooks", {"Provider": provider, "Outcome": outcome}) in alarm_metrics(props)

    for provider, function in sorted(providers.items()):
        burst = [n for n, p in alarms.items() if "MetricName" in p and reads(p, provider, "unauthorized")]
        sustained = [
            n for n, p in alarms.items()
            if "Metrics" in p and reads(p, provider, "unauthorized") and reads(p, provider, "accepted")
            and _int(p.get("EvaluationPeriods")) >= 3 and _int(p.get("DatapointsToAlarm", p.get("EvaluationPeriods"))) == _int(p.get("EvaluationPeriods"))
        ]
        if not burst:
            violations.append(f"{provider} ({function}, /webhooks/{provider}): no burst unauthorized alarm (Webhooks, Provider={provider}, Outcome=unauthorized)")
        if not sustained:
            violations.append(f"{provider} ({function}, /webhooks/{provider}): no sustained unauthorized alarm (metric math over Webhooks unauthorized and accepted for Provider={provider}, 3 or more periods, all breaching)")
    summary.append(f"providers: {', '.join(sorted(providers))}: each with a burst and a sustained unauthorized alarm")

    # The sweep: an alarm on each outcome that needs an answer, across providers ([Outcome]).
    if RECONCILER in resources:
        for outcome in RECONCILE_ALARMED:
            if not any((NAMESPACE, "Reconciled", {"Outcome": outcome}) in alarm_metrics(p) for p in alarms.values()):
                violations.append(f"reconciliation ({RECONCILER}): no alarm on Reconciled Outcome={outcome} (by [Outcome] alone)")
        summary.append(f"reconciliation: {RECONCILER} on a schedule, alarms on Reconciled {' and '.join('Outcome=' + o for o in RECONCILE_ALARMED)}")

    # A metric filter on the access log must compare a field as the format writes it: "429"
    # matches a quoted status, 429 an unquoted one; the wrong one never matches.
    access = {}
    for name, resource in resources.items():
        settings = resource.get("Properties", {}).get("AccessLogSettings", {}) if resource.get("Type") == "AWS::Serverless::HttpApi" else {}
        destination = render(settings.get("DestinationArn", ""))
        m = re.fullmatch(r"\$\{(\w+)\.Arn\}", destination)
        if m and isinstance(settings.get("Format"), str):
            access[m.group(1)] = settings["Format"]
    filters = 0
    for name, resource in resources.items():
        if resource.get("Type") != "AWS::Logs::MetricFilter":
            continue
        props = resource.get("Properties", {})
        group = render(props.get("LogGroupName", ""))[2:-1]
        if group not in access:
            continue
        filters += 1
        for field, quote in re.findall(r"\$\.(\w+)\s*!?=\s*(\"?)", str(props.get("FilterPattern", ""))):
            if re.search(r'"%s"\s*:\s*"\$context' % re.escape(field), access[group]):
                written = '"'
            elif re.search(r'"%s"\s*:\s*\$context' % re.escape(field), access[group]):
                written = ""
            else:
                violations.append(f"{name}: $.{field} is not in {group}'s access log format")
                continue
            if quote != written:
                kind = "a string" if written else "a number"
                violations.append(f"{name}: $.{field} is written as {kind} in the access log format, and the pattern compares it {'as a string' if quote else 'as a number'}: it never matches")
    summary.append(f"access-log metric filters: {filters}, each comparing fields as the log format writes them")

    # Dashboards: JSON once !Sub has substituted, and graphs only of metrics that exist.
    dashboards = [n for n, r in resources.items() if r.get("Type") == "AWS::CloudWatch::Dashboard"]
    for name in dashboards:
        body = resources[name].get("Properties", {}).get("DashboardBody")
        sub = body.get("Fn::Sub") if isinstance(body, dict) else None
        if isinstance(sub, list) and len(sub) == 2 and isinstance(sub[0], str):
            sub, variables = sub[0], sub[1]
        else:
            variables = {}
        if isinstance(sub, str):
            known = set(cfn.get("Resources", {})) | set(sam.get("Parameters", {})) | set(variables)
            for ref in re.findall(r"\$\{([^}!]+)\}", sub):
                if ref.split(".")[0] not in known and not ref.startswith("AWS::"):
                    violations.append(f"{name}: DashboardBody refers to ${{{ref}}}, not a resource, parameter or pseudo parameter")
            text = re.sub(r"\$\{([^}!]+)\}", lambda m: "sub-" + re.sub(r"\W", "-", m.group(1)), sub)
        elif isinstance(body, str):
            text = body
        else:
            violations.append(f"{name}: DashboardBody is neither a string nor a !Sub of one")
            continue
        try:
            widgets = json.loads(text).get("widgets", [])
        except (ValueError, AttributeError) as e:
            violations.append(f"{name}: DashboardBody is not JSON after substitution: {e}")
            continue
        for i, widget in enumerate(widgets):
            title = widget.get("properties", {}).get("title", f"widget {i}")
            for metric in dashboard_metrics(widget):
                violations += metric_violations(f"{name} ({title})", metric, emitted, providers)
    summary.append(f"dashboards: {', '.join(dashboards) or '-'}: JSON after substitution, each graph on a metric that is written")

    # No secret in any function's environment (lambda:GetFunctionConfiguration shows it): no
    # NoEcho parameter, and no <VAR> beside the <VAR>_ARN that names its secret unless empty.
    parameters = cfn.get("Parameters", {})
    no_echo = {n for n, p in parameters.items() if str(p.get("NoEcho")).lower() == "true"}
    functions = {n: r for n, r in cfn_resources.items() if r.get("Type") == "AWS::Lambda::Function"}
    environments = {n: f.get("Properties", {}).get("Environment", {}).get("Variables", {}) or {} for n, f in functions.items()}
    by_arn = {var[: -len("_ARN")] for f in functions.values() for _, var in environment_secrets(f, cfn)}
    for function, env in sorted(environments.items()):
        for var, value in sorted(env.items()):
            for parameter in sorted(references(value) & no_echo):
                violations.append(f"{function}: {var} holds the NoEcho parameter {parameter}: a secret in the environment; store it in Secrets Manager and pass only {var}_ARN")
            # Declared empty, for `sam local invoke --env-vars` only: unset to the functions.
            if var in by_arn and value != "":
                violations.append(f"{function}: {var} is in the environment beside {var}_ARN elsewhere: the secret belongs in Secrets Manager only")
    summary.append(f"environments: no NoEcho parameter ({len(no_echo)}) in any function's, secrets only as <VAR>_ARN ({', '.join(sorted(v + '_ARN' for v in by_arn))})")

    # AlarmTopic is encrypted, in every branch, with a key CloudWatch alarms may use: KmsKeyArn
    # (its policy is the user's), or a key of the template whose policy lets
    # cloudwatch.amazonaws.com, for this account only, make and decrypt data keys. Not an AWS
    # managed key (alias/aws/sns): its policy does not let CloudWatch use it.
    alarm_topic = resources.get("AlarmTopic", {})
    if alarm_topic.get("Type") != "AWS::SNS::Topic":
        violations.append("AlarmTopic: expected an AWS::SNS::Topic, not found")
    keys = []
    for assumed, key in branches(alarm_topic.get("Properties", {}).get("KmsMasterKeyId", {"Ref": "AWS::NoValue"})):
        shown = f" {when(assumed)}" if assumed else ""
        text = render(key) if key is not ABSENT else ""
        m = re.fullmatch(r"\$\{(\w+)(?:\.Arn)?\}", text)
        if not text:
            violations.append(f"AlarmTopic: not encrypted{shown} (no KmsMasterKeyId)")
        elif "alias/aws/" in text:
            violations.append(f"AlarmTopic: encrypted{shown} with the AWS managed key {text}, whose policy does not let CloudWatch alarms publish")
        elif m and m.group(1) in parameters:
            keys.append(f"{m.group(1)}{shown}")
        elif m and resources.get(m.group(1), {}).get("Type") == "AWS::KMS::Key":
            key_name = m.group(1)
            keys.append(f"{key_name}{shown}")
            violations += [f"{key_name}: {v}" for v in alarm_key_violations(resources[key_name])]
            exists = resources[key_name].get("Condition")
            if exists and not _implies(sam.get("Conditions", {}), assumed, exists):
                violations.append(f"AlarmTopic: uses {key_name}{shown}, which exists only if {exists}")
        else:
            violations.append(f"AlarmTopic: encrypted{shown} with {text}, neither a parameter nor a key of this template, so nothing shows CloudWatch may use it")
    summary.append(f"AlarmTopic: encrypted with {' / '.join(keys) or '-'}, a key CloudWatch alarms of this account may use")

    # checkov (scripts/check-template.sh) fails on every finding not skipped; a skip must say why.
    skips = 0
    for name, resource in sorted(resources.items()):
        entries = (resource.get("Metadata") or {}).get("checkov", {}).get("skip", []) if isinstance(resource.get("Metadata"), dict) else []
        for entry in as_list(entries):
            skips += 1
            check_id = entry.get("id") if isinstance(entry, dict) else None
            comment = entry.get("comment") if isinstance(entry, dict) else None
            if not isinstance(check_id, str) or not re.fullmatch(r"CKV2?_[A-Z0-9]+_\d+", check_id):
                violations.append(f"{name}: checkov skip {json.dumps(entry)}: no check id")
            if not isinstance(comment, str) or len(comment.split()) < 5:
                violations.append(f"{name}: checkov skip {check_id} without a reason (comment)")
    summary.append(f"checkov skips: {skips}, each with its reason")
    return violations, summary


def _implies(conditions: dict, assumed, condition: str) -> bool:
    """Whether the conditions assumed (name, holds) make `condition` hold: it is assumed to hold,
    or it is the negation of one assumed not to hold (!Not [!Condition X], or the !Equals that X
    negates)."""
    if (condition, True) in assumed:
        return True
    body = conditions.get(condition)
    for other, holds in assumed:
        if holds:
            continue
        if body == {"Fn::Not": [{"Condition": other}]} or conditions.get(other) == {"Fn::Not": [body]}:
            return True
    return False


def alarm_key_violations(key: dict) -> list[str]:
    """What keeps CloudWatch alarms from publishing with this key, or lets more than they use it."""
    props = key.get("Properties", {})
    found = []
    if str(props.get("EnableKeyRotation")).lower() != "true":
        found.append("EnableKeyRotation is not true")
    statements = [st for st in as_list((props.get("KeyPolicy") or {}).get("Statement", [])) if isinstance(st, dict)]
    cloudwatch = []
    for st in statements:
        if st.get("Effect") != "Allow":
            continue
        principal = st.get("Principal")
        if _everyone(principal) or "NotPrincipal" in st:
            found.append(f"its policy allows {json.dumps(principal or {'NotPrincipal': st.get('NotPrincipal')})} {st.get('Action')}")
            continue
        services = as_list(principal.get("Service", [])) if isinstance(principal, dict) else []
        if "cloudwatch.amazonaws.com" in services:
            cloudwatch.append(st)
            if _condition(st).get("StringEquals", {}).get("aws:sourceaccount") != ["${AWS::AccountId}"]:
                found.append("cloudwatch.amazonaws.com may use it without the condition StringEquals aws:SourceAccount = the account (any account's alarms could)")
        elif services:
            found.append(f"its policy lets {', '.join(services)} use it; only cloudwatch.amazonaws.com publishes to AlarmTopic")
    actions = {str(a).lower() for st in cloudwatch for a in as_list(st.get("Action", []))}
    if not cloudwatch or "kms:decrypt" not in actions or not actions & {"kms:generatedatakey", "kms:generatedatakey*"}:
        found.append("its policy does not let cloudwatch.amazonaws.com kms:Decrypt and kms:GenerateDataKey*: alarms could not publish to AlarmTopic")
    return found


def check_all(sam: dict) -> tuple[list[str], list, list[str]]:
    """Least privilege and operations: violations, the IAM summary, the operations summary."""
    cfn = expand(sam)
    violations, summary = check(cfn)
    ops_violations, ops_summary = check_operations(sam, cfn)
    return violations + ops_violations, summary, ops_summary


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


def _secret_statement(t, name, index=0):
    """The index-th !If of a webhook function's statements: [condition, statement, AWS::NoValue]."""
    return [st for st in _props(t, name)["Policies"][0]["Statement"] if "Fn::If" in st][index]["Fn::If"]


def _secret_resource(name, resource, index=0):
    def mutate(t):
        _secret_statement(t, name, index)[1]["Resource"] = resource
    return mutate


def _secret_always(name):
    def mutate(t):
        statements = _props(t, name)["Policies"][0]["Statement"]
        statements[:] = [st["Fn::If"][1] if "Fn::If" in st else st for st in statements]
    return mutate


def _set_parameter(name, key, value):
    def mutate(t):
        t["Parameters"][name][key] = value
    return mutate


def _set_condition(name, value):
    def mutate(t):
        t["Conditions"][name] = value
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


def _topic_statements(t):
    return _props(t, "NotificationTopicsPolicy")["PolicyDocument"]["Statement"]


def _drop_statement(sid):
    def mutate(t):
        _props(t, "NotificationTopicsPolicy")["PolicyDocument"]["Statement"] = [st for st in _topic_statements(t) if st.get("Sid") != sid]
    return mutate


def _publisher_memberful(t):
    for st in _topic_statements(t):
        if "ArnNotEquals" in st.get("Condition", {}):
            st["Condition"]["ArnNotEquals"]["aws:PrincipalArn"] = {"Fn::GetAtt": ["MemberfulFunctionRole", "Arn"]}


def _publisher_added(arn):
    def mutate(t):
        for st in _topic_statements(t):
            if "ArnNotEquals" in st.get("Condition", {}):
                st["Condition"]["ArnNotEquals"]["aws:PrincipalArn"] = as_list(st["Condition"]["ArnNotEquals"]["aws:PrincipalArn"]) + [arn]
    return mutate


def _operator_trusts_account(t):
    _props(t, "OperatorFunction")["AssumeRolePolicyDocument"] = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"},
            {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"}, "Action": "sts:AssumeRole"},
        ],
    }


def _held_cap_statement(t, name):
    """The webhook function's UpdateItem of its held-cap counter."""
    return next(st for st in _props(t, name)["Policies"][0]["Statement"] if st.get("Action") == "dynamodb:UpdateItem")


def _held_cap_unconditioned(name):
    def mutate(t):
        del _held_cap_statement(t, name)["Condition"]
    return mutate


def _held_cap_keys(name, keys):
    def mutate(t):
        _held_cap_statement(t, name)["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"] = keys
    return mutate


def _tls_deny_narrowed(t):
    for st in _topic_statements(t):
        if "Bool" in st.get("Condition", {}):
            st["Condition"]["StringEquals"] = {"aws:PrincipalAccount": "123456789012"}


def _payor_unlisted(t):
    _props(t, "NotificationTopicsPolicy")["Topics"] = [{"Ref": "InternalTopic"}, {"Ref": "MerchantTopic"}]


def _second_topic_policy(t):
    t["Resources"]["OpenMerchantTopic"] = {
        "Type": "AWS::SNS::TopicPolicy",
        "Properties": {
            "Topics": [{"Ref": "MerchantTopic"}],
            "PolicyDocument": {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "sns:Publish", "Resource": {"Ref": "MerchantTopic"}}]},
        },
    }


def _table_unprotected(t):
    _props(t, "EventsTable")["DeletionProtectionEnabled"] = False


def _table_deletable(t):
    t["Resources"]["EventsTable"]["DeletionPolicy"] = "Delete"


def _drop_key(name, key):
    def mutate(t):
        del _props(t, name)[key]
    return mutate


def _remove(name):
    def mutate(t):
        del t["Resources"][name]
    return mutate


def _sixth_provider(t):
    stripe = copy.deepcopy(t["Resources"]["MemberfulFunction"])
    stripe["Properties"]["Events"]["Webhook"]["Properties"]["Path"] = "/webhooks/stripe"
    t["Resources"]["StripeFunction"] = stripe


def _set_dimensions(name, dimensions):
    def mutate(t):
        _props(t, name)["Dimensions"] = dimensions
    return mutate


def _numeric_429(t):
    _props(t, "ApiThrottledMetricFilter")["FilterPattern"] = "{ $.status = 429 }"


def _edit_dashboard(old, new):
    def mutate(t):
        body = _props(t, "Dashboard")["DashboardBody"]
        body["Fn::Sub"] = body["Fn::Sub"].replace(old, new, 1)
    return mutate


def _if_statement(t, name, condition):
    """The statement list item of a function's first policy that is !If [condition, ...]."""
    return next(st for st in _props(t, name)["Policies"][0]["Statement"] if st.get("Fn::If", [None])[0] == condition)


def _unconditional(name, condition):
    def mutate(t):
        statements = _props(t, name)["Policies"][0]["Statement"]
        statements[:] = [st["Fn::If"][1] if st.get("Fn::If", [None])[0] == condition else st for st in statements]
    return mutate


def _kms_statement(name, action="kms:Decrypt"):
    def get(t):
        return next(
            st["Fn::If"][1] for st in _props(t, name)["Policies"][0]["Statement"]
            if st.get("Fn::If", [None])[0] == "HasKmsKey" and st["Fn::If"][1].get("Action") == action
        )
    return get


def _edit_kms(name, edit, action="kms:Decrypt"):
    def mutate(t):
        edit(_kms_statement(name, action)(t))
    return mutate


def _drop_kms(name, action):
    def mutate(t):
        statements = _props(t, name)["Policies"][0]["Statement"]
        statements.remove(next(st for st in statements if st.get("Fn::If", [None])[0] == "HasKmsKey" and st["Fn::If"][1].get("Action") == action))
    return mutate


def _set_env(name, var, value):
    def mutate(t):
        _props(t, name)["Environment"]["Variables"][var] = value
    return mutate


def _set_prop(name, key, value):
    def mutate(t):
        _props(t, name)[key] = value
    return mutate


def _drop_condition(name):
    def mutate(t):
        del t["Resources"][name]["Condition"]
    return mutate


def _set_resource_condition(name, condition):
    def mutate(t):
        t["Resources"][name]["Condition"] = condition
    return mutate


def _cloudwatch_statement(t):
    return next(st for st in _props(t, "AlarmTopicKey")["KeyPolicy"]["Statement"] if st.get("Principal", {}).get("Service") == "cloudwatch.amazonaws.com")


def _cloudwatch_unconditioned(t):
    del _cloudwatch_statement(t)["Condition"]


def _cloudwatch_dropped(t):
    statements = _props(t, "AlarmTopicKey")["KeyPolicy"]["Statement"]
    statements.remove(_cloudwatch_statement(t))


def _set_event(name, event, value):
    def mutate(t):
        _props(t, name).setdefault("Events", {})[event] = value
    return mutate


def _reconcile_actions(actions):
    def mutate(t):
        _props(t, "ReconcileFunction")["Policies"][0]["Statement"][0]["Action"] = actions
    return mutate


def _skip_without_reason(t):
    del t["Resources"]["FanoutFunction"]["Metadata"]["checkov"]["skip"][0]["comment"]


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
    ("OperatorFunction also gets dynamodb:DeleteItem", _add_statement("OperatorFunction", {"Effect": "Allow", "Action": "dynamodb:DeleteItem", "Resource": {"Fn::GetAtt": ["EventsTable", "Arn"]}}), "OperatorFunction: dynamodb:DeleteItem on EventsTable.Arn: not this function's job"),
    ("OperatorFunction queries the merchant index too", _add_statement("OperatorFunction", {"Effect": "Allow", "Action": "dynamodb:Query", "Resource": {"Fn::Sub": "${EventsTable.Arn}/index/by_merchant"}}), "OperatorFunction: dynamodb:Query on EventsTable.Arn/index/by_merchant: not this function's job"),
    ("WebforceFunction's held-cap UpdateItem loses its LeadingKeys condition", _held_cap_unconditioned("WebforceFunction"), "WebforceFunction: dynamodb:UpdateItem on EventsTable.Arn is granted without a condition"),
    ("ConscentFunction's held-cap UpdateItem reaches Memberful's counter too", _held_cap_keys("ConscentFunction", ["HELDCAP#conscent#*", "HELDCAP#memberful#*"]), "ConscentFunction: dynamodb:UpdateItem on EventsTable.Arn is granted with"),
    ("FoloosiFunction's held-cap UpdateItem reaches every item", _held_cap_keys("FoloosiFunction", ["*"]), "FoloosiFunction: dynamodb:UpdateItem on EventsTable.Arn is granted with"),
    ("an AWS::IAM::Policy attached to MemberfulFunctionRole", _standalone_policy, "MemberfulFunction: s3:GetObject on arn:aws:s3:::bucket/key: not this function's job"),
    ("anyone may invoke MemberfulFunction", _public_invoke, "PublicInvoke: lets * lambda:InvokeFunction"),
    # Secrets Manager: each webhook function reads its own provider's secrets, only when set.
    ("MemberfulFunction reads every secret (GetSecretValue on \"*\")", _secret_resource("MemberfulFunction", "*"), "MemberfulFunction: MemberfulFunctionRole/MemberfulFunctionRolePolicy0: secretsmanager:GetSecretValue on wildcard resource *"),
    ("WebforceFunction reads Foloosi's token secret", _secret_resource("WebforceFunction", {"Ref": "FoloosiWebhookTokenArn"}), "WebforceFunction: secretsmanager:GetSecretValue on FoloosiWebhookTokenArn (if HasWebforceWebhookTokenArn): not this function's job"),
    ("RainforestFunction may read its secret with no Arn parameter set", _secret_always("RainforestFunction"), "RainforestFunction: secretsmanager:GetSecretValue on RainforestWebhookSecretArn is granted always, not only if HasRainforestWebhookSecretArn"),
    ("ConscentBasicAuthArn accepts a wildcard ARN", _set_parameter("ConscentBasicAuthArn", "AllowedPattern", "^$|^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:.+$"), "ConscentBasicAuthArn: AllowedPattern accepts arn:aws:secretsmanager:us-east-1:123456789012:secret:*"),
    ("HasFoloosiSecretKeyArn holds whatever FoloosiSecretKeyArn is", _set_condition("HasFoloosiSecretKeyArn", {"Fn::Equals": ["", ""]}), "HasFoloosiSecretKeyArn: not !Not [!Equals [!Ref FoloosiSecretKeyArn, \"\"]]"),
    # Secrets the stack stores: each read by the function that uses it, only when given, holding
    # the parameter unchanged; none in an environment.
    ("WebforceFunction reads Foloosi's stored token", _add_statement("WebforceFunction", {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": {"Ref": "StoredFoloosiWebhookToken"}}), "WebforceFunction: secretsmanager:GetSecretValue on StoredFoloosiWebhookToken: not this function's job"),
    ("MemberfulFunction may read its stored secret with no value given", _unconditional("MemberfulFunction", "StoreMemberfulWebhookSecret"), "MemberfulFunction: secretsmanager:GetSecretValue on StoredMemberfulWebhookSecret is granted always, not only if StoreMemberfulWebhookSecret"),
    ("the stored Rainforest secret holds more than the parameter", _set_prop("StoredRainforestWebhookSecret", "SecretString", {"Fn::Sub": "${RainforestWebhookSecret},extra"}), "StoredRainforestWebhookSecret: SecretString is"),
    ("the stored Conscent credential exists with no value given", _drop_condition("StoredConscentBasicAuth"), "StoredConscentBasicAuth: exists under no condition, not under StoreConscentBasicAuth"),
    ("a NoEcho parameter back in MemberfulFunction's environment", _set_env("MemberfulFunction", "MEMBERFUL_WEBHOOK_SECRET", {"Ref": "MemberfulWebhookSecret"}), "MemberfulFunction: MEMBERFUL_WEBHOOK_SECRET holds the NoEcho parameter MemberfulWebhookSecret"),
    ("a literal token in FoloosiFunction's environment", _set_env("FoloosiFunction", "FOLOOSI_WEBHOOK_TOKEN", "a-literal-token-of-enough-length"), "FoloosiFunction: FOLOOSI_WEBHOOK_TOKEN is in the environment beside FOLOOSI_WEBHOOK_TOKEN_ARN"),
    ("OperatorFunction's environment names a secret its role may not read", _set_env("OperatorFunction", "FOLOOSI_SECRET_KEY_ARN", {"Ref": "StoredFoloosiWebhookToken"}), "OperatorFunction: its environment names the secret StoredFoloosiWebhookToken, which its role may not read"),
    # The customer-managed key: its grants only when KmsKeyArn is set, on that key, through the
    # services named; AlarmTopic encrypted with a key CloudWatch may use.
    ("WebforceFunction may use the key with no KmsKeyArn set", _unconditional("WebforceFunction", "HasKmsKey"), "WebforceFunction: kms:Decrypt on KmsKeyArn is granted always, not only if HasKmsKey"),
    ("FanoutFunction may decrypt with any key", _edit_kms("FanoutFunction", lambda st: st.update(Resource="*")), "FanoutFunction: FanoutFunctionRole/FanoutFunctionRolePolicy0: kms:Decrypt on wildcard resource *"),
    ("MemberfulFunction may decrypt outside DynamoDB and Secrets Manager", _edit_kms("MemberfulFunction", lambda st: st.pop("Condition")), "MemberfulFunction: kms:Decrypt on KmsKeyArn is granted without a condition, not only with"),
    ("OperatorFunction cannot publish to an encrypted topic", _drop_kms("OperatorFunction", "kms:GenerateDataKey"), "OperatorFunction: kms:GenerateDataKey on KmsKeyArn with {\"StringEquals\": {\"kms:viaservice\": [\"sns.${AWS::Region}.amazonaws.com\"]}} missing if HasKmsKey"),
    ("KmsKeyArn accepts an alias ARN", _set_parameter("KmsKeyArn", "AllowedPattern", "^$|^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:(key|alias)/[A-Za-z0-9/_-]+$"), "KmsKeyArn: AllowedPattern accepts arn:aws:kms:us-east-1:123456789012:alias/refund-relay: an alias ARN"),
    ("AlarmTopic unencrypted", _drop_key("AlarmTopic", "KmsMasterKeyId"), "AlarmTopic: not encrypted (no KmsMasterKeyId)"),
    ("AlarmTopic under alias/aws/sns", _set_prop("AlarmTopic", "KmsMasterKeyId", {"Fn::If": ["HasKmsKey", {"Ref": "KmsKeyArn"}, "alias/aws/sns"]}), "AlarmTopic: encrypted if not HasKmsKey with the AWS managed key alias/aws/sns"),
    ("the alarm key lets any account's alarms use it", _cloudwatch_unconditioned, "AlarmTopicKey: cloudwatch.amazonaws.com may use it without the condition StringEquals aws:SourceAccount"),
    ("the alarm key does not let CloudWatch use it", _cloudwatch_dropped, "AlarmTopicKey: its policy does not let cloudwatch.amazonaws.com kms:Decrypt and kms:GenerateDataKey*"),
    ("the alarm key exists only when KmsKeyArn is set", _set_resource_condition("AlarmTopicKey", "HasKmsKey"), "AlarmTopic: uses AlarmTopicKey if not HasKmsKey, which exists only if HasKmsKey"),
    # The reconciliation sweep: its own reads and writes, its own key, on a schedule of its own,
    # its alarms on outcomes it writes.
    ("ReconcileFunction also gets dynamodb:UpdateItem", _add_statement("ReconcileFunction", {"Effect": "Allow", "Action": "dynamodb:UpdateItem", "Resource": {"Fn::GetAtt": ["EventsTable", "Arn"]}}), "ReconcileFunction: dynamodb:UpdateItem on EventsTable.Arn: not this function's job"),
    ("ReconcileFunction also gets dynamodb:DeleteItem and Scan", _reconcile_actions(["dynamodb:BatchGetItem", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:DeleteItem", "dynamodb:Scan"]), "ReconcileFunction: dynamodb:DeleteItem on EventsTable.Arn: not this function's job"),
    ("ReconcileFunction queries the merchant index", _add_statement("ReconcileFunction", {"Effect": "Allow", "Action": "dynamodb:Query", "Resource": {"Fn::Sub": "${EventsTable.Arn}/index/by_merchant"}}), "ReconcileFunction: dynamodb:Query on EventsTable.Arn/index/by_merchant: not this function's job"),
    ("ReconcileFunction loses its BatchGetItem", _reconcile_actions(["dynamodb:GetItem", "dynamodb:PutItem"]), "ReconcileFunction: dynamodb:BatchGetItem on EventsTable.Arn missing"),
    ("ReconcileFunction publishes to PayorTopic", _add_policy("ReconcileFunction", {"SNSPublishMessagePolicy": {"TopicName": {"Fn::GetAtt": ["PayorTopic", "TopicName"]}}}), "ReconcileFunction: sns:Publish on PayorTopic: not this function's job"),
    ("OperatorFunction reads the stored Rainforest API key", _add_statement("OperatorFunction", {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": {"Ref": "StoredRainforestApiKey"}}), "OperatorFunction: secretsmanager:GetSecretValue on StoredRainforestApiKey: not this function's job"),
    ("RainforestFunction reads the Rainforest API key given by ARN", _secret_resource("RainforestFunction", {"Ref": "RainforestApiKeyArn"}), "RainforestFunction: secretsmanager:GetSecretValue on RainforestApiKeyArn (if HasRainforestWebhookSecretArn): not this function's job"),
    ("ReconcileFunction may read the stored API key with no key given", _unconditional("ReconcileFunction", "StoreRainforestApiKey"), "ReconcileFunction: secretsmanager:GetSecretValue on StoredRainforestApiKey is granted always, not only if StoreRainforestApiKey"),
    ("the stored Rainforest API key exists with no key given", _drop_condition("StoredRainforestApiKey"), "StoredRainforestApiKey: exists under no condition, not under StoreRainforestApiKey"),
    ("the Rainforest API key itself in ReconcileFunction's environment", _set_env("ReconcileFunction", "RAINFOREST_API_KEY", {"Ref": "RainforestApiKey"}), "ReconcileFunction: RAINFOREST_API_KEY holds the NoEcho parameter RainforestApiKey"),
    ("ReconcileFunction may use the key with no KmsKeyArn set", _unconditional("ReconcileFunction", "HasKmsKey"), "ReconcileFunction: kms:Decrypt on KmsKeyArn is granted always, not only if HasKmsKey"),
    ("ReconcileFunction may decrypt through SNS too", _edit_kms("ReconcileFunction", lambda st: st["Condition"]["StringEquals"]["kms:ViaService"].append({"Fn::Sub": "sns.${AWS::Region}.amazonaws.com"})), "ReconcileFunction: kms:Decrypt on KmsKeyArn is granted with"),
    ("a schedule invokes OperatorFunction", _set_event("OperatorFunction", "Nightly", {"Type": "Schedule", "Properties": {"Schedule": "rate(1 day)"}}), "OperatorFunctionNightlyPermission: lets events.amazonaws.com invoke OperatorFunction; only ReconcileFunction may run on a schedule"),
    ("ReconcileFunction runs on an event pattern, not a schedule", _set_event("ReconcileFunction", "Sweep", {"Type": "CloudWatchEvent", "Properties": {"Pattern": {"source": ["aws.health"]}}}), "ReconcileFunctionSweep invokes ReconcileFunction on an event pattern"),
    ("ReconcileFunction loses its schedule", _drop_key("ReconcileFunction", "Events"), "ReconcileFunction: no schedule invokes it"),
    ("ReconcileMissedAlarm watches [Provider] alone", _set_dimensions("ReconcileMissedAlarm", [{"Name": "Provider", "Value": "rainforest"}]), "ReconcileMissedAlarm: RefundRelay Reconciled by [Provider] is not written"),
    ("ReconcileMissedAlarm watches a webhook outcome", _set_dimensions("ReconcileMissedAlarm", [{"Name": "Outcome", "Value": "accepted"}]), "ReconcileMissedAlarm: RefundRelay Reconciled by [Outcome]: Outcome=accepted is never written"),
    ("HeldDeliveriesAlarm watches a reconciliation outcome", _set_dimensions("HeldDeliveriesAlarm", [{"Name": "Outcome", "Value": "missed"}]), "HeldDeliveriesAlarm: RefundRelay Webhooks by [Outcome]: Outcome=missed is never written"),
    ("ReconcileFailedAlarm is removed", _remove("ReconcileFailedAlarm"), "reconciliation (ReconcileFunction): no alarm on Reconciled Outcome=failed"),
    ("ReconcileMissedAlarm notifies nobody when it clears", _drop_key("ReconcileMissedAlarm", "OKActions"), "ReconcileMissedAlarm: OKActions does not include AlarmTopic"),
    ("a checkov skip without its reason", _skip_without_reason, "FanoutFunction: checkov skip CKV_AWS_116 without a reason (comment)"),
    # Operations: the topic policy, the table, the alarms, the metric filter, the dashboard.
    ("the topic policy stops denying other publishers", _drop_statement("OnlyLambdaRolesPublish"), "InternalTopic: NotificationTopicsPolicy does not deny sns:Publish to every principal but FanoutFunctionRole and OperatorFunctionRole"),
    ("the topic policy excepts a webhook function's role instead", _publisher_memberful, "PayorTopic: NotificationTopicsPolicy lets MemberfulFunctionRole.Arn publish; exactly FanoutFunctionRole and OperatorFunctionRole are expected (not expected: MemberfulFunctionRole.Arn) (missing: FanoutFunctionRole.Arn, OperatorFunctionRole.Arn)"),
    ("the topic policy also excepts the account root", _publisher_added("arn:aws:iam::123456789012:root"), "MerchantTopic: NotificationTopicsPolicy lets arn:aws:iam::123456789012:root publish: not a role of this template"),
    ("the operator's role may be assumed by the account too", _operator_trusts_account, "InternalTopic: NotificationTopicsPolicy lets OperatorFunctionRole publish, but its trust policy lets {\"AWS\": \"arn:aws:iam::123456789012:root\"}"),
    ("the topic policy stops requiring TLS", _drop_statement("RequireTls"), "MerchantTopic: NotificationTopicsPolicy does not deny sns:Publish without TLS"),
    ("the TLS deny gets a second condition (so it denies less)", _tls_deny_narrowed, "InternalTopic: NotificationTopicsPolicy does not deny sns:Publish without TLS"),
    ("PayorTopic is left out of the topic policy", _payor_unlisted, "PayorTopic: no AWS::SNS::TopicPolicy names it"),
    ("a second topic policy on MerchantTopic", _second_topic_policy, "MerchantTopic: in 2 topic policies"),
    ("the events table loses deletion protection", _table_unprotected, "EventsTable: DeletionProtectionEnabled is not true"),
    ("the events table's DeletionPolicy becomes Delete", _table_deletable, "EventsTable: DeletionPolicy is Delete, not Retain"),
    ("HeldDeliveriesAlarm notifies nobody", _drop_key("HeldDeliveriesAlarm", "AlarmActions"), "HeldDeliveriesAlarm: AlarmActions does not include AlarmTopic"),
    ("SkippedRecordsAlarm does not say when it clears", _drop_key("SkippedRecordsAlarm", "OKActions"), "SkippedRecordsAlarm: OKActions does not include AlarmTopic"),
    ("Foloosi loses its sustained unauthorized alarm", _remove("FoloosiUnauthorizedSustainedAlarm"), "foloosi (FoloosiFunction, /webhooks/foloosi): no sustained unauthorized alarm"),
    ("a sixth provider without unauthorized alarms", _sixth_provider, "stripe (StripeFunction, /webhooks/stripe): no burst unauthorized alarm"),
    ("an alarm on a dimension set no function writes", _set_dimensions("NotificationsFailedAlarm", [{"Name": "Audience", "Value": "payor"}]), "NotificationsFailedAlarm: RefundRelay Notifications by [Audience] is not written"),
    ("an alarm on an outcome no function writes", _set_dimensions("HeldDeliveriesAlarm", [{"Name": "Outcome", "Value": "hold"}]), "HeldDeliveriesAlarm: RefundRelay Webhooks by [Outcome]: Outcome=hold is never written"),
    ("the 429 filter compares the quoted status as a number", _numeric_429, "ApiThrottledMetricFilter: $.status is written as a string"),
    ("the dashboard body is not JSON", _edit_dashboard("]}}", "]}},,"), "Dashboard: DashboardBody is not JSON after substitution"),
    ("a dashboard graph of a provider no route has", _edit_dashboard('"Provider", "memberful"', '"Provider", "memberfull"'), "Provider=memberfull is never written"),
]


def self_test(sam: dict) -> int:
    failures = 0
    violations, _, _ = check_all(sam)
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
            violations, _, _ = check_all(mutated)
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
        violations, summary, ops_summary = check_all(sam)
    except TemplateError as e:
        print(f"check-iam: {args.template}: {e}", file=sys.stderr)
        return 2
    print_summary(summary)
    print()
    print("managed policies allowed (AWS-owned, on Resource \"*\"):")
    for policy, grants in MANAGED_POLICIES.items():
        print(f"  {policy}: {grants}")
    print()
    print("operations checked:")
    for line in ops_summary:
        print("  " + line)
    if violations:
        print(f"\ncheck-iam: FAILED, {len(violations)} violation(s) in {args.template.name}:", file=sys.stderr)
        for v in violations:
            print("  - " + v, file=sys.stderr)
        return 1
    print(f"\ncheck-iam: ok, {len(summary)} functions, each with only its own actions and resources; operations as listed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
