#!/usr/bin/env bash
# deploy.sh: build the url2s3 Lambda zip from the top-level *.py files and create or update the
# function. Idempotent: a second run with the same sources and options changes nothing.
set -euo pipefail

readonly PROG="deploy.sh"
SRC_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly SRC_DIR
readonly POLICY_NAME="url2s3-s3-and-logs"
readonly TUNING_VARS=" PART_SIZE_MB SAFETY_MARGIN_MS CONNECT_TIMEOUT READ_TIMEOUT MAX_REDIRECTS MAX_BYTES ALLOW_PRIVATE_NETWORKS CA_BUNDLE LOG_LEVEL "

FUNCTION_NAME="url2s3"
BUCKET=""
PREFIX=""
REGION=""
PROFILE=""
MEMORY="1024"
TIMEOUT="300"
WORKERS="16"
ROLE_ARN=""
ROLE_CREATED="0"
ACCOUNT=""
PARTITION="aws"
RUNTIME="python3.12"
ARCH="arm64"
ZIP_OUT=""
BUILD_ONLY="0"
EXTRA_ENV=()
RETRY_ATTEMPTS="${DEPLOY_ROLE_RETRIES:-10}"
RETRY_SLEEP="${DEPLOY_ROLE_RETRY_SLEEP:-3}"
AWS_ARGS=()
TMP=""
ZIP=""
ZIP_SHA=""
CFG_STATE="" CFG_UPDATE="" CFG_SHA="" CFG_RUNTIME="" CFG_MEMORY="" CFG_TIMEOUT="" CFG_ARN="" CFG_ARCH=""

usage() {
  cat <<EOF
Usage: ./deploy.sh --bucket BUCKET [options]

Builds a zip of the top-level *.py files (deterministic: same sources, same bytes) and creates the
Lambda function, or updates only what differs. Running it twice changes nothing.

Required:
  --bucket BUCKET         bucket the function writes to (env BUCKET; also scopes the IAM policy)

Options:
  --function-name NAME    function name (default: url2s3)
  --prefix PREFIX         key prefix (env PREFIX; the policy allows BUCKET/PREFIX* only; default: "")
  --region REGION         AWS region (default: AWS_REGION, AWS_DEFAULT_REGION or the profile's region)
  --profile PROFILE       AWS CLI profile
  --memory MB             memory size, 128-10240 (default: 1024)
  --timeout SECONDS       function timeout, 1-900 (default: 300)
  --workers N             parallel transfers per invocation, 1-256 (env WORKERS; default: 16)
  --env NAME=VALUE        another tuning variable (repeatable); NAME is one of PART_SIZE_MB,
                          SAFETY_MARGIN_MS, CONNECT_TIMEOUT, READ_TIMEOUT, MAX_REDIRECTS,
                          MAX_BYTES, ALLOW_PRIVATE_NETWORKS, CA_BUNDLE, LOG_LEVEL
  --role-arn ARN          use this execution role instead of creating url2s3-NAME
  --runtime RUNTIME       python3.12 or newer (default: python3.12)
  --architecture ARCH     arm64 or x86_64 (default: arm64)
  --zip-out PATH          also write the built zip to PATH
  --build-only            build the zip (with --zip-out) and stop; no AWS calls, no --bucket needed
  -h, --help              show this help

Honours AWS_ENDPOINT_URL (e.g. a local moto server). The environment of the function is exactly
BUCKET, PREFIX, WORKERS and the --env pairs: variables set by hand elsewhere are removed.
A new role may take seconds before Lambda accepts it; create-function is retried
DEPLOY_ROLE_RETRIES times (default 10), DEPLOY_ROLE_RETRY_SLEEP seconds apart (default 3).
EOF
}

die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }
usage_error() { printf '%s: error: %s (see --help)\n' "$PROG" "$*" >&2; exit 2; }
say() { printf '==> %s\n' "$*"; }

need_value() {
  # need_value OPTION ARGC: an option that takes a value must have one.
  [[ "$2" -ge 2 ]] || usage_error "option $1 needs a value"
}

parse_args() {
  while [[ $# -gt 0 ]]; do
    if [[ "$1" == --*=* ]]; then
      set -- "${1%%=*}" "${1#*=}" "${@:2}"
    fi
    case "$1" in
      -h|--help) usage; exit 0 ;;
      --build-only) BUILD_ONLY="1"; shift; continue ;;
      --function-name|--bucket|--prefix|--region|--profile|--memory|--timeout|--workers|\
      --env|--role-arn|--runtime|--architecture|--zip-out) need_value "$1" "$#" ;;
      *) usage_error "unknown option: $1" ;;
    esac
    case "$1" in
      --function-name) FUNCTION_NAME="$2" ;;
      --bucket) BUCKET="$2" ;;
      --prefix) PREFIX="$2" ;;
      --region) REGION="$2" ;;
      --profile) PROFILE="$2" ;;
      --memory) MEMORY="$2" ;;
      --timeout) TIMEOUT="$2" ;;
      --workers) WORKERS="$2" ;;
      --env) EXTRA_ENV+=("$2") ;;
      --role-arn) ROLE_ARN="$2" ;;
      --runtime) RUNTIME="$2" ;;
      --architecture) ARCH="$2" ;;
      --zip-out) ZIP_OUT="$2" ;;
    esac
    shift 2
  done
}

in_range() {
  # in_range VALUE LOW HIGH: VALUE is a whole number between LOW and HIGH.
  [[ "$1" =~ ^[0-9]+$ ]] && (( 10#$1 >= $2 && 10#$1 <= $3 ))
}

validate_env_pairs() {
  local pair name
  for pair in ${EXTRA_ENV[@]+"${EXTRA_ENV[@]}"}; do
    name="${pair%%=*}"
    [[ "$pair" == *=* && "$TUNING_VARS" == *" $name "* ]] \
      || usage_error "--env $pair: expected NAME=VALUE with NAME one of:${TUNING_VARS% }"
  done
}

validate_args() {
  if [[ "$BUILD_ONLY" == "1" ]]; then
    [[ -n "$ZIP_OUT" ]] || usage_error "--build-only needs --zip-out PATH"
    return
  fi
  [[ -n "$BUCKET" ]] || usage_error "no bucket given: pass --bucket BUCKET"
  [[ "$BUCKET" =~ ^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$ ]] || usage_error "invalid bucket name: $BUCKET"
  [[ "$PREFIX" != *[*?]* ]] || usage_error "--prefix must not contain * or ? (it scopes the IAM policy)"
  [[ "$FUNCTION_NAME" =~ ^[A-Za-z0-9_-]{1,64}$ ]] || usage_error "invalid function name: $FUNCTION_NAME"
  in_range "$MEMORY" 128 10240 || usage_error "--memory must be 128-10240 MB, not $MEMORY"
  in_range "$TIMEOUT" 1 900 || usage_error "--timeout must be 1-900 seconds, not $TIMEOUT"
  in_range "$WORKERS" 1 256 || usage_error "--workers must be 1-256, not $WORKERS"
  if ! [[ "$RUNTIME" =~ ^python3\.([0-9]+)$ ]] || (( BASH_REMATCH[1] < 12 )); then
    usage_error "--runtime must be python3.12 or newer, not $RUNTIME"
  fi
  [[ "$ARCH" == "arm64" || "$ARCH" == "x86_64" ]] || usage_error "--architecture must be arm64 or x86_64"
  if [[ -n "$ROLE_ARN" ]]; then
    [[ "$ROLE_ARN" =~ ^arn:aws[a-z-]*:iam::[0-9]{12}:role/.+$ ]] || usage_error "invalid --role-arn: $ROLE_ARN"
  else
    (( ${#FUNCTION_NAME} + 7 <= 64 )) \
      || usage_error "role name url2s3-$FUNCTION_NAME would exceed 64 characters; pass --role-arn"
  fi
  validate_env_pairs
  in_range "$RETRY_ATTEMPTS" 1 100 || usage_error "DEPLOY_ROLE_RETRIES must be 1-100"
  in_range "$RETRY_SLEEP" 0 60 || usage_error "DEPLOY_ROLE_RETRY_SLEEP must be 0-60 seconds"
}

check_tools() {
  command -v python3 >/dev/null 2>&1 || die "python3 not found on PATH (needed to build the zip)"
  [[ "$BUILD_ONLY" == "1" ]] && return
  command -v aws >/dev/null 2>&1 \
    || die "aws CLI not found on PATH (install AWS CLI v2, or 'pip install awscli')"
}

build_zip() {
  # Every top-level *.py, sorted, stored uncompressed with fixed time and mode: the bytes depend
  # on the sources only, so an unchanged tree gives the same CodeSha256.
  local built names
  ZIP="$TMP/url2s3.zip"
  built="$(python3 - "$SRC_DIR" "$ZIP" <<'PY'
import base64, hashlib, pathlib, sys, zipfile
src, out = pathlib.Path(sys.argv[1]), sys.argv[2]
files = sorted(p for p in src.glob("*.py") if p.is_file())
if not any(p.name == "handler.py" for p in files):
    sys.exit(f"no handler.py in {src}")
with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
    for path in files:
        info = zipfile.ZipInfo(path.name, date_time=(1980, 1, 1, 0, 0, 0))
        info.create_system = 3
        info.external_attr = 0o100644 << 16
        archive.writestr(info, path.read_bytes())
print(base64.b64encode(hashlib.sha256(pathlib.Path(out).read_bytes()).digest()).decode())
print(" ".join(p.name for p in files))
PY
)" || die "could not build the zip from $SRC_DIR"
  { read -r ZIP_SHA; read -r names; } <<<"$built"
  say "built zip of $names (CodeSha256 $ZIP_SHA)"
  if [[ -n "$ZIP_OUT" ]]; then
    cp "$ZIP" "$ZIP_OUT" || die "could not write $ZIP_OUT"
    say "wrote $ZIP_OUT"
  fi
}

aws_try() {
  # Run the CLI with the common arguments; keep its stderr in $TMP/err for last_error.
  aws ${AWS_ARGS[@]+"${AWS_ARGS[@]}"} "$@" 2>"$TMP/err"
}

last_error() {
  grep -v '^[[:space:]]*$' "$TMP/err" | tail -n 1 || true
}

resolve_region() {
  local profile_args=()
  [[ -n "$PROFILE" ]] && profile_args=(--profile "$PROFILE")
  [[ -n "$REGION" ]] || REGION="${AWS_REGION:-${AWS_DEFAULT_REGION:-}}"
  [[ -n "$REGION" ]] || REGION="$(aws configure get region ${profile_args[@]+"${profile_args[@]}"} 2>/dev/null || true)"
  [[ -n "$REGION" ]] || die "no region: pass --region or set AWS_REGION"
  AWS_ARGS=(--region "$REGION" ${profile_args[@]+"${profile_args[@]}"})
  if [[ -n "${AWS_ENDPOINT_URL:-}" ]]; then
    # Passed explicitly too: CLI releases older than the variable would otherwise ignore it and
    # reach real AWS.
    AWS_ARGS+=(--endpoint-url "$AWS_ENDPOINT_URL")
    say "AWS_ENDPOINT_URL is set: every call goes to $AWS_ENDPOINT_URL"
  fi
}

check_identity() {
  local identity
  identity="$(aws_try sts get-caller-identity --query '[Account, Arn]' --output text)" \
    || die "no usable AWS credentials (sts get-caller-identity failed): $(last_error)"
  ACCOUNT="${identity%%[[:space:]]*}"
  PARTITION="$(cut -d: -f2 <<<"${identity##*[[:space:]]}")"
  say "account $ACCOUNT, region $REGION"
}

write_policy() {
  # The inline policy: logs for this function's own log group; PutObject/AbortMultipartUpload on
  # BUCKET/PREFIX* only.
  python3 - "$PARTITION" "$REGION" "$ACCOUNT" "$FUNCTION_NAME" "$BUCKET" "$PREFIX" >"$TMP/policy.json" <<'PY'
import json, sys
partition, region, account, name, bucket, prefix = sys.argv[1:]
group = f"arn:{partition}:logs:{region}:{account}:log-group:/aws/lambda/{name}"
print(json.dumps({"Version": "2012-10-17", "Statement": [
    {"Sid": "OwnLogGroup", "Effect": "Allow",
     "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
     "Resource": [group, group + ":*"]},
    {"Sid": "WriteUnderPrefix", "Effect": "Allow",
     "Action": ["s3:PutObject", "s3:AbortMultipartUpload"],
     "Resource": f"arn:{partition}:s3:::{bucket}/{prefix}*"},
]}, indent=2))
PY
}

same_json() {
  python3 - "$1" "$2" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
sys.exit(0 if a == b else 1)
PY
}

ensure_role_exists() {
  local name="$1" trust
  if ROLE_ARN="$(aws_try iam get-role --role-name "$name" --query Role.Arn --output text)"; then
    say "reusing role $ROLE_ARN"
    return
  fi
  grep -q NoSuchEntity "$TMP/err" || die "could not read role $name: $(last_error)"
  trust='{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"lambda.amazonaws.com"},"Action":"sts:AssumeRole"}]}'
  ROLE_ARN="$(aws_try iam create-role --role-name "$name" --assume-role-policy-document "$trust" \
    --description "url2s3 Lambda $FUNCTION_NAME" --query Role.Arn --output text)" \
    || die "could not create role $name: $(last_error)"
  ROLE_CREATED="1"
  say "created role $ROLE_ARN"
}

ensure_role_policy() {
  local name="$1"
  write_policy
  say "inline policy $POLICY_NAME on role $name:"
  cat "$TMP/policy.json"
  if [[ "$ROLE_CREATED" == "0" ]] \
     && aws_try iam get-role-policy --role-name "$name" --policy-name "$POLICY_NAME" \
       --query PolicyDocument --output json >"$TMP/current-policy.json" \
     && same_json "$TMP/policy.json" "$TMP/current-policy.json"; then
    say "policy unchanged"
    return
  fi
  aws_try iam put-role-policy --role-name "$name" --policy-name "$POLICY_NAME" \
    --policy-document "file://$TMP/policy.json" || die "could not attach the policy: $(last_error)"
  say "policy attached"
}

ensure_role() {
  if [[ -n "$ROLE_ARN" ]]; then
    say "using the given role $ROLE_ARN (no policy attached by this script)"
    return
  fi
  ensure_role_exists "url2s3-$FUNCTION_NAME"
  ensure_role_policy "url2s3-$FUNCTION_NAME"
}

write_environment() {
  python3 - "$BUCKET" "$PREFIX" "$WORKERS" ${EXTRA_ENV[@]+"${EXTRA_ENV[@]}"} >"$TMP/environment.json" <<'PY'
import json, sys
bucket, prefix, workers, *pairs = sys.argv[1:]
variables = {"BUCKET": bucket, "PREFIX": prefix, "WORKERS": workers}
variables.update(pair.split("=", 1) for pair in pairs)
print(json.dumps({"Variables": variables}, sort_keys=True))
PY
}

read_config() {
  # The fields used here of the last configuration Lambda returned ($TMP/config.json).
  local fields
  fields="$(python3 - "$TMP/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
print(*(str(c.get(k) or "-") for k in ("State", "LastUpdateStatus", "CodeSha256", "Runtime",
                                       "MemorySize", "Timeout", "FunctionArn")),
      (c.get("Architectures") or ["x86_64"])[0])
PY
)" || die "could not read the function's configuration"
  read -r CFG_STATE CFG_UPDATE CFG_SHA CFG_RUNTIME CFG_MEMORY CFG_TIMEOUT CFG_ARN CFG_ARCH <<<"$fields"
}

config_differences() {
  # One line per setting that differs between the deployed and the wanted configuration.
  python3 - "$TMP/config.json" "$TMP/environment.json" "$RUNTIME" "$MEMORY" "$TIMEOUT" \
    "$ROLE_ARN" <<'PY'
import json, sys
path, env_path, runtime, memory, timeout, role = sys.argv[1:]
have = json.load(open(path))
want = {"Runtime": runtime, "Handler": "handler.handler", "MemorySize": int(memory),
        "Timeout": int(timeout), "Role": role,
        "Environment": json.load(open(env_path))["Variables"]}
have["Environment"] = (have.get("Environment") or {}).get("Variables") or {}
for field, value in want.items():
    if have.get(field) != value:
        print(f"    {field}: {have.get(field)!r} -> {value!r}")
PY
}

wait_for() {
  # wait_for WAITER: block until the function is active / its last update finished.
  aws_try lambda wait "$1" --function-name "$FUNCTION_NAME" \
    || die "waiting for $1 on $FUNCTION_NAME failed: $(last_error)"
}

create_function() {
  local attempt=1
  until aws_try lambda create-function --function-name "$FUNCTION_NAME" --runtime "$RUNTIME" \
      --handler handler.handler --role "$ROLE_ARN" --zip-file "fileb://$ZIP" \
      --architectures "$ARCH" --memory-size "$MEMORY" --timeout "$TIMEOUT" \
      --environment "file://$TMP/environment.json" --output json >"$TMP/config.json"; do
    if ! grep -q "cannot be assumed by Lambda" "$TMP/err" || (( attempt >= RETRY_ATTEMPTS )); then
      die "create-function failed: $(last_error)"
    fi
    say "role not assumable by Lambda yet (new IAM roles take a few seconds);" \
        "retry $attempt/$((RETRY_ATTEMPTS - 1)) in ${RETRY_SLEEP}s"
    sleep "$RETRY_SLEEP"
    attempt=$((attempt + 1))
  done
  say "created function $FUNCTION_NAME; waiting until it is active"
  wait_for function-active-v2
}

wait_if_busy() {
  if [[ "$CFG_STATE" != "Active" || "$CFG_UPDATE" == "InProgress" ]]; then
    say "function is busy; waiting for its last update to finish"
    wait_for function-updated-v2
  fi
}

update_code_if_needed() {
  if [[ "$CFG_SHA" == "$ZIP_SHA" && "$CFG_ARCH" == "$ARCH" ]]; then
    say "code unchanged (CodeSha256 $ZIP_SHA, $ARCH)"
    return
  fi
  say "code differs (deployed CodeSha256 $CFG_SHA, $CFG_ARCH); updating"
  aws_try lambda update-function-code --function-name "$FUNCTION_NAME" --zip-file "fileb://$ZIP" \
    --architectures "$ARCH" --output json >"$TMP/config.json" \
    || die "update-function-code failed: $(last_error)"
  say "code updated; waiting until the update is done"
  wait_for function-updated-v2
}

update_configuration_if_needed() {
  local differences
  differences="$(config_differences)"
  if [[ -z "$differences" ]]; then
    say "configuration unchanged"
    return
  fi
  printf '%s\n' "$differences"
  aws_try lambda update-function-configuration --function-name "$FUNCTION_NAME" \
    --runtime "$RUNTIME" --handler handler.handler --role "$ROLE_ARN" --memory-size "$MEMORY" \
    --timeout "$TIMEOUT" --environment "file://$TMP/environment.json" --output json \
    >"$TMP/config.json" || die "update-function-configuration failed: $(last_error)"
  say "configuration updated; waiting until the update is done"
  wait_for function-updated-v2
}

deploy_function() {
  write_environment
  if aws_try lambda get-function-configuration --function-name "$FUNCTION_NAME" --output json \
       >"$TMP/config.json"; then
    read_config
    wait_if_busy
    update_code_if_needed
    update_configuration_if_needed
  elif grep -q ResourceNotFoundException "$TMP/err"; then
    create_function
  else
    die "could not read function $FUNCTION_NAME: $(last_error)"
  fi
}

report() {
  # From the last configuration Lambda returned (create, update or the initial read).
  read_config
  say "ready: $CFG_ARN"
  say "runtime $CFG_RUNTIME, $CFG_ARCH, memory $CFG_MEMORY MB, timeout $CFG_TIMEOUT s," \
      "CodeSha256 $CFG_SHA"
}

main() {
  parse_args "$@"
  validate_args
  check_tools
  TMP="$(mktemp -d)"
  trap 'rm -rf "$TMP"' EXIT
  build_zip
  [[ "$BUILD_ONLY" == "1" ]] && return
  export AWS_PAGER=""
  resolve_region
  check_identity
  ensure_role
  deploy_function
  report
}

main "$@"
