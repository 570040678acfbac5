# Shared by the scripts in scripts/bench (sourced, not run).

# A free UDP port on 127.0.0.1.
free_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The kernel's UDP receive-buffer drops so far (RcvbufErrors in /proc/net/snmp).
rcvbuf_errors() { awk '/^Udp:/ { n++; if (n == 2) print $6 }' /proc/net/snmp; }

# start_uas SCENARIO SIP_PORT MEDIA_PORT CALLS TIMEOUT_S: a sipp UAS in the background whose
# answer sends the caller's audio to MEDIA_PORT (the scenario's [media_port]).
start_uas() {
  local scenario="$1" port="$2" media="$3" calls="$4" timeout="$5" tmp
  tmp="$(mktemp --suffix=.xml)"
  sed "s/\[media_port\]/$media/" "$scenario" > "$tmp"
  # sipp -bg prints its PID: kept by port, so stop_uas ends that sipp and nothing else.
  UAS_PIDS[$port]=$(sipp -sf "$tmp" -i 127.0.0.1 -p "$port" -cp $((port + 1)) -m "$calls" \
       -buff_size 4194304 -timeout "${timeout}s" -nostdin -bg 2>&1 \
       | grep -o 'PID=\[[0-9]*\]' | grep -o '[0-9]*' || true)
  sleep 0.5
}
declare -A UAS_PIDS

# stop_uas SIP_PORT
stop_uas() {
  local pid="${UAS_PIDS[$1]:-}"
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  unset "UAS_PIDS[$1]"
}
