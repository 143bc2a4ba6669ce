#!/usr/bin/env bash
# scm-train on a Cloud TPU VM slice (docs/runbook.md). Every step runs on all workers (--worker=all).
#
#   launch/tpu/run.sh create        # gcloud: create the slice (spot with SPOT=1)
#   launch/tpu/run.sh setup         # copy this checkout (or git clone REPO_URL), pip install -e '.[tpu,gcs]',
#                                   # mount the bucket
#   launch/tpu/run.sh train         # start scm-train on every worker, detached; logs in ~/scm-train.log
#   launch/tpu/run.sh logs          # follow worker 0's log (the progress line)
#   launch/tpu/run.sh stop          # SIGTERM: every worker saves the current step and exits
#   launch/tpu/run.sh delete        # delete the slice (the run lives on in the bucket)
#
# Environment:
#   TPU_NAME (scm-tpu), ZONE (us-east5-a), ACCELERATOR (v5p-64), RUNTIME (v2-alpha-tpuv5), PROJECT (gcloud's),
#   SPOT (0; 1 = spot capacity, preemptible),
#   REPO_URL / BRANCH   git clone this instead of copying the local checkout (HEAD, committed files only),
#   BUCKET     GCS bucket mounted with gcsfuse at /mnt/$BUCKET on every worker: WORKDIR and the data must be on
#              storage that every worker sees (Orbax writes each worker's shards, worker 0 commits),
#   CONFIG (configs/imagenet512.py:scd), WORKDIR (/mnt/$BUCKET/runs/scm), ARGS (extra scm-train flags).
# jax.distributed.initialize() finds the slice's workers itself (scm_jax.parallel.distributed): no flags needed.
# After a preemption (spot) or `stop`: recreate / restart and run `train` again; it resumes from the checkpoint.
set -euo pipefail

TPU_NAME="${TPU_NAME:-scm-tpu}"
ZONE="${ZONE:-us-east5-a}"
ACCELERATOR="${ACCELERATOR:-v5p-64}"
RUNTIME="${RUNTIME:-v2-alpha-tpuv5}"
PROJECT="${PROJECT:-$(gcloud config get-value project 2>/dev/null || true)}"
SPOT="${SPOT:-0}"
REPO_URL="${REPO_URL:-}"
BRANCH="${BRANCH:-main}"
BUCKET="${BUCKET:-}"
CONFIG="${CONFIG:-configs/imagenet512.py:scd}"
WORKDIR="${WORKDIR:-/mnt/${BUCKET:-BUCKET}/runs/scm}"
ARGS="${ARGS:-}"
REMOTE_DIR="scm_jax"

tpu() {  # gcloud compute tpus tpu-vm SUBCOMMAND TPU_NAME ... in this project and zone
  local subcommand="$1"; shift
  gcloud compute tpus tpu-vm "${subcommand}" "${TPU_NAME}" --zone="${ZONE}" --project="${PROJECT}" "$@"
}

on_all_workers() {
  tpu ssh --worker=all --command="$1"
}

create() {
  local spot=()
  if [ "${SPOT}" = "1" ]; then spot=(--spot); fi
  tpu create --accelerator-type="${ACCELERATOR}" --version="${RUNTIME}" ${spot[@]+"${spot[@]}"}
}

copy_code() {
  if [ -n "${REPO_URL}" ]; then
    on_all_workers "rm -rf ${REMOTE_DIR} && git clone --branch ${BRANCH} --depth 1 ${REPO_URL} ${REMOTE_DIR}"
  else
    local archive
    archive="$(mktemp -d)/scm_jax.tar.gz"
    git archive --format=tar.gz --output="${archive}" HEAD
    tpu scp "${archive}" "${TPU_NAME}:~/scm_jax.tar.gz" --worker=all
    on_all_workers "rm -rf ${REMOTE_DIR} && mkdir ${REMOTE_DIR} && tar -xzf scm_jax.tar.gz -C ${REMOTE_DIR}"
  fi
}

mount_bucket() {
  if [ -z "${BUCKET}" ]; then
    echo "BUCKET is not set: make sure WORKDIR=${WORKDIR} is on storage every worker sees." >&2
    return
  fi
  on_all_workers "set -e
    if ! command -v gcsfuse >/dev/null; then
      echo 'deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt gcsfuse-\$(lsb_release -c -s) main' | sudo tee /etc/apt/sources.list.d/gcsfuse.list
      curl -s https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo tee /usr/share/keyrings/cloud.google.asc >/dev/null
      sudo apt-get update -q && sudo apt-get install -y -q gcsfuse
    fi
    sudo mkdir -p /mnt/${BUCKET} && sudo chown \$USER /mnt/${BUCKET}
    mountpoint -q /mnt/${BUCKET} || gcsfuse --implicit-dirs ${BUCKET} /mnt/${BUCKET}"
}

setup() {
  copy_code
  on_all_workers "set -e; cd ${REMOTE_DIR} && python3 -m venv ~/venv && source ~/venv/bin/activate &&
    pip install -q -U pip && pip install -q -e '.[tpu,gcs]'"
  mount_bucket
}

train() {
  # ARGS is expanded on the workers on purpose: it holds several flags.
  on_all_workers "cd ${REMOTE_DIR} && source ~/venv/bin/activate &&
    nohup python -m scm_jax.cli.train --config='${CONFIG}' --workdir='${WORKDIR}' ${ARGS} \
      >> ~/scm-train.log 2>&1 < /dev/null &"
  echo "started on every worker of ${TPU_NAME}; follow with: $0 logs (TensorBoard: ${WORKDIR}/tb)"
}

logs() {
  tpu ssh --worker=0 --command="tail -n 50 -F ~/scm-train.log"
}

stop() {
  on_all_workers "pkill -TERM -f scm_jax.cli.train || true"
}

delete() {
  tpu delete --quiet
}

main() {
  local command="${1:-}"
  case "${command}" in
    create|setup|train|logs|stop|delete) "${command}" ;;
    *) echo "usage: $0 create|setup|train|logs|stop|delete (settings in the environment, see the header)" >&2
       exit 2 ;;
  esac
}

main "$@"
