#!/usr/bin/env bash
# deploy.sh: build the url2s3 Lambda zip from the top-level *.py files and create or update the
# function, and on request what its scale-out features need (reports, self-continuation, manifests,
# an SQS event source mapping, a Step Functions state machine). Idempotent: a second run with the
# same sources and options changes nothing; a run without an option removes what it added.
set -euo pipefail

readonly PROG="deploy.sh"
SRC_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly SRC_DIR
readonly POLICY_NAME="url2s3-s3-and-logs"
readonly SFN_POLICY_NAME="url2s3-state-machine"
readonly ASL_FILE="$SRC_DIR/statemachine/url2s3.asl.json"
# Tag on the event source mappings this script creates: only those are deleted when the option goes.
readonly MANAGED_TAG_KEY="url2s3:managed-by"
readonly MANAGED_TAG_VALUE="deploy.sh"
# Every variable the function reads (config.py, scaling.py) that no dedicated option sets; the
# dedicated ones (dedicated_option) are refused in --env so that each has one source of truth.
readonly TUNING_VARS=" PART_SIZE_MB PART_CONCURRENCY MEMORY_BUDGET_MB SAFETY_MARGIN_MS CONNECT_TIMEOUT READ_TIMEOUT MAX_REDIRECTS MAX_BYTES ORIGIN_ATTEMPTS RETRY_AFTER_MAX ALLOW_PRIVATE_NETWORKS ALLOWED_HOSTS CA_BUNDLE S3_RETRY_MODE METRICS_NAMESPACE LOG_LEVEL "
readonly MAX_KEY_PREFIX_BYTES=512

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
GIVEN=" "
REPORT_PREFIX=""
REPORT_BUCKET=""
SELF_CONTINUE="0"
MAX_HOPS="50"
MANIFEST_BUCKET=""
MANIFEST_PREFIX=""
QUEUE_ARN=""
SQS_BATCH_SIZE="10"
SQS_WINDOW="0"
STATE_MACHINE=""
MANIFEST_FORMAT="csv"
RESULTS_PREFIX="_url2s3/map-results/"
MAP_CONCURRENCY="20"
MAP_BATCH_SIZE="500"
TOLERATED_FAILURE="5"
FUNCTION_ARN=""
NEW_ROLE_ARN=""
NEW_ROLE_CREATED="0"
HAD_QUEUE="0"
MACHINE_ARN=""
MACHINE_EXISTS="0"
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
                          PART_CONCURRENCY, MEMORY_BUDGET_MB, SAFETY_MARGIN_MS, CONNECT_TIMEOUT,
                          READ_TIMEOUT, MAX_REDIRECTS, MAX_BYTES, ORIGIN_ATTEMPTS, RETRY_AFTER_MAX,
                          ALLOW_PRIVATE_NETWORKS, ALLOWED_HOSTS, CA_BUNDLE, S3_RETRY_MODE,
                          METRICS_NAMESPACE, LOG_LEVEL
  --role-arn ARN          use this execution role instead of creating url2s3-NAME
  --runtime RUNTIME       python3.12 or newer (default: python3.12)
  --architecture ARCH     arm64 or x86_64 (default: arm64)
  --zip-out PATH          also write the built zip to PATH
  --build-only            build the zip (with --zip-out) and stop; no AWS calls, no --bucket needed
  -h, --help              show this help

Scale-out (each adds exactly the IAM statement it needs; a run without it removes it again):
  --report-prefix P       write a JSON report per invocation under P (env REPORT_PREFIX;
                          statement WriteReports unless BUCKET/PREFIX* already covers it)
  --report-bucket RB      ... in RB instead of the batch's bucket (env REPORT_BUCKET)
  --self-continue         the function invokes itself with what is left (env SELF_CONTINUE=true;
                          statement InvokeItself)
  --max-hops N            self-invocations per chain, 0-10000 (env MAX_HOPS; default: 50)
  --manifest-bucket MB    the function may read manifests in MB (statement ReadManifests)
  --manifest-prefix MP    ... under MP only (default: the whole bucket)
  --sqs-queue-arn ARN     consume this queue: event source mapping with ReportBatchItemFailures
                          (statement ConsumeQueue); the queue must be in the function's region
  --sqs-batch-size N      messages per batch, 1-10000, 1-10 for FIFO (default: 10); above 10
                          needs --sqs-batching-window of at least 1
  --sqs-batching-window S seconds to gather a batch, 0-300, standard queues only (default: 0)
  --state-machine NAME    Step Functions state machine NAME from statemachine/url2s3.asl.json,
                          with role url2s3-sfn-NAME; needs --manifest-bucket
  --manifest-format F     csv (header row: url,key) or jsonl (default: csv)
  --results-prefix P      where the Distributed Map writes its results in BUCKET
                          (default: _url2s3/map-results/)
  --map-concurrency N     child runs at once, 1-10000 (default: 20)
  --map-batch-size N      URLs per child run, 1-10000 (default: 500)
  --tolerated-failure-percentage N
                          failed child runs tolerated, 0-100 (default: 5)

Honours AWS_ENDPOINT_URL (e.g. a local moto server). The environment of the function is exactly
BUCKET, PREFIX, WORKERS, the variables of the options above and the --env pairs: variables set by
hand elsewhere are removed. A new role (or policy) may take seconds before Lambda or Step Functions
accepts it; the call is retried DEPLOY_ROLE_RETRIES times (default 10), DEPLOY_ROLE_RETRY_SLEEP
seconds apart (default 3).
EOF
}

die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }
usage_error() { printf '%s: error: %s (see --help)\n' "$PROG" "$*" >&2; exit 2; }
warn() { printf '%s: warning: %s\n' "$PROG" "$*" >&2; }
say() { printf '==> %s\n' "$*"; }

need_value() {
  # need_value OPTION ARGC: an option that takes a value must have one.
  [[ "$2" -ge 2 ]] || usage_error "option $1 needs a value"
}

given() {
  # given OPTION: the option was on the command line.
  [[ "$GIVEN" == *" $1 "* ]]
}

parse_args() {
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --help=*|--build-only=*|--self-continue=*) usage_error "option ${1%%=*} takes no value" ;;
      --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}" ;;
    esac
    GIVEN="$GIVEN$1 "
    case "$1" in
      -h|--help) usage; exit 0 ;;
      --build-only) BUILD_ONLY="1"; shift; continue ;;
      --self-continue) SELF_CONTINUE="1"; shift; continue ;;
      --function-name|--bucket|--prefix|--region|--profile|--memory|--timeout|--workers|\
      --env|--role-arn|--runtime|--architecture|--zip-out|\
      --report-prefix|--report-bucket|--max-hops|--manifest-bucket|--manifest-prefix|\
      --sqs-queue-arn|--sqs-batch-size|--sqs-batching-window|--state-machine|--manifest-format|\
      --results-prefix|--map-concurrency|--map-batch-size|--tolerated-failure-percentage)
        need_value "$1" "$#" ;;
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
      --report-prefix) REPORT_PREFIX="$2" ;;
      --report-bucket) REPORT_BUCKET="$2" ;;
      --max-hops) MAX_HOPS="$2" ;;
      --manifest-bucket) MANIFEST_BUCKET="$2" ;;
      --manifest-prefix) MANIFEST_PREFIX="$2" ;;
      --sqs-queue-arn) QUEUE_ARN="$2" ;;
      --sqs-batch-size) SQS_BATCH_SIZE="$2" ;;
      --sqs-batching-window) SQS_WINDOW="$2" ;;
      --state-machine) STATE_MACHINE="$2" ;;
      --manifest-format) MANIFEST_FORMAT="$2" ;;
      --results-prefix) RESULTS_PREFIX="$2" ;;
      --map-concurrency) MAP_CONCURRENCY="$2" ;;
      --map-batch-size) MAP_BATCH_SIZE="$2" ;;
      --tolerated-failure-percentage) TOLERATED_FAILURE="$2" ;;
    esac
    shift 2
  done
}

in_range() {
  # in_range VALUE LOW HIGH: VALUE is a whole number between LOW and HIGH.
  [[ "$1" =~ ^[0-9]{1,9}$ ]] && (( 10#$1 >= $2 && 10#$1 <= $3 ))
}

valid_bucket() {
  [[ "$1" =~ ^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$ ]]
}

byte_length() {
  local LC_ALL=C
  printf '%s' "${#1}"
}

check_key_prefix() {
  # check_key_prefix OPTION VALUE: a key prefix that scopes an IAM resource (OPTION VALUE*).
  [[ "$2" != /* ]] || usage_error "$1 must not start with / (S3 keys have no leading slash): $2"
  [[ "$2" != *[*?]* ]] || usage_error "$1 must not contain * or ? (it scopes an IAM policy): $2"
  [[ ! "$2" =~ ^[[:space:]]|[[:space:]]$ ]] || usage_error "$1 must not start or end with white space"
  (( $(byte_length "$2") <= MAX_KEY_PREFIX_BYTES )) \
    || usage_error "$1 must be at most $MAX_KEY_PREFIX_BYTES bytes"
}

only_with() {
  # only_with OPTION REQUIRED: OPTION makes sense only together with REQUIRED.
  ! given "$1" || given "$2" || usage_error "$1 needs $2"
}

dedicated_option() {
  # dedicated_option NAME: the option that sets variable NAME, if one does.
  case "$1" in
    BUCKET) printf -- '--bucket' ;;
    PREFIX) printf -- '--prefix' ;;
    WORKERS) printf -- '--workers' ;;
    REPORT_PREFIX) printf -- '--report-prefix' ;;
    REPORT_BUCKET) printf -- '--report-bucket' ;;
    SELF_CONTINUE) printf -- '--self-continue' ;;
    MAX_HOPS) printf -- '--max-hops (with --self-continue)' ;;
    *) return 1 ;;
  esac
}

validate_env_pairs() {
  local pair name option
  for pair in ${EXTRA_ENV[@]+"${EXTRA_ENV[@]}"}; do
    name="${pair%%=*}"
    if [[ "$pair" == *=* ]] && option="$(dedicated_option "$name")"; then
      usage_error "--env $pair: $name is set by $option, not by --env (one source of truth)"
    fi
    [[ "$pair" == *=* && "$TUNING_VARS" == *" $name "* ]] \
      || usage_error "--env $pair: expected NAME=VALUE with NAME one of:${TUNING_VARS% }"
  done
}

validate_combinations() {
  local option
  only_with --report-bucket --report-prefix
  only_with --max-hops --self-continue
  only_with --manifest-prefix --manifest-bucket
  only_with --sqs-batch-size --sqs-queue-arn
  only_with --sqs-batching-window --sqs-queue-arn
  for option in --manifest-format --results-prefix --map-concurrency --map-batch-size \
                --tolerated-failure-percentage; do
    only_with "$option" --state-machine
  done
  ! given --state-machine || given --manifest-bucket \
    || usage_error "--state-machine needs --manifest-bucket" \
         "(its Distributed Map reads the manifests there)"
}

validate_reports_and_hops() {
  if given --report-prefix; then
    [[ -n "$REPORT_PREFIX" ]] || usage_error "--report-prefix must not be empty"
    check_key_prefix --report-prefix "$REPORT_PREFIX"
  fi
  if given --report-bucket; then
    valid_bucket "$REPORT_BUCKET" || usage_error "invalid --report-bucket name: $REPORT_BUCKET"
  fi
  in_range "$MAX_HOPS" 0 10000 || usage_error "--max-hops must be 0-10000, not $MAX_HOPS"
  MAX_HOPS="$((10#$MAX_HOPS))"
  if given --manifest-bucket; then
    valid_bucket "$MANIFEST_BUCKET" || usage_error "invalid --manifest-bucket name: $MANIFEST_BUCKET"
    check_key_prefix --manifest-prefix "$MANIFEST_PREFIX"
  fi
}

validate_queue() {
  given --sqs-queue-arn || return 0
  [[ "$QUEUE_ARN" =~ ^arn:aws[a-z-]*:sqs:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_-]{1,80}(\.fifo)?$ ]] \
    || usage_error "invalid --sqs-queue-arn: $QUEUE_ARN (expected arn:aws:sqs:REGION:ACCOUNT:QUEUE)"
  in_range "$SQS_BATCH_SIZE" 1 10000 || usage_error "--sqs-batch-size must be 1-10000, not $SQS_BATCH_SIZE"
  in_range "$SQS_WINDOW" 0 300 || usage_error "--sqs-batching-window must be 0-300 seconds, not $SQS_WINDOW"
  SQS_BATCH_SIZE="$((10#$SQS_BATCH_SIZE))" SQS_WINDOW="$((10#$SQS_WINDOW))"
  if [[ "$QUEUE_ARN" == *.fifo ]]; then
    (( SQS_BATCH_SIZE <= 10 )) \
      || usage_error "--sqs-batch-size must be 1-10 for a FIFO queue, not $SQS_BATCH_SIZE"
    (( SQS_WINDOW == 0 )) || usage_error "--sqs-batching-window is not supported for FIFO queues"
  elif (( SQS_BATCH_SIZE > 10 && SQS_WINDOW < 1 )); then
    usage_error "--sqs-batch-size above 10 needs --sqs-batching-window of at least 1 second" \
      "(Lambda's rule for standard queues)"
  fi
}

validate_state_machine() {
  given --state-machine || return 0
  [[ "$STATE_MACHINE" =~ ^[A-Za-z0-9_-]{1,53}$ ]] \
    || usage_error "invalid --state-machine name: $STATE_MACHINE (1-53 letters, digits, - or _," \
         "so that the role url2s3-sfn-NAME fits in 64 characters)"
  [[ "$MANIFEST_FORMAT" == "csv" || "$MANIFEST_FORMAT" == "jsonl" ]] \
    || usage_error "--manifest-format must be csv or jsonl, not $MANIFEST_FORMAT"
  [[ -n "$RESULTS_PREFIX" ]] || usage_error "--results-prefix must not be empty"
  check_key_prefix --results-prefix "$RESULTS_PREFIX"
  in_range "$MAP_CONCURRENCY" 1 10000 || usage_error "--map-concurrency must be 1-10000, not $MAP_CONCURRENCY"
  in_range "$MAP_BATCH_SIZE" 1 10000 || usage_error "--map-batch-size must be 1-10000, not $MAP_BATCH_SIZE"
  in_range "$TOLERATED_FAILURE" 0 100 \
    || usage_error "--tolerated-failure-percentage must be 0-100, not $TOLERATED_FAILURE"
  MAP_CONCURRENCY="$((10#$MAP_CONCURRENCY))" MAP_BATCH_SIZE="$((10#$MAP_BATCH_SIZE))"
  TOLERATED_FAILURE="$((10#$TOLERATED_FAILURE))"
}

validate_args() {
  if [[ "$BUILD_ONLY" == "1" ]]; then
    [[ -n "$ZIP_OUT" ]] || usage_error "--build-only needs --zip-out PATH"
    return
  fi
  [[ -n "$BUCKET" ]] || usage_error "no bucket given: pass --bucket BUCKET"
  valid_bucket "$BUCKET" || usage_error "invalid bucket name: $BUCKET"
  [[ "$PREFIX" != *[*?]* ]] || usage_error "--prefix must not contain * or ? (it scopes the IAM policy)"
  [[ "$FUNCTION_NAME" =~ ^[A-Za-z0-9_-]{1,64}$ ]] || usage_error "invalid function name: $FUNCTION_NAME"
  in_range "$MEMORY" 128 10240 || usage_error "--memory must be 128-10240 MB, not $MEMORY"
  in_range "$TIMEOUT" 1 900 || usage_error "--timeout must be 1-900 seconds, not $TIMEOUT"
  in_range "$WORKERS" 1 256 || usage_error "--workers must be 1-256, not $WORKERS"
  TIMEOUT="$((10#$TIMEOUT))"
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
  validate_combinations
  validate_reports_and_hops
  validate_queue
  validate_state_machine
  in_range "$RETRY_ATTEMPTS" 1 100 || usage_error "DEPLOY_ROLE_RETRIES must be 1-100"
  in_range "$RETRY_SLEEP" 0 60 || usage_error "DEPLOY_ROLE_RETRY_SLEEP must be 0-60 seconds"
}

check_tools() {
  command -v python3 >/dev/null 2>&1 || die "python3 not found on PATH (needed to build the zip)"
  [[ "$BUILD_ONLY" == "1" ]] && return
  command -v aws >/dev/null 2>&1 \
    || die "aws CLI not found on PATH (install AWS CLI v2, or 'pip install awscli')"
  [[ -z "$STATE_MACHINE" || -f "$ASL_FILE" ]] \
    || die "--state-machine needs $ASL_FILE, which is missing"
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
  # The function's inline policy: logs for its own log group; PutObject/AbortMultipartUpload on
  # BUCKET/PREFIX* only; plus one statement per scale-out option that needs one.
  python3 - "$PARTITION" "$REGION" "$ACCOUNT" "$FUNCTION_NAME" "$BUCKET" "$PREFIX" \
    "$(given --report-prefix && printf '%s' "${REPORT_BUCKET:-$BUCKET}")" "$REPORT_PREFIX" \
    "$SELF_CONTINUE" "$MANIFEST_BUCKET" "$MANIFEST_PREFIX" "$QUEUE_ARN" >"$TMP/policy.json" <<'PY'
import json, sys
(partition, region, account, name, bucket, prefix, report_bucket, report_prefix, self_continue,
 manifest_bucket, manifest_prefix, queue_arn) = sys.argv[1:]
group = f"arn:{partition}:logs:{region}:{account}:log-group:/aws/lambda/{name}"
function = f"arn:{partition}:lambda:{region}:{account}:function:{name}"
statements = [
    {"Sid": "OwnLogGroup", "Effect": "Allow",
     "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
     "Resource": [group, group + ":*"]},
    {"Sid": "WriteUnderPrefix", "Effect": "Allow",
     "Action": ["s3:PutObject", "s3:AbortMultipartUpload"],
     "Resource": f"arn:{partition}:s3:::{bucket}/{prefix}*"},
]
# Reports under BUCKET/PREFIX... are already allowed by WriteUnderPrefix.
if report_bucket and not (report_bucket == bucket and report_prefix.startswith(prefix)):
    statements.append({"Sid": "WriteReports", "Effect": "Allow", "Action": ["s3:PutObject"],
                       "Resource": f"arn:{partition}:s3:::{report_bucket}/{report_prefix}*"})
if self_continue == "1":
    statements.append({"Sid": "InvokeItself", "Effect": "Allow", "Action": ["lambda:InvokeFunction"],
                       "Resource": [function, function + ":*"]})
if manifest_bucket:
    statements.append({"Sid": "ReadManifests", "Effect": "Allow", "Action": ["s3:GetObject"],
                       "Resource": f"arn:{partition}:s3:::{manifest_bucket}/{manifest_prefix}*"})
if queue_arn:
    statements.append({"Sid": "ConsumeQueue", "Effect": "Allow",
                       "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"],
                       "Resource": queue_arn})
print(json.dumps({"Version": "2012-10-17", "Statement": statements}, indent=2))
PY
}

write_sfn_policy() {
  # write_sfn_policy STATE_MACHINE_ARN: the state machine role's inline policy: invoke the
  # function, read the manifests, write the Distributed Map's results, run its child executions.
  python3 - "$PARTITION" "$REGION" "$ACCOUNT" "$FUNCTION_ARN" "$1" "$STATE_MACHINE" "$BUCKET" \
    "$RESULTS_PREFIX" "$MANIFEST_BUCKET" "$MANIFEST_PREFIX" >"$TMP/sfn-policy.json" <<'PY'
import json, sys
(partition, region, account, function, machine, name, bucket, results_prefix, manifest_bucket,
 manifest_prefix) = sys.argv[1:]
print(json.dumps({"Version": "2012-10-17", "Statement": [
    {"Sid": "InvokeFunction", "Effect": "Allow", "Action": ["lambda:InvokeFunction"],
     "Resource": [function, function + ":*"]},
    {"Sid": "ReadManifests", "Effect": "Allow", "Action": ["s3:GetObject"],
     "Resource": f"arn:{partition}:s3:::{manifest_bucket}/{manifest_prefix}*"},
    {"Sid": "WriteResults", "Effect": "Allow",
     "Action": ["s3:PutObject", "s3:GetObject", "s3:ListMultipartUploadParts",
                "s3:AbortMultipartUpload"],
     "Resource": f"arn:{partition}:s3:::{bucket}/{results_prefix}*"},
    {"Sid": "StartChildRuns", "Effect": "Allow", "Action": ["states:StartExecution"],
     "Resource": machine},
    {"Sid": "WatchChildRuns", "Effect": "Allow",
     "Action": ["states:DescribeExecution", "states:StopExecution"],
     "Resource": f"arn:{partition}:states:{region}:{account}:execution:{name}/*"},
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
  # ensure_role_exists NAME SERVICE DESCRIPTION: reuse or create role NAME that only SERVICE may
  # assume; sets NEW_ROLE_ARN, and NEW_ROLE_CREATED=1 when it was created now.
  local name="$1" trust
  NEW_ROLE_CREATED="0"
  if NEW_ROLE_ARN="$(aws_try iam get-role --role-name "$name" --query Role.Arn --output text)"; then
    say "reusing role $NEW_ROLE_ARN"
    return
  fi
  grep -q NoSuchEntity "$TMP/err" || die "could not read role $name: $(last_error)"
  trust='{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"sts:AssumeRole",'
  trust+="\"Principal\":{\"Service\":\"$2\"}}]}"
  NEW_ROLE_ARN="$(aws_try iam create-role --role-name "$name" --assume-role-policy-document "$trust" \
    --description "$3" --query Role.Arn --output text)" \
    || die "could not create role $name: $(last_error)"
  NEW_ROLE_CREATED="1"
  say "created role $NEW_ROLE_ARN"
}

ensure_role_policy() {
  # ensure_role_policy ROLE POLICY_NAME FILE CREATED: attach FILE as the inline policy unless the
  # role already has exactly that (a role created just now has none).
  local role="$1" policy="$2" file="$3"
  say "inline policy $policy on role $role:"
  cat "$file"
  if [[ "$4" == "0" ]] \
     && aws_try iam get-role-policy --role-name "$role" --policy-name "$policy" \
       --query PolicyDocument --output json >"$TMP/current-policy.json" \
     && same_json "$file" "$TMP/current-policy.json"; then
    say "policy unchanged"
    return
  fi
  aws_try iam put-role-policy --role-name "$role" --policy-name "$policy" \
    --policy-document "file://$file" || die "could not attach the policy $policy: $(last_error)"
  say "policy attached"
}

ensure_role() {
  write_policy
  if [[ -n "$ROLE_ARN" ]]; then
    say "using the given role $ROLE_ARN (no policy attached by this script); it needs at least:"
    cat "$TMP/policy.json"
    HAD_QUEUE="1"  # unknown: the mappings are looked at on every run
    return
  fi
  ensure_role_exists "url2s3-$FUNCTION_NAME" lambda.amazonaws.com "url2s3 Lambda $FUNCTION_NAME"
  ROLE_ARN="$NEW_ROLE_ARN"
  ROLE_CREATED="$NEW_ROLE_CREATED"
  rm -f "$TMP/current-policy.json"
  ensure_role_policy "url2s3-$FUNCTION_NAME" "$POLICY_NAME" "$TMP/policy.json" "$ROLE_CREATED"
  # The policy read back is the previous run's: did that run consume a queue?
  if [[ -f "$TMP/current-policy.json" ]] && grep -q '"ConsumeQueue"' "$TMP/current-policy.json"; then
    HAD_QUEUE="1"
  fi
}

retry_while_propagating() {
  # retry_while_propagating PATTERN WAITING OUT COMMAND...: run the aws COMMAND with its output in
  # OUT; while it fails with an error that matches PATTERN (a new role or policy has not reached
  # the other service yet), say WAITING and try again, RETRY_ATTEMPTS times in all.
  local pattern="$1" waiting="$2" out="$3" attempt=1
  shift 3
  until aws_try "$@" >"$out"; do
    if ! grep -q "$pattern" "$TMP/err" || (( attempt >= RETRY_ATTEMPTS )); then
      die "$2 failed: $(last_error)"
    fi
    say "$waiting; retry $attempt/$((RETRY_ATTEMPTS - 1)) in ${RETRY_SLEEP}s"
    sleep "$RETRY_SLEEP"
    attempt=$((attempt + 1))
  done
}

write_environment() {
  local scaling=()
  if given --report-prefix; then
    scaling+=("REPORT_PREFIX=$REPORT_PREFIX")
  fi
  if given --report-bucket; then
    scaling+=("REPORT_BUCKET=$REPORT_BUCKET")
  fi
  if [[ "$SELF_CONTINUE" == "1" ]]; then
    scaling+=("SELF_CONTINUE=true" "MAX_HOPS=$MAX_HOPS")
  fi
  python3 - "$BUCKET" "$PREFIX" "$WORKERS" ${scaling[@]+"${scaling[@]}"} \
    ${EXTRA_ENV[@]+"${EXTRA_ENV[@]}"} >"$TMP/environment.json" <<'PY'
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
  retry_while_propagating "cannot be assumed by Lambda" \
    "role not assumable by Lambda yet (new IAM roles take a few seconds)" "$TMP/config.json" \
    lambda create-function --function-name "$FUNCTION_NAME" --runtime "$RUNTIME" \
      --handler handler.handler --role "$ROLE_ARN" --zip-file "fileb://$ZIP" \
      --architectures "$ARCH" --memory-size "$MEMORY" --timeout "$TIMEOUT" \
      --environment "file://$TMP/environment.json" --output json
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

# --- SQS -------------------------------------------------------------------------------------------

check_queue_region() {
  # Right after the region is known, before any AWS call.
  local region
  region="$(cut -d: -f4 <<<"$QUEUE_ARN")"
  [[ "$region" == "$REGION" ]] \
    || usage_error "--sqs-queue-arn is in $region, the function in $REGION:" \
         "Lambda consumes queues of its own region only"
}

check_queue() {
  # Before anything is created: the queue exists, and its VisibilityTimeout is not shorter than
  # the function timeout (Lambda refuses the mapping then); below AWS's recommended 6 x the
  # timeout is only a warning.
  local owner name url visibility
  IFS=: read -r _ _ _ _ owner name <<<"$QUEUE_ARN"
  if ! url="$(aws_try sqs get-queue-url --queue-name "$name" --queue-owner-aws-account-id "$owner" \
                --query QueueUrl --output text)"; then
    if grep -qE 'NonExistentQueue|QueueDoesNotExist' "$TMP/err"; then
      die "queue $QUEUE_ARN does not exist"
    fi
    warn "could not look up queue $QUEUE_ARN ($(last_error)); its VisibilityTimeout is not checked"
    return
  fi
  if ! visibility="$(aws_try sqs get-queue-attributes --queue-url "$url" \
         --attribute-names VisibilityTimeout --query Attributes.VisibilityTimeout --output text)" \
     || ! [[ "$visibility" =~ ^[0-9]+$ ]]; then
    warn "could not read the VisibilityTimeout of $QUEUE_ARN ($(last_error)); not checked"
    return
  fi
  if (( visibility < TIMEOUT )); then
    die "queue $name has VisibilityTimeout $visibility s, shorter than the function timeout" \
        "($TIMEOUT s), which Lambda refuses; raise it (AWS recommends at least" \
        "6 x $TIMEOUT = $((6 * TIMEOUT)) s)"
  elif (( visibility < 6 * TIMEOUT )); then
    warn "queue $name has VisibilityTimeout $visibility s, less than the 6 x the function timeout" \
         "(6 x $TIMEOUT = $((6 * TIMEOUT)) s) that AWS recommends: a batch retried after" \
         "throttling may become visible again while it is still being worked on"
  else
    say "queue $name: VisibilityTimeout $visibility s (at least 6 x the function timeout)"
  fi
}

managed_mapping() {
  # managed_mapping MAPPING_ARN: deploy.sh created this event source mapping (it tags its own).
  local tag
  tag="$(aws_try lambda list-tags --resource "$1" --query "Tags.\"$MANAGED_TAG_KEY\"" --output text)" \
    || die "could not read the tags of $1: $(last_error)"
  [[ "$tag" == "$MANAGED_TAG_VALUE" ]]
}

create_queue_mapping() {
  local args=()
  if [[ "$QUEUE_ARN" != *.fifo ]]; then  # FIFO queues take no batching window
    args=(--maximum-batching-window-in-seconds "$SQS_WINDOW")
  fi
  retry_while_propagating "does not have permissions to call" \
    "the role's SQS permissions have not reached Lambda yet (IAM changes take a few seconds)" \
    "$TMP/mapping-uuid" \
    lambda create-event-source-mapping --function-name "$FUNCTION_NAME" \
      --event-source-arn "$QUEUE_ARN" --batch-size "$SQS_BATCH_SIZE" ${args[@]+"${args[@]}"} \
      --function-response-types ReportBatchItemFailures \
      --tags "{\"$MANAGED_TAG_KEY\": \"$MANAGED_TAG_VALUE\"}" --query UUID --output text
  say "created event source mapping $(<"$TMP/mapping-uuid") from $QUEUE_ARN" \
      "(batch size $SQS_BATCH_SIZE, window $SQS_WINDOW s, ReportBatchItemFailures)"
}

update_queue_mapping() {
  # update_queue_mapping UUID BATCH WINDOW TYPES: bring the existing mapping up to date. One made
  # by hand is updated too, but stays untagged: a run without --sqs-queue-arn leaves it alone.
  local uuid="$1" differences="" args=()
  shift
  [[ "$1" == "$SQS_BATCH_SIZE" ]] || differences+="    BatchSize: $1 -> $SQS_BATCH_SIZE"$'\n'
  [[ "$2" == "$SQS_WINDOW" ]] || differences+="    MaximumBatchingWindowInSeconds: $2 -> $SQS_WINDOW"$'\n'
  [[ "$3" == "ReportBatchItemFailures" ]] \
    || differences+="    FunctionResponseTypes: $3 -> ReportBatchItemFailures"$'\n'
  if [[ -z "$differences" ]]; then
    say "event source mapping $uuid unchanged (batch size $SQS_BATCH_SIZE, window $SQS_WINDOW s," \
        "ReportBatchItemFailures)"
  else
    printf '%s' "$differences"
    if [[ "$QUEUE_ARN" != *.fifo ]]; then
      args=(--maximum-batching-window-in-seconds "$SQS_WINDOW")
    fi
    aws_try lambda update-event-source-mapping --uuid "$uuid" --batch-size "$SQS_BATCH_SIZE" \
      ${args[@]+"${args[@]}"} --function-response-types ReportBatchItemFailures --output json \
      >/dev/null || die "could not update event source mapping $uuid: $(last_error)"
    say "event source mapping $uuid updated"
  fi
}

sync_queue_mappings() {
  # The function's SQS event source mappings: the one for --sqs-queue-arn is created or brought
  # up to date; any other one this script created is deleted (its ConsumeQueue statement is gone
  # from the policy). Mappings made by hand for other queues are left alone.
  local uuid arn source batch window types found="0"
  aws_try lambda list-event-source-mappings --function-name "$FUNCTION_NAME" --output json \
    >"$TMP/mappings.json" \
    || die "could not list the event source mappings of $FUNCTION_NAME: $(last_error)"
  python3 - "$TMP/mappings.json" "$PARTITION" "$REGION" "$ACCOUNT" >"$TMP/mappings.tsv" <<'PY'
import json, sys
path, partition, region, account = sys.argv[1:]
for m in json.load(open(path)).get("EventSourceMappings", []):
    source = m.get("EventSourceArn", "")
    if source.split(":")[2:3] != ["sqs"] or m.get("State") == "Deleting":
        continue
    arn = (m.get("EventSourceMappingArn")
           or f"arn:{partition}:lambda:{region}:{account}:event-source-mapping:{m['UUID']}")
    print(m["UUID"], arn, source, m.get("BatchSize", 0), m.get("MaximumBatchingWindowInSeconds") or 0,
          ",".join(m.get("FunctionResponseTypes") or []) or "-", sep="\t")
PY
  while IFS=$'\t' read -r -u 3 uuid arn source batch window types; do
    if [[ "$source" == "$QUEUE_ARN" ]]; then
      found="1"
      update_queue_mapping "$uuid" "$batch" "$window" "$types"
    elif managed_mapping "$arn"; then
      aws_try lambda delete-event-source-mapping --uuid "$uuid" --output json >/dev/null \
        || die "could not delete event source mapping $uuid: $(last_error)"
      say "deleted event source mapping $uuid from $source (created by an earlier run;" \
          "not asked for now)"
    else
      say "left event source mapping $uuid from $source alone (not created by deploy.sh)"
    fi
  done 3<"$TMP/mappings.tsv"
  if [[ -n "$QUEUE_ARN" && "$found" == "0" ]]; then
    create_queue_mapping
  fi
}

# --- Step Functions --------------------------------------------------------------------------------

build_definition() {
  # The state machine definition: statemachine/url2s3.asl.json with its placeholders filled in
  # (as JSON values, so any prefix is quoted correctly) and the Map's options set.
  if ! python3 - "$ASL_FILE" "$FUNCTION_ARN" "$RESULTS_PREFIX" "$MANIFEST_FORMAT" "$MAP_CONCURRENCY" \
         "$MAP_BATCH_SIZE" "$TOLERATED_FAILURE" >"$TMP/definition.json" 2>"$TMP/err" <<'PY'
import json, sys
path, function_arn, results_prefix, fmt, concurrency, batch, tolerated = sys.argv[1:]
values = {"${FunctionArn}": function_arn, "${ResultsPrefix}": results_prefix}

def fill(node):
    if isinstance(node, dict):
        return {key: fill(value) for key, value in node.items()}
    if isinstance(node, list):
        return [fill(value) for value in node]
    if isinstance(node, str):
        for placeholder, value in values.items():
            node = node.replace(placeholder, value)
    return node

def strings(node):
    if isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)
    elif isinstance(node, str):
        yield node

def map_states(node):
    for state in (node.get("States") or {}).values():
        if state.get("Type") == "Map":
            yield state
        yield from map_states(state.get("ItemProcessor") or state.get("Iterator") or {})

definition = fill(json.load(open(path)))
left = sorted({s[s.index("${"):][:40] for s in strings(definition) if "${" in s})
if left:
    sys.exit(f"unknown placeholder(s) left: {left}")
readers = [s for s in map_states(definition) if "ItemReader" in s]
if len(readers) != 1:
    sys.exit(f"expected one Map state with an ItemReader, found {len(readers)}")
[state] = readers
config = state["ItemReader"].get("ReaderConfig", {})
if fmt == "jsonl":
    config = {k: v for k, v in config.items() if not k.startswith("CSV")}
    config["InputType"] = "JSONL"
    definition["Comment"] = (definition.get("Comment", "") + " Deployed with --manifest-format "
                             'jsonl: the manifest has one {"url", "key"} object per line.').strip()
else:
    config["InputType"] = "CSV"
    config.setdefault("CSVHeaderLocation", "FIRST_ROW")
state["ItemReader"]["ReaderConfig"] = config
state["MaxConcurrency"] = int(concurrency)
state.setdefault("ItemBatcher", {})["MaxItemsPerBatch"] = int(batch)
state["ToleratedFailurePercentage"] = int(tolerated)
print(json.dumps(definition, indent=2))
PY
  then
    die "could not build the state machine definition from $ASL_FILE: $(last_error)"
  fi
}

read_state_machine() {
  # Before anything is created: the deployed state machine, if any, in $TMP/state-machine.json
  # (MACHINE_EXISTS=1); one of another type than STANDARD stops the run.
  local type
  MACHINE_ARN="arn:$PARTITION:states:$REGION:$ACCOUNT:stateMachine:$STATE_MACHINE"
  if aws_try stepfunctions describe-state-machine --state-machine-arn "$MACHINE_ARN" --output json \
       >"$TMP/state-machine.json"; then
    MACHINE_EXISTS="1"
    type="$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1])).get("type", "STANDARD"))' \
              "$TMP/state-machine.json")"
    [[ "$type" == "STANDARD" ]] \
      || die "state machine $STATE_MACHINE is $type; a Distributed Map over S3 needs STANDARD:" \
             "delete it or choose another --state-machine name"
  elif ! grep -q StateMachineDoesNotExist "$TMP/err"; then
    die "could not read state machine $MACHINE_ARN: $(last_error)"
  fi
}

state_machine_differences() {
  # state_machine_differences ROLE_ARN: one line per difference between the deployed state
  # machine ($TMP/state-machine.json) and the wanted one.
  python3 - "$TMP/state-machine.json" "$TMP/definition.json" "$1" 2>"$TMP/err" <<'PY'
import json, sys
have_path, want_path, role = sys.argv[1:]
have = json.load(open(have_path))

def flat(node, path=""):
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from flat(value, f"{path}.{key}" if path else key)
    elif isinstance(node, list) and node:
        for index, value in enumerate(node):
            yield from flat(value, f"{path}[{index}]")
    else:
        yield path, node

try:
    deployed = dict(flat(json.loads(have.get("definition") or "{}")))
except ValueError:
    deployed = {}
wanted = dict(flat(json.load(open(want_path))))
changed = sorted(p for p in deployed.keys() | wanted.keys() if deployed.get(p, None) != wanted.get(p, None))
for path in changed[:10]:
    print(f"    definition {path}: {deployed.get(path)!r} -> {wanted.get(path)!r}")
if len(changed) > 10:
    print(f"    ... and {len(changed) - 10} more differences in the definition")
if have.get("roleArn") != role:
    print(f"    roleArn: {have.get('roleArn')!r} -> {role!r}")
PY
}

print_start_example() {
  # print_start_example STATE_MACHINE_ARN: how to start a run, with the input the ItemReader reads.
  python3 - "$1" "$REGION" "$MANIFEST_BUCKET" "$MANIFEST_PREFIX" "$MANIFEST_FORMAT" "$BUCKET" \
    "$PREFIX" <<'PY'
import json, shlex, sys
arn, region, manifest_bucket, manifest_prefix, fmt, bucket, prefix = sys.argv[1:]
execution = {"manifest": {"bucket": manifest_bucket, "key": f"{manifest_prefix}urls.{fmt}"},
             "bucket": bucket, "prefix": prefix}
shape = "first row: url,key" if fmt == "csv" else 'one {"url": ..., "key": ...} object per line'
print(f"==> start a run with a {fmt} manifest ({shape}):")
print(f"    aws stepfunctions start-execution --region {region} --state-machine-arn {arn} \\")
print(f"      --input {shlex.quote(json.dumps(execution))}")
PY
}

ensure_state_machine() {
  local role="url2s3-sfn-$STATE_MACHINE" differences sfn_role
  ensure_role_exists "$role" states.amazonaws.com "url2s3 state machine $STATE_MACHINE"
  sfn_role="$NEW_ROLE_ARN"
  write_sfn_policy "$MACHINE_ARN"
  ensure_role_policy "$role" "$SFN_POLICY_NAME" "$TMP/sfn-policy.json" "$NEW_ROLE_CREATED"
  if [[ "$MACHINE_EXISTS" == "1" ]]; then
    differences="$(state_machine_differences "$sfn_role")" \
      || die "could not compare the state machine: $(last_error)"
    if [[ -z "$differences" ]]; then
      say "state machine unchanged: $MACHINE_ARN"
    else
      printf '%s\n' "$differences"
      retry_while_propagating "authorized to assume the provided role" \
        "role not assumable by Step Functions yet (new IAM roles take a few seconds)" /dev/null \
        stepfunctions update-state-machine --state-machine-arn "$MACHINE_ARN" \
          --definition "file://$TMP/definition.json" --role-arn "$sfn_role" --output json
      say "state machine updated: $MACHINE_ARN"
    fi
  else
    retry_while_propagating "authorized to assume the provided role" \
      "role not assumable by Step Functions yet (new IAM roles take a few seconds)" /dev/null \
      stepfunctions create-state-machine --name "$STATE_MACHINE" --type STANDARD \
        --definition "file://$TMP/definition.json" --role-arn "$sfn_role" --output json
    say "created state machine $MACHINE_ARN"
  fi
  print_start_example "$MACHINE_ARN"
}

# --- main ------------------------------------------------------------------------------------------

preflight() {
  # Checks and builds that need the account and region but create nothing.
  FUNCTION_ARN="arn:$PARTITION:lambda:$REGION:$ACCOUNT:function:$FUNCTION_NAME"
  if [[ -n "$QUEUE_ARN" ]]; then
    check_queue
  fi
  if [[ -n "$STATE_MACHINE" ]]; then
    build_definition
    read_state_machine
  fi
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
  if [[ -n "$QUEUE_ARN" ]]; then
    check_queue_region
  fi
  check_identity
  preflight
  ensure_role
  deploy_function
  report
  # The mappings are listed only when one is wanted, or the previous policy shows one was.
  if [[ -n "$QUEUE_ARN" || "$HAD_QUEUE" == "1" ]]; then
    sync_queue_mappings
  fi
  if [[ -n "$STATE_MACHINE" ]]; then
    ensure_state_machine
  fi
}

main "$@"
