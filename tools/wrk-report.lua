-- wrk script for tools/benchmark.py: at the end of a run, print wrk's summary as one JSON line
-- (counts, error kinds, latency percentiles in microseconds) after the marker "wrk-report ".
done = function(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'wrk-report {"duration_us": %d, "requests": %d, "connect": %d, "read": %d, "write": %d, '
      .. '"status": %d, "timeout": %d, "p50_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.duration, summary.requests, errors.connect, errors.read, errors.write,
    errors.status, errors.timeout, latency:percentile(50), latency:percentile(99), latency.max))
end
