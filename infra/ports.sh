# Sourced by infra/kafka.sh and infra/postgres.sh.

# warn_if_ephemeral PORT WHAT: say so when PORT lies in the kernel's ephemeral range. While the
# server is down (a restart, a fault test), any outgoing connection on this machine may be given
# that port as its local end, and the server then cannot listen on it again ("Address already
# in use") for as long as that connection lives. Ports below the range are never handed out.
warn_if_ephemeral() {
  local low high
  read -r low high </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || return 0
  if (($1 >= low && $1 <= high)); then
    echo "$2: port $1 is in the ephemeral range $low-$high; a restart may find it taken" \
      "by an outgoing connection (choose a port below $low)" >&2
  fi
}
