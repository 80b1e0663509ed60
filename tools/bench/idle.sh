# Shared by the benchmark scripts (sourced): how busy the machine is, and waiting for it to be
# idle before a timed process. Needs $max_wait (seconds) and $work (a scratch folder) to be set.

busy() { # percent of all CPU time spent busy over the next 3 seconds
  local a b
  read -r -a a < <(head -1 /proc/stat)
  sleep 3
  read -r -a b < <(head -1 /proc/stat)
  local total=0 idle=$(( b[4] + b[5] - a[4] - a[5] )) i
  for i in 1 2 3 4 5 6 7 8; do total=$(( total + b[i] - a[i] )); done
  echo $(( 100 * (total - idle) / (total > 0 ? total : 1) ))
}

wait_idle() { # before each timed process: wait (up to MAX_WAIT s) until other work uses < 25 % CPU
  local waited=0 b
  while b=$(busy); [ "$b" -ge 25 ] && [ "$waited" -lt "$max_wait" ]; do
    sleep 7; waited=$(( waited + 10 ))
  done
  echo "$b" >>"$work/busy"
}
