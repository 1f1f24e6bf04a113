#!/usr/bin/env bash
# Lints template.yaml with cfn-lint and the SAM CLI. Offline: needs no AWS account, credentials
# or network (checked with the network namespace removed).
#
# Tools come from, in order: $VENV (a virtualenv path), else the active virtualenv
# ($VIRTUAL_ENV), else <repo>/.venv. Create one with:
#   python3 -m venv .venv && .venv/bin/pip install cfn-lint aws-sam-cli
# (scripts/requirements-test.txt pins the versions scripts/test uses.)
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${VENV:-${VIRTUAL_ENV:-$PWD/.venv}}
for tool in cfn-lint sam; do
  if [[ ! -x $venv/bin/$tool ]]; then
    echo "check-template: $venv/bin/$tool not found; set VENV or install cfn-lint and aws-sam-cli" >&2
    exit 2
  fi
done

# Fake credentials and no profile, so nothing here can ever reach a real account; a region because
# the SAM CLI insists on one. No telemetry call either.
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null SAM_CLI_TELEMETRY=0
unset AWS_PROFILE AWS_SESSION_TOKEN

set -x
# Errors and warnings fail (exit code != 0); informational findings (--include-checks I) are off.
"$venv/bin/cfn-lint" template.yaml
# The SAM translator: every SAM resource expands to valid CloudFormation.
"$venv/bin/sam" validate --template-file template.yaml --region us-east-1
# The same, plus cfn-lint run by the SAM CLI on the SAM template.
"$venv/bin/sam" validate --lint --template-file template.yaml --region us-east-1
