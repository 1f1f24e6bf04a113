#!/usr/bin/env bash
# Lints template.yaml with cfn-lint and the SAM CLI, and scans it with checkov. Offline: needs no
# AWS account, credentials or network (checked with the network namespace removed).
#
# cfn-lint and sam come from, in order: $VENV (a virtualenv path), else the active virtualenv
# ($VIRTUAL_ENV), else <repo>/.venv; checkov from $CHECKOV_VENV, else <repo>/.tools/checkov.
# scripts/test creates both from their hash-pinned locks; by hand:
#   python3 -m venv .venv && .venv/bin/pip install --require-hashes --no-deps -r scripts/requirements-test.txt
#   python3 -m venv .tools/checkov && .tools/checkov/bin/pip install --require-hashes --no-deps -r scripts/requirements-checkov.txt
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${VENV:-${VIRTUAL_ENV:-$PWD/.venv}}
checkov_venv=${CHECKOV_VENV:-$PWD/.tools/checkov}
for tool in "$venv/bin/cfn-lint" "$venv/bin/sam" "$checkov_venv/bin/checkov"; do
  if [[ ! -x $tool ]]; then
    echo "check-template: $tool not found; set VENV / CHECKOV_VENV or install the tools (above)" >&2
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
# checkov's CloudFormation checks (SAM resources and Globals included): any failed check fails
# (exit 1); a check that does not apply is skipped in the resource's Metadata with the reason
# (scripts/check-iam.py requires one). Offline: no guideline or policy download (--skip-download,
# BC_SKIP_MAPPING), no PyPI version check (CKV_SKIP_PACKAGE_UPDATE_CHECK), no platform key, so
# nothing is uploaded. --quiet prints the counts and the failed checks, not the passed ones.
env -u BC_API_KEY -u PRISMA_API_URL BC_SKIP_MAPPING=TRUE CKV_SKIP_PACKAGE_UPDATE_CHECK=true \
  "$checkov_venv/bin/checkov" --file template.yaml --framework cloudformation --skip-download \
  --compact --quiet
