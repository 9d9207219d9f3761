#!/bin/bash
# Two (or N) fake nodes on one Linux machine, for tests/test_two_nodes.py: network
# namespaces on a private bridge, each node's processes also in their own UTS (hostname),
# mount (own /dev/shm and /etc/hosts), IPC and PID namespaces, so MPICH sees separate hosts
# that share no memory and talk over TCP. Nothing is added to the root namespace: the
# bridge lives in a switch namespace, the addresses (10.77.0.x) exist only in namespaces
# made here. Every name starts with $NODES_PFX (unique per run), so runs cannot collide.
#
#   nodes.sh up [N]           N nodes n0..: netns ${PFX}n0.. at 10.77.0.1..; a head
#                             ${PFX}h (10.77.0.100) for mpiexec; a switch ${PFX}sw.
#                             Writes $NODES_STATE/hosts and $NODES_STATE/hostfile.
#   nodes.sh down             delete this run's namespaces (killing what runs in them)
#   nodes.sh exec NODE CMD..  run CMD on NODE (n0.., head)
#   nodes.sh link NODE up|down      the node's switch port
#   nodes.sh loss NODE PCT|off      random loss of PCT% on the node's link, both ways (nft)
#   nodes.sh kill NODE              SIGKILL every process on NODE
#   nodes.sh pids NODE              the processes running on NODE
# Needs root, iproute2, util-linux unshare; nftables for loss (the kernel may lack netem).
set -u
PFX=${NODES_PFX:?set NODES_PFX to a unique prefix (at most 6 characters)}
STATE=${NODES_STATE:?set NODES_STATE to a directory for hosts and hostfile}
SUBNET=10.77.0
SW=${PFX}sw

ns_of() { case $1 in head) echo "${PFX}h" ;; n[0-9]*) echo "$PFX$1" ;; *) echo "unknown node $1" >&2; return 2 ;; esac; }
port_of() { case $1 in head) echo ph ;; *) echo "p${1#n}" ;; esac; }

down() {
  local ns pids
  for ns in $(ip netns list | awk '{print $1}' | grep -E "^${PFX}(n[0-9]+|h|sw)$"); do
    pids=$(ip netns pids "$ns" 2>/dev/null)
    [ -n "$pids" ] && kill -9 $pids 2>/dev/null
    ip netns del "$ns" 2>/dev/null || echo "could not delete $ns" >&2
  done
  return 0
}

addnode() {  # addnode NODE IP
  local ns port; ns=$(ns_of "$1"); port=$(port_of "$1")
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip -n "$ns" link add eth0 type veth peer name "$port" netns "$SW"
  ip -n "$SW" link set "$port" master br0 up
  ip -n "$ns" addr add "$2/24" dev eth0
  ip -n "$ns" link set eth0 up
}

up() {
  local n=${1:-2} i
  trap 'echo "nodes.sh up failed; tearing down" >&2; down; exit 1' ERR
  set -eE
  mkdir -p "$STATE"
  ip netns add "$SW"
  ip -n "$SW" link set lo up
  ip -n "$SW" link add br0 type bridge
  ip -n "$SW" link set br0 up
  addnode head "$SUBNET.100"
  { echo "127.0.0.1 localhost"; echo "$SUBNET.100 head"; } > "$STATE/hosts"
  : > "$STATE/hostfile"
  for ((i = 0; i < n; i++)); do
    addnode "n$i" "$SUBNET.$((i + 1))"
    echo "$SUBNET.$((i + 1)) n$i" >> "$STATE/hosts"
    echo "n$i:1" >> "$STATE/hostfile"
  done
  for ((i = 0; i < n; i++)); do  # each node reaches the head ("refused": nothing listens)
    ip netns exec "$(ns_of "n$i")" timeout 3 bash -c "exec 3<>/dev/tcp/$SUBNET.100/9" 2>&1 | grep -q refused
  done
  set +eE; trap - ERR
}

node_exec() {
  local node=$1; shift
  local ns; ns=$(ns_of "$node") || return 2
  exec ip netns exec "$ns" unshare --uts --mount --ipc --pid --fork --mount-proc \
    /bin/bash -c 'hostname "$0"; mount --make-rprivate /; mount -t tmpfs -o size=1g tmpfs /dev/shm;
                  mount --bind "$1" /etc/hosts; shift; exec "$@"' "$node" "$STATE/hosts" "$@"
}

case ${1:-} in
  up) up "${2:-2}" ;;
  down) down ;;
  exec) shift; node_exec "$@" ;;
  link) ip -n "$SW" link set "$(port_of "$2")" "$3" ;;
  kill) pids=$(ip netns pids "$(ns_of "$2")"); [ -z "$pids" ] || kill -9 $pids ;;
  pids) ip netns pids "$(ns_of "$2")" ;;
  loss)
    ns=$(ns_of "$2") || exit 2
    ip netns exec "$ns" nft delete table inet adamloss 2>/dev/null
    if [ "$3" != off ]; then
      ip netns exec "$ns" nft -f - <<NFT
table inet adamloss {
  chain in  { type filter hook input  priority 0; iifname "eth0" numgen random mod 1000 < $(( $3 * 10 )) drop; }
  chain out { type filter hook output priority 0; oifname "eth0" numgen random mod 1000 < $(( $3 * 10 )) drop; }
}
NFT
    fi ;;
  *) sed -n '2,20p' "$0"; exit 2 ;;
esac
