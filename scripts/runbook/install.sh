#!/usr/bin/env bash
# Install the azrdp sweep runbook into an Azure Automation account (Python 3.10 runtime).
#
#   scripts/runbook/install.sh --account AA --resource-group RG --storage STORAGE_ACCOUNT \
#       [--subscription SUB] [--scope /subscriptions/SUB] [--runbook-args "--fix --tag rdp=managed"] \
#       [--identity-principal-id OBJECT_ID] [--schedule-hours 24] [--dry-run]
#
# What it does, in order (each step is an az CLI call you can also run by hand; see README.md):
#   1. builds the wheels azrdp needs for the Automation runtime (CPython 3.10, manylinux x86_64)
#   2. uploads them to a private blob container and imports each into a Python 3.10 runtime
#      environment of the account (from a short-lived read-only SAS URL)
#   3. creates the runbook from azrdp_sweep_runbook.py and publishes it
#   4. creates a schedule and links the runbook to it with --runbook-args
#   5. creates the "azrdp operator" custom role (scripts/azrdp-role.json) for --scope and assigns it
#      to the account's managed identity (system-assigned unless --identity-principal-id is given)
# --dry-run prints the commands instead of running them. Needs: az (signed in), python3 >= 3.10, pip.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
account="" group="" storage="" subscription="" scope="" principal="" runbook_args=""
runbook="azrdp-sweep" environment="azrdp-python310" container="azrdp-wheels" hours=24 dry_run=0
api="2023-05-15-preview"

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --account) account="$2"; shift 2 ;;
    --resource-group) group="$2"; shift 2 ;;
    --storage) storage="$2"; shift 2 ;;
    --subscription) subscription="$2"; shift 2 ;;
    --scope) scope="$2"; shift 2 ;;
    --identity-principal-id) principal="$2"; shift 2 ;;
    --runbook-args) runbook_args="$2"; shift 2 ;;
    --runbook-name) runbook="$2"; shift 2 ;;
    --schedule-hours) hours="$2"; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ -z "$account" ] || [ -z "$group" ] || [ -z "$storage" ]; then
  echo "install.sh: --account, --resource-group and --storage are required (see --help)" >&2
  exit 2
fi

run() {  # print, and run unless --dry-run
  printf '+'; printf ' %q' "$@"; printf '\n'
  if [ "$dry_run" -eq 0 ]; then "$@"; fi
}

if [ "$dry_run" -eq 1 ]; then
  subscription="${subscription:-SUBSCRIPTION_ID}"
else
  subscription="${subscription:-$(az account show --query id -o tsv)}"
fi
scope="${scope:-/subscriptions/$subscription}"
account_id="/subscriptions/$subscription/resourceGroups/$group/providers/Microsoft.Automation/automationAccounts/$account"

# 1. wheels for CPython 3.10 on Linux (Automation's Python 3.10 cloud sandbox)
wheels="$(mktemp -d)"
run python3 -m pip wheel "$repo" --no-deps -w "$wheels"
run python3 -m pip download --only-binary=:all: --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
  --python-version 3.10 --implementation cp --abi cp310 --abi abi3 --abi none -d "$wheels" "$wheels"/azrdp-*.whl

# 2. a private container, then one package per wheel in a Python 3.10 runtime environment
run az storage container create --account-name "$storage" --name "$container" --auth-mode login
run az rest --method put --url "https://management.azure.com$account_id/runtimeEnvironments/$environment?api-version=$api" \
  --body "{\"location\": \"$(az automation account show -n "$account" -g "$group" --query location -o tsv 2>/dev/null || echo LOCATION)\", \"properties\": {\"runtime\": {\"language\": \"Python\", \"version\": \"3.10\"}}}"
expiry="$(date -u -d '+2 hours' '+%Y-%m-%dT%H:%MZ' 2>/dev/null || date -u -v+2H '+%Y-%m-%dT%H:%MZ')"
for wheel in "$wheels"/*.whl; do
  [ -e "$wheel" ] || continue
  name="$(basename "$wheel")"
  package="${name%%-*}"
  run az storage blob upload --account-name "$storage" --container-name "$container" --name "$name" \
    --file "$wheel" --overwrite --auth-mode login
  if [ "$dry_run" -eq 1 ]; then sas="SAS"; else
    sas="$(az storage blob generate-sas --account-name "$storage" --container-name "$container" --name "$name" \
      --permissions r --expiry "$expiry" --auth-mode login --as-user -o tsv)"
  fi
  run az rest --method put \
    --url "https://management.azure.com$account_id/runtimeEnvironments/$environment/packages/$package?api-version=$api" \
    --body "{\"properties\": {\"contentLink\": {\"uri\": \"https://$storage.blob.core.windows.net/$container/$name?$sas\"}}}"
done

# 3. the runbook, in that runtime environment
run az rest --method put --url "https://management.azure.com$account_id/runbooks/$runbook?api-version=$api" \
  --body "{\"location\": \"$(az automation account show -n "$account" -g "$group" --query location -o tsv 2>/dev/null || echo LOCATION)\", \"properties\": {\"runbookType\": \"Python\", \"runtimeEnvironment\": \"$environment\", \"description\": \"azrdp sweep: check (and repair) RDP on Windows VMs\"}}"
run az automation runbook replace-content --automation-account-name "$account" --resource-group "$group" \
  --name "$runbook" --content "@$here/azrdp_sweep_runbook.py"
run az automation runbook publish --automation-account-name "$account" --resource-group "$group" --name "$runbook"

# 4. a schedule, linked with the runbook's arguments (Python runbooks take them as positional arguments)
start="$(date -u -d '+15 minutes' '+%Y-%m-%dT%H:%M:%SZ' 2>/dev/null || date -u -v+15M '+%Y-%m-%dT%H:%M:%SZ')"
run az automation schedule create --automation-account-name "$account" --resource-group "$group" \
  --name "$runbook-every-${hours}h" --frequency Hour --interval "$hours" --start-time "$start"
params="{}"
if [ -n "$runbook_args" ]; then
  params="$(python3 -c 'import json, shlex, sys; print(json.dumps({str(i + 1): a for i, a in enumerate(shlex.split(sys.argv[1]))}))' "$runbook_args")"
fi
run az rest --method put \
  --url "https://management.azure.com$account_id/jobSchedules/$(python3 -c 'import uuid; print(uuid.uuid4())')?api-version=2023-11-01" \
  --body "{\"properties\": {\"schedule\": {\"name\": \"$runbook-every-${hours}h\"}, \"runbook\": {\"name\": \"$runbook\"}, \"parameters\": $params}}"

# 5. the least-privilege role for the account's identity
role="$(mktemp)"
python3 - "$repo/scripts/azrdp-role.json" "$scope" > "$role" <<'PY'
import json, sys
body = json.load(open(sys.argv[1]))
body["AssignableScopes"] = [sys.argv[2]]
print(json.dumps(body, indent=2))
PY
run az role definition create --role-definition "@$role"
if [ -z "$principal" ]; then
  if [ "$dry_run" -eq 1 ]; then principal="PRINCIPAL_ID"; else
    principal="$(az automation account show -n "$account" -g "$group" --query identity.principalId -o tsv)"
  fi
fi
run az role assignment create --assignee-object-id "$principal" --assignee-principal-type ServicePrincipal \
  --role "azrdp operator" --scope "$scope"
echo "Installed runbook $runbook in $account; it runs every $hours h with: ${runbook_args:-(no arguments: check only)}"
