#!/bin/bash
# Hydra's ssh launcher (HYDRA_LAUNCHER=ssh HYDRA_LAUNCHER_EXEC=this) calls
# `fake_ssh.sh [ssh options] HOST COMMAND...`; like ssh, it runs COMMAND through a shell,
# here on the fake node HOST (nodes.sh exec), with NODES_PFX and NODES_STATE inherited.
while [[ ${1:-} == -* ]]; do shift; done
host=$1; shift
exec "$(dirname "$0")/nodes.sh" exec "$host" /bin/sh -c "$*"
